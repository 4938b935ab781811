"""Every object a TrackingServer produces, as pure functions of its spec: one module per object family, as
CloudNativePG's pkg/specs does.

- inputs: names, images, ports, TrackingServerInputs (the spec plus what the handler resolved), endpoints;
- secrets: generated passwords (database, admin, the servers' PgBouncer login), backend URIs, PgBouncer's
  userlist, basic-auth config;
- database: the managed PostgreSQL (StatefulSet, Service, NetworkPolicy);
- pooler: PgBouncer (configuration, Deployment with its exporter, Service, NetworkPolicy);
- migration: the `mlflow db upgrade` Job of one MLflow version;
- server: the tracking server (Deployment, Service, ServiceAccount, Ingress, budget);
- gc: the optional garbage collection CronJob;
- backup: barman-cloud WAL archiving, the base-backup CronJob and on-demand Jobs, the restore init container.

`get_*` functions each build one object; `desired_*` functions list what to apply for one stage of the
reconcile (database, pooler, server). The handler adds owner references and applies them. Secrets whose
content is generated (passwords) are built here but created once by the handler and changed only by a
requested rotation (logic.credential_rotation). This package re-exports every builder, so
`builders.trackingserver.get_x` names any of them.
"""

from __future__ import annotations

from mlflow_operator.builders.common import Obj
from mlflow_operator.builders.trackingserver.backup import (
    REQUEST_ANNOTATION,
    BackupLocation,
    RestorePlan,
    artifact_bucket_backups,
    backup_job_name,
    backup_location,
    get_backup_configmap,
    get_backup_cronjob,
    get_backup_job,
    location_problems,
    restore_source,
)
from mlflow_operator.builders.trackingserver.database import (
    desired_database,
    get_postgres_client_service,
    get_postgres_network_policy,
    get_postgres_service,
    get_postgres_statefulset,
    postgres_parameters,
)
from mlflow_operator.builders.trackingserver.gc import (
    gc_command,
    gc_older_than,
    get_gc_configmap,
    get_gc_cronjob,
)
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_BACKUP,
    COMPONENT_GC,
    COMPONENT_MIGRATION,
    COMPONENT_POOLER,
    COMPONENT_POSTGRES,
    COMPONENT_SERVER,
    DATABASE_NAME,
    DATABASE_USER,
    EXPORTER_PORT,
    GC_SCRIPT_DIR,
    MLFLOW_PORT,
    PGBOUNCER_PORT,
    POOLER_CLIENT_USER,
    POOLER_RESOURCES,
    POSTGRES_DEFAULT_PARAMETERS,
    POSTGRES_PORT,
    POSTGRES_RESOURCES,
    POSTGRES_UID,
    PROMETHEUS_DIR,
    REGISTRY_URL_ANNOTATION,
    SERVER_RESOURCES,
    Credentials,
    DatabaseEndpoint,
    Names,
    TrackingServerInputs,
    backend_uris,
    get_database_endpoint,
    mlflow_image,
    pooled_login,
    pooler_endpoint,
    postgres_uri,
    tracking_url,
)
from mlflow_operator.builders.trackingserver.migration import (
    get_migration_job,
)
from mlflow_operator.builders.trackingserver.pooler import (
    desired_pooler,
    get_pgbouncer_config,
    get_pgbouncer_configmap,
    get_pgbouncer_deployment,
    get_pgbouncer_network_policy,
    get_pgbouncer_service,
    pgbouncer_settings,
)
from mlflow_operator.builders.trackingserver.secrets import (
    ENCRYPTION_KEY,
    EVENTS_CA_KEY,
    WEBHOOK_SECRET_KEY,
    admin_secret_name,
    flask_secret_key,
    get_admin_secret,
    get_auth_config_secret,
    get_backend_secret,
    get_database_secret,
    get_pooler_auth_secret,
    get_pooler_client_secret,
    get_registry_events_secret,
    registry_events_enabled,
    render_auth_config,
)
from mlflow_operator.builders.trackingserver.server import (
    allowed_hosts,
    desired_server,
    get_ingress,
    get_service_account,
    get_tracking_deployment,
    get_tracking_service,
    gunicorn_options,
    server_config_hash,
    tracking_server_args,
    tracking_server_env,
)


def all_objects(
    inputs: TrackingServerInputs, database_password: str, admin_password: str, generated_key: str
) -> list[Obj]:
    """Every object a TrackingServer produces, in apply order (for the render CLI and golden tests).
    The generated Secrets appear with the given passwords and keys; the operator creates them once."""
    objects: list[Obj] = []
    if inputs.spec.database.managed is not None:
        objects.append(get_database_secret(inputs.name, inputs.namespace, database_password))
    auth = inputs.spec.auth
    if auth is not None and auth.enabled and auth.admin_secret is None:
        objects.append(get_admin_secret(inputs.name, inputs.namespace, admin_password))
    if inputs.spec.database.pooler.enabled and inputs.pooler_credentials is not None:
        objects.append(get_pooler_client_secret(inputs.name, inputs.namespace, inputs.pooler_credentials.password))
    if registry_events_enabled(inputs.spec):
        objects.append(get_registry_events_secret(inputs.name, inputs.namespace, generated_key, generated_key))
    objects += desired_database(
        inputs.name, inputs.namespace, inputs.spec, inputs.database_credentials.password, inputs.images
    )
    objects += desired_pooler(inputs)
    objects.append(get_migration_job(inputs, inputs.spec.version))
    objects += desired_server(inputs)
    return objects


__all__ = [
    "APP_UID",
    "COMPONENT_BACKUP",
    "COMPONENT_GC",
    "COMPONENT_MIGRATION",
    "COMPONENT_POOLER",
    "COMPONENT_POSTGRES",
    "COMPONENT_SERVER",
    "DATABASE_NAME",
    "DATABASE_USER",
    "ENCRYPTION_KEY",
    "EVENTS_CA_KEY",
    "EXPORTER_PORT",
    "GC_SCRIPT_DIR",
    "MLFLOW_PORT",
    "PGBOUNCER_PORT",
    "POOLER_CLIENT_USER",
    "POOLER_RESOURCES",
    "POSTGRES_DEFAULT_PARAMETERS",
    "POSTGRES_PORT",
    "POSTGRES_RESOURCES",
    "POSTGRES_UID",
    "PROMETHEUS_DIR",
    "REGISTRY_URL_ANNOTATION",
    "REQUEST_ANNOTATION",
    "SERVER_RESOURCES",
    "WEBHOOK_SECRET_KEY",
    "BackupLocation",
    "Credentials",
    "DatabaseEndpoint",
    "Names",
    "RestorePlan",
    "TrackingServerInputs",
    "admin_secret_name",
    "all_objects",
    "allowed_hosts",
    "artifact_bucket_backups",
    "backend_uris",
    "backup_job_name",
    "backup_location",
    "desired_database",
    "desired_pooler",
    "desired_server",
    "flask_secret_key",
    "gc_command",
    "gc_older_than",
    "get_admin_secret",
    "get_auth_config_secret",
    "get_backend_secret",
    "get_backup_configmap",
    "get_backup_cronjob",
    "get_backup_job",
    "get_database_endpoint",
    "get_database_secret",
    "get_gc_configmap",
    "get_gc_cronjob",
    "get_ingress",
    "get_migration_job",
    "get_pgbouncer_config",
    "get_pgbouncer_configmap",
    "get_pgbouncer_deployment",
    "get_pgbouncer_network_policy",
    "get_pgbouncer_service",
    "get_pooler_auth_secret",
    "get_pooler_client_secret",
    "get_postgres_client_service",
    "get_postgres_network_policy",
    "get_postgres_service",
    "get_postgres_statefulset",
    "get_registry_events_secret",
    "get_service_account",
    "get_tracking_deployment",
    "get_tracking_service",
    "gunicorn_options",
    "location_problems",
    "mlflow_image",
    "pgbouncer_settings",
    "pooled_login",
    "pooler_endpoint",
    "postgres_parameters",
    "postgres_uri",
    "registry_events_enabled",
    "render_auth_config",
    "restore_source",
    "server_config_hash",
    "tracking_server_args",
    "tracking_server_env",
    "tracking_url",
]
