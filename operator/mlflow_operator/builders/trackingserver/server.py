"""The MLflow tracking server: its Deployment, Service, ServiceAccount, optional Ingress and budget."""

from __future__ import annotations

from urllib.parse import urlsplit

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders.common import (
    CONFIG_HASH_ANNOTATION,
    Obj,
    container_security_context,
    http_probe,
    labels,
    literal_env,
    metadata,
    pod_disruption_budget,
    pod_security_context,
    resources,
    secret_env,
    selector,
    service,
    tmp_volume,
    topology_spread,
)
from mlflow_operator.builders.config import (
    content_hash,
)
from mlflow_operator.builders.pod import service_account_annotations, workload
from mlflow_operator.builders.trackingserver.gc import get_gc_configmap, get_gc_cronjob
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_SERVER,
    METRICS_PORT,
    MLFLOW_PORT,
    PROMETHEUS_DIR,
    SERVER_RESOURCES,
    Names,
    TrackingServerInputs,
    backend_uris,
    mlflow_image,
)
from mlflow_operator.builders.trackingserver.secrets import (
    ENCRYPTION_KEY,
    EVENTS_CA_KEY,
    get_auth_config_secret,
    get_backend_secret,
    registry_events_enabled,
    render_auth_config,
)


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
    return env + registry_events_env(inputs)


# MLflow re-reads the webhooks of an event type from its database at most this often (its default is 60 s):
# a webhook registered or updated by the operator then delivers within seconds.
WEBHOOK_CACHE_SECONDS = 10


def registry_events_env(inputs: TrackingServerInputs) -> list[Obj]:
    """MLflow's webhook settings: a stable key for stored webhook secrets and, with the operator's receiver,
    delivery to it. MLflow refuses private addresses and any scheme but https by default: the receiver is a
    cluster Service, so private addresses are allowed, and the scheme is the receiver's."""
    if not registry_events_enabled(inputs.spec):
        return []
    env = [secret_env("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", inputs.names.registry_events_secret, ENCRYPTION_KEY)]
    if inputs.events_url is not None:
        scheme = urlsplit(inputs.events_url).scheme or "https"
        env += literal_env(
            {
                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": scheme,
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                "MLFLOW_WEBHOOK_CACHE_TTL": str(WEBHOOK_CACHE_SECONDS),
            }
        )
    return env


def server_config_hash(inputs: TrackingServerInputs) -> str:
    """Changes when anything the pods read at start-up changes (their URI, auth config), rolling them. Not the
    direct URI (the migration Job's): with a pooler, a rotated database password leaves the servers alone."""
    parts = [backend_uris(inputs)["pooled-uri"]]
    if trusts_events_ca(inputs):
        parts.append(inputs.events_ca or "")
    if inputs.admin_credentials is not None and inputs.spec.auth is not None and inputs.spec.auth.enabled:
        parts.append(render_auth_config(inputs))
    return content_hash(*parts)


def get_service_account(inputs: TrackingServerInputs) -> Obj:
    annotations = {
        **(inputs.spec.artifacts.s3.service_account_annotations or {}),
        **service_account_annotations(inputs.spec.pod),
    }
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


# The metrics sidecar's program: the gunicorn workers' multiprocess metrics files (what the server's own
# /metrics aggregates) served without credentials on a port of their own. MLflow's basic-auth app refuses
# /metrics to every user but an admin (it fails closed on routes without a permission check), and a scraper
# holding admin credentials could do anything: this exposes the request counters and nothing else.
METRICS_SIDECAR = """\
import os, time
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
while not os.path.isdir(path):  # the server creates it when it starts
    time.sleep(1)
registry = CollectorRegistry()
MultiProcessCollector(registry, path=path)
start_http_server(int(os.environ["METRICS_PORT"]), os.environ.get("METRICS_ADDRESS", "0.0.0.0"), registry=registry)
while True:
    time.sleep(3600)
"""


def metrics_enabled(spec: TrackingServerSpec) -> bool:
    return spec.metrics is None or spec.metrics.enabled


TRUST_DIR = "/etc/mlflow-operator/trust"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
EVENTS_CA_DIR = "/etc/mlflow-operator/registry-events"


def trusts_events_ca(inputs: TrackingServerInputs) -> bool:
    return registry_events_enabled(inputs.spec) and inputs.events_ca is not None


def trust_bundle(inputs: TrackingServerInputs, security: Obj) -> tuple[Obj, list[Obj], Obj]:
    """MLflow delivers webhooks with requests, which trusts certifi's bundle only (never SSL_CERT_FILE); the
    default image links that bundle to the system store. An init container writes the image's system store
    plus the receiver's CA into an emptyDir, mounted over the system store: S3 endpoints stay verified against
    the public roots, and the receiver against its CA. (An image whose certifi keeps its own bundle does not
    trust the receiver: its test delivery fails, reported on the RegistryEvents condition.)"""
    init = {
        "name": "trust-bundle",
        "image": mlflow_image(inputs, inputs.serving_version),
        "command": ["sh", "-c", f"cat {SYSTEM_CA_BUNDLE} {EVENTS_CA_DIR}/{EVENTS_CA_KEY} > {TRUST_DIR}/bundle.crt"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": security,
        "volumeMounts": [
            {"name": "trust", "mountPath": TRUST_DIR},
            {"name": "registry-events-ca", "mountPath": EVENTS_CA_DIR, "readOnly": True},
        ],
    }
    volumes = [
        {"name": "trust", "emptyDir": {"sizeLimit": "4Mi"}},
        {
            "name": "registry-events-ca",
            "secret": {
                "secretName": inputs.names.registry_events_secret,
                "items": [{"key": EVENTS_CA_KEY, "path": EVENTS_CA_KEY}],
            },
        },
    ]
    mount = {"name": "trust", "mountPath": SYSTEM_CA_BUNDLE, "subPath": "bundle.crt", "readOnly": True}
    return init, volumes, mount


def auth_enabled(spec: TrackingServerSpec) -> bool:
    return spec.auth is not None and spec.auth.enabled


def metrics_sidecar(inputs: TrackingServerInputs, tmp_mount: Obj) -> Obj:
    """Serves the server's metrics where a scrape needs no credentials (METRICS_SIDECAR)."""
    return {
        "name": "metrics",
        "image": mlflow_image(inputs, inputs.serving_version),
        "command": ["python", "-c", METRICS_SIDECAR],
        "env": literal_env({"PROMETHEUS_MULTIPROC_DIR": PROMETHEUS_DIR, "METRICS_PORT": str(METRICS_PORT)}),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{**tmp_mount, "readOnly": True}],
    }


def scrape_annotations(spec: TrackingServerSpec) -> dict[str, str]:
    """Where Prometheus finds the server's metrics: /metrics itself, or the sidecar's port with auth."""
    if not metrics_enabled(spec):
        return {}
    port = METRICS_PORT if auth_enabled(spec) else MLFLOW_PORT
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def get_tracking_deployment(inputs: TrackingServerInputs) -> Obj:
    spec, names = inputs.spec, inputs.names
    match = selector(inputs.name, COMPONENT_SERVER)
    tmp, tmp_mount = tmp_volume()
    volumes, mounts = [tmp], [tmp_mount]
    if spec.auth is not None and spec.auth.enabled:
        volumes.append({"name": "auth", "secret": {"secretName": names.auth_config}})
        mounts.append({"name": "auth", "mountPath": "/etc/mlflow-auth", "readOnly": True})
    annotations = {CONFIG_HASH_ANNOTATION: server_config_hash(inputs), **scrape_annotations(spec)}
    init_containers: list[Obj] = []
    if trusts_events_ca(inputs):
        init, trust_volumes, trust_mount = trust_bundle(inputs, container_security_context())
        init_containers, volumes, mounts = [init], volumes + trust_volumes, [*mounts, trust_mount]
    container = {
        "name": "mlflow",
        "image": mlflow_image(inputs, inputs.serving_version),
        "command": tracking_server_args(inputs),
        "env": tracking_server_env(inputs),
        "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
        # Sync workers answer /health only after the requests queued before it: under a burst of clients an
        # HTTP readiness probe timed out on every pod at once, the Service lost all its endpoints and every
        # client got "connection refused" (200 concurrent clients on the real node). The open listening
        # socket is what readiness needs (MLflow's /health checks nothing more, and gunicorn itself replaces
        # hung workers after --timeout); liveness waits minutes before restarting an overloaded server.
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "livenessProbe": http_probe("/health", 20, timeout=10, failure_threshold=9),
        "startupProbe": http_probe("/health", 5, failure_threshold=60),
        # Let endpoints drop the pod before gunicorn stops accepting requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "resources": resources(spec.resources, SERVER_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    sidecars = [metrics_sidecar(inputs, tmp_mount)] if metrics_enabled(spec) and auth_enabled(spec) else []
    return workload(
        "Deployment",
        metadata(
            names.server,
            inputs.namespace,
            labels(inputs.name, COMPONENT_SERVER),
            annotations={"mlflow.operator.dev/mlflow-version": inputs.serving_version},
        ),
        {
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
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": [container, *sidecars],
                    "volumes": volumes,
                },
            },
        },
        spec.pod,
    )


def get_tracking_service(name: str, namespace: str) -> Obj:
    meta = metadata(Names(name).server, namespace, labels(name, COMPONENT_SERVER))
    return service(meta, selector(name, COMPONENT_SERVER), "http", MLFLOW_PORT)


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
