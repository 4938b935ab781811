#!/bin/bash
# A base backup of the database whose volume this pod mounts, then retention. barman-cloud-backup asks
# Postgres to start a backup over the network (PGHOST & co.) and reads the files of its data directory from
# the mounted volume: the pod runs on the database pod's node (the volume is ReadWriteOnce) and mounts it
# read-only. Settings come from the env the operator renders:
#   BACKUP_DESTINATION  s3://bucket/prefix       BACKUP_SERVER_NAME  the TrackingServer's name
#   BACKUP_RETENTION_POLICY  e.g. "RECOVERY WINDOW OF 30 DAYS"   BACKUP_ENDPOINT_URL  optional (MinIO...)
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE, AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
set -Eeuo pipefail

cloud=(--cloud-provider aws-s3)
if [ -n "${BACKUP_ENDPOINT_URL:-}" ]; then
  cloud+=(--endpoint-url "$BACKUP_ENDPOINT_URL")
fi

# --immediate-checkpoint: start now rather than after the next spread checkpoint (up to checkpoint_timeout).
barman-cloud-backup "${cloud[@]}" --gzip --immediate-checkpoint \
  -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE" "$BACKUP_DESTINATION" "$BACKUP_SERVER_NAME"
# Retention after a successful backup only: the new backup is inside the window, so no restore the window
# promises loses its base.
barman-cloud-backup-delete "${cloud[@]}" --retention-policy "$BACKUP_RETENTION_POLICY" \
  "$BACKUP_DESTINATION" "$BACKUP_SERVER_NAME"
