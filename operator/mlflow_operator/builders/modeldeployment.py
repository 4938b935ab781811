"""Every object a ModelDeployment produces, as pure functions of its spec and the rollout's tracks.

The handler passes the rollout's level actions (api.traffic.TrackPlan, Weights: one declaration) into
`ModelDeploymentInputs`, applies `all_objects(inputs)`, and removes the objects of versions no longer
listed (Deployments, PodDisruptionBudgets and HorizontalPodAutoscalers labelled with this instance).

Objects:
- one Deployment per model version (`NAME-v<version>`), with its PodDisruptionBudget and, with
  `autoscaling`, its HorizontalPodAutoscaler. "stable" and "canary" are roles held by the Services, not by
  the Deployments, so promoting a canary switches roles and never reloads the model;
- Services `NAME-stable` and `NAME-canary` selecting the version of each role (the canary Service selects
  the stable version when there is no canary, so the HTTPRoute's backendRefs always resolve), and the entry
  Service `NAME` for in-cluster clients: both tracks with replicaRatio (the split follows the replica
  counts), the stable only otherwise (the HTTPRoute splits);
- the router's objects (an HTTPRoute for gatewayAPI, see builders.routers);
- a ServiceAccount without an API token.

The model server: MLflow's own scoring server, not MLServer. It ships in the same MLflow release as the
tracking server (one image family, one version to reason about), serves /invocations with MLflow's input
formats and /ping, /health and /version, and MLServer's MLflow runtime is known not to install a model's
requirements, so it has no advantage there. The container runs what
`mlflow models serve -m /models --env-manager local` executes (uvicorn on MLflow's scoring app, the model
directory in `__pyfunc_model_path__`), with two differences. The app is the image's `mlflow_model_serving:app`:
MLflow's own app wrapped with Prometheus request metrics on METRICS_PORT (requests by status, latency,
prediction errors; what the built-in analysis templates query), labelled with the ModelDeployment and the
version from the environment set here, and found by scrapers through the pod's prometheus.io annotations.
And uvicorn runs as the main process: `mlflow models serve` keeps its CLI as PID 1, which exits at once on
SIGTERM, and when a container's PID 1 exits the kernel SIGKILLs the server with its in-flight requests. Run
directly, uvicorn drains them (`--timeout-graceful-shutdown`) after the preStop delay has taken the pod out of
the endpoints.

Before the server starts, two init containers run in the same image:
1. `fetch-model`: `mlflow artifacts download --artifact-uri models:/<name>/<version> --dst-path /models`,
   with MLFLOW_TRACKING_URI (and credentials) set, so the registry resolves the version and the artifacts
   come through the tracking server's artifact proxy: model pods need no bucket credentials;
2. `check-model`: loads the model with mlflow.pyfunc.load_model and predicts its input example when it has
   one. A model that cannot load (a missing library, a broken artifact) fails here, the pod never becomes
   ready and never gets traffic, and the rollout rolls the version back when the Deployment's progress
   deadline passes.

The default image is Images.model_server (images/mlflow-model-server: mlflow==3.17.2 on python:3.11-slim,
UID 10001). Models need their flavour's libraries in the image (`--env-manager local` installs nothing):
scikit-learn comes with MLflow; anything else needs a `runtime.image` built FROM it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow_operator.api.common import RegistryCredentials, duration_seconds
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import Track, TrackPlan, Weights
from mlflow_operator.builders.common import (
    Obj,
    container_security_context,
    http_probe,
    labels,
    literal_env,
    metadata,
    pod_security_context,
    resources,
    secret_env,
    selector,
    service,
    tmp_volume,
    topology_spread,
    user_env,
)
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images
from mlflow_operator.builders.pod import service_account_annotations, workload
from mlflow_operator.builders.routers import Router, RouteTarget, router_for

APP_UID = 10001  # the non-root user of our images
CREDENTIALS_REVISION_ANNOTATION = "mlflow.operator.dev/registry-credentials"
SERVER_PORT = 8080
SERVICE_PORT = 80
MODEL_DIR = "/models"
APP_NAME = "mlflow-model"
COMPONENT = "model-server"
VERSION_LABEL = "mlflow.operator.dev/model-version"
TRACK_ANNOTATION = "mlflow.operator.dev/track"

# MLflow's scoring app with request metrics (images/mlflow-model-server/mlflow_model_serving.py); like MLflow's
# own app (mlflow.pyfunc.scoring_server.app) it reads the model directory from MODEL_PATH_ENV.
SCORING_APP = "mlflow_model_serving:app"
SCORING_APP_DIR = "/opt/mlflow-operator"
MODEL_PATH_ENV = "__pyfunc_model_path__"
METRICS_PORT = 8081
# What mlflow_model_serving.py reads: its metrics port and the labels of every series it exports.
METRICS_PORT_ENV = "MODEL_SERVER_METRICS_PORT"
DEPLOYMENT_ENV, NAMESPACE_ENV, VERSION_ENV = "MODEL_DEPLOYMENT", "MODEL_DEPLOYMENT_NAMESPACE", "MODEL_VERSION"
# The de facto convention of Prometheus's kubernetes_sd example configurations (and of the local cluster's).
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
REQUEST_TIMEOUT_SECONDS = 60
PRE_STOP_SECONDS = 5
# A request admitted just before SIGTERM may run its full timeout: drain that long, so none is cut off.
GRACEFUL_SHUTDOWN_SECONDS = REQUEST_TIMEOUT_SECONDS
# A proxy in front (a Gateway, an Ingress controller, a cloud load balancer) pools idle connections to each pod
# and reuses them; when the server closes one first, a request sent on it in that instant gets a 502, and
# proxies do not retry a POST such as /invocations. uvicorn's default (5 s) is below every proxy's idle timeout
# (Traefik 90 s, AWS ALB 60 s, Google's load balancers 600 s): the server keeps idle connections longer than all.
KEEP_ALIVE_SECONDS = 620
SERVER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
FETCH_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}

# The load check, run as `python -c CHECK_MODEL_SCRIPT /models`. It predicts the input example the model was
# logged with (and its params), the same data MLflow's own serving validation uses.
CHECK_MODEL_SCRIPT = """\
import sys

import mlflow.pyfunc

path = sys.argv[1]
model = mlflow.pyfunc.load_model(path)
example = model.metadata.load_input_example(path)
if example is None:
    print("model loaded; it has no input example to try")
else:
    params = model.metadata.load_input_example_params(path)
    prediction = model.predict(example, params=params) if params else model.predict(example)
    print(f"model loaded and answered its input example: {str(prediction)[:200]}")
"""


@dataclass(frozen=True)
class Names:
    """Names of everything a ModelDeployment creates, in one place."""

    instance: str

    @property
    def entry(self) -> str:
        return self.instance

    @property
    def route(self) -> str:
        return self.instance

    @property
    def service_account(self) -> str:
        return self.instance

    @property
    def stable(self) -> str:
        return f"{self.instance}-stable"

    @property
    def canary(self) -> str:
        return f"{self.instance}-canary"

    @property
    def registry_reader(self) -> str:
        """The Secret with the model servers' own MLflow credentials (get_reader_secret)."""
        return f"{self.instance}-registry-reader"

    def service(self, track: Track) -> str:
        return self.stable if track == "stable" else self.canary

    def deployment(self, version: int) -> str:
        return f"{self.instance}-v{version}"


@dataclass(frozen=True)
class ModelDeploymentInputs:
    """The spec plus what the handler resolved: where the registry is, with which credentials, and the
    rollout's tracks and weights."""

    name: str
    namespace: str
    spec: ModelDeploymentSpec
    tracking_uri: str
    credentials: RegistryCredentials | None = None
    tracks: tuple[TrackPlan, ...] = ()
    weights: Weights = field(default_factory=Weights)
    mirror_supported: bool = True  # by the parent Gateways' class (logic.gateway_route)
    images: Images = DEFAULT_IMAGES  # the operator-wide defaults (builders.images)
    # Names the registry password the pods read (logic.registry_reader.password_revision): a new one rolls them.
    credentials_revision: str | None = None

    @property
    def names(self) -> Names:
        return Names(self.name)

    @property
    def router(self) -> Router:
        return router_for(self.spec)

    def track(self, role: Track) -> TrackPlan | None:
        return next((plan for plan in self.tracks if plan.track == role), None)

    def version_of(self, role: Track) -> int | None:
        """The version a role's Service selects: its own, else the other role's (see the module docstring)."""
        plan = self.track(role) or self.track("canary" if role == "stable" else "stable")
        return plan.version if plan else None


def pod_annotations(inputs: ModelDeploymentInputs) -> dict[str, str]:
    annotations = dict(SCRAPE_ANNOTATIONS)
    if inputs.credentials_revision:
        # Env from a Secret is read at container start: a rotated password must restart the pods.
        annotations[CREDENTIALS_REVISION_ANNOTATION] = inputs.credentials_revision
    return annotations


def model_image(inputs: ModelDeploymentInputs) -> str:
    runtime = inputs.spec.runtime
    return runtime.image if runtime is not None and runtime.image else inputs.images.model_server


def model_uri(spec: ModelDeploymentSpec, version: int) -> str:
    """The registry URI of one version; the alias is resolved by the operator, so pods of one version
    always fetch that version, whatever the alias does meanwhile."""
    return f"models:/{spec.model.registered_model}/{version}"


def total_replicas(spec: ModelDeploymentSpec) -> int:
    if spec.autoscaling is not None:
        return spec.autoscaling.min_replicas
    return 1 if spec.replicas is None else spec.replicas


def pod_labels(name: str, version: int) -> dict[str, str]:
    return {**labels(name, COMPONENT, APP_NAME), VERSION_LABEL: str(version)}


def version_selector(name: str, version: int) -> dict[str, str]:
    return {**selector(name, COMPONENT, APP_NAME), VERSION_LABEL: str(version)}


# --------------------------------------------------------------------------------------------- containers


def registry_env(inputs: ModelDeploymentInputs) -> list[Obj]:
    """Where the registry is, and the credentials from a Secret (never literal values)."""
    env: list[Obj] = [{"name": "MLFLOW_TRACKING_URI", "value": inputs.tracking_uri}]
    creds = inputs.credentials
    if creds is None:
        return env
    if creds.token_key:
        return [*env, secret_env("MLFLOW_TRACKING_TOKEN", creds.name, creds.token_key)]
    return [
        *env,
        secret_env("MLFLOW_TRACKING_USERNAME", creds.name, creds.username_key or "username"),
        secret_env("MLFLOW_TRACKING_PASSWORD", creds.name, creds.password_key or "password"),
    ]


def container_env(spec: ModelDeploymentSpec, *operator_env: Obj) -> list[Obj]:
    """The operator's variables, then runtime.env. A user variable replaces the operator's of the same name
    in place: a name listed twice would make server-side apply refuse the Deployment (env is a list-map)."""
    # HOME on the /tmp emptyDir: the root filesystem is read-only.
    defaults = [*operator_env, *literal_env({"HOME": "/tmp", "MLFLOW_DISABLE_TELEMETRY": "true"})]
    overrides = {item["name"]: item for item in user_env(spec.runtime.env if spec.runtime else None)}
    merged = [overrides.pop(item["name"], item) for item in defaults]
    return [*merged, *overrides.values()]


def _model_mount(read_only: bool) -> Obj:
    mount: Obj = {"name": "models", "mountPath": MODEL_DIR}
    if read_only:
        mount["readOnly"] = True
    return mount


def fetch_container(inputs: ModelDeploymentInputs, version: int) -> Obj:
    _, tmp_mount = tmp_volume()
    return {
        "name": "fetch-model",
        "image": model_image(inputs),
        "command": [
            "mlflow",
            "artifacts",
            "download",
            "--artifact-uri",
            model_uri(inputs.spec, version),
            "--dst-path",
            MODEL_DIR,
        ],
        "env": container_env(inputs.spec, *registry_env(inputs)),
        "resources": FETCH_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, _model_mount(read_only=False)],
    }


def check_container(inputs: ModelDeploymentInputs) -> Obj:
    _, tmp_mount = tmp_volume()
    spec = inputs.spec
    return {
        "name": "check-model",
        "image": model_image(inputs),
        "command": ["python", "-c", CHECK_MODEL_SCRIPT, MODEL_DIR],
        "env": container_env(spec),
        # Loading the model takes what serving it takes.
        "resources": resources(spec.runtime.resources if spec.runtime else None, SERVER_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, _model_mount(read_only=True)],
    }


def server_command() -> list[str]:
    return [
        "uvicorn",
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVER_PORT),
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN_SECONDS),
        "--timeout-keep-alive",
        str(KEEP_ALIVE_SECONDS),
        "--app-dir",
        SCORING_APP_DIR,
        SCORING_APP,
    ]


def server_container(inputs: ModelDeploymentInputs, version: int) -> Obj:
    _, tmp_mount = tmp_volume()
    spec = inputs.spec
    server_env = {
        MODEL_PATH_ENV: MODEL_DIR,
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_SECONDS),
        METRICS_PORT_ENV: str(METRICS_PORT),
        DEPLOYMENT_ENV: inputs.name,
        NAMESPACE_ENV: inputs.namespace,
        VERSION_ENV: str(version),
    }
    env = container_env(spec, *literal_env(server_env))
    return {
        "name": "model-server",
        "image": model_image(inputs),
        "command": server_command(),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": http_probe("/ping", 5, timeout=3),
        "livenessProbe": http_probe("/health", 20, timeout=5, failure_threshold=6),
        # Loading a large model can take minutes; liveness starts counting only once it answers.
        "startupProbe": http_probe("/ping", 5, failure_threshold=60),
        # Let endpoints and routers drop the pod before uvicorn stops accepting requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": resources(spec.runtime.resources if spec.runtime else None, SERVER_RESOURCES),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, _model_mount(read_only=True)],
    }


# ------------------------------------------------------------------------------------------------ tracks


def track_replicas(inputs: ModelDeploymentInputs, plan: TrackPlan, total: int) -> int:
    return inputs.router.replicas(total, plan.size_percent, plan.track)


def get_model_deployment(inputs: ModelDeploymentInputs, plan: TrackPlan) -> Obj:
    name, version = inputs.name, plan.version
    tmp, _ = tmp_volume()
    deployment_spec: Obj = {
        "selector": {"matchLabels": version_selector(name, version)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        # Pods whose model does not load never become ready; after spec.progressDeadline the Deployment reports
        # ProgressDeadlineExceeded, which the rollout reads as a failed version (TrackObservation.failed).
        "progressDeadlineSeconds": max(1, math.ceil(duration_seconds(inputs.spec.progress_deadline))),  # API: > 0
        "template": {
            "metadata": {"labels": pod_labels(name, version), "annotations": pod_annotations(inputs)},
            "spec": {
                "serviceAccountName": inputs.names.service_account,
                "automountServiceAccountToken": False,  # model servers never call the Kubernetes API
                "securityContext": pod_security_context(APP_UID),
                "terminationGracePeriodSeconds": PRE_STOP_SECONDS + GRACEFUL_SHUTDOWN_SECONDS + 5,
                "topologySpreadConstraints": topology_spread(version_selector(name, version)),
                "initContainers": [fetch_container(inputs, version), check_container(inputs)],
                "containers": [server_container(inputs, version)],
                "volumes": [tmp, {"name": "models", "emptyDir": {}}],
            },
        },
    }
    if get_hpa(inputs, plan) is None:
        # With an HPA the replica count is the HPA's: leaving the field out keeps server-side apply from
        # resetting it on every pass.
        deployment_spec = {"replicas": track_replicas(inputs, plan, total_replicas(inputs.spec)), **deployment_spec}
    return workload(
        "Deployment",
        metadata(
            inputs.names.deployment(version),
            inputs.namespace,
            pod_labels(name, version),
            annotations={
                TRACK_ANNOTATION: plan.track,
                "mlflow.operator.dev/model-uri": model_uri(inputs.spec, version),
            },
        ),
        deployment_spec,
        inputs.spec.pod,
    )


def get_hpa(inputs: ModelDeploymentInputs, plan: TrackPlan) -> Obj | None:
    """An HPA per version, its bounds split like the replicas (replicaRatio). None without autoscaling, or
    for a track scaled to 0 (an HPA cannot go below one replica)."""
    autoscaling = inputs.spec.autoscaling
    if autoscaling is None:
        return None
    low = track_replicas(inputs, plan, autoscaling.min_replicas)
    high = max(low, track_replicas(inputs, plan, autoscaling.max_replicas))
    if low == 0:
        return None
    target = {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization_percentage}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(
            inputs.names.deployment(plan.version), inputs.namespace, pod_labels(inputs.name, plan.version)
        ),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": inputs.names.deployment(plan.version),
            },
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def get_pod_disruption_budget(inputs: ModelDeploymentInputs, plan: TrackPlan) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            inputs.names.deployment(plan.version), inputs.namespace, pod_labels(inputs.name, plan.version)
        ),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": version_selector(inputs.name, plan.version)}},
    }


# ----------------------------------------------------------------------------------------------- services


def _service(inputs: ModelDeploymentInputs, name: str, pod_selector: dict[str, str]) -> Obj:
    meta = metadata(name, inputs.namespace, labels(inputs.name, COMPONENT, APP_NAME))
    return service(meta, pod_selector, "http", SERVICE_PORT)


def get_track_service(inputs: ModelDeploymentInputs, role: Track) -> Obj | None:
    version = inputs.version_of(role)
    if version is None:
        return None
    return _service(inputs, inputs.names.service(role), version_selector(inputs.name, version))


def get_entry_service(inputs: ModelDeploymentInputs) -> Obj | None:
    """The Service clients in the cluster call. With replicaRatio it selects every model pod of this
    ModelDeployment, so the split follows the replica counts; otherwise only the stable version."""
    version = inputs.version_of("stable")
    if version is None:
        return None
    if inputs.router.entry_selects_canary:
        return _service(inputs, inputs.names.entry, selector(inputs.name, COMPONENT, APP_NAME))
    return _service(inputs, inputs.names.entry, version_selector(inputs.name, version))


def route_target(inputs: ModelDeploymentInputs) -> RouteTarget:
    names = inputs.names
    return RouteTarget(
        name=names.route,
        namespace=inputs.namespace,
        labels=labels(inputs.name, COMPONENT, APP_NAME),
        stable_service=names.stable,
        canary_service=names.canary,
        port=SERVICE_PORT,
        mirror_supported=inputs.mirror_supported,
    )


def get_service_account(inputs: ModelDeploymentInputs) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            inputs.names.service_account,
            inputs.namespace,
            labels(inputs.name, COMPONENT, APP_NAME),
            annotations=service_account_annotations(inputs.spec.pod),
        ),
        # Model servers never call the Kubernetes API.
        "automountServiceAccountToken": False,
    }


def get_reader_secret(name: str, namespace: str, username: str, password: str) -> Obj:
    """The model servers' own MLflow credentials (logic.registry_reader): created once, owned by the
    ModelDeployment; deleting it rotates the password."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(Names(name).registry_reader, namespace, labels(name, COMPONENT, APP_NAME)),
        "type": "Opaque",
        "stringData": {"username": username, "password": password},
    }


# ------------------------------------------------------------------------------------------------ summary


def effective_weights(inputs: ModelDeploymentInputs) -> Weights:
    """The split traffic actually gets (status.canaryWeight for gatewayAPI; the replica split's effective
    weight for replicaRatio, with status.weightApproximate from `inputs.router.approximate`)."""
    total = total_replicas(inputs.spec)
    counts = {plan.track: track_replicas(inputs, plan, total) for plan in inputs.tracks}
    return inputs.router.weights(inputs.weights, counts.get("stable", 0), counts.get("canary", 0))


def all_objects(inputs: ModelDeploymentInputs) -> list[Obj]:
    """Every object, in apply order: identity, Deployments (and their budgets and autoscalers), Services,
    router. Nothing but the ServiceAccount before a version is resolved."""
    objects: list[Obj | None] = [get_service_account(inputs)]
    for plan in inputs.tracks:
        objects += [
            get_model_deployment(inputs, plan),
            get_pod_disruption_budget(inputs, plan),
            get_hpa(inputs, plan),
        ]
    objects += [get_track_service(inputs, "stable"), get_track_service(inputs, "canary"), get_entry_service(inputs)]
    if inputs.tracks:
        objects += inputs.router.objects(route_target(inputs), inputs.weights)
    return [obj for obj in objects if obj is not None]


def pruned_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) of the per-version objects the handler removes when their version is no longer
    listed (select them by the instance and component labels)."""
    return [
        ("apps/v1", "Deployment"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ]
