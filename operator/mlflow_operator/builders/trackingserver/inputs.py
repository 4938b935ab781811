"""What every TrackingServer builder starts from: names, images, ports, the spec plus what the handler
resolved (TrackingServerInputs), and where the database is.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images, with_version

MLFLOW_PORT = 5000


POSTGRES_PORT = 5432


PGBOUNCER_PORT = 6432


EXPORTER_PORT = 9127


POSTGRES_UID = 999  # the postgres user of the official image


APP_UID = 10001  # the non-root user of our images


DATABASE_NAME = "mlflow"


DATABASE_USER = "mlflow"
POOLER_CLIENT_USER = "tracking-server"  # the tracking servers' login to PgBouncer (not a Postgres role)


PROMETHEUS_DIR = "/tmp/prometheus"


METRICS_PORT = 9102  # the metrics sidecar of a server with basic auth (server.metrics_sidecar)


GC_SCRIPT_DIR = "/etc/mlflow-gc"


COMPONENT_POSTGRES = "postgres"


COMPONENT_POOLER = "pgbouncer"


COMPONENT_SERVER = "tracking-server"


COMPONENT_MIGRATION = "migration"


COMPONENT_GC = "gc"


COMPONENT_BACKUP = "backup"


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


# The Jobs running the mlflow CLI (the migration, gc): not configurable.
MLFLOW_JOB_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


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
    def postgres_data(self) -> str:
        """The StatefulSet's claim of its only pod (claim template "data")."""
        return f"data-{self.postgres}-0"

    @property
    def backup(self) -> str:
        return f"{self.instance}-backup"

    @property
    def postgres_clients(self) -> str:
        return f"{self.instance}-postgres-rw"

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
    def pooler_client_secret(self) -> str:
        return f"{self.instance}-pgbouncer-client"

    @property
    def admin_secret(self) -> str:
        return f"{self.instance}-admin"

    @property
    def registry_events_secret(self) -> str:
        return f"{self.instance}-registry-events"

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
    images: Images = DEFAULT_IMAGES  # the operator-wide defaults (builders.images)
    # The tracking servers' own login to PgBouncer (a generated Secret), so that a rotated database password
    # rolls PgBouncer only. None: they log in with the database credentials.
    pooler_credentials: Credentials | None = None
    # Where the operator's registry-events receiver is (its base URL, seen from the servers); None: none runs.
    events_url: str | None = None
    # The CA (PEM) the receiver's certificate is signed by, when it serves HTTPS: the servers must trust it.
    events_ca: str | None = None

    @property
    def names(self) -> Names:
        return Names(self.name)


def mlflow_image(inputs: TrackingServerInputs, version: str) -> str:
    # spec.image pins one image for every version; otherwise the image follows the version.
    return inputs.spec.image or with_version(inputs.images.mlflow_server, version)


def get_database_endpoint(name: str, namespace: str, spec: TrackingServerSpec) -> DatabaseEndpoint:
    external = spec.database.external
    if external is not None:
        return DatabaseEndpoint(external.host, external.port, external.database, external.ssl_mode)
    host = f"{Names(name).postgres_clients}.{namespace}.svc"
    return DatabaseEndpoint(host, POSTGRES_PORT, DATABASE_NAME, "disable")


def pooler_endpoint(name: str, namespace: str, spec: TrackingServerSpec) -> tuple[str, int]:
    """Where the tracking server connects: the pooler when enabled, else the database itself."""
    if spec.database.pooler.enabled:
        return f"{Names(name).pooler}.{namespace}.svc", PGBOUNCER_PORT
    endpoint = get_database_endpoint(name, namespace, spec)
    return endpoint.host, endpoint.port


# libpq's own timeouts: a connection to a pod that is gone (a rolled PgBouncer, a restarted Postgres) gets no
# reset, and without them a pooled connection's next query waits for TCP's retransmissions (minutes) while
# the tracking request hangs. tcp_user_timeout bounds unacknowledged sends, not how long a query runs.
LIBPQ_TIMEOUTS = "connect_timeout=5&tcp_user_timeout=5000"


def postgres_uri(credentials: Credentials, host: str, port: int, database: str, ssl_mode: str) -> str:
    """A SQLAlchemy URI naming psycopg2 explicitly: SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose
    automatic server-side prepared statements break behind a transaction-mode PgBouncer older than 1.21."""
    user = quote(credentials.username, safe="")
    password = quote(credentials.password, safe="")
    path = f"{host}:{port}/{quote(database, safe='')}"
    return f"postgresql+psycopg2://{user}:{password}@{path}?sslmode={ssl_mode}&{LIBPQ_TIMEOUTS}"


def backend_uris(inputs: TrackingServerInputs) -> dict[str, str]:
    endpoint = get_database_endpoint(inputs.name, inputs.namespace, inputs.spec)
    host, port = pooler_endpoint(inputs.name, inputs.namespace, inputs.spec)
    # PgBouncer terminates the client connection inside the cluster; it speaks TLS to the server itself.
    pooled_ssl = "disable" if inputs.spec.database.pooler.enabled else endpoint.ssl_mode
    credentials = inputs.database_credentials
    return {
        "pooled-uri": postgres_uri(pooled_login(inputs), host, port, endpoint.database, pooled_ssl),
        "direct-uri": postgres_uri(credentials, endpoint.host, endpoint.port, endpoint.database, endpoint.ssl_mode),
    }


def pooled_login(inputs: TrackingServerInputs) -> Credentials:
    """The credentials in the pooled URI: the servers' own PgBouncer login when there is one."""
    if inputs.spec.database.pooler.enabled and inputs.pooler_credentials is not None:
        return inputs.pooler_credentials
    return inputs.database_credentials


# Where the operator reaches a TrackingServer's registry when it cannot use the Service's URL: an operator run
# outside the cluster (development, `make run` against a remote cluster) does not resolve cluster DNS names.
REGISTRY_URL_ANNOTATION = "mlflow.operator.dev/registry-url"


def tracking_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{MLFLOW_PORT}"
