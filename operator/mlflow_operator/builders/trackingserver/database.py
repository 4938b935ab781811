"""The managed PostgreSQL: its StatefulSet, its Services (headless for the StatefulSet, ClusterIP for clients)
and NetworkPolicy."""

from __future__ import annotations

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders.common import (
    CONFIG_HASH_ANNOTATION,
    Obj,
    container_security_context,
    labels,
    metadata,
    network_policy,
    pod_security_context,
    resources,
    secret_env,
    selector,
    service,
    tmp_volume,
)
from mlflow_operator.builders.config import content_hash
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images
from mlflow_operator.builders.pod import workload
from mlflow_operator.builders.trackingserver.backup import (
    DATA_MOUNT,
    PGDATA,
    BackupLocation,
    RestorePlan,
    archive_parameters,
    backup_location,
    get_backup_configmap,
    get_backup_cronjob,
    postgres_image,
    restore_init_container,
    s3_env,
    script_volume,
)
from mlflow_operator.builders.trackingserver.inputs import (
    COMPONENT_BACKUP,
    COMPONENT_GC,
    COMPONENT_MIGRATION,
    COMPONENT_POOLER,
    COMPONENT_POSTGRES,
    COMPONENT_SERVER,
    DATABASE_NAME,
    DATABASE_USER,
    POSTGRES_DEFAULT_PARAMETERS,
    POSTGRES_PORT,
    POSTGRES_RESOURCES,
    POSTGRES_UID,
    Names,
)


def postgres_parameters(spec: TrackingServerSpec, archive: BackupLocation | None = None) -> dict[str, str]:
    """Defaults tuned for MLflow, max_connections sized for every pooler replica, WAL archiving to `archive`
    when backups are on, user overrides last."""
    pooler = spec.database.pooler
    reserve = 20  # migrations, gc, backups, superuser sessions
    max_connections = max(100, pooler.replicas * pooler.max_db_connections + reserve) if pooler.enabled else 200
    parameters = {**POSTGRES_DEFAULT_PARAMETERS, "max_connections": str(max_connections)}
    parameters.update(archive_parameters(archive))
    managed = spec.database.managed
    if managed is not None and managed.parameters:
        parameters.update(managed.parameters)
    return dict(sorted(parameters.items()))


def get_postgres_service(name: str, namespace: str) -> Obj:
    meta = metadata(Names(name).postgres, namespace, labels(name, COMPONENT_POSTGRES))
    # Headless: the StatefulSet's stable network identity.
    return service(meta, selector(name, COMPONENT_POSTGRES), "postgres", POSTGRES_PORT, headless=True)


def get_postgres_client_service(name: str, namespace: str) -> Obj:
    """The address clients connect to (PgBouncer, the migration Job): a ClusterIP, which survives a restart of
    the pod. The headless name resolves to the pod's own address, and resolvers cache that answer (CoreDNS
    for 30 s as clusters commonly configure it): after a restart (a rotated password, a moved pod) PgBouncer
    kept dialing the old address for that long."""
    meta = metadata(Names(name).postgres_clients, namespace, labels(name, COMPONENT_POSTGRES))
    return service(meta, selector(name, COMPONENT_POSTGRES), "postgres", POSTGRES_PORT)


def get_postgres_statefulset(
    name: str,
    namespace: str,
    spec: TrackingServerSpec,
    password: str,
    images: Images = DEFAULT_IMAGES,
    restore: RestorePlan | None = None,
) -> Obj:
    """The database pod. `password` is the database Secret's: its hash in the pod template restarts Postgres
    when the Secret is rotated, and the image's entrypoint sets the new password before serving. With
    backups, Postgres archives its WAL (barman-cloud-wal-archive, with the store's keys in its env); with
    `restore`, an init container fills the empty volume from the backups first."""
    managed = spec.database.managed
    if managed is None:
        raise ValueError("get_postgres_statefulset needs spec.database.managed")
    names = Names(name)
    match = selector(name, COMPONENT_POSTGRES)
    tmp, tmp_mount = tmp_volume()
    location = backup_location(name, namespace, spec)
    args = [arg for key, value in postgres_parameters(spec, location).items() for arg in ("-c", f"{key}={value}")]
    retention = "Delete" if spec.deletion_policy == "Delete" else "Retain"
    claim: Obj = {
        "metadata": {"name": "data", "labels": labels(name, COMPONENT_POSTGRES)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": managed.storage_size}}},
    }
    if managed.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage_class_name
    container: Obj = {
        "name": "postgres",
        "image": postgres_image(spec, images),
        "args": args,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
        "env": [
            secret_env("POSTGRES_USER", names.database_secret, "username"),
            secret_env("POSTGRES_PASSWORD", names.database_secret, "password"),
            {"name": "POSTGRES_DB", "value": DATABASE_NAME},
            {"name": "PGDATA", "value": PGDATA},
            *(s3_env(location.store) if location is not None else []),
        ],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", DATABASE_USER, "-d", DATABASE_NAME]},
            "periodSeconds": 2,  # clients reach a restarted Postgres once it is ready: soon, and cheaply
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "exec": {"command": ["pg_isready", "-U", DATABASE_USER, "-d", DATABASE_NAME]},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": resources(managed.resources, POSTGRES_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            tmp_mount,
            {"name": "run", "mountPath": "/var/run/postgresql"},
        ],
    }
    pod: Obj = {
        "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
        "securityContext": pod_security_context(POSTGRES_UID),
        "terminationGracePeriodSeconds": 60,  # a clean shutdown checkpoints instead of recovering
        "containers": [container],
        "volumes": [tmp, {"name": "run", "emptyDir": {}}],
    }
    if restore is not None:
        pod["initContainers"] = [restore_init_container(name, restore, container["image"], container)]
        pod["volumes"].append(script_volume(name)[0])
    return workload(
        "StatefulSet",
        metadata(names.postgres, namespace, labels(name, COMPONENT_POSTGRES)),
        {
            "serviceName": names.postgres,
            "replicas": 1,
            "selector": {"matchLabels": match},
            # The data volume outlives the TrackingServer unless the user asked for Delete.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
            "template": {
                "metadata": {
                    "labels": labels(name, COMPONENT_POSTGRES),
                    "annotations": {CONFIG_HASH_ANNOTATION: content_hash(password)},
                },
                "spec": pod,
            },
            "volumeClaimTemplates": [claim],
        },
        spec.pod,
    )


def get_postgres_network_policy(name: str, namespace: str, spec: TrackingServerSpec) -> Obj:
    """Only the pooler and the migration Job reach Postgres (the server too when there is no pooler), and
    the backup Jobs when there are backups."""
    allowed = (
        [COMPONENT_POOLER, COMPONENT_MIGRATION]
        if spec.database.pooler.enabled
        else [COMPONENT_SERVER, COMPONENT_MIGRATION, COMPONENT_GC]
    )
    if spec.database.managed is not None and spec.database.managed.backup is not None:
        allowed.append(COMPONENT_BACKUP)
    return network_policy(Names(name).postgres, namespace, name, COMPONENT_POSTGRES, POSTGRES_PORT, allowed)


def desired_database(
    name: str,
    namespace: str,
    spec: TrackingServerSpec,
    password: str,
    images: Images = DEFAULT_IMAGES,
    restore: RestorePlan | None = None,
) -> list[Obj]:
    """The managed database's objects, the scripts its restore or backups run before the pods that mount
    them."""
    managed = spec.database.managed
    if managed is None:
        return []
    scripts = [get_backup_configmap(name, namespace)] if managed.backup or managed.restore else []
    cronjob = get_backup_cronjob(name, namespace, spec, images)
    return [
        *scripts,
        get_postgres_service(name, namespace),
        get_postgres_client_service(name, namespace),
        get_postgres_statefulset(name, namespace, spec, password, images, restore),
        get_postgres_network_policy(name, namespace, spec),
        *([cronjob] if cronjob is not None else []),
    ]
