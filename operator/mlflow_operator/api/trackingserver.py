"""TrackingServer: an MLflow tracking server on PostgreSQL behind PgBouncer, with S3 artifacts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from mlflow_operator.api.common import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    NOT_SPACE,
    SPACE,
    WHITESPACE,
    ApiModel,
    Condition,
    DateTime,
    DeletionPolicy,
    Duration,
    Image,
    LocalObjectReference,
    ObjectName,
    QualifiedName,
    ResourceRequirements,
    Rule,
    SecretKey,
    ShortText,
    Url,
    cel,
    conditions_field,
    validations,
)
from mlflow_operator.api.pod import PodOptions

DEFAULT_MLFLOW_VERSION = "3.17.2"
PostgresVersion = Literal["14", "15", "16", "17"]
DEFAULT_POSTGRES_VERSION: PostgresVersion = "15"
# Registry aliases (which RegisteredModel and ModelDeployment rely on) arrived in MLflow 2.9.
MINIMUM_MLFLOW_VERSION = (2, 9, 0)

MlflowVersion = Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]
BucketName = Annotated[
    str, StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
]
S3Prefix = Annotated[str, StringConstraints(max_length=512, pattern=f"^{NOT_SPACE}*$")]
RuleId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
CronSchedule = Annotated[
    str, StringConstraints(min_length=9, max_length=64, pattern=f"^({NOT_SPACE}+{SPACE}+){{4}}{NOT_SPACE}+$")
]
# barman's RECOVERY WINDOW OF N {DAYS|WEEKS|MONTHS}, written as 30d, 4w or 6m.
RecoveryWindow = Annotated[str, StringConstraints(min_length=2, max_length=5, pattern=r"^[1-9][0-9]{0,3}[dwm]$")]
Rfc3339Time = Annotated[
    str,
    StringConstraints(
        max_length=64,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    ),
]
StorageClass = Literal["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"]


class S3Credentials(ApiModel):
    """A Secret with an S3 access key pair."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    access_key_id_key: SecretKey = Field(default="AWS_ACCESS_KEY_ID", description="Key of the access key id.")
    secret_access_key_key: SecretKey = Field(
        default="AWS_SECRET_ACCESS_KEY", description="Key of the secret access key."
    )


class BackupStore(ApiModel):
    """An S3 (or S3-compatible) location for barman-cloud: base backups and WAL go under
    s3://BUCKET/PREFIX/SERVER/ (SERVER is the TrackingServer's name)."""

    bucket: BucketName = Field(description="Bucket name.")
    prefix: S3Prefix = Field(
        default="backups", description="Key prefix; each server's backups go under PREFIX/SERVER/."
    )
    endpoint: Url | None = Field(default=None, description="Endpoint of an S3-compatible server (MinIO...).")
    region: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9-]*$")] = Field(
        default="us-east-1", description="Bucket region."
    )
    credentials_secret: S3Credentials = Field(description="Access keys the database pods and backup Jobs use.")


class DatabaseBackup(ApiModel):
    """Continuous WAL archiving and scheduled base backups with barman-cloud, for point-in-time restore.

    Archiving is always on while backups are: a base backup restores only with the WAL written during it."""

    s3: BackupStore | None = Field(
        default=None,
        description="Where backups go; by default the artifact bucket (its endpoint, region and credentialsSecret)"
        " under backups/NAMESPACE/NAME/.",
    )
    schedule: CronSchedule = Field(default="0 2 * * *", description="Cron schedule of base backups.")
    retention: RecoveryWindow = Field(
        default="30d",
        description="Recovery window (30d, 4w, 6m): backups and WAL no restore inside it needs are deleted after"
        " each base backup.",
    )


class BackupSource(ApiModel):
    """The backups of another (usually deleted) TrackingServer's database."""

    server_name: ObjectName = Field(description="The name of the TrackingServer whose backups are restored.")
    s3: BackupStore | None = Field(
        default=None,
        description="Where its backups are; by default this TrackingServer's own backup location's bucket and prefix.",
    )


class DatabaseRestore(ApiModel):
    """Bootstrap a new TrackingServer's database from backups, before its migration Job runs."""

    from_backup: BackupSource = Field(description="The backups to restore from.")
    target_time: Rfc3339Time | None = Field(
        default=None,
        description="Recover up to this time (RFC 3339); the latest WAL archived when unset.",
    )


class ManagedDatabase(ApiModel):
    """A PostgreSQL StatefulSet run by the operator."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)",
                "restore is set when the TrackingServer is created and cannot change",
            ),
        )
    }

    version: PostgresVersion = Field(default=DEFAULT_POSTGRES_VERSION, description="PostgreSQL major version.")
    image: Image | None = Field(default=None, description="Override the PostgreSQL image.")
    storage_size: Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]+(Mi|Gi|Ti)$")] = Field(
        default="10Gi",
        description="Size of the data volume (PVC).",
        json_schema_extra=validations(cel("self == oldSelf", "storageSize is immutable")),
    )
    storage_class_name: Annotated[str, StringConstraints(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)] | None = Field(
        default=None, description="StorageClass of the data volume; the cluster default when unset."
    )
    parameters: dict[Annotated[str, StringConstraints(max_length=64)], ShortText] | None = Field(
        default=None,
        max_length=64,
        description="postgresql.conf parameters overriding the operator's MLflow-tuned defaults.",
    )
    resources: ResourceRequirements | None = Field(default=None, description="Postgres container resources.")
    backup: DatabaseBackup | None = Field(
        default=None, description="WAL archiving and base backups to S3 (barman-cloud); none when unset."
    )
    restore: DatabaseRestore | None = Field(
        default=None, description="Create the database from backups (only on a new TrackingServer: immutable)."
    )


class DatabaseCredentials(ApiModel):
    """A Secret with the database user and password (or a full URI)."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    username_key: SecretKey = Field(default="username", description="Key of the database user.")
    password_key: SecretKey = Field(default="password", description="Key of the database password.")
    uri_key: SecretKey | None = Field(
        default=None,
        description="Optional key of a full postgresql:// URI that overrides host, port and user.",
    )


class ExternalDatabase(ApiModel):
    """An existing PostgreSQL (RDS, Cloud SQL, a CloudNativePG cluster...)."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=f"^[^{WHITESPACE}/:]+$")] = Field(
        description="Database host name or IP."
    )
    port: int = Field(default=5432, ge=1, le=65535, description="Database port.")
    database: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        default="mlflow", description="Database name."
    )
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer", description="libpq sslmode used by PgBouncer and the migration Job."
    )
    credentials_secret: DatabaseCredentials = Field(description="Where the database credentials are.")


class Pooler(ApiModel):
    """PgBouncer in front of the database: many MLflow workers share a bounded Postgres pool."""

    enabled: bool = Field(default=True, description="Run PgBouncer; the tracking server then connects only through it.")
    mode: Literal["transaction", "session"] = Field(
        default="transaction", description="PgBouncer pool_mode. transaction multiplexes the most clients."
    )
    default_pool_size: int = Field(default=20, ge=1, le=1000, description="Server connections per user/database pair.")
    max_client_conn: int = Field(default=1000, ge=1, le=100000, description="Client connections PgBouncer accepts.")
    max_db_connections: int = Field(
        default=50,
        ge=1,
        le=10000,
        description="Hard cap on server connections to the database per PgBouncer.",
    )
    replicas: int = Field(default=2, ge=1, le=20, description="PgBouncer pods.")
    resources: ResourceRequirements | None = Field(default=None, description="PgBouncer container resources.")
    image: Image | None = Field(
        default=None, description="Override the PgBouncer image (1.21 or later: prepared statements are pooled)."
    )
    exporter_image: Image | None = Field(
        default=None, description="Override the pgbouncer_exporter image (the sidecar serving PgBouncer's metrics)."
    )

    admission_rules = (
        Rule(
            "self.defaultPoolSize <= self.maxDbConnections",
            "pooler.defaultPoolSize must not exceed pooler.maxDbConnections",
            lambda pooler: pooler.default_pool_size <= pooler.max_db_connections,
            field_path=".defaultPoolSize",
        ),
    )


class Database(ApiModel):
    """The backend store: exactly one of managed or external."""

    exactly_one_of = (("managed", "external"),)

    managed: ManagedDatabase | None = Field(default=None, description="A PostgreSQL run by the operator.")
    external: ExternalDatabase | None = Field(default=None, description="An existing PostgreSQL.")
    pooler: Pooler = Field(default_factory=Pooler, description="PgBouncer connection pool settings.")

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.managed) == has(oldSelf.managed)",
                "database.managed and database.external cannot be switched after creation",
            ),
        )
    }


class S3Artifacts(ApiModel):
    """An S3 (or S3-compatible) bucket for artifacts, served to clients through the tracking server."""

    bucket: BucketName = Field(description="Bucket name.")
    prefix: S3Prefix = Field(default="mlflow", description="Key prefix under which artifacts are stored.")
    endpoint: Url | None = Field(default=None, description="Endpoint of an S3-compatible server (MinIO...).")
    region: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9-]*$")] = Field(
        default="us-east-1", description="Bucket region."
    )
    credentials_secret: S3Credentials | None = Field(
        default=None,
        description="Access keys; omit to use IRSA / workload identity (see serviceAccountAnnotations).",
    )
    service_account_annotations: dict[QualifiedName, ShortText] | None = Field(
        default=None,
        max_length=16,
        description="Annotations on the tracking server's ServiceAccount, e.g. eks.amazonaws.com/role-arn for IRSA.",
    )


class LifecycleTag(ApiModel):
    """An object tag, as in S3's Filter.Tag."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(description="Tag key.")
    value: Annotated[str, StringConstraints(max_length=256)] = Field(default="", description="Tag value.")


class LifecycleFilter(ApiModel):
    """Which objects a rule applies to; prefix is relative to the bucket, not artifacts.s3.prefix."""

    prefix: S3Prefix | None = Field(default=None, description="Object key prefix.")
    tags: list[LifecycleTag] | None = Field(default=None, max_length=10, description="All of these tags must match.")


class LifecycleExpiration(ApiModel):
    """When current object versions expire."""

    exactly_one_of = (("days", "expired_object_delete_marker"),)

    days: int | None = Field(default=None, ge=1, le=36500, description="Days after creation.")
    expired_object_delete_marker: bool | None = Field(
        default=None, description="Remove delete markers that have no noncurrent versions left."
    )


class NoncurrentVersionExpiration(ApiModel):
    """When noncurrent object versions expire (versioned buckets)."""

    noncurrent_days: int = Field(ge=1, le=36500, description="Days after an object version becomes noncurrent.")
    newer_noncurrent_versions: int | None = Field(
        default=None, ge=1, le=100, description="Keep this many newer noncurrent versions."
    )


class AbortIncompleteMultipartUpload(ApiModel):
    """Abort multipart uploads that never completed (they are billed but invisible)."""

    days_after_initiation: int = Field(ge=1, le=36500, description="Days after the upload started.")


class LifecycleTransition(ApiModel):
    """Move current versions to a cheaper storage class."""

    days: int = Field(ge=0, le=36500, description="Days after creation.")
    storage_class: StorageClass = Field(description="Target storage class.")


class LifecycleRule(ApiModel):
    """One bucket lifecycle rule, in S3's shape. The operator owns the rules it applied, by id."""

    id: RuleId = Field(description="Rule id; unique in the bucket. Rules with other ids are left alone.")
    status: Literal["Enabled", "Disabled"] = Field(default="Enabled", description="Whether the rule is active.")
    filter: LifecycleFilter | None = Field(default=None, description="Objects the rule applies to; all when unset.")
    expiration: LifecycleExpiration | None = Field(default=None, description="Expire current versions.")
    noncurrent_version_expiration: NoncurrentVersionExpiration | None = Field(
        default=None, description="Expire noncurrent versions."
    )
    abort_incomplete_multipart_upload: AbortIncompleteMultipartUpload | None = Field(
        default=None, description="Abort stale multipart uploads."
    )
    transitions: list[LifecycleTransition] | None = Field(
        default=None, max_length=5, description="Storage-class transitions."
    )

    # Checked again, field by field, by logic.lifecycle.validate_rules (which also checks what CEL cannot).
    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.expiration) || has(self.noncurrentVersionExpiration) || "
                "has(self.abortIncompleteMultipartUpload) || (has(self.transitions) && size(self.transitions) > 0)",
                "a lifecycle rule needs at least one action: expiration, noncurrentVersionExpiration, "
                "abortIncompleteMultipartUpload or transitions",
            ),
            cel(
                "!(has(self.expiration) && has(self.expiration.expiredObjectDeleteMarker) && has(self.filter) "
                "&& has(self.filter.tags) && size(self.filter.tags) > 0)",
                "expiration.expiredObjectDeleteMarker cannot be combined with filter.tags",
            ),
            cel(
                "!(has(self.abortIncompleteMultipartUpload) && has(self.filter) && has(self.filter.tags) "
                "&& size(self.filter.tags) > 0)",
                "abortIncompleteMultipartUpload cannot be combined with filter.tags",
            ),
        )
    }


class Lifecycle(ApiModel):
    """Bucket lifecycle rules that bound artifact storage cost."""

    rules: list[LifecycleRule] = Field(
        default_factory=list,
        max_length=100,
        description="Rules the operator owns in the bucket's configuration.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )


class Artifacts(ApiModel):
    """Artifact storage."""

    s3: S3Artifacts = Field(description="S3 bucket settings.")
    lifecycle: Lifecycle | None = Field(default=None, description="Bucket lifecycle rules.")


class Retention(ApiModel):
    """Scheduled `mlflow gc` of deleted runs and their artifacts."""

    deleted_runs_older_than: Duration = Field(
        default="30d", description="Permanently remove runs deleted longer ago than this."
    )
    schedule: CronSchedule = Field(default="0 3 * * *", description="Cron schedule of the gc CronJob.")


class Auth(ApiModel):
    """MLflow basic auth (the basic-auth app); admin credentials are generated into a Secret."""

    enabled: bool = Field(default=False, description="Require authentication.")
    admin_secret: LocalObjectReference | None = Field(
        default=None,
        description="Existing Secret with username/password keys for the admin; generated when unset.",
    )
    credential_cache_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="How long each server worker trusts a verified username and password before checking "
        "the password hash again (MLflow's auth_cache_ttl_seconds; 0 checks on every request). A changed "
        "or revoked password is accepted at most this long.",
    )
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field(
        default="READ",
        description="What every user may do where no permission was granted (MLflow's default_permission). "
        "NO_PERMISSIONS confines each ModelDeployment's model servers to their own registered model (their "
        "MLflow user is granted READ on it and on the experiments of the versions they serve); people and "
        "training jobs then need grants of their own.",
    )


class Ingress(ApiModel):
    """An Ingress for the tracking server."""

    enabled: bool = Field(default=False, description="Create an Ingress.")
    host: Annotated[str, StringConstraints(max_length=253, pattern=r"^[a-z0-9*]([-a-z0-9.]*[a-z0-9])?$")] | None = (
        Field(default=None, description="Host name.")
    )
    class_name: Annotated[str, StringConstraints(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)] | None = Field(
        default=None, description="IngressClass name."
    )
    tls_secret_name: ObjectName | None = Field(default=None, description="TLS Secret for the host.")

    admission_rules = (
        Rule(
            "!self.enabled || has(self.host)",
            "ingress.host is required when ingress.enabled is true",
            lambda ingress: not ingress.enabled or ingress.host is not None,
            field_path=".host",
        ),
    )


class Metrics(ApiModel):
    """Prometheus metrics of the tracking server and PgBouncer."""

    enabled: bool = Field(default=True, description="Expose /metrics and annotate pods for scraping.")


class ServerRegistryEvents(ApiModel):
    """MLflow's model-registry webhooks, registered by the operator so that RegisteredModels and
    ModelDeployments referencing this server act on a change within seconds instead of at their next poll."""

    enabled: bool = Field(
        default=True,
        description="Register one webhook with the operator's receiver (when the operator runs one) and give "
        "MLflow a stable key for webhook secrets. Off: the webhook is removed and everything polls.",
    )


class TrackingServerSpec(ApiModel):
    """Desired state of an MLflow tracking server."""

    version: MlflowVersion = Field(
        default=DEFAULT_MLFLOW_VERSION, description="MLflow version; upgrades run a migration Job first."
    )
    image: Image | None = Field(default=None, description="Override the tracking server image.")
    replicas: int = Field(default=2, ge=1, le=50, description="Tracking server pods.")
    workers: int = Field(default=2, ge=1, le=32, description="Server worker processes per pod.")
    database: Database = Field(description="Backend store.")
    artifacts: Artifacts = Field(description="Artifact store.")
    retention: Retention | None = Field(default=None, description="Garbage collection of deleted runs.")
    auth: Auth | None = Field(default=None, description="Authentication.")
    ingress: Ingress | None = Field(default=None, description="Ingress.")
    resources: ResourceRequirements | None = Field(default=None, description="Tracking server container resources.")
    metrics: Metrics | None = Field(default=None, description="Prometheus metrics.")
    registry_events: ServerRegistryEvents | None = Field(
        default=None, description="Registry webhooks to the operator (on by default)."
    )
    pod: PodOptions | None = Field(
        default=None,
        description="Scheduling, pull secrets, metadata, env and volumes for every pod of this TrackingServer "
        "(server, PgBouncer, managed database, migration Job, gc CronJob).",
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description="Retain keeps the managed database PVC and Secrets and the bucket's lifecycle rules "
        "when the TrackingServer is deleted; Delete removes them.",
    )

    # Checked by the operator only, not at admission: the supported range is knowledge of this operator
    # release (a newer operator may support older servers), not part of the API's shape.
    @field_validator("version")
    @classmethod
    def _supported_version(cls, version: str) -> str:
        if tuple(int(part) for part in version.split(".")) < MINIMUM_MLFLOW_VERSION:
            minimum = ".".join(map(str, MINIMUM_MLFLOW_VERSION))
            raise ValueError(f"MLflow {minimum} or newer is required (registry aliases), got {version}")
        return version


TrackingServerPhase = Literal["Pending", "Provisioning", "Migrating", "Ready", "Failed"]


class WithheldRule(ApiModel):
    """A lifecycle rule the operator keeps off the bucket because it could delete registered model artifacts."""

    id: RuleId = Field(description="The rule's id.")
    message: Annotated[str, StringConstraints(max_length=1024)] = Field(
        description="Why: the field, and one model version (or the layout) it endangers."
    )


class LifecycleStatus(ApiModel):
    """What the operator last applied to the bucket, so it knows its rules and the server's behaviour."""

    fingerprint: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Hash of the rules last applied."
    )
    rule_ids: list[RuleId] | None = Field(default=None, max_length=100, description="Rule ids the operator owns.")
    not_kept: list[Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        default=None, max_length=50, description="What the server did not keep when read back after the apply."
    )
    refused_fingerprint: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Hash of rules the server refused; not sent again until the spec changes."
    )
    refused_message: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="The server's reason for refusing them."
    )
    withheld: list[WithheldRule] | None = Field(
        default=None,
        max_length=50,
        description="Rules kept off the bucket because they could delete registered model artifacts.",
    )
    withheld_for: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Hash of the spec's rules the withheld list was decided for; a change re-checks."
    )


StatusText = Annotated[str, StringConstraints(max_length=1024)]


class BackupStatus(ApiModel):
    """What the backup location holds, as the operator last read it."""

    destination: StatusText | None = Field(default=None, description="s3://bucket/prefix/server the backups go to.")
    last_backup_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The newest completed base backup."
    )
    last_backup_time: DateTime | None = Field(default=None, description="When it ended.")
    first_recoverability_point: DateTime | None = Field(
        default=None, description="The earliest time a restore can target: the end of the oldest base backup."
    )
    last_archived_wal: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The newest WAL segment in the archive."
    )
    last_archived_time: DateTime | None = Field(default=None, description="When it was archived.")
    last_request: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="The last on-demand backup annotation acted on."
    )


class RestoreStatus(ApiModel):
    """The restore this TrackingServer's database was bootstrapped with."""

    source: StatusText | None = Field(default=None, description="s3://bucket/prefix/server restored from.")
    backup_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The base backup restored."
    )
    target_time: DateTime | None = Field(default=None, description="The recovery target; unset: the latest WAL.")


class TrackingServerStatus(ApiModel):
    """Observed state of an MLflow tracking server."""

    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted on.")
    url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="In-cluster URL of the tracking server."
    )
    version: MlflowVersion | None = Field(default=None, description="MLflow version currently serving.")
    migrated_version: MlflowVersion | None = Field(
        default=None, description="MLflow version the database schema was last migrated to."
    )
    phase: TrackingServerPhase | None = Field(default=None, description="Summary for printer columns.")
    lifecycle: LifecycleStatus | None = Field(default=None, description="Bucket lifecycle bookkeeping.")
    backup: BackupStatus | None = Field(default=None, description="Database backups (spec.database.managed.backup).")
    restore: RestoreStatus | None = Field(default=None, description="Database restore (spec.database.managed.restore).")
    conditions: list[Condition] = conditions_field()


__all__ = ["DNS_LABEL_PATTERN", "LocalObjectReference", "TrackingServerSpec", "TrackingServerStatus"]
