#!/bin/bash
# Bootstraps an empty PGDATA from a barman-cloud base backup and replays the archived WAL up to a target
# time (or to the end of the archive), then stops: the postgres container then starts the recovered
# database as a primary, and its entrypoint sets the superuser password from the pod's Secret. Runs as the
# StatefulSet's init container, so a restart of the pod never restores twice:
#   - PGDATA holds a database and no restore is pending: nothing to do (every start after the first);
#   - the download did not finish (the pod died mid-way): PGDATA is discarded and downloaded again;
#   - the download finished but recovery did not: recovery resumes from where it stopped.
# Settings come from the env the operator renders:
#   RESTORE_SOURCE  s3://bucket/prefix   RESTORE_SERVER_NAME  the source TrackingServer's name
#   RESTORE_BACKUP_ID  the base backup (chosen by the operator: the newest one that ends before the target)
#   RESTORE_TARGET_TIME  optional, a time Postgres understands   RESTORE_ENDPOINT_URL  optional
#   PGDATA, POSTGRES_USER, AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
# and its arguments are the postgres container's (`-c key=value` pairs): recovery runs with the server's
# parameters, since Postgres refuses to replay WAL with max_connections (max_worker_processes, ...) below
# the values the source ran with, and the restored postgresql.conf does not hold those.
set -Eeuo pipefail

server_args=("$@")

log() { echo "barman_restore.sh: $*" >&2; }

cloud=(--cloud-provider aws-s3)
if [ -n "${RESTORE_ENDPOINT_URL:-}" ]; then
  cloud+=(--endpoint-url "$RESTORE_ENDPOINT_URL")
fi
# Beside PGDATA on the same volume, so it survives the pod with the data it describes.
pending="$(dirname "$PGDATA")/.restore-pending"

download() {
  log "downloading base backup $RESTORE_BACKUP_ID of $RESTORE_SERVER_NAME from $RESTORE_SOURCE"
  echo downloading >"$pending"
  rm -rf "$PGDATA"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  barman-cloud-restore "${cloud[@]}" "$RESTORE_SOURCE" "$RESTORE_SERVER_NAME" "$RESTORE_BACKUP_ID" "$PGDATA"
  # Targeted recovery from the archive, not crash recovery: Postgres fetches WAL with restore_command.
  touch "$PGDATA/recovery.signal"
  echo downloaded >"$pending"
}

in_recovery() {
  psql -X -q -A -t -h "$socket" -U "${POSTGRES_USER:-postgres}" -d postgres -c 'SELECT pg_is_in_recovery()' \
    2>/dev/null || true
}

# Replays WAL on a server that listens on a private socket only: no client sees the database before it is
# recovered. Archiving is off: the recovered timeline belongs to the new server, whose own archive starts
# with its first base backup. A target the archive does not reach makes Postgres exit with an error
# ("recovery ended before configured recovery target was reached"), and this container with it.
recover() {
  socket=$(mktemp -d)
  # The server's parameters first: the later -c options below win over them (archiving off, the socket).
  local options=(
    "${server_args[@]}" -c listen_addresses= -c "unix_socket_directories=$socket" -c archive_mode=off
    -c "restore_command=barman-cloud-wal-restore ${cloud[*]} $RESTORE_SOURCE $RESTORE_SERVER_NAME %f %p"
    -c recovery_target_action=promote
  )
  if [ -n "${RESTORE_TARGET_TIME:-}" ]; then
    options+=(-c "recovery_target_time=$RESTORE_TARGET_TIME")
  fi
  log "recovering to ${RESTORE_TARGET_TIME:-the end of the archive}"
  postgres -D "$PGDATA" "${options[@]}" &
  local pid=$!
  until [ "$(in_recovery)" = f ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || true
      log "Postgres stopped before recovery finished (its log is above)"
      exit 1
    fi
    sleep 1
  done
  kill -INT "$pid"
  wait "$pid" || true
  rmdir "$socket" 2>/dev/null || true
}

if [ -s "$PGDATA/PG_VERSION" ] && [ ! -e "$pending" ]; then
  log "PGDATA holds a database: nothing to restore"
  exit 0
fi
if [ "$(cat "$pending" 2>/dev/null)" != downloaded ]; then
  download
fi
recover
rm -f "$pending"
log "restored"
