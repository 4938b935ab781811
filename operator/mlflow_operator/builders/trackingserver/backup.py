"""Backups of the managed PostgreSQL with barman-cloud: where they go, what the database pod needs to
archive its WAL there, the base-backup CronJob (and the on-demand Jobs made from it), and the init container
that restores a new TrackingServer's database from another's backups.

Layout in the bucket (barman-cloud's): s3://BUCKET/PREFIX/SERVER/base/<backup id>/{backup.info,data.tar.gz}
and s3://BUCKET/PREFIX/SERVER/wals/<timeline+log>/<segment>.gz, SERVER being the TrackingServer's name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources as package_files

from mlflow_operator.api.common import parse_rfc3339
from mlflow_operator.api.trackingserver import BackupStore, S3Credentials, TrackingServerSpec
from mlflow_operator.builders.common import (
    Obj,
    container_security_context,
    labels,
    literal_env,
    metadata,
    pod_security_context,
    secret_env,
    selector,
    tmp_volume,
)
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images, with_version
from mlflow_operator.builders.pod import workload
from mlflow_operator.builders.trackingserver.inputs import (
    COMPONENT_BACKUP,
    COMPONENT_POSTGRES,
    DATABASE_NAME,
    POSTGRES_PORT,
    POSTGRES_UID,
    Names,
)

BACKUP_SCRIPT, RESTORE_SCRIPT = "barman_backup.sh", "barman_restore.sh"
SCRIPT_DIR = "/etc/mlflow-backup"
DATA_MOUNT = "/var/lib/postgresql/data"  # the data volume; PGDATA is a directory in it
PGDATA = f"{DATA_MOUNT}/pgdata"
# WAL is archived when a 16 MiB segment fills or after this long with writes: at most this much of the
# newest work is lost with the volume. Idle databases switch no segment. spec...parameters may override it.
ARCHIVE_TIMEOUT = "60s"
REQUEST_ANNOTATION = "mlflow.operator.dev/backup-request"  # any new value asks for one base backup now
RETENTION_UNITS = {"d": "DAYS", "w": "WEEKS", "m": "MONTHS"}


@dataclass(frozen=True)
class BackupLocation:
    """One server's place in a backup store: barman-cloud's destination URL plus its server name."""

    store: BackupStore
    server_name: str

    @property
    def url(self) -> str:
        prefix = self.store.prefix.strip("/")
        return f"s3://{self.store.bucket}/{prefix}" if prefix else f"s3://{self.store.bucket}"

    @property
    def key_prefix(self) -> str:
        """Where this server's objects start in the bucket."""
        prefix = self.store.prefix.strip("/")
        return f"{prefix}/{self.server_name}/" if prefix else f"{self.server_name}/"

    def __str__(self) -> str:
        return f"{self.url}/{self.server_name}"


@dataclass(frozen=True)
class RestorePlan:
    """What the restore init container does: the handler picks the base backup (logic.backup)."""

    source: BackupLocation
    backup_id: str
    target_time: str | None


def default_store(namespace: str, spec: TrackingServerSpec) -> BackupStore | None:
    """The artifact bucket, under backups/NAMESPACE: two TrackingServers of one name in two namespaces may
    share a bucket, and two servers archiving into one place would corrupt each other's WAL history."""
    artifacts = spec.artifacts.s3
    if artifacts.credentials_secret is None:
        return None
    return BackupStore(
        bucket=artifacts.bucket,
        prefix=f"backups/{namespace}",
        endpoint=artifacts.endpoint,
        region=artifacts.region,
        credentials_secret=artifacts.credentials_secret,
    )


def backup_location(name: str, namespace: str, spec: TrackingServerSpec) -> BackupLocation | None:
    """Where this TrackingServer's database archives; None without backups (or without credentials, which
    location_problems reports)."""
    managed = spec.database.managed
    if managed is None or managed.backup is None:
        return None
    store = managed.backup.s3 or default_store(namespace, spec)
    return None if store is None else BackupLocation(store, name)


def artifact_bucket_backups(name: str, namespace: str, spec: TrackingServerSpec) -> str | None:
    """The key prefix of this server's backups when they share the artifact bucket (lifecycle rules on that
    bucket must leave them alone), else None."""
    location = backup_location(name, namespace, spec)
    artifacts = spec.artifacts.s3
    if location is None or (location.store.bucket, location.store.endpoint) != (artifacts.bucket, artifacts.endpoint):
        return None
    return location.key_prefix


def restore_source(namespace: str, spec: TrackingServerSpec) -> BackupLocation | None:
    managed = spec.database.managed
    if managed is None or managed.restore is None:
        return None
    source = managed.restore.from_backup
    own = managed.backup.s3 if managed.backup is not None else None
    store = source.s3 or own or default_store(namespace, spec)
    return None if store is None else BackupLocation(store, source.server_name)


def location_problems(name: str, namespace: str, spec: TrackingServerSpec) -> list[str]:
    """What makes the backup or restore settings unusable, naming the field."""
    managed = spec.database.managed
    if managed is None:
        return []
    problems = []
    no_keys = "barman-cloud needs S3 access keys: set {field}.s3 with its credentialsSecret, or"
    no_keys += " spec.artifacts.s3.credentialsSecret to use the artifact bucket"
    if managed.backup is not None and backup_location(name, namespace, spec) is None:
        problems.append(no_keys.format(field="spec.database.managed.backup"))
    if managed.restore is not None:
        source = restore_source(namespace, spec)
        if source is None:
            problems.append(no_keys.format(field="spec.database.managed.restore.fromBackup"))
        elif _same_place(source, backup_location(name, namespace, spec)):
            problems.append(
                f"spec.database.managed.restore.fromBackup.serverName: {source} is where this TrackingServer"
                " archives its own WAL; a restored server must never archive into its source"
            )
    return problems


def _same_place(source: BackupLocation, own: BackupLocation | None) -> bool:
    if own is None:
        return False
    same_store = (source.store.bucket, source.store.endpoint) == (own.store.bucket, own.store.endpoint)
    return same_store and source.key_prefix == own.key_prefix


def retention_policy(window: str) -> str:
    """spec's 30d / 4w / 6m as barman's policy."""
    return f"RECOVERY WINDOW OF {int(window[:-1])} {RETENTION_UNITS[window[-1]]}"


def cloud_args(store: BackupStore) -> list[str]:
    args = ["--cloud-provider", "aws-s3"]
    return [*args, "--endpoint-url", store.endpoint] if store.endpoint else args


def archive_command(location: BackupLocation) -> str:
    """Postgres runs it through the shell for each finished segment (%p its path): a failure keeps the
    segment in pg_wal and retries it, so nothing is lost while S3 is down, but pg_wal grows."""
    args = [*cloud_args(location.store), "--gzip", location.url, location.server_name, "%p"]
    return " ".join(["barman-cloud-wal-archive", *args])


def archive_parameters(location: BackupLocation | None) -> dict[str, str]:
    if location is None:
        return {}
    return {"archive_mode": "on", "archive_command": archive_command(location), "archive_timeout": ARCHIVE_TIMEOUT}


def s3_env(store: BackupStore) -> list[Obj]:
    credentials: S3Credentials = store.credentials_secret
    return [
        secret_env("AWS_ACCESS_KEY_ID", credentials.name, credentials.access_key_id_key),
        secret_env("AWS_SECRET_ACCESS_KEY", credentials.name, credentials.secret_access_key_key),
        {"name": "AWS_DEFAULT_REGION", "value": store.region or "us-east-1"},
    ]


def script(name: str) -> str:
    return package_files.files("mlflow_operator.builders").joinpath("templates", name).read_text()


def get_backup_configmap(name: str, namespace: str) -> Obj:
    """The backup and restore scripts (builders/templates): they run in the postgres image, which carries
    barman-cloud but not the operator."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(Names(name).backup, namespace, labels(name, COMPONENT_BACKUP)),
        "data": {BACKUP_SCRIPT: script(BACKUP_SCRIPT), RESTORE_SCRIPT: script(RESTORE_SCRIPT)},
    }


def script_volume(name: str) -> tuple[Obj, Obj]:
    volume = {"name": "backup-scripts", "configMap": {"name": Names(name).backup}}
    return volume, {"name": "backup-scripts", "mountPath": SCRIPT_DIR, "readOnly": True}


def postgres_image(spec: TrackingServerSpec, images: Images = DEFAULT_IMAGES) -> str:
    managed = spec.database.managed
    assert managed is not None
    return managed.image or with_version(images.postgres, managed.version)


def restore_env(plan: RestorePlan) -> list[Obj]:
    values = {
        "PGDATA": PGDATA,
        "RESTORE_SOURCE": plan.source.url,
        "RESTORE_SERVER_NAME": plan.source.server_name,
        "RESTORE_BACKUP_ID": plan.backup_id,
    }
    if plan.target_time is not None:
        # Postgres reads its own timestamp syntax: RFC 3339's T and Z are refused ("invalid value").
        values["RESTORE_TARGET_TIME"] = parse_rfc3339(plan.target_time).isoformat(sep=" ")
    if plan.source.store.endpoint:
        values["RESTORE_ENDPOINT_URL"] = plan.source.store.endpoint
    return literal_env(values) + s3_env(plan.source.store)


def restore_init_container(name: str, plan: RestorePlan, image: str, postgres: Obj) -> Obj:
    """Runs before Postgres on every start and does nothing once the database exists (see the script). It
    shares the postgres container's user, volumes and resources: recovery replays WAL like the server. It
    also gets its args (the rendered `-c` parameters): recovery refuses to start with max_connections and
    a few others below the source's, which ran with the rendered values, not those of its postgresql.conf."""
    _, scripts = script_volume(name)
    env = [e for e in postgres["env"] if e["name"] == "POSTGRES_USER"] + restore_env(plan)
    return {
        "name": "restore",
        "image": image,
        "command": ["bash", f"{SCRIPT_DIR}/{RESTORE_SCRIPT}"],
        "args": postgres["args"],
        "env": env,
        "resources": postgres["resources"],
        "securityContext": container_security_context(),
        "volumeMounts": [*postgres["volumeMounts"], scripts],
    }


def backup_env(name: str, location: BackupLocation, retention: str) -> list[Obj]:
    names = Names(name)
    values = {
        "BACKUP_DESTINATION": location.url,
        "BACKUP_SERVER_NAME": location.server_name,
        "BACKUP_RETENTION_POLICY": retention_policy(retention),
        "PGHOST": names.postgres_clients,
        "PGPORT": str(POSTGRES_PORT),
        "PGDATABASE": DATABASE_NAME,
    }
    if location.store.endpoint:
        values["BACKUP_ENDPOINT_URL"] = location.store.endpoint
    credentials = [
        secret_env("PGUSER", names.database_secret, "username"),
        secret_env("PGPASSWORD", names.database_secret, "password"),
    ]
    return literal_env(values) + credentials + s3_env(location.store)


def backup_pod(name: str, location: BackupLocation, retention: str, image: str) -> Obj:
    """barman-cloud-backup beside the database: on its node, with its volume mounted read-only. No fsGroup:
    the files are the postgres user's already, and a kubelet applying one would make PGDATA group-writable,
    which Postgres refuses at its next start."""
    names = Names(name)
    tmp, tmp_mount = tmp_volume()
    scripts, scripts_mount = script_volume(name)
    security = {k: v for k, v in pod_security_context(POSTGRES_UID).items() if k != "fsGroup"}
    database = {"labelSelector": {"matchLabels": selector(name, COMPONENT_POSTGRES)}}
    return {
        "metadata": {"labels": labels(name, COMPONENT_BACKUP)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": security,
            "affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {**database, "topologyKey": "kubernetes.io/hostname"}
                    ]
                }
            },
            "containers": [
                {
                    "name": "backup",
                    "image": image,
                    "command": ["bash", f"{SCRIPT_DIR}/{BACKUP_SCRIPT}"],
                    "env": backup_env(name, location, retention),
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                    "securityContext": container_security_context(),
                    "volumeMounts": [
                        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
                        tmp_mount,
                        scripts_mount,
                    ],
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": names.postgres_data, "readOnly": True}},
                tmp,
                scripts,
            ],
        },
    }


def backup_job_spec(name: str, namespace: str, spec: TrackingServerSpec, images: Images) -> Obj | None:
    location = backup_location(name, namespace, spec)
    managed = spec.database.managed
    if location is None or managed is None or managed.backup is None:
        return None
    # One try per Job: a base backup that failed half-way is not resumed, and the next run starts afresh.
    return {
        "backoffLimit": 1,
        "template": backup_pod(name, location, managed.backup.retention, postgres_image(spec, images)),
    }


def get_backup_cronjob(
    name: str, namespace: str, spec: TrackingServerSpec, images: Images = DEFAULT_IMAGES
) -> Obj | None:
    job = backup_job_spec(name, namespace, spec, images)
    managed = spec.database.managed
    if job is None or managed is None or managed.backup is None:
        return None
    object_labels = labels(name, COMPONENT_BACKUP)
    cronjob_spec = {
        "schedule": managed.backup.schedule,
        "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        # Labelled Jobs: the TrackingServer reads its backup Jobs' outcome with one label-selected list.
        "jobTemplate": {"metadata": {"labels": object_labels}, "spec": job},
    }
    return workload("CronJob", metadata(Names(name).backup, namespace, object_labels), cronjob_spec, spec.pod)


def backup_job_name(name: str, request: str) -> str:
    """One Job per request value: applying it again is a no-op, a new value makes a new Job."""
    return f"{Names(name).backup}-{hashlib.sha256(request.encode()).hexdigest()[:8]}"


def get_backup_job(
    name: str, namespace: str, spec: TrackingServerSpec, request: str, images: Images = DEFAULT_IMAGES
) -> Obj | None:
    """An on-demand base backup: the scheduled one's pod, now."""
    job = backup_job_spec(name, namespace, spec, images)
    if job is None:
        return None
    object_labels = labels(name, COMPONENT_BACKUP)
    meta = metadata(backup_job_name(name, request), namespace, object_labels)
    meta["annotations"] = {REQUEST_ANNOTATION: request}
    # Finished on-demand Jobs go after a day; the CronJob's history limits keep its own.
    return workload("Job", meta, {**job, "ttlSecondsAfterFinished": 86400}, spec.pod)
