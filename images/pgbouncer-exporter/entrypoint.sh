#!/bin/sh
# The operator's exporter sidecar passes the connection string (it holds the password) only in the env
# PGBOUNCER_EXPORTER_CONNECTION_STRING, which upstream reads since v0.11.0; Debian's 0.10.2 reads only the
# --pgBouncer.connectionString flag (and would scrape its default, localhost:6543). This hands the env over
# as that flag, through a kingpin args file (`@file`) on the container's own /dev/shm, mode 0600, not on
# the command line: a process's argv is world-readable on the node (/proc/PID/cmdline), its env is not.
set -eu
exporter=/usr/bin/prometheus-pgbouncer-exporter
for arg in "$@"; do
  case $arg in
  --pgBouncer.connectionString*) exec "$exporter" "$@" ;; # an explicit flag wins (kingpin rejects two)
  esac
done
if [ -n "${PGBOUNCER_EXPORTER_CONNECTION_STRING:-}" ]; then
  args=$(mktemp /dev/shm/exporter-args.XXXXXX)
  printf -- '--pgBouncer.connectionString=%s\n' "$PGBOUNCER_EXPORTER_CONNECTION_STRING" >"$args"
  exec "$exporter" "@$args" "$@"
fi
exec "$exporter" "$@"
