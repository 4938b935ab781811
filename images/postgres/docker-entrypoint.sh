#!/usr/bin/env bash
# The part of the official postgres image's docker-entrypoint.sh that the operator's StatefulSet relies on:
#   - args starting with "-" (the StatefulSet's `-c key=value ...`) are postgres' args;
#   - an empty $PGDATA is initialised with $POSTGRES_USER (default postgres) / $POSTGRES_PASSWORD as the
#     superuser, $POSTGRES_DB (default: the user's name) is created, and clients from the network must give
#     the password (scram-sha-256); the local socket trusts, as in the official image (pg_isready, psql
#     inside the container);
#   - a PGDATA that holds a cluster is started as it is (no second initdb), except that the superuser's
#     password follows $POSTGRES_PASSWORD: the operator's Secret is the source of truth, and rotating it
#     rolls this pod (the official image ignores a changed password, leaving clients locked out).
# Not carried over: running as root and dropping to postgres, /docker-entrypoint-initdb.d, nss_wrapper for
# arbitrary UIDs, POSTGRES_INITDB_ARGS / POSTGRES_HOST_AUTH_METHOD. The image runs as UID 999 (in
# /etc/passwd, which initdb needs) with a read-only root, so it writes only to $PGDATA, to the socket
# directory /var/run/postgresql and to /tmp.
set -Eeuo pipefail

log() { echo "docker-entrypoint.sh: $*" >&2; }

# The first start on a fresh volume: initdb, then create the database on a temporary server that listens
# on a private socket only: no client can connect before the database exists, and the readiness probe
# (pg_isready on /var/run/postgresql) fails until the real server is up.
init_cluster() {
  local user=${POSTGRES_USER:-postgres}
  local db=${POSTGRES_DB:-$user}
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "PGDATA $PGDATA is empty and POSTGRES_PASSWORD is not set: refusing to create a cluster without one"
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  log "initialising $PGDATA (superuser $user, database $db)"
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >&2
  # Everyone on the network logs in with a password; initdb's own lines only cover localhost.
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  # The official image listens on every address; `-c listen_addresses=...` in the args still wins.
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    local socket_dir
    socket_dir=$(mktemp -d)
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories='$socket_dir'" -w start >&2
    psql -v ON_ERROR_STOP=1 --no-psqlrc --host="$socket_dir" --username="$user" --dbname=postgres \
      --set=db="$db" <<<'CREATE DATABASE :"db";' >&2
    pg_ctl -D "$PGDATA" -m fast -w stop >&2
    rmdir "$socket_dir"
  fi
  password_digest >"$PASSWORD_STAMP"
  log "initialised"
}

# A digest of the password the cluster was last given (not the password: PGDATA is on a volume that
# backups and snapshots copy), compared on every start to skip the temporary server when nothing changed.
PASSWORD_STAMP="$PGDATA/.superuser-password.sha256"
password_digest() { printf '%s' "$POSTGRES_PASSWORD" | sha256sum | cut -d' ' -f1; }

# A rotated password is set on a temporary server listening on a private socket only (local connections
# trust), so no client ever reaches the cluster while it still has the old one.
sync_password() {
  local user=${POSTGRES_USER:-postgres}
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "POSTGRES_PASSWORD is not set: keeping the cluster's password"
    return
  fi
  if [ -f "$PASSWORD_STAMP" ] && [ "$(cat "$PASSWORD_STAMP")" = "$(password_digest)" ]; then
    return
  fi
  log "setting the password of $user from POSTGRES_PASSWORD"
  local socket_dir
  socket_dir=$(mktemp -d)
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories='$socket_dir'" -w start >&2
  # psql variables, not string splicing: quoting is psql's (:'password' is a literal, :"user" an identifier).
  psql -v ON_ERROR_STOP=1 --no-psqlrc --host="$socket_dir" --username="$user" --dbname=postgres \
    --set=user="$user" --set=password="$POSTGRES_PASSWORD" <<<"ALTER ROLE :\"user\" PASSWORD :'password';" >&2
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  rmdir "$socket_dir"
  password_digest >"$PASSWORD_STAMP"
}

if [ "${1:0:1}" = "-" ]; then
  set -- postgres "$@"
fi
if [ "$1" = postgres ]; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    init_cluster
  fi
  # The kubelet applies the pod's fsGroup to the volume on every mount: g+rw and setgid on each directory,
  # PGDATA included, and postgres refuses a data directory that its group can write. Undo it here (the
  # official entrypoint does the same on every start).
  chmod 0700 "$PGDATA"
  sync_password
fi
exec "$@"
