"""The platform `make run` builds, on real pods: the tests run hack/run.py itself (images, the local cluster
with its real node, the operator by its Helm chart, MinIO, the examples, the seeded model) and then use what
it built as a user would, from the host, through Service ClusterIPs (kube-proxy) and pod IPs:

- the tracking server: the MLflow client logs and reads back through the Service, rows land in Postgres,
  PgBouncer pools the servers' connections, 200 concurrent clients all succeed, a killed Postgres comes back
  with its data;
- the model servers: the init containers fetched and checked the version from the real tracking server, the
  stable and canary Services answer /invocations with each version's own predictions, a version that cannot
  load is rolled back at its progress deadline, a deleted ModelDeployment leaves no pod;
- an upgrade from an earlier MLflow release runs the real migration Job and the new servers serve old data;
- every pod runs in a namespace that enforces Pod Security "restricted", with a read-only root.

One real node runs per machine: a running `make cluster` / `make run` makes this module fail (stop it
first). REAL_PODS_CLUSTER_DIR=<dir> reuses (and keeps) the cluster in that state directory, to iterate on
one test without paying for `make run` each time; tests that change the platform leave it as they found it
or later tests expect what they did, in file order.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
import requests
from mlflow import MlflowClient

from mlflow_operator.api.kinds import API_VERSION
from mlflow_operator.api.trackingserver import DEFAULT_MLFLOW_VERSION
from mlflow_operator.builders.modeldeployment import COMPONENT as COMPONENT_MODEL_SERVER
from mlflow_operator.builders.modeldeployment import SERVICE_PORT
from mlflow_operator.builders.trackingserver import (
    COMPONENT_POOLER,
    COMPONENT_POSTGRES,
    COMPONENT_SERVER,
    DATABASE_NAME,
    PGBOUNCER_PORT,
    Names,
)
from tests.e2e.conftest import record_real_node
from tests.kube import ROOT, Kubectl, condition, eventually, find_kubectl, md_status, wait_phase
from tests.scripts import load_script, run_hack

# The first test includes `make run` (the module's fixture), which on a cold machine builds every image first.
pytestmark = pytest.mark.timeout(2400)
NAMESPACE = "default"  # where make run applies the examples
SAMPLE: dict[str, Any] = {"columns": ["amount", "hour"], "data": [[1500.0, 3], [20.0, 14]]}  # seed_model.py's
PREDICTIONS_TAG = "sample_predictions"
MODEL_SERVER_IMAGE = "ghcr.io/mlflow-operator/mlflow-model-server:3.17.2"
CONCURRENT_CLIENTS = 200
# An earlier MLflow release whose schema the default one migrates (3.17.2 adds two revisions); 3.18.0 would
# be the natural "next" release, but its mlflow-tracing==3.18.0 is not on the package index this runs with.
UPGRADE_FROM = "3.16.1"
POSTGRES_PODS = f"app.kubernetes.io/instance=mlflow,app.kubernetes.io/component={COMPONENT_POSTGRES}"
POOLER_PODS = f"app.kubernetes.io/instance=mlflow,app.kubernetes.io/component={COMPONENT_POOLER}"


@dataclass
class Platform:
    """The cluster make run built, seen from the host."""

    workdir: Path
    kubectl: Kubectl

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl.run(*args, "-n", NAMESPACE, "-o", "json").stdout)

    def cluster_ip(self, service: str) -> str:
        return str(self.json("get", "service", service)["spec"]["clusterIP"])

    def secret(self, name: str) -> dict[str, str]:
        data = self.json("get", "secret", name)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items = self.json("get", "pods", "-l", selector)["items"]
        return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]

    def pod_ips(self, selector: str) -> list[str]:
        return [pod["status"]["podIP"] for pod in self.pods(selector) if pod["status"].get("podIP")]

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.cluster_ip('mlflow')}:5000"

    def psql(self, host: str, port: int, database: str, sql: str, secret: str = "mlflow-db") -> list[dict[str, str]]:
        """Rows of one statement run by the host's psql, as the user of a TrackingServer's database Secret."""
        user = self.secret(secret)
        dsn = f"host={host} port={port} dbname={database} user={user['username']} connect_timeout=10"
        result = subprocess.run(
            ["psql", dsn, "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={**os.environ, "PGPASSWORD": user["password"]},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"psql {host}:{port}/{database}: {result.stderr}"
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def sql(self, query: str, server: str = "mlflow") -> list[dict[str, str]]:
        """A query on a TrackingServer's managed Postgres (its pod IP: the Service is headless), as its user."""
        selector = f"app.kubernetes.io/instance={server},app.kubernetes.io/component={COMPONENT_POSTGRES}"
        (postgres,) = self.pod_ips(selector)
        return self.psql(postgres, 5432, DATABASE_NAME, query, secret=Names(server).database_secret)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    reuse = os.environ.get("REAL_PODS_CLUSTER_DIR")
    workdir = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="mlflow-operator-realpods-"))
    try:
        printed = run_hack("run.py", "--dir", str(workdir), timeout=3600)
        assert "Every example is Ready" in printed, printed
        kubectl = Kubectl(kubeconfig=str(workdir / "kubeconfig"), binary=find_kubectl())
        record_real_node(kubectl)
        yield Platform(workdir, kubectl)
    finally:
        if not reuse:
            run_hack("localcluster.py", "down", "--dir", str(workdir), timeout=300)


@pytest.fixture(scope="module")
def mlflow_env(platform: Platform) -> Iterator[None]:
    """The MLflow client's environment: the tracking Service and the generated admin credentials."""
    admin = platform.secret("mlflow-admin")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", platform.tracking_uri)
        patch.setenv("MLFLOW_TRACKING_USERNAME", admin["username"])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", admin["password"])
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a failure shows at once, not after minutes
        # MLflow >= 3.17 clients download S3-backed artifacts straight from S3 by presigned URLs naming the
        # server's endpoint (minio.storage.svc), which only resolves inside the cluster: from the host,
        # download through the server as any client outside the cluster must.
        patch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        yield


@pytest.fixture
def client(mlflow_env: None) -> MlflowClient:
    return MlflowClient()


def predict(platform: Platform, service: str) -> list[Any]:
    url = f"http://{platform.cluster_ip(service)}:{SERVICE_PORT}/invocations"
    response = requests.post(url, json={"dataframe_split": SAMPLE}, timeout=30)
    assert response.status_code == 200, f"{service}: {response.status_code} {response.text[:500]}"
    return list(response.json()["predictions"])


def own_predictions(client: MlflowClient, version: int | str) -> list[Any]:
    """What the model itself predicted for SAMPLE when it was logged (the seed's tag)."""
    return list(json.loads(client.get_model_version("fraud", str(version)).tags[PREDICTIONS_TAG]))


def version_pods(platform: Platform, deployment: str) -> list[dict[str, Any]]:
    """The pods of one version's Deployment (by its own selector)."""
    selector = platform.json("get", "deployment", deployment)["spec"]["selector"]["matchLabels"]
    return platform.pods(",".join(f"{key}={value}" for key, value in selector.items()))


def init_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in pod["status"].get("initContainerStatuses") or [] if s["name"] == name]
    return dict(found)


# --------------------------------------------------------------------------------------------- the examples


def test_examples_are_ready_and_serve_the_models_own_predictions(platform: Platform, client: MlflowClient) -> None:
    for kind, name, type_ in (
        ("trackingserver", "mlflow", "Ready"),
        ("registeredmodel", "fraud", "Synced"),
        ("modeldeployment", "fraud", "Ready"),
    ):
        found = condition(platform.kubectl.get(kind, name, NAMESPACE), type_)
        assert found is not None and found["status"] == "True", (kind, name, found)
    champion = client.get_model_version_by_alias("fraud", "champion")
    assert md_status(platform.kubectl, NAMESPACE, "fraud")["stableVersion"] == int(champion.version)
    assert predict(platform, "fraud-stable") == own_predictions(client, champion.version) == [1, 0]
    pods = version_pods(platform, f"fraud-v{champion.version}")
    assert len(pods) == 2
    for pod in pods:
        # Both init containers ran to completion against the real tracking server before the server started.
        for name in ("fetch-model", "check-model"):
            terminated = init_status(pod, name)["state"].get("terminated") or {}
            assert terminated.get("exitCode") == 0, (pod["metadata"]["name"], name, init_status(pod, name))
        log = platform.kubectl.run("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "check-model").stdout
        assert "model loaded and answered its input example" in log, log


def test_every_pod_runs_restricted_with_a_read_only_root(platform: Platform) -> None:
    """The namespace enforces Pod Security "restricted" (the API server refuses any other pod); on top of
    that, every container of every pod the operator rendered there has a read-only root filesystem."""
    labels = platform.kubectl.get("namespace", NAMESPACE) or {}
    assert labels["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"
    pods = platform.json("get", "pods", "-l", "app.kubernetes.io/managed-by=mlflow-operator")["items"]
    components = {pod["metadata"]["labels"].get("app.kubernetes.io/component") for pod in pods}
    assert {COMPONENT_SERVER, COMPONENT_POSTGRES, COMPONENT_POOLER, COMPONENT_MODEL_SERVER} <= components, components
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (pod["metadata"]["name"], container["name"])
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["allowPrivilegeEscalation"] is False
        assert pod["status"]["phase"] in ("Running", "Succeeded"), pod["metadata"]["name"]


# ------------------------------------------------------------------------------------------ tracking server


def test_a_client_logs_through_the_service_and_rows_land_in_postgres(platform: Platform, client: MlflowClient) -> None:
    experiment = client.create_experiment(f"real-pods-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    client.log_param(run_id, "alpha", "0.5")
    for step, value in enumerate((0.5, 0.3, 0.25)):
        client.log_metric(run_id, "rmse", value, step=step)
    client.log_text(run_id, "fraud found at night", "notes/summary.txt")
    client.set_terminated(run_id)

    run = client.get_run(run_id)
    assert run.data.params == {"alpha": "0.5"} and run.data.metrics == {"rmse": 0.25}
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "rmse")] == [0.5, 0.3, 0.25]
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/summary.txt"]
    # Downloaded back through the server's artifact proxy, which stored it in MinIO.
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/summary.txt") == "fraud found at night"

    (row,) = platform.sql(
        f"SELECT r.status, (SELECT count(*) FROM params p WHERE p.run_uuid = r.run_uuid) AS params,"
        f" (SELECT count(*) FROM metrics m WHERE m.run_uuid = r.run_uuid) AS metrics, r.artifact_uri"
        f" FROM runs r WHERE r.run_uuid = '{run_id}'"
    )
    assert (row["status"], row["params"], row["metrics"]) == ("FINISHED", "1", "3"), row
    assert row["artifact_uri"].startswith("mlflow-artifacts:/"), row  # served by the tracking server


def test_pgbouncer_pools_the_servers_connections(platform: Platform, client: MlflowClient) -> None:
    """The MLflow servers reach Postgres only through PgBouncer: SHOW POOLS (as the stats user) shows their
    client connections, and Postgres sees connections from PgBouncer pods only."""
    client.search_experiments()  # at least one query in flight recently
    poolers = platform.pod_ips(POOLER_PODS)
    assert len(poolers) == 2
    clients = 0
    for pooler in poolers:
        shown = platform.psql(pooler, PGBOUNCER_PORT, "pgbouncer", "SHOW POOLS")
        pools = [p for p in shown if p["database"] == DATABASE_NAME]
        assert pools and all(p["pool_mode"] == "transaction" for p in pools), pools
        clients += sum(int(p["cl_active"]) + int(p["cl_waiting"]) for p in pools)
    assert clients > 0, "no MLflow server connection through PgBouncer"
    sources = platform.sql(
        f"SELECT DISTINCT host(client_addr) AS source FROM pg_stat_activity"
        f" WHERE datname = '{DATABASE_NAME}' AND pid <> pg_backend_pid() AND client_addr IS NOT NULL"
    )
    assert sources and {s["source"] for s in sources} <= set(poolers), (sources, poolers)


def test_many_concurrent_clients_all_succeed(platform: Platform, client: MlflowClient) -> None:
    """200 training jobs at once, each creating a run, logging a batch and reading it back over REST."""
    experiment = client.create_experiment(f"concurrent-{uuid.uuid4().hex[:8]}")
    admin = platform.secret("mlflow-admin")
    api = f"{platform.tracking_uri}/api/2.0/mlflow"
    auth = (admin["username"], admin["password"])
    start = threading.Barrier(CONCURRENT_CLIENTS)

    def training_job(index: int) -> str:
        with requests.Session() as session:
            session.auth = auth
            start.wait()
            created = session.post(f"{api}/runs/create", json={"experiment_id": experiment}, timeout=120)
            created.raise_for_status()
            run_id = str(created.json()["run"]["info"]["run_id"])
            batch: dict[str, Any] = {
                "run_id": run_id,
                "params": [{"key": "job", "value": str(index)}],
                "metrics": [{"key": "loss", "value": 1 / (index + 1), "timestamp": 0, "step": 0}],
            }
            session.post(f"{api}/runs/log-batch", json=batch, timeout=120).raise_for_status()
            read = session.get(f"{api}/runs/get", params={"run_id": run_id}, timeout=120)
            read.raise_for_status()
            assert read.json()["run"]["data"]["params"] == [{"key": "job", "value": str(index)}]
            return run_id

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=CONCURRENT_CLIENTS) as pool:
        futures = [pool.submit(training_job, index) for index in range(CONCURRENT_CLIENTS)]
        failures = [repr(f.exception()) for f in futures if f.exception() is not None]
        run_ids = {f.result() for f in futures if f.exception() is None}
    print(f"{CONCURRENT_CLIENTS} concurrent clients done in {time.monotonic() - began:.1f} s")
    assert failures == [], f"{len(failures)} of {CONCURRENT_CLIENTS} failed: {failures[:5]}"
    assert len(run_ids) == CONCURRENT_CLIENTS
    (row,) = platform.sql(
        f"SELECT count(*) AS runs FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id"
        f" WHERE e.experiment_id = {int(experiment)}"
    )
    assert row["runs"] == str(CONCURRENT_CLIENTS)


def row_counts(platform: Platform) -> dict[str, str]:
    tables = ("experiments", "runs", "params", "metrics", "registered_models", "model_versions")
    (row,) = platform.sql("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables))
    return row


def kill_container(container_id: str) -> int:
    """SIGKILL every process of a container, as the kernel's OOM killer or a crash would: found through its
    cgroup (cgroup v1, the pids controller), from the host."""
    procs = list(Path("/sys/fs/cgroup/pids").glob(f"**/*{container_id}*/cgroup.procs"))
    assert procs, f"no cgroup for container {container_id}"
    pids = [int(pid) for path in procs for pid in path.read_text().split()]
    for pid in pids:
        os.kill(pid, 9)
    return len(pids)


def test_a_killed_postgres_comes_back_with_its_data(platform: Platform, client: MlflowClient) -> None:
    before = row_counts(platform)
    assert int(before["runs"]) >= CONCURRENT_CLIENTS  # the tests above wrote rows
    selector = POSTGRES_PODS
    (pod,) = platform.pods(selector)
    (status,) = pod["status"]["containerStatuses"]
    assert kill_container(status["containerID"].removeprefix("containerd://")) > 0

    def restarted() -> bool:
        statuses = [s for now in platform.pods(selector) for s in now["status"].get("containerStatuses") or []]
        return any(s["restartCount"] > status["restartCount"] and s.get("ready") for s in statuses)

    eventually(restarted, timeout=180, interval=1, what="Postgres restarted after SIGKILL and ready")
    assert row_counts(platform) == before  # crash recovery replayed the WAL: nothing lost
    # And a new pod (deleted, recreated by its StatefulSet) mounts the same volume.
    platform.kubectl.run("delete", "pod", "-n", NAMESPACE, pod["metadata"]["name"], "--wait=true")
    eventually(
        lambda: any(p["status"].get("containerStatuses", [{}])[0].get("ready") for p in platform.pods(selector)),
        timeout=180,
        interval=1,
        what="a new Postgres pod ready",
    )
    assert row_counts(platform) == before
    platform.kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "trackingserver/mlflow", "--timeout=180s")

    def serves() -> bool:  # the servers' pooled connections to the old Postgres are replaced
        try:
            return bool(client.search_experiments())
        except Exception:  # any failure means not yet
            return False

    eventually(serves, timeout=120, interval=2, what="MLflow answering after the Postgres restart")


# ---------------------------------------------------------------------------------------- model deployment


def test_deleting_a_model_deployment_leaves_no_pod(platform: Platform) -> None:
    """The example's model servers go (which also frees the CPU the rollout test below needs)."""
    selector = f"app.kubernetes.io/instance=fraud,app.kubernetes.io/component={COMPONENT_MODEL_SERVER}"
    assert platform.pods(selector)
    platform.kubectl.run("delete", "modeldeployment", "-n", NAMESPACE, "fraud", "--wait=true", timeout=180)
    eventually(lambda: not platform.pods(selector), timeout=120, interval=1, what="no fraud model pods")
    assert not platform.json("get", "deployments,services", "-l", "app.kubernetes.io/instance=fraud")["items"]


def register_rollout_versions(platform: Platform) -> tuple[int, int]:
    """tests/e2e/rollout_models.py as a Job in the model-server image: (inverted, unloadable) versions."""
    name = f"rollout-models-{uuid.uuid4().hex[:6]}"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {
            "seed_model.py": (ROOT / "hack" / "seed_model.py").read_text(),
            "rollout_models.py": (ROOT / "tests" / "e2e" / "rollout_models.py").read_text(),
        },
    }
    admin = [
        {"name": f"MLFLOW_TRACKING_{key.upper()}", "valueFrom": {"secretKeyRef": {"name": "mlflow-admin", "key": key}}}
        for key in ("username", "password")
    ]
    env = [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.default.svc:5000"}, *admin]
    volume = {"name": "models", "configMap": {"name": name}}
    argv = ["/opt/venv/bin/python", "/models/rollout_models.py"]
    job = load_script("hack_run", ROOT / "hack" / "run.py").job(
        name, NAMESPACE, MODEL_SERVER_IMAGE, argv, env, [volume]
    )
    platform.kubectl.apply(config_map)
    platform.kubectl.apply(job)
    complete = ("wait", "-n", NAMESPACE, "--for=condition=Complete", f"job/{name}", "--timeout=300s")
    platform.kubectl.run(*complete, timeout=320)
    log = platform.kubectl.run("logs", "-n", NAMESPACE, f"job/{name}").stdout
    (line,) = [line for line in log.splitlines() if line.startswith("VERSIONS ")]
    inverted, unloadable = line.split()[1:]
    return int(inverted), int(unloadable)


def ranker(progress_deadline: str) -> dict[str, Any]:
    """A canary that stops at 50% until promoted; 50m CPU per pod so both tracks fit beside the examples."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": "ranker", "namespace": NAMESPACE},
        "spec": {
            "trackingServerRef": {"name": "mlflow"},
            "model": {"registeredModel": "fraud", "alias": "candidate"},
            "replicas": 1,
            "pollInterval": "3s",
            "progressDeadline": progress_deadline,
            "runtime": {"resources": {"requests": {"cpu": "50m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
            # Weights on an HTTPRoute that no Gateway serves here: the tests call each track's Service.
            "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public-gateway"}]}},
        },
    }


def failed_check_log(platform: Platform, deployment: str) -> str | None:
    """The check-model log of a pod of `deployment` whose fetch-model succeeded and check-model failed."""
    for pod in version_pods_if_any(platform, deployment):
        fetched = (init_status(pod, "fetch-model")["state"].get("terminated") or {}).get("exitCode") == 0
        check = init_status(pod, "check-model")
        ended = check["state"].get("terminated") or check.get("lastState", {}).get("terminated") or {}
        if fetched and ended.get("exitCode", 0) != 0:
            name = pod["metadata"]["name"]
            previous = [] if check["state"].get("terminated") else ["--previous"]
            return str(platform.kubectl.run("logs", "-n", NAMESPACE, name, "-c", "check-model", *previous).stdout)
    return None


def test_canary_serves_each_version_and_an_unloadable_one_is_rolled_back(
    platform: Platform, client: MlflowClient
) -> None:
    stable = int(client.get_model_version_by_alias("fraud", "champion").version)
    client.set_registered_model_alias("fraud", "candidate", str(stable))
    deadline_seconds = 60
    platform.kubectl.apply(ranker(f"{deadline_seconds}s"))
    try:
        wait_phase(platform.kubectl, NAMESPACE, "ranker", "Succeeded", timeout=300, stableVersion=stable)
        inverted, unloadable = register_rollout_versions(platform)

        client.set_registered_model_alias("fraud", "candidate", str(inverted))
        wait_phase(platform.kubectl, NAMESPACE, "ranker", "Paused", timeout=300, canaryVersion=inverted)
        assert own_predictions(client, inverted) != own_predictions(client, stable)
        eventually(
            lambda: predict(platform, "ranker-canary") == own_predictions(client, inverted),
            timeout=60,
            what="the canary Service answering with the new version's predictions",
        )
        assert predict(platform, "ranker-stable") == own_predictions(client, stable)

        client.set_registered_model_alias("fraud", "candidate", str(unloadable))
        began = time.monotonic()
        log = eventually(
            lambda: failed_check_log(platform, f"ranker-v{unloadable}"),
            timeout=240,
            interval=2,
            what="check-model failing on the unloadable version",
        )
        assert "this model cannot load" in log, log
        rolled_back = wait_phase(
            platform.kubectl, NAMESPACE, "ranker", "RolledBack", timeout=deadline_seconds + 240, stableVersion=stable
        )
        print(f"rolled back {time.monotonic() - began:.0f} s after the alias moved (deadline {deadline_seconds} s)")
        assert rolled_back["rolledBackVersion"] == unloadable
        outcomes = {(h["version"], h["outcome"]) for h in rolled_back.get("history", [])}
        assert (unloadable, "RolledBack") in outcomes, rolled_back.get("history")
        assert predict(platform, "ranker-stable") == own_predictions(client, stable)  # never stopped serving
        eventually(
            lambda: not version_pods_if_any(platform, f"ranker-v{unloadable}"),
            timeout=120,
            what="the failed version's pods gone",
        )
    finally:
        platform.kubectl.run("delete", "modeldeployment", "-n", NAMESPACE, "ranker", "--ignore-not-found", timeout=180)
    eventually(lambda: not platform.pods("app.kubernetes.io/instance=ranker"), timeout=120, what="no ranker pods left")


def version_pods_if_any(platform: Platform, deployment: str) -> list[dict[str, Any]]:
    if platform.kubectl.get("deployment", deployment, NAMESPACE) is None:
        return []
    return version_pods(platform, deployment)


# ----------------------------------------------------------------------------------------------- upgrade


def older_mlflow_image(platform: Platform) -> str:
    """The MLflow server image at UPGRADE_FROM (images/mlflow-server re-pinned; built once, then cached),
    imported into the node under the name the operator gives that version."""
    built = run_hack(
        "build-images.py", "variant", "mlflow-server", UPGRADE_FROM, f"mlflow=={UPGRADE_FROM}", timeout=2400
    )
    archive, reference = built.strip().splitlines()[-1].split("\t")
    run_hack("localcluster.py", "load-images", "--dir", str(platform.workdir), "--image", f"{archive}={reference}")
    return reference


def legacy_tracking_server(version: str) -> dict[str, Any]:
    """A second, small TrackingServer (one server, one PgBouncer) beside the example's, on the same MinIO."""
    small = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrackingServer",
        "metadata": {"name": "legacy", "namespace": NAMESPACE},
        "spec": {
            "version": version,
            "replicas": 1,
            "workers": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "database": {
                "managed": {"storageSize": "1Gi", "resources": small},
                "pooler": {"replicas": 1, "resources": small},
            },
            "artifacts": {
                "s3": {
                    "bucket": "mlflow-artifacts",
                    "prefix": "legacy",
                    "endpoint": "http://minio.storage.svc:9000",
                    "credentialsSecret": {"name": "mlflow-artifacts-s3"},
                }
            },
            "auth": {"enabled": True},
            "deletionPolicy": "Delete",
        },
    }


def tracking_server_status(platform: Platform, name: str, version: str) -> dict[str, Any] | None:
    """The TrackingServer once it is Ready, serving and migrated at `version`."""
    server = platform.kubectl.get("trackingserver", name, NAMESPACE) or {}
    ready = condition(server, "Ready")
    status = server.get("status") or {}
    at_version = status.get("version") == version and status.get("migratedVersion") == version
    return server if at_version and ready is not None and ready["status"] == "True" else None


def test_an_upgrade_migrates_the_schema_and_the_new_servers_serve(platform: Platform) -> None:
    older = older_mlflow_image(platform)
    platform.kubectl.apply(legacy_tracking_server(UPGRADE_FROM))
    try:
        eventually(
            lambda: tracking_server_status(platform, "legacy", UPGRADE_FROM),
            timeout=600,
            interval=2,
            what=f"TrackingServer legacy Ready at {UPGRADE_FROM}",
        )
        servers = f"app.kubernetes.io/instance=legacy,app.kubernetes.io/component={COMPONENT_SERVER}"
        assert [p["spec"]["containers"][0]["image"] for p in platform.pods(servers)] == [older]
        admin = platform.secret("legacy-admin")
        legacy = MlflowClient(tracking_uri=f"http://{platform.cluster_ip('legacy')}:5000")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", admin["username"])
            patch.setenv("MLFLOW_TRACKING_PASSWORD", admin["password"])
            run_id = legacy.create_run(legacy.create_experiment("before-upgrade")).info.run_id
            legacy.log_param(run_id, "written-by", UPGRADE_FROM)
            before = platform.sql("SELECT version_num FROM alembic_version", server="legacy")
            runs_before = platform.sql("SELECT count(*) AS runs FROM runs", server="legacy")

            patch_spec = json.dumps({"spec": {"version": DEFAULT_MLFLOW_VERSION}})
            platform.kubectl.run("patch", "trackingserver", "legacy", "-n", NAMESPACE, "--type=merge", "-p", patch_spec)
            began = time.monotonic()
            eventually(
                lambda: tracking_server_status(platform, "legacy", DEFAULT_MLFLOW_VERSION),
                timeout=600,
                interval=2,
                what=f"TrackingServer legacy Ready at {DEFAULT_MLFLOW_VERSION}",
            )
            print(f"upgraded {UPGRADE_FROM} -> {DEFAULT_MLFLOW_VERSION} in {time.monotonic() - began:.0f} s")

            job = platform.json("get", "job", f"legacy-migrate-{DEFAULT_MLFLOW_VERSION.replace('.', '-')}")
            assert job["status"].get("succeeded") == 1
            new_image = job["spec"]["template"]["spec"]["containers"][0]["image"]
            assert new_image.endswith(f":{DEFAULT_MLFLOW_VERSION}") and new_image != older
            after = platform.sql("SELECT version_num FROM alembic_version", server="legacy")
            assert after != before, f"the migration Job left the schema at {before}"
            assert eventually(
                lambda: {p["spec"]["containers"][0]["image"] for p in platform.pods(servers)} == {new_image},
                timeout=120,
                what="only servers of the new version",
            )
            url = f"http://{platform.cluster_ip('legacy')}:5000/version"
            auth = (admin["username"], admin["password"])
            # The old pod drains for its preStop seconds; kube-proxy follows the endpoints within a second.
            eventually(
                lambda: requests.get(url, auth=auth, timeout=10).text.strip() == DEFAULT_MLFLOW_VERSION,
                timeout=30,
                what=f"the Service answering with MLflow {DEFAULT_MLFLOW_VERSION}",
            )
            assert legacy.get_run(run_id).data.params == {"written-by": UPGRADE_FROM}
            assert platform.sql("SELECT count(*) AS runs FROM runs", server="legacy") == runs_before
    finally:
        platform.kubectl.run("delete", "trackingserver", "-n", NAMESPACE, "legacy", "--ignore-not-found", timeout=300)
    eventually(lambda: not platform.pods("app.kubernetes.io/instance=legacy"), timeout=180, what="legacy pods gone")
