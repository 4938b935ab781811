"""Every object a TrackingServer produces, as pure functions of its spec.

`get_*` functions each build one object; `desired_*` functions list what to apply for one stage of the
reconcile (database, pooler, server). The handler adds owner references and applies them. Secrets whose
content is generated (database and admin passwords) are built here but created once by the handler and
never overwritten.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

from mlflow_operator.api.trackingserver import Auth, TrackingServerSpec
from mlflow_operator.builders.common import (
    CONFIG_HASH_ANNOTATION,
    Obj,
    container_security_context,
    labels,
    literal_env,
    metadata,
    pod_disruption_budget,
    pod_security_context,
    resources,
    secret_env,
    selector,
    tmp_volume,
    topology_spread,
)
from mlflow_operator.builders.config import (
    GC_SCRIPT,
    PgBouncerConfig,
    content_hash,
    gc_script,
    render_pgbouncer_ini,
    userlist_line,
)

MLFLOW_IMAGE = "ghcr.io/mlflow-operator/mlflow-server:{version}"
POSTGRES_IMAGE = "docker.io/library/postgres:{version}"
# PgBouncer 1.24 (Debian trixie, images/pgbouncer): protocol-level prepared statements behind a transaction pool.
PGBOUNCER_IMAGE = "ghcr.io/mlflow-operator/pgbouncer:1.24"
PGBOUNCER_EXPORTER_IMAGE = "quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2"
MLFLOW_PORT = 5000
POSTGRES_PORT = 5432
PGBOUNCER_PORT = 6432
EXPORTER_PORT = 9127
POSTGRES_UID = 999  # the postgres user of the official image
APP_UID = 10001  # the non-root user of our images
DATABASE_NAME = "mlflow"
DATABASE_USER = "mlflow"
PROMETHEUS_DIR = "/tmp/prometheus"
GC_SCRIPT_DIR = "/etc/mlflow-gc"

COMPONENT_POSTGRES = "postgres"
COMPONENT_POOLER = "pgbouncer"
COMPONENT_SERVER = "tracking-server"
COMPONENT_MIGRATION = "migration"
COMPONENT_GC = "gc"

# Postgres settings for MLflow's workload: many short transactions from pooled connections.
# Users override any of them with spec.database.managed.parameters.
POSTGRES_DEFAULT_PARAMETERS = {
    "shared_buffers": "256MB",
    "effective_cache_size": "768MB",
    "work_mem": "8MB",
    "maintenance_work_mem": "64MB",
    "wal_compression": "on",
    "checkpoint_completion_target": "0.9",
    "random_page_cost": "1.1",
    "idle_in_transaction_session_timeout": "300000",
}

# Defaults of containers whose spec gives no resources.
SERVER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
POSTGRES_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
POOLER_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class Names:
    """Names of everything a TrackingServer creates, in one place."""

    instance: str

    @property
    def server(self) -> str:
        return self.instance

    @property
    def postgres(self) -> str:
        return f"{self.instance}-postgres"

    @property
    def database_secret(self) -> str:
        return f"{self.instance}-db"

    @property
    def backend_secret(self) -> str:
        return f"{self.instance}-backend"

    @property
    def pooler(self) -> str:
        return f"{self.instance}-pgbouncer"

    @property
    def pooler_auth(self) -> str:
        return f"{self.instance}-pgbouncer-auth"

    @property
    def admin_secret(self) -> str:
        return f"{self.instance}-admin"

    @property
    def auth_config(self) -> str:
        return f"{self.instance}-auth-config"

    @property
    def gc(self) -> str:
        return f"{self.instance}-gc"

    def migration(self, version: str) -> str:
        return f"{self.instance}-migrate-{version.replace('.', '-')}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class DatabaseEndpoint:
    """Where Postgres is, seen from inside the cluster."""

    host: str
    port: int
    database: str
    ssl_mode: str


@dataclass(frozen=True)
class TrackingServerInputs:
    """The spec plus what the handler resolved from the cluster."""

    name: str
    namespace: str
    spec: TrackingServerSpec
    serving_version: str
    database_credentials: Credentials
    admin_credentials: Credentials | None = None

    @property
    def names(self) -> Names:
        return Names(self.name)


def mlflow_image(spec: TrackingServerSpec, version: str) -> str:
    # spec.image pins one image for every version; otherwise the image follows the version.
    return spec.image or MLFLOW_IMAGE.format(version=version)


def get_database_endpoint(name: str, namespace: str, spec: TrackingServerSpec) -> DatabaseEndpoint:
    external = spec.database.external
    if external is not None:
        return DatabaseEndpoint(external.host, external.port, external.database, external.ssl_mode)
    host = f"{Names(name).postgres}.{namespace}.svc"
    return DatabaseEndpoint(host, POSTGRES_PORT, DATABASE_NAME, "disable")


def pooler_endpoint(name: str, namespace: str, spec: TrackingServerSpec) -> tuple[str, int]:
    """Where the tracking server connects: the pooler when enabled, else the database itself."""
    if spec.database.pooler.enabled:
        return f"{Names(name).pooler}.{namespace}.svc", PGBOUNCER_PORT
    endpoint = get_database_endpoint(name, namespace, spec)
    return endpoint.host, endpoint.port


def postgres_uri(credentials: Credentials, host: str, port: int, database: str, ssl_mode: str) -> str:
    """A SQLAlchemy URI naming psycopg2 explicitly: SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose
    automatic server-side prepared statements break behind a transaction-mode PgBouncer older than 1.21."""
    user = quote(credentials.username, safe="")
    password = quote(credentials.password, safe="")
    return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{quote(database, safe='')}?sslmode={ssl_mode}"


def backend_uris(inputs: TrackingServerInputs) -> dict[str, str]:
    endpoint = get_database_endpoint(inputs.name, inputs.namespace, inputs.spec)
    host, port = pooler_endpoint(inputs.name, inputs.namespace, inputs.spec)
    # PgBouncer terminates the client connection inside the cluster; it speaks TLS to the server itself.
    pooled_ssl = "disable" if inputs.spec.database.pooler.enabled else endpoint.ssl_mode
    credentials = inputs.database_credentials
    return {
        "pooled-uri": postgres_uri(credentials, host, port, endpoint.database, pooled_ssl),
        "direct-uri": postgres_uri(credentials, endpoint.host, endpoint.port, endpoint.database, endpoint.ssl_mode),
    }


# ---------------------------------------------------------------------------------------------- secrets


def _secret(name: str, namespace: str, component: str, instance: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, namespace, labels(instance, component)),
        "type": "Opaque",
        "stringData": data,
    }


def get_database_secret(name: str, namespace: str, password: str) -> Obj:
    """The managed database's credentials: created once, never overwritten, retained by default."""
    return _secret(
        Names(name).database_secret,
        namespace,
        COMPONENT_POSTGRES,
        name,
        {"username": DATABASE_USER, "password": password},
    )


def admin_secret_name(name: str, auth: Auth) -> str:
    """The Secret holding the MLflow admin credentials: the user's (auth.adminSecret) or the generated one."""
    return auth.admin_secret.name if auth.admin_secret else Names(name).admin_secret


def get_admin_secret(name: str, namespace: str, password: str) -> Obj:
    """Generated MLflow admin credentials for basic auth: created once, never overwritten."""
    return _secret(
        Names(name).admin_secret, namespace, COMPONENT_SERVER, name, {"username": "admin", "password": password}
    )


def get_backend_secret(inputs: TrackingServerInputs) -> Obj:
    return _secret(inputs.names.backend_secret, inputs.namespace, COMPONENT_SERVER, inputs.name, backend_uris(inputs))


def get_pooler_auth_secret(inputs: TrackingServerInputs) -> Obj:
    credentials = inputs.database_credentials
    user, password = quote(credentials.username, safe=""), quote(credentials.password, safe="")
    exporter = f"postgres://{user}:{password}@127.0.0.1:{PGBOUNCER_PORT}/pgbouncer?sslmode=disable"
    return _secret(
        inputs.names.pooler_auth,
        inputs.namespace,
        COMPONENT_POOLER,
        inputs.name,
        {
            "userlist.txt": userlist_line(credentials.username, credentials.password),
            "exporter-connection-string": exporter,
        },
    )


def render_auth_config(inputs: TrackingServerInputs) -> str:
    """basic_auth.ini for MLflow's basic-auth app; its users live in the same Postgres."""
    admin = inputs.admin_credentials
    if admin is None:
        raise ValueError("auth is enabled but no admin credentials were resolved")
    for value in (admin.username, admin.password):
        # configparser (which MLflow uses) splits on newlines and strips values: refuse what would not
        # survive instead of writing a config that authenticates with a different password.
        if "\n" in value or "\r" in value:
            raise ValueError("admin credentials cannot contain newlines")
        if value != value.strip() or not value:
            raise ValueError("admin credentials cannot be empty or start or end with whitespace")
    # MLflow reads the file with configparser's default interpolation, where a lone % is an error
    # ("'%' must be followed by '%' or '('") and the URI percent-encodes the database password: double it.
    database_uri, username, password = (
        value.replace("%", "%%") for value in (backend_uris(inputs)["pooled-uri"], admin.username, admin.password)
    )
    lines = [
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = {database_uri}",
        f"admin_username = {username}",
        f"admin_password = {password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # Every basic-authenticated request otherwise verifies the password hash (scrypt, tens of ms of CPU):
        # with 200 concurrent clients on the real node, 600 requests took 87-120 s on 4 sync workers.
        f"auth_cache_ttl_seconds = {inputs.spec.auth.credential_cache_seconds if inputs.spec.auth else 0}",
    ]
    return "\n".join(lines) + "\n"


def flask_secret_key(admin: Credentials) -> str:
    """MLFLOW_FLASK_SERVER_SECRET_KEY, which `mlflow server --app-name basic-auth` refuses to start without
    (it signs CSRF tokens, so every worker and replica needs the same one). Derived from the admin password
    with HMAC: stable across reconciles without storing another generated secret, unguessable without it."""
    return hmac.new(admin.password.encode(), b"mlflow-operator/flask-secret-key", hashlib.sha256).hexdigest()


def get_auth_config_secret(inputs: TrackingServerInputs) -> Obj:
    data = {"basic_auth.ini": render_auth_config(inputs)}
    if inputs.admin_credentials is not None:  # render_auth_config has refused it otherwise
        data["flask-secret-key"] = flask_secret_key(inputs.admin_credentials)
    return _secret(inputs.names.auth_config, inputs.namespace, COMPONENT_SERVER, inputs.name, data)


# --------------------------------------------------------------------------------------------- postgres


def postgres_parameters(spec: TrackingServerSpec) -> dict[str, str]:
    """Defaults tuned for MLflow, max_connections sized for every pooler replica, user overrides last."""
    pooler = spec.database.pooler
    reserve = 20  # migrations, gc, superuser sessions
    max_connections = max(100, pooler.replicas * pooler.max_db_connections + reserve) if pooler.enabled else 200
    parameters = {**POSTGRES_DEFAULT_PARAMETERS, "max_connections": str(max_connections)}
    managed = spec.database.managed
    if managed is not None and managed.parameters:
        parameters.update(managed.parameters)
    return dict(sorted(parameters.items()))


def get_postgres_service(name: str, namespace: str) -> Obj:
    names = Names(name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(names.postgres, namespace, labels(name, COMPONENT_POSTGRES)),
        "spec": {
            "clusterIP": "None",  # headless: the StatefulSet's stable network identity
            "selector": selector(name, COMPONENT_POSTGRES),
            "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres"}],
        },
    }


def get_postgres_statefulset(name: str, namespace: str, spec: TrackingServerSpec) -> Obj:
    managed = spec.database.managed
    if managed is None:
        raise ValueError("get_postgres_statefulset needs spec.database.managed")
    names = Names(name)
    match = selector(name, COMPONENT_POSTGRES)
    tmp, tmp_mount = tmp_volume()
    args = [arg for key, value in postgres_parameters(spec).items() for arg in ("-c", f"{key}={value}")]
    retention = "Delete" if spec.deletion_policy == "Delete" else "Retain"
    claim: Obj = {
        "metadata": {"name": "data", "labels": labels(name, COMPONENT_POSTGRES)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": managed.storage_size}}},
    }
    if managed.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage_class_name
    container = {
        "name": "postgres",
        "image": managed.image or POSTGRES_IMAGE.format(version=managed.version),
        "args": args,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
        "env": [
            secret_env("POSTGRES_USER", names.database_secret, "username"),
            secret_env("POSTGRES_PASSWORD", names.database_secret, "password"),
            {"name": "POSTGRES_DB", "value": DATABASE_NAME},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", DATABASE_USER, "-d", DATABASE_NAME]},
            "periodSeconds": 5,
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
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            tmp_mount,
            {"name": "run", "mountPath": "/var/run/postgresql"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(names.postgres, namespace, labels(name, COMPONENT_POSTGRES)),
        "spec": {
            "serviceName": names.postgres,
            "replicas": 1,
            "selector": {"matchLabels": match},
            # The data volume outlives the TrackingServer unless the user asked for Delete.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels(name, COMPONENT_POSTGRES)},
                "spec": {
                    "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
                    "securityContext": pod_security_context(POSTGRES_UID),
                    "terminationGracePeriodSeconds": 60,  # a clean shutdown checkpoints instead of recovering
                    "containers": [container],
                    "volumes": [tmp, {"name": "run", "emptyDir": {}}],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }


def _network_policy(
    name: str, namespace: str, instance: str, component: str, port: int, allowed_components: list[str]
) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, namespace, labels(instance, component)),
        "spec": {
            "podSelector": {"matchLabels": selector(instance, component)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector(instance, allowed)}} for allowed in allowed_components
                    ],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def get_postgres_network_policy(name: str, namespace: str, spec: TrackingServerSpec) -> Obj:
    """Only the pooler and the migration Job reach Postgres (the server too when there is no pooler)."""
    allowed = (
        [COMPONENT_POOLER, COMPONENT_MIGRATION]
        if spec.database.pooler.enabled
        else [COMPONENT_SERVER, COMPONENT_MIGRATION, COMPONENT_GC]
    )
    return _network_policy(Names(name).postgres, namespace, name, COMPONENT_POSTGRES, POSTGRES_PORT, allowed)


def desired_database(name: str, namespace: str, spec: TrackingServerSpec) -> list[Obj]:
    if spec.database.managed is None:
        return []
    return [
        get_postgres_service(name, namespace),
        get_postgres_statefulset(name, namespace, spec),
        get_postgres_network_policy(name, namespace, spec),
    ]


# --------------------------------------------------------------------------------------------- pgbouncer


def pgbouncer_settings(
    spec: TrackingServerSpec, auth_file: str, listen_addr: str, listen_port: int, ssl_mode: str, stats_user: str
) -> dict[str, object]:
    pooler = spec.database.pooler
    settings: dict[str, object] = {
        "listen_addr": listen_addr,
        "listen_port": listen_port,
        "unix_socket_dir": "",  # read-only root filesystem; TCP only
        "auth_type": "scram-sha-256",
        "auth_file": auth_file,
        "pool_mode": pooler.mode,
        "default_pool_size": pooler.default_pool_size,
        "max_client_conn": pooler.max_client_conn,
        "max_db_connections": pooler.max_db_connections,
        # Clients that queue longer than this get an error instead of hanging forever.
        "query_wait_timeout": 120,
        "server_idle_timeout": 600,
        "server_lifetime": 3600,
        "ignore_startup_parameters": "extra_float_digits",
        "stats_users": stats_user,
        "logfile": "",
        "pidfile": "",
        "server_tls_sslmode": ssl_mode,
    }
    if pooler.mode == "session":
        settings["server_reset_query"] = "DISCARD ALL"
    return settings


def get_pgbouncer_config(inputs: TrackingServerInputs) -> PgBouncerConfig:
    endpoint = get_database_endpoint(inputs.name, inputs.namespace, inputs.spec)
    settings = pgbouncer_settings(
        inputs.spec,
        "/etc/pgbouncer/auth/userlist.txt",
        "0.0.0.0",
        PGBOUNCER_PORT,
        endpoint.ssl_mode,
        inputs.database_credentials.username,
    )
    return PgBouncerConfig(
        database=endpoint.database, server_host=endpoint.host, server_port=endpoint.port, settings=settings
    )


def get_pgbouncer_configmap(inputs: TrackingServerInputs) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inputs.names.pooler, inputs.namespace, labels(inputs.name, COMPONENT_POOLER)),
        "data": {"pgbouncer.ini": render_pgbouncer_ini(get_pgbouncer_config(inputs))},
    }


def get_pgbouncer_deployment(inputs: TrackingServerInputs) -> Obj:
    name, namespace, spec = inputs.name, inputs.namespace, inputs.spec
    names = inputs.names
    pooler = spec.database.pooler
    match = selector(name, COMPONENT_POOLER)
    ini = render_pgbouncer_ini(get_pgbouncer_config(inputs))
    auth = get_pooler_auth_secret(inputs)["stringData"]["userlist.txt"]
    containers = [
        {
            "name": "pgbouncer",
            "image": PGBOUNCER_IMAGE,
            "args": ["/etc/pgbouncer/pgbouncer.ini"],
            "ports": [{"name": "pgbouncer", "containerPort": PGBOUNCER_PORT}],
            "readinessProbe": {"tcpSocket": {"port": "pgbouncer"}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": "pgbouncer"}, "periodSeconds": 20, "failureThreshold": 6},
            # PgBouncer stops accepting new clients on SIGINT and lets running transactions finish.
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            "resources": resources(pooler.resources, POOLER_RESOURCES),
            "securityContext": container_security_context(),
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/pgbouncer", "readOnly": True},
                {"name": "auth", "mountPath": "/etc/pgbouncer/auth", "readOnly": True},
            ],
        }
    ]
    if spec.metrics is None or spec.metrics.enabled:
        containers.append(
            {
                "name": "exporter",
                "image": PGBOUNCER_EXPORTER_IMAGE,
                # The connection string carries the password: it comes from the pooler's Secret, not the spec.
                "env": [
                    secret_env("PGBOUNCER_EXPORTER_CONNECTION_STRING", names.pooler_auth, "exporter-connection-string")
                ],
                "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
                # TCP only: an HTTP scrape would query PgBouncer on every probe.
                "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10},
                "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 20, "failureThreshold": 6},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": container_security_context(),
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(names.pooler, namespace, labels(name, COMPONENT_POOLER)),
        "spec": {
            "replicas": pooler.replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {
                    "labels": labels(name, COMPONENT_POOLER),
                    "annotations": {CONFIG_HASH_ANNOTATION: content_hash(ini, auth)},
                },
                "spec": {
                    "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
                    "securityContext": pod_security_context(APP_UID),
                    "terminationGracePeriodSeconds": 60,
                    "topologySpreadConstraints": topology_spread(match),
                    "containers": containers,
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.pooler}},
                        {"name": "auth", "secret": {"secretName": names.pooler_auth}},
                    ],
                },
            },
        },
    }


def get_pgbouncer_service(name: str, namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(Names(name).pooler, namespace, labels(name, COMPONENT_POOLER)),
        "spec": {
            "selector": selector(name, COMPONENT_POOLER),
            "ports": [{"name": "pgbouncer", "port": PGBOUNCER_PORT, "targetPort": "pgbouncer"}],
        },
    }


def get_pgbouncer_network_policy(name: str, namespace: str) -> Obj:
    """Only the tracking server (and its gc job) reach the pooler."""
    return _network_policy(
        Names(name).pooler, namespace, name, COMPONENT_POOLER, PGBOUNCER_PORT, [COMPONENT_SERVER, COMPONENT_GC]
    )


def desired_pooler(inputs: TrackingServerInputs) -> list[Obj]:
    if not inputs.spec.database.pooler.enabled:
        return []
    name, namespace = inputs.name, inputs.namespace
    return [
        get_pooler_auth_secret(inputs),
        get_pgbouncer_configmap(inputs),
        get_pgbouncer_deployment(inputs),
        get_pgbouncer_service(name, namespace),
        pod_disruption_budget(
            inputs.names.pooler, namespace, labels(name, COMPONENT_POOLER), selector(name, COMPONENT_POOLER)
        ),
        get_pgbouncer_network_policy(name, namespace),
    ]


# ----------------------------------------------------------------------------------------------- migration


def get_migration_job(inputs: TrackingServerInputs, version: str) -> Obj:
    """`mlflow db upgrade`, once per version, straight to Postgres: a transaction-mode pooler would break
    the migration's session state, and running it in every pod's init container races and crash-loops."""
    names = inputs.names
    tmp, tmp_mount = tmp_volume()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            names.migration(version),
            inputs.namespace,
            labels(inputs.name, COMPONENT_MIGRATION),
            annotations={"mlflow.operator.dev/mlflow-version": version},
        ),
        "spec": {
            "backoffLimit": 4,  # Kubernetes retries with exponential backoff (10 s, 20 s, 40 s, ...)
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": labels(inputs.name, COMPONENT_MIGRATION)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
                    "securityContext": pod_security_context(APP_UID),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": mlflow_image(inputs.spec, version),
                            "command": ["mlflow", "db", "upgrade", "$(MLFLOW_DIRECT_URI)"],
                            "env": [secret_env("MLFLOW_DIRECT_URI", names.backend_secret, "direct-uri")],
                            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                            "securityContext": container_security_context(),
                            "volumeMounts": [tmp_mount],
                        }
                    ],
                    "volumes": [tmp],
                },
            },
        },
    }


# ---------------------------------------------------------------------------------------- tracking server


def allowed_hosts(name: str, namespace: str, spec: TrackingServerSpec) -> list[str]:
    """Host headers MLflow's security middleware accepts. Setting allowed hosts replaces its defaults
    (localhost and private IPs), so list those too: probes and scrapes use the pod IP."""
    hosts = [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]
    if spec.ingress is not None and spec.ingress.enabled and spec.ingress.host:
        hosts.append(spec.ingress.host)
    with_ports = [pattern for host in hosts for pattern in (host, f"{host}:*")]
    private = ["10.*", "192.168.*", *[f"172.{octet}.*" for octet in range(16, 32)]]
    return with_ports + private


def gunicorn_options(spec: TrackingServerSpec) -> str:
    """Sync workers bound the requests in flight per worker to one: under hundreds of concurrent clients
    uvicorn's thread pool let one request hold a pooled connection while waiting for another, and the
    SQLAlchemy pool timed out (see the README's benchmark)."""
    return " ".join(
        [
            "--worker-class sync",
            f"--workers {spec.workers}",
            "--timeout 120",
            "--graceful-timeout 25",
            "--keep-alive 5",
            "--max-requests 5000",
            "--max-requests-jitter 500",
            # gunicorn >= 26 opens a control socket under $HOME by default: the root filesystem is read-only.
            "--no-control-socket",
        ]
    )


def tracking_server_args(inputs: TrackingServerInputs) -> list[str]:
    spec = inputs.spec
    s3 = spec.artifacts.s3
    destination = f"s3://{s3.bucket}/{s3.prefix}".rstrip("/")
    args = [
        "mlflow",
        "server",
        "--host",
        "0.0.0.0",
        "--port",
        str(MLFLOW_PORT),
        "--artifacts-destination",
        destination,
        "--serve-artifacts",
        "--workers",
        str(spec.workers),
        "--gunicorn-opts",
        gunicorn_options(spec),
    ]
    if spec.metrics is None or spec.metrics.enabled:
        args += ["--expose-prometheus", PROMETHEUS_DIR]
    if spec.auth is not None and spec.auth.enabled:
        args += ["--app-name", "basic-auth"]
    return args


def tracking_server_env(inputs: TrackingServerInputs) -> list[Obj]:
    spec = inputs.spec
    s3 = spec.artifacts.s3
    names = inputs.names
    env: list[Obj] = [
        # The backend URI carries the password: mlflow reads it from this variable, never from argv.
        secret_env("MLFLOW_BACKEND_STORE_URI", names.backend_secret, "pooled-uri"),
        *literal_env(
            {
                # Small pools: a sync worker serves one request at a time, and PgBouncer multiplexes the rest.
                "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "2",
                "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "2",
                # Recycle before PgBouncer's server_idle_timeout; MLflow already enables pool_pre_ping.
                "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "300",
                # MLflow 3's job runner forks several consumer processes per server: off for a tracking server.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # No usage telemetry leaves a production cluster unless the user opts in.
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "HOME": "/tmp",
                "AWS_DEFAULT_REGION": s3.region,
                # `mlflow server` refuses --allowed-hosts next to --gunicorn-opts ("only supported with the
                # default uvicorn server"), but the Flask app gunicorn serves reads this variable itself.
                "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(allowed_hosts(inputs.name, inputs.namespace, spec)),
            }
        ),
    ]
    if s3.endpoint:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": s3.endpoint})
    if s3.credentials_secret is not None:
        creds = s3.credentials_secret
        env += [
            secret_env("AWS_ACCESS_KEY_ID", creds.name, creds.access_key_id_key),
            secret_env("AWS_SECRET_ACCESS_KEY", creds.name, creds.secret_access_key_key),
        ]
    if spec.auth is not None and spec.auth.enabled:
        env += [
            {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/etc/mlflow-auth/basic_auth.ini"},
            secret_env("MLFLOW_FLASK_SERVER_SECRET_KEY", names.auth_config, "flask-secret-key"),
        ]
    return env


def server_config_hash(inputs: TrackingServerInputs) -> str:
    """Changes when anything the pods read at start-up changes (URIs, auth config), rolling them."""
    parts = [*backend_uris(inputs).values()]
    if inputs.admin_credentials is not None and inputs.spec.auth is not None and inputs.spec.auth.enabled:
        parts.append(render_auth_config(inputs))
    return content_hash(*parts)


def get_service_account(inputs: TrackingServerInputs) -> Obj:
    annotations = inputs.spec.artifacts.s3.service_account_annotations or {}
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            inputs.names.server,
            inputs.namespace,
            labels(inputs.name, COMPONENT_SERVER),
            annotations=dict(sorted(annotations.items())),
        ),
        "automountServiceAccountToken": False,
    }


def get_tracking_deployment(inputs: TrackingServerInputs) -> Obj:
    spec, names = inputs.spec, inputs.names
    match = selector(inputs.name, COMPONENT_SERVER)
    tmp, tmp_mount = tmp_volume()
    volumes, mounts = [tmp], [tmp_mount]
    if spec.auth is not None and spec.auth.enabled:
        volumes.append({"name": "auth", "secret": {"secretName": names.auth_config}})
        mounts.append({"name": "auth", "mountPath": "/etc/mlflow-auth", "readOnly": True})
    annotations = {CONFIG_HASH_ANNOTATION: server_config_hash(inputs)}
    auth_enabled = spec.auth is not None and spec.auth.enabled
    # With basic auth, MLflow protects /metrics too (only /health and static files are open), so an
    # anonymous annotation-based scrape would only collect 401s: scrape with the admin credentials instead.
    if (spec.metrics is None or spec.metrics.enabled) and not auth_enabled:
        annotations.update(
            {"prometheus.io/scrape": "true", "prometheus.io/port": str(MLFLOW_PORT), "prometheus.io/path": "/metrics"}
        )
    container = {
        "name": "mlflow",
        "image": mlflow_image(spec, inputs.serving_version),
        "command": tracking_server_args(inputs),
        "env": tracking_server_env(inputs),
        "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
        # Sync workers answer /health only after the requests queued before it: under a burst of clients an
        # HTTP readiness probe timed out on every pod at once, the Service lost all its endpoints and every
        # client got "connection refused" (200 concurrent clients on the real node). The open listening
        # socket is what readiness needs (MLflow's /health checks nothing more, and gunicorn itself replaces
        # hung workers after --timeout); liveness waits minutes before restarting an overloaded server.
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 20,
            "timeoutSeconds": 10,
            "failureThreshold": 9,
        },
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5, "failureThreshold": 60},
        # Let endpoints drop the pod before gunicorn stops accepting requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "resources": resources(spec.resources, SERVER_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            names.server,
            inputs.namespace,
            labels(inputs.name, COMPONENT_SERVER),
            annotations={"mlflow.operator.dev/mlflow-version": inputs.serving_version},
        ),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": match},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(inputs.name, COMPONENT_SERVER), "annotations": annotations},
                "spec": {
                    "serviceAccountName": names.server,
                    # IRSA / EKS Pod Identity inject their own projected token; MLflow needs no API token.
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(APP_UID),
                    "terminationGracePeriodSeconds": 35,
                    "topologySpreadConstraints": topology_spread(match),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def get_tracking_service(name: str, namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(Names(name).server, namespace, labels(name, COMPONENT_SERVER)),
        "spec": {
            "selector": selector(name, COMPONENT_SERVER),
            "ports": [{"name": "http", "port": MLFLOW_PORT, "targetPort": "http"}],
        },
    }


# Where the operator reaches a TrackingServer's registry when it cannot use the Service's URL: an operator run
# outside the cluster (development, `make run` against a remote cluster) does not resolve cluster DNS names.
REGISTRY_URL_ANNOTATION = "mlflow.operator.dev/registry-url"


def tracking_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{MLFLOW_PORT}"


def get_ingress(inputs: TrackingServerInputs) -> Obj | None:
    ingress = inputs.spec.ingress
    if ingress is None or not ingress.enabled or not ingress.host:
        return None
    spec: Obj = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": inputs.names.server, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ],
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(inputs.names.server, inputs.namespace, labels(inputs.name, COMPONENT_SERVER)),
        "spec": spec,
    }


_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_MILLIS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def gc_older_than(duration: str) -> str:
    """A duration of the API (units in any order, repeated, milliseconds) as `mlflow gc --older-than`
    parses it: its regex takes days, hours, minutes, seconds, each at most once and in that order, and
    fails the whole run on anything else (30m1h, 1d12h30m0s1s or 500ms made every gc Job fail)."""
    total = sum(int(number) * _MILLIS[unit] for number, unit in _DURATION_PART.findall(duration))
    days, rest = divmod(total, _MILLIS["d"])
    hours, rest = divmod(rest, _MILLIS["h"])
    minutes, millis = divmod(rest, _MILLIS["m"])
    seconds = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = "".join(f"{value}{unit}" for value, unit in parts if value)
    return text + f"{seconds}s" if millis or not text else text


def get_gc_configmap(inputs: TrackingServerInputs) -> Obj | None:
    """The gc Job's script (builders/templates/safe_gc.py): the mlflow-server image has mlflow, not the
    operator, so the script travels in a ConfigMap."""
    if inputs.spec.retention is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inputs.names.gc, inputs.namespace, labels(inputs.name, COMPONENT_GC)),
        "data": {GC_SCRIPT: gc_script()},
    }


def gc_command(older_than: str) -> list[str]:
    """The image's python running the mounted script. The backend URI stays in the env: on the command line
    its password would show in the pod spec's expansion and the process list."""
    return ["python", f"{GC_SCRIPT_DIR}/{GC_SCRIPT}", "--older-than", gc_older_than(older_than)]


def get_gc_cronjob(inputs: TrackingServerInputs) -> Obj | None:
    """`mlflow gc` of what was deleted long enough ago, except what a registered model version needs (see
    templates/safe_gc.py); MLFLOW_TRACKING_URI makes it delete artifacts through the server's proxy."""
    retention = inputs.spec.retention
    if retention is None:
        return None
    names = inputs.names
    tmp, tmp_mount = tmp_volume()
    env = [
        secret_env("MLFLOW_BACKEND_STORE_URI", names.backend_secret, "pooled-uri"),
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_url(inputs.name, inputs.namespace)},
        # As for the server: no usage telemetry leaves the cluster from the nightly Job either.
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        # MLflow's client retries a failing artifact delete 7 times with exponential backoff: about 4 minutes
        # before an unreachable bucket fails the Job. The Job retries itself (backoffLimit), so 2 are enough.
        {"name": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "value": "2"},
    ]
    if inputs.spec.auth is not None and inputs.spec.auth.enabled:
        admin = admin_secret_name(inputs.name, inputs.spec.auth)
        env += [
            secret_env("MLFLOW_TRACKING_USERNAME", admin, "username"),
            secret_env("MLFLOW_TRACKING_PASSWORD", admin, "password"),
        ]
    pod_labels = labels(inputs.name, COMPONENT_GC)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(names.gc, inputs.namespace, pod_labels),
        "spec": {
            "schedule": retention.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                # Labelled Jobs: the TrackingServer reads its gc Jobs' outcome with one label-selected list.
                "metadata": {"labels": pod_labels},
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        # No config-hash annotation: each Job's pod mounts the ConfigMap as it is when the pod
                        # starts, so a changed script reaches the next run without rolling anything.
                        "metadata": {"labels": pod_labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "securityContext": pod_security_context(APP_UID),
                            "containers": [
                                {
                                    "name": "gc",
                                    "image": mlflow_image(inputs.spec, inputs.serving_version),
                                    "command": gc_command(retention.deleted_runs_older_than),
                                    "env": env,
                                    "resources": {
                                        "requests": {"cpu": "100m", "memory": "256Mi"},
                                        "limits": {"memory": "1Gi"},
                                    },
                                    "securityContext": container_security_context(),
                                    "volumeMounts": [
                                        tmp_mount,
                                        {"name": "script", "mountPath": GC_SCRIPT_DIR, "readOnly": True},
                                    ],
                                }
                            ],
                            "volumes": [tmp, {"name": "script", "configMap": {"name": names.gc}}],
                        },
                    },
                },
            },
        },
    }


def desired_server(inputs: TrackingServerInputs) -> list[Obj]:
    """Everything the tracking server itself needs, in apply order."""
    name, namespace = inputs.name, inputs.namespace
    objects: list[Obj | None] = [get_backend_secret(inputs)]
    if inputs.spec.auth is not None and inputs.spec.auth.enabled:
        objects.append(get_auth_config_secret(inputs))
    objects += [
        get_service_account(inputs),
        get_tracking_deployment(inputs),
        get_tracking_service(name, namespace),
        pod_disruption_budget(name, namespace, labels(name, COMPONENT_SERVER), selector(name, COMPONENT_SERVER)),
        get_ingress(inputs),
        get_gc_configmap(inputs),
        get_gc_cronjob(inputs),
    ]
    return [obj for obj in objects if obj is not None]


def all_objects(inputs: TrackingServerInputs, database_password: str, admin_password: str) -> list[Obj]:
    """Every object a TrackingServer produces, in apply order (for the render CLI and golden tests).
    The generated Secrets appear with the given passwords; the operator creates them once."""
    objects: list[Obj] = []
    if inputs.spec.database.managed is not None:
        objects.append(get_database_secret(inputs.name, inputs.namespace, database_password))
    auth = inputs.spec.auth
    if auth is not None and auth.enabled and auth.admin_secret is None:
        objects.append(get_admin_secret(inputs.name, inputs.namespace, admin_password))
    objects += desired_database(inputs.name, inputs.namespace, inputs.spec)
    objects += desired_pooler(inputs)
    objects.append(get_migration_job(inputs, inputs.spec.version))
    objects += desired_server(inputs)
    return objects
