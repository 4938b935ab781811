#!/usr/bin/env python3
"""`make run`: the examples working on a cluster, with the operator installed by its Helm chart.

    run.py [--dir DIR] [UP_ARGS...]   # DIR: the local cluster's state directory; UP_ARGS go to
                                      # `localcluster.py up` (both ignored when KUBECONFIG is set)
    run.py [--dir DIR] --next-version # on the running platform: a retrained version of `fraud`, `champion`
                                      # moved to it (the README's canary walkthrough)

1. builds the images (hack/build-images.py: the operator's and the application images; hack/node-images.sh
   minio and prometheus: the examples' S3 server and Prometheus), cached by content, so normally a no-op;
2. without KUBECONFIG starts the local cluster with its real node (hack/localcluster.py up, idempotent),
   which imports every archive listed in $CACHE/images/*.tsv; with KUBECONFIG uses that cluster, whose
   nodes must already have the images (kind: `kind load image-archive <archive>` per manifest line);
3. installs the CRDs, the Gateway API CRDs (the example ModelDeployment routes with an HTTPRoute) and the
   operator with charts/mlflow-operator (helm upgrade --install: a second run changes nothing);
4. on the local cluster, makes namespace `default` enforce Pod Security "restricted" (so does `storage`);
   runs MinIO in namespace `storage` (Service minio:9000, keys minioadmin/minioadmin) and creates the
   examples' bucket; runs Prometheus in namespace `monitoring` (Service prometheus:9090, discovering the
   annotated model server pods through the Kubernetes API), which the example's analysis queries;
5. applies examples/, waits for TrackingServer `mlflow` Ready and RegisteredModel `fraud` Synced, seeds the
   registry (hack/seed_model.py as a Job: version 1 of `fraud`, alias champion -> 1), waits for
   ModelDeployment `fraud` Ready, and prints how to reach the UI and the model (through the local cluster's
   Gateway `mlflow-gateway`, `localcluster.py env`'s gateway= line, which the example's HTTPRoute uses).

Standard library only, like localcluster.py: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster  # the sibling module: binaries, versions, the image manifests

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
CACHE = localcluster.CACHE
CHART = ROOT / "charts" / "mlflow-operator"
OPERATOR_NAMESPACE = "mlflow-operator"
STORAGE_NAMESPACE = "storage"
MINIO_KEYS = "minioadmin"  # examples/tracking-server.yaml's Secret mlflow-artifacts-s3 holds these
BUCKET = "mlflow-artifacts"
SERVER_IMAGE = "ghcr.io/mlflow-operator/mlflow-server:3.17.2"  # python + boto3, for the bucket Job
MODEL_SERVER_IMAGE = "ghcr.io/mlflow-operator/mlflow-model-server:3.17.2"  # mlflow + scikit-learn, for the seed
IMAGE_UID = 10001
# Pod Security "restricted" enforced: every pod there (the operator's and ours) must run as non-root with no
# capabilities, or the API server refuses it.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# Cold-ish on 2 shared cores: Postgres init, the migration and two gunicorn servers take minutes.
TRACKING_TIMEOUT = "15m"
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[run {time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


class Cluster:
    """kubectl and helm against one kubeconfig."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.kubectl_binary = localcluster.binaries()["kubectl"]
        self.helm_binary = CACHE / "bin" / f"helm-{localcluster.versions()['HELM_VERSION']}" / "helm"

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return run([str(self.kubectl_binary), "--kubeconfig", str(self.kubeconfig), *args], stdin, check)

    def helm(self, *args: str) -> str:
        return run([str(self.helm_binary), "--kubeconfig", str(self.kubeconfig), *args])

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def wait(self, what: str, condition: str, timeout: str, namespace: str = "default") -> None:
        began = time.monotonic()
        self.kubectl("-n", namespace, "wait", f"--for={condition}", what, f"--timeout={timeout}")
        log(f"{what}: {condition} after {time.monotonic() - began:.1f} s")


def run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"[run] {' '.join(argv[:4])} ... failed:\n{result.stdout}{result.stderr}")
    return result.stdout


# --- images and cluster ----------------------------------------------------------------------------------


def build_images() -> None:
    began = time.monotonic()
    subprocess.run([sys.executable, str(HACK / "build-images.py"), "build"], check=True)
    subprocess.run([str(HACK / "node-images.sh"), "minio"], check=True)
    subprocess.run([str(HACK / "node-images.sh"), "prometheus"], check=True)
    log(f"images built or cached in {time.monotonic() - began:.1f} s")


def images_newer_than(workdir: Path) -> list[str]:
    """References whose archive changed after the running cluster imported its images (state.json is saved
    last by `up`): those the node would otherwise run in an old version, or not have at all."""
    state_file = workdir / "state.json"
    if not state_file.exists():
        return []
    imported_at = state_file.stat().st_mtime
    return [
        reference
        for archive, reference in localcluster.image_manifest_entries(node_only=False)
        if archive.exists() and archive.stat().st_mtime > imported_at
    ]


def local_cluster(workdir: Path, up_args: list[str]) -> tuple[Path, list[str]]:
    """The kubeconfig, and the references imported again into an already running node."""
    stale = images_newer_than(workdir) if localcluster.running(workdir) else []
    up = [sys.executable, str(HACK / "localcluster.py"), "up", "--dir", str(workdir), *up_args]
    # Its progress (stderr) shows: importing the images takes a minute; the kubeconfig is stdout's last line.
    printed = subprocess.run(up, stdout=subprocess.PIPE, text=True, check=True).stdout
    kubeconfig = Path(printed.strip().splitlines()[-1])
    if stale:
        log(f"importing rebuilt images into the running node: {', '.join(stale)}")
        subprocess.run(
            [sys.executable, str(HACK / "localcluster.py"), "load-images", "--dir", str(workdir)], check=True
        )
        (workdir / "state.json").touch()
    log(f"cluster up: {kubeconfig}")
    return kubeconfig, stale


# --- what the examples need ------------------------------------------------------------------------------


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    gateway_api = CACHE / "bin" / f"gateway-api-{localcluster.versions()['GATEWAY_API_VERSION']}"
    if not (gateway_api / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        subprocess.run([str(HACK / "build-binaries.sh"), "gateway-api"], check=True)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(gateway_api))
    for kind in ("trackingservers", "registeredmodels", "modeldeployments"):
        cluster.wait(f"crd/{kind}.mlflow.operator.dev", "condition=Established", "60s")
    cluster.wait("crd/httproutes.gateway.networking.k8s.io", "condition=Established", "60s")


def install_operator(cluster: Cluster, reimported: list[str]) -> None:
    # The image is on the node (imported or kind-loaded), never pulled: there may be no registry at all.
    # watchNamespaces stays [] (all namespaces): the examples live in `default`.
    cluster.helm(
        "upgrade", "--install", "mlflow-operator", str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "--create-namespace", "--set", "image.pullPolicy=IfNotPresent", "--set", "logFormat=text",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    if any(reference.startswith("ghcr.io/mlflow-operator/mlflow-operator:") for reference in reimported):
        # Same tag, new content (the operator's sources changed): helm sees no change, so restart the pod.
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "restart", "deployment/mlflow-operator")
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/mlflow-operator", "--timeout=5m")
        log("operator restarted on its rebuilt image")
    log("operator installed by helm and available")


def restricted_pod(
    containers: list[dict[str, Any]], volumes: list[dict[str, Any]], restart: str = "Always"
) -> dict[str, Any]:
    """A pod spec Pod Security "restricted" admits, with /tmp writable (HOME=/tmp in the Python images)."""
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for container in containers:
        container.update(imagePullPolicy="IfNotPresent", securityContext=security)
        container.setdefault("volumeMounts", []).append({"name": "tmp", "mountPath": "/tmp"})
    return {
        "restartPolicy": restart,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
    }


def minio_objects() -> list[dict[str, Any]]:
    image = f"localhost/minio:{localcluster.versions()['MINIO_VERSION']}"
    labels = {"app.kubernetes.io/name": "minio"}
    container = {
        "name": "minio",
        "image": image,
        # --certs-dir: MinIO otherwise creates ~/.minio, and the root filesystem is read-only.
        "args": ["server", "/data", "--address", ":9000", "--console-address", ":9001", "--certs-dir", "/tmp/certs"],
        "env": [
            {"name": "MINIO_ROOT_USER", "value": MINIO_KEYS},
            {"name": "MINIO_ROOT_PASSWORD", "value": MINIO_KEYS},
            {"name": "MINIO_BROWSER", "value": "off"},
            {"name": "MINIO_UPDATE", "value": "off"},
        ],
        "ports": [{"name": "s3", "containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    # emptyDir: the bucket lives as long as the pod, i.e. as long as the local cluster (a demo, not a store).
    pod = restricted_pod([container], [{"name": "data", "emptyDir": {}}])
    meta = {"name": "minio", "namespace": STORAGE_NAMESPACE, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORAGE_NAMESPACE, "labels": RESTRICTED}},
        *single_pod_service(meta, pod, "s3", 9000),
    ]


def single_pod_service(meta: dict[str, Any], pod: dict[str, Any], port_name: str, port: int) -> list[dict[str, Any]]:
    """A Deployment of one pod (replaced, not rolled: its data is an emptyDir) and its Service."""
    labels = meta["labels"]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": port_name, "port": port, "targetPort": port}]},
        },
    ]


MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_IMAGE = "localhost/prometheus:debian"
PROMETHEUS_UID = 65534  # nobody: the TSDB lives on an emptyDir
# Every pod annotated prometheus.io/scrape=true (the operator annotates its model servers) on the port and
# path of its annotations, found through the Kubernetes API. 5 s scrapes: the example's analysis measures
# rates over 30 s windows, which then hold six samples.
PROMETHEUS_CONFIG = """\
global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
- job_name: kubernetes-pods
  kubernetes_sd_configs: [{role: pod}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
  - {source_labels: [__meta_kubernetes_pod_phase], action: keep, regex: Running}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: (.+), target_label: __metrics_path__}
  - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: (.+);(\\d+)
    replacement: $1:$2
    target_label: __address__
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
"""


def prometheus_objects() -> list[dict[str, Any]]:
    """Debian's Prometheus at prometheus.monitoring.svc:9090, the address examples/model-deployment.yaml's
    analysis queries, with a ClusterRole to discover pods (kubernetes_sd) and nothing else."""
    labels = {"app.kubernetes.io/name": "prometheus"}
    meta = {"name": "prometheus", "namespace": MONITORING_NAMESPACE, "labels": labels}
    container = {
        "name": "prometheus",
        "image": PROMETHEUS_IMAGE,
        "command": [
            "/usr/bin/prometheus",
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=6h",
            "--web.listen-address=:9090",
        ],
        "ports": [{"name": "http", "containerPort": 9090}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}, "periodSeconds": 2},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    }
    volumes = [{"name": "config", "configMap": {"name": "prometheus"}}, {"name": "data", "emptyDir": {}}]
    pod = restricted_pod([container], volumes)
    # The API token for kubernetes_sd; the UID of Debian's image (no 10001 user there).
    pod.update(serviceAccountName="prometheus", automountServiceAccountToken=True)
    pod["securityContext"].update(runAsUser=PROMETHEUS_UID, runAsGroup=PROMETHEUS_UID, fsGroup=PROMETHEUS_UID)
    discovery = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING_NAMESPACE, "labels": RESTRICTED}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "prometheus-pods"},
            "rules": [discovery],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "prometheus-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "prometheus-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": MONITORING_NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"prometheus.yml": PROMETHEUS_CONFIG}},
        *single_pod_service(meta, pod, "http", 9090),
    ]


def run_prometheus(cluster: Cluster) -> None:
    cluster.apply(*prometheus_objects())
    cluster.wait("deployment/prometheus", "condition=Available", "5m", MONITORING_NAMESPACE)
    log(f"Prometheus running: prometheus.{MONITORING_NAMESPACE}.svc:9090, discovering annotated pods")


# MinIO (single drive) keeps buckets in its own metadata, not as plain directories: create it through S3.
CREATE_BUCKET = f"""
import boto3
s3 = boto3.client("s3", endpoint_url="http://minio:9000", aws_access_key_id="{MINIO_KEYS}",
                  aws_secret_access_key="{MINIO_KEYS}", region_name="us-east-1")
try:
    s3.create_bucket(Bucket="{BUCKET}")
    print("created bucket {BUCKET}")
except s3.exceptions.BucketAlreadyOwnedByYou:
    print("bucket {BUCKET} exists")
"""


def job(
    name: str, namespace: str, image: str, argv: list[str], env: list[dict[str, Any]], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    container = {"name": name, "image": image, "command": argv, "env": env}
    if volumes:
        container["volumeMounts"] = [{"name": v["name"], "mountPath": f"/{v['name']}"} for v in volumes]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 6,  # retries while a Service's endpoints come up
            "template": {"spec": restricted_pod([container], volumes, restart="OnFailure")},
        },
    }


def run_minio(cluster: Cluster) -> None:
    cluster.apply(*minio_objects())
    cluster.wait("deployment/minio", "condition=Available", "5m", STORAGE_NAMESPACE)
    bucket_job = job(
        "create-bucket", STORAGE_NAMESPACE, SERVER_IMAGE, ["/opt/venv/bin/python", "-c", CREATE_BUCKET], [], []
    )
    apply_job(cluster, bucket_job)
    cluster.wait("job/create-bucket", "condition=Complete", "5m", STORAGE_NAMESPACE)


def apply_job(cluster: Cluster, spec: dict[str, Any]) -> None:
    """A Job's pod template is immutable: one that already completed is left alone, one that failed is
    replaced (a second `make run` retries it)."""
    name, namespace = spec["metadata"]["name"], spec["metadata"]["namespace"]
    found = cluster.kubectl("-n", namespace, "get", "job", name, "-o", "json", "--ignore-not-found")
    if found and json.loads(found).get("status", {}).get("succeeded"):
        return
    if found:
        cluster.kubectl("-n", namespace, "delete", "job", name, "--wait=true")
    cluster.apply(spec)


def registry_client_env() -> list[dict[str, Any]]:
    """An MLflow client's env in a pod of namespace default: the example TrackingServer, as its admin."""
    admin = [
        {"name": f"MLFLOW_TRACKING_{key.upper()}", "valueFrom": {"secretKeyRef": {"name": "mlflow-admin", "key": key}}}
        for key in ("username", "password")
    ]
    return [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.default.svc:5000"}, *admin]


def seed_registry(cluster: Cluster, job_name: str = "fraud-seed", *args: str) -> str:
    """hack/seed_model.py as a Job in the model-server image; returns its log."""
    script = (HACK / "seed_model.py").read_text()
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fraud-seed", "namespace": "default"},
        "data": {"seed_model.py": script},
    }
    volume = {"name": "seed", "configMap": {"name": "fraud-seed"}}
    argv = ["/opt/venv/bin/python", "/seed/seed_model.py", *args]
    cluster.apply(config_map)
    apply_job(cluster, job(job_name, "default", MODEL_SERVER_IMAGE, argv, registry_client_env(), [volume]))
    cluster.wait(f"job/{job_name}", "condition=Complete", "10m")
    return cluster.kubectl("logs", "-n", "default", f"job/{job_name}")


def release_next_version(cluster: Cluster) -> None:
    """The canary walkthrough's step: a retrained version of `fraud`, `champion` moved to it."""
    printed = seed_registry(cluster, f"fraud-next-{int(time.time())}", "--next")
    print(printed.strip().splitlines()[-1])


def node_millicpu(cluster: Cluster) -> int:
    """Allocatable CPU of the schedulable nodes (kwok's tainted fake nodes do not count), in millicores."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    total = 0
    for node in nodes:
        if node["spec"].get("taints"):
            continue
        cpu = node["status"]["allocatable"]["cpu"]
        total += int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
    return total


def fit_to_node(objects: dict[str, Any], millicpu: int) -> None:
    """The examples request what production needs: the TrackingServer's two servers 500m CPU each (with
    Postgres, two PgBouncers, the operator and CoreDNS about 1.6 CPUs), each of the ModelDeployment's two
    model servers 500m more. A 2-core node cannot schedule the model servers (Pending, Insufficient cpu),
    nor the one extra server pod a rolling update of the TrackingServer starts (maxSurge 1, maxUnavailable
    0: an upgrade would wait forever). On a small node the servers ask 250m and the model servers 100m;
    nothing else changes, and the log says so."""
    if millicpu >= 4000:
        return
    small = {
        "TrackingServer": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "ModelDeployment": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    for item in objects["items"]:
        resources = small.get(item["kind"])
        if resources is None:
            continue
        spec = item["spec"]
        (spec.setdefault("runtime", {}) if item["kind"] == "ModelDeployment" else spec)["resources"] = resources
        cpu = resources["requests"]["cpu"]
        log(f"node has {millicpu}m CPU: {item['kind']} {item['metadata']['name']} requests {cpu} CPU per pod")


def json_stream(text: str) -> list[dict[str, Any]]:
    """kubectl -o json prints one document per object, one after the other (not a List)."""
    decoder, objects, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        obj, end = decoder.raw_decode(text, position)
        objects.append(obj)
        position = end + (len(text[end:]) - len(text[end:].lstrip()))
    return objects


def enforce_restricted(cluster: Cluster, namespace: str) -> None:
    """Only on the local cluster, which is ours: a user's cluster keeps its own namespace policy."""
    labels = [f"{key}={value}" for key, value in RESTRICTED.items()]
    cluster.kubectl("label", "--overwrite", "namespace", namespace, *labels)
    log(f"namespace {namespace} enforces Pod Security restricted")


def run_examples(cluster: Cluster) -> None:
    rendered = cluster.kubectl("create", "--dry-run=client", "-o", "json", "-f", str(ROOT / "examples"))
    examples = json_stream(rendered)
    fit_to_node({"items": examples}, node_millicpu(cluster))
    # The ModelDeployment goes last, once `champion` exists: applied before the seed it reports ModelNotFound
    # and the operator's backoff then costs ~40 s more than the seed itself.
    deployments = [item for item in examples if item["kind"] == "ModelDeployment"]
    cluster.apply(*[item for item in examples if item["kind"] != "ModelDeployment"])
    log("examples applied but the ModelDeployment")
    cluster.wait("trackingserver/mlflow", "condition=Ready", TRACKING_TIMEOUT)
    cluster.wait("registeredmodel/fraud", "condition=Synced", "5m")
    seed_registry(cluster)
    cluster.apply(*deployments)
    cluster.wait("modeldeployment/fraud", "condition=Ready", "10m")


ADMIN_TEMPLATE = "{{.data.username|base64decode}} {{.data.password|base64decode}}"


def print_usage(cluster: Cluster, gateway: str | None) -> None:
    body = '{"dataframe_split": {"columns": ["amount", "hour"], "data": [[1500.0, 3], [20.0, 14]]}}'
    if gateway:
        prediction = f"""A prediction from fraud@champion, through the Gateway mlflow-gateway (Traefik):
  curl -s -H 'Content-Type: application/json' -d '{body}' {gateway}/invocations
A canary of a retrained version, judged by the example's analysis (keep requests coming meanwhile):
  python3 hack/run.py --dir {cluster.kubeconfig.parent} --next-version
  kubectl get modeldeployment fraud -w"""
    else:
        prediction = f"""A prediction from fraud@champion:
  kubectl port-forward svc/fraud-stable 8080:80 &
  curl -s -H 'Content-Type: application/json' -d '{body}' http://127.0.0.1:8080/invocations"""
    print(
        f"""
Every example is Ready ({time.monotonic() - STARTED:.0f} s). The operator runs as a pod (helm release
mlflow-operator in namespace {OPERATOR_NAMESPACE}).
  export KUBECONFIG={cluster.kubeconfig}
  alias kubectl={cluster.kubectl_binary}
  kubectl get mlflow
  kubectl -n {OPERATOR_NAMESPACE} logs deploy/mlflow-operator -f
MLflow UI, user and password from the Secret mlflow-admin:
  kubectl get secret mlflow-admin -o go-template='{ADMIN_TEMPLATE}'
  kubectl port-forward svc/mlflow 5000      # then http://127.0.0.1:5000
{prediction}"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=localcluster.DEFAULT_DIR, help="local cluster state directory")
    parser.add_argument(
        "--next-version",
        action="store_true",
        help="on the running platform: register a retrained version of fraud and move champion to it",
    )
    args, up_args = parser.parse_known_args()
    if args.next_version:
        release_next_version(Cluster(Path(os.environ.get("KUBECONFIG") or args.dir.resolve() / "kubeconfig")))
        return
    build_images()
    reimported: list[str] = []
    if os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"])
        log(f"using KUBECONFIG={kubeconfig}: its nodes must have the images (images/README.md)")
    else:
        kubeconfig, reimported = local_cluster(args.dir.resolve(), up_args)
    cluster = Cluster(kubeconfig)
    if not os.environ.get("KUBECONFIG"):
        enforce_restricted(cluster, "default")
    install_crds(cluster)
    install_operator(cluster, reimported)
    run_minio(cluster)
    run_prometheus(cluster)
    run_examples(cluster)
    state = None if os.environ.get("KUBECONFIG") else localcluster.running(args.dir.resolve())
    print_usage(cluster, localcluster.gateway_url(state) if state else None)


if __name__ == "__main__":
    main()
