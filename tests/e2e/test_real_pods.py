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
- every pod runs in a namespace that enforces Pod Security "restricted", with a read-only root;
- rotating the database password under steady writes fails requests only within a bounded window; rotating
  the admin password keeps the RegisteredModel and the ModelDeployment syncing.

One real node runs per machine: a running `make cluster` / `make run` makes this module fail (stop it
first). REAL_PODS_CLUSTER_DIR=<dir> reuses (and keeps) the cluster in that state directory, to iterate on
one test without paying for `make run` each time; tests that change the platform leave it as they found it
or later tests expect what they did, in file order.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_operator.api.kinds import API_VERSION
from mlflow_operator.api.modeldeployment import GatewayAPIRouting
from mlflow_operator.api.trackingserver import DEFAULT_MLFLOW_VERSION
from mlflow_operator.api.traffic import Weights
from mlflow_operator.builders.common import CONFIG_HASH_ANNOTATION
from mlflow_operator.builders.modeldeployment import COMPONENT as COMPONENT_MODEL_SERVER
from mlflow_operator.builders.modeldeployment import SERVICE_PORT
from mlflow_operator.builders.routers import RouteTarget
from mlflow_operator.builders.routers.gatewayapi import GatewayAPIRouter
from mlflow_operator.builders.trackingserver import (
    COMPONENT_POOLER,
    COMPONENT_POSTGRES,
    COMPONENT_SERVER,
    DATABASE_NAME,
    PGBOUNCER_PORT,
    REQUEST_ANNOTATION,
)
from mlflow_operator.builders.trackingserver.server import WEBHOOK_CACHE_SECONDS
from mlflow_operator.logic.credential_rotation import (
    PENDING_PASSWORD_KEY,
    ROTATE_ADMIN_PASSWORD,
    ROTATE_DATABASE_PASSWORD,
)
from tests.e2e import traffic
from tests.e2e.real_node_cluster import record_real_node
from tests.e2e.realpods import (
    NAMESPACE,
    Platform,
    RolloutVersions,
    delete_model_deployment,
    failing_canary_rollback,
    gateway_canary,
    mlflow_environment,
    own_predictions,
    register_rollout_versions,
    routed,
    seed_version,
    small_resources,
    small_tracking_server,
)
from tests.e2e.traffic import SAMPLE
from tests.kube import Kubectl, condition, eventually, find_kubectl, md_status, wait_phase
from tests.scripts import run_hack

# The first test includes `make run` (the module's fixture), which on a cold machine builds every image first.
pytestmark = pytest.mark.timeout(2400)
CONCURRENT_CLIENTS = 200
# An earlier MLflow release whose schema the default one migrates (3.17.2 adds two revisions); 3.18.0 would
# be the natural "next" release, but its mlflow-tracing==3.18.0 is not on the package index this runs with.
UPGRADE_FROM = "3.16.1"
POSTGRES_PODS = f"app.kubernetes.io/instance=mlflow,app.kubernetes.io/component={COMPONENT_POSTGRES}"
POOLER_PODS = f"app.kubernetes.io/instance=mlflow,app.kubernetes.io/component={COMPONENT_POOLER}"


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
    with pytest.MonkeyPatch.context() as patch:
        for key, value in mlflow_environment(platform).items():
            patch.setenv(key, value)
        yield


@pytest.fixture
def client(mlflow_env: None) -> MlflowClient:
    return MlflowClient()


def predict(platform: Platform, service: str) -> list[Any]:
    url = f"http://{platform.cluster_ip(service)}:{SERVICE_PORT}/invocations"

    def answered() -> tuple[requests.Response] | None:
        # kube-proxy applies a Service's endpoints asynchronously: right after a Deployment reports its
        # pods available, the node may still refuse the Service address for a moment (seen once, under
        # the full suite's load). A refused connection is retried; any answer is judged below.
        try:  # a tuple: a Response with an error status is falsy, and eventually() would wait on it
            return (requests.post(url, json={"dataframe_split": SAMPLE}, timeout=30),)
        except requests.ConnectionError:
            return None

    (response,) = eventually(answered, timeout=30, interval=1, what=f"{service} accepting connections")
    assert response.status_code == 200, f"{service}: {response.status_code} {response.text[:500]}"
    return list(response.json()["predictions"])


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


def test_model_servers_read_the_registry_as_their_own_user_who_cannot_write(
    platform: Platform, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's model server pods fetched their model with the ModelDeployment's own MLflow user (not the
    TrackingServer's admin); the real server refuses that user a write."""
    champion = client.get_model_version_by_alias("fraud", "champion")
    pod = version_pods(platform, f"fraud-v{champion.version}")[0]["spec"]
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for container in [*pod["initContainers"], *pod["containers"]]
        for env in container.get("env", [])
        if env["name"].startswith("MLFLOW_TRACKING_") and "valueFrom" in env
    }
    assert refs == {"fraud-registry-reader"}, refs
    reader = platform.secret("fraud-registry-reader")
    assert reader["username"] == f"modeldeployment/{NAMESPACE}/fraud"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", reader["username"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader["password"])
    as_reader = MlflowClient()
    assert as_reader.get_registered_model("fraud").name == "fraud"
    with pytest.raises(MlflowException) as refused:
        as_reader.set_registered_model_alias("fraud", "hijacked", champion.version)
    assert refused.value.error_code == "PERMISSION_DENIED", refused.value


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


def test_prometheus_scrapes_the_tracking_servers_metrics_without_its_credentials(
    platform: Platform, client: MlflowClient
) -> None:
    """The example has basic auth, under which MLflow serves /metrics to admins only: make run's Prometheus
    (kubernetes_sd, the pods' annotations, no credentials) gets the request counters from the metrics sidecar."""
    client.search_experiments()
    service = platform.kubectl.run("get", "service", "prometheus", "-n", "monitoring", "-o", "json").stdout
    url = f"http://{json.loads(service)['spec']['clusterIP']}:9090/api/v1/query"
    query = f'sum(mlflow_http_request_total{{namespace="{NAMESPACE}"}})'

    def scraped() -> float | None:
        result = requests.get(url, params={"query": query}, timeout=10).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    total = eventually(scraped, timeout=90, interval=2, what="the tracking server's requests in Prometheus")
    assert total is not None and total > 0, total
    anonymous = requests.get(f"{platform.tracking_uri}/metrics", timeout=10)
    assert anonymous.status_code == 401  # the server's own /metrics still wants credentials


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
    killed = 0
    for pid in pids:
        # A backend that ended between reading the cgroup and the kill is gone already (ProcessLookupError:
        # seen once in a full suite); the postmaster, which holds the data, is among the ones killed.
        with suppress(ProcessLookupError):
            os.kill(pid, 9)
            killed += 1
    return killed


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


@pytest.fixture(scope="module")
def versions(platform: Platform) -> RolloutVersions:
    return register_rollout_versions(platform)


def test_the_examples_canary_through_the_gateway_is_promoted_by_its_own_analysis(
    platform: Platform, client: MlflowClient
) -> None:
    """The README's walkthrough as written: the example's route on the Gateway, steady traffic, a retrained
    version by `hack/run.py --next-version`, judged by the example's own analysis (successRate, latencyP99
    from Prometheus), promoted, `production` moved."""
    url = f"{platform.gateway}/invocations"
    stable = seed_version(client)
    eventually(
        lambda: (routed(platform, "fraud") or {}).get("status") == "True",
        timeout=60,
        what="the example's HTTPRoute accepted by mlflow-gateway",
    )
    assert traffic.share(traffic.burst(url, 50), own_predictions(client, stable)) == 1.0
    with traffic.SteadyLoad(url, bodies=(traffic.DAY_SAMPLE,)) as load:
        printed = run_hack("run.py", "--dir", str(platform.workdir), "--next-version", timeout=600)
        new = int(client.get_model_version_by_alias("fraud", "champion").version)
        assert f"champion -> {new} (was {stable})" in printed, printed
        status = wait_phase(platform.kubectl, NAMESPACE, "fraud", "Succeeded", timeout=900, stableVersion=new)
    answers = load.snapshot()
    assert answers and all(a.status == 200 for a in answers), {a.status for a in answers}
    passed = [r for r in status.get("analysisResults") or [] if r["outcome"] == "Passed"]
    assert {r["metric"] for r in passed} == {"success-rate", "latency-p99"}, status.get("analysisResults")
    assert (new, "Succeeded") in {(h["version"], h["outcome"]) for h in status.get("history") or []}
    eventually(
        lambda: client.get_model_version_by_alias("fraud", "production").version == str(new),
        timeout=60,
        what="production moved to the promoted version in the registry",
    )
    assert platform.json("get", "service", "fraud-stable")["spec"]["selector"][
        "mlflow.operator.dev/model-version"
    ] == str(new)


def test_deleting_a_model_deployment_leaves_no_pod(platform: Platform) -> None:
    """The example's model servers go (which also frees the CPU the rollout test below needs)."""
    selector = f"app.kubernetes.io/instance=fraud,app.kubernetes.io/component={COMPONENT_MODEL_SERVER}"
    assert platform.pods(selector)
    platform.kubectl.run("delete", "modeldeployment", "-n", NAMESPACE, "fraud", "--wait=true", timeout=180)
    eventually(lambda: not platform.pods(selector), timeout=120, interval=1, what="no fraud model pods")
    assert not platform.json("get", "deployments,services", "-l", "app.kubernetes.io/instance=fraud")["items"]


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
    platform: Platform, client: MlflowClient, versions: RolloutVersions
) -> None:
    stable = seed_version(client)
    client.set_registered_model_alias("fraud", "candidate", str(stable))
    deadline_seconds = 60
    platform.kubectl.apply(ranker(f"{deadline_seconds}s"))
    try:
        wait_phase(platform.kubectl, NAMESPACE, "ranker", "Succeeded", timeout=300, stableVersion=stable)
        inverted, unloadable = versions.inverted, versions.unloadable

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


# ---------------------------------------------------------------------------------------- registry events

OPERATOR_NAMESPACE = "mlflow-operator"  # hack/run.py's helm release and namespace


def events_follower(poll: str) -> dict[str, Any]:
    """Follows the alias `events`, polling only every `poll` (also while events arrive): a canary that starts
    sooner was started by a registry event."""
    md = ranker("10m")
    md["metadata"]["name"] = "follower"
    md["spec"] |= {
        "model": {"registeredModel": "fraud", "alias": "events"},
        "pollInterval": poll,
        "registryEvents": {"pollInterval": poll},
    }
    return md


def registry_events_status(obj: dict[str, Any] | None) -> str | None:
    found = condition(obj, "RegistryEvents")
    return None if found is None else f"{found['status']}/{found['reason']}"


def seconds_until(check: Any, what: str, timeout: float) -> float:
    began = time.monotonic()
    eventually(check, timeout=timeout, interval=0.2, what=what)
    return time.monotonic() - began


def operator_metric(platform: Platform, name: str, labels: dict[str, str]) -> float:
    """A sample of the operator's own /metrics, scraped from its pod IP (0 when the series does not exist)."""
    pods = json.loads(
        platform.kubectl.run("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=mlflow-operator",
                             "-o", "json").stdout
    )["items"]  # fmt: skip
    (ip,) = [pod["status"]["podIP"] for pod in pods if pod["status"].get("phase") == "Running"]
    text = requests.get(f"http://{ip}:9090/metrics", timeout=10).text
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


@contextmanager
def webhook_disabled(platform: Platform) -> Iterator[None]:
    """The operator's webhook switched off in MLflow, as a dropped delivery: MLflow sends nothing (after its
    webhook cache, which the operator sets to 10 s), then on again."""
    env = mlflow_environment(platform)
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    api = f"{platform.tracking_uri}/api/2.0/mlflow/webhooks"
    listed = requests.get(api, auth=auth, timeout=30).json()["webhooks"]
    (webhook,) = [w for w in listed if w["name"] == f"mlflow-operator-{NAMESPACE}-mlflow"]
    url = f"{api}/{webhook['webhook_id']}"
    requests.patch(url, json={"status": "DISABLED"}, auth=auth, timeout=30).raise_for_status()
    time.sleep(WEBHOOK_CACHE_SECONDS + 1)  # until every server worker has re-read its webhook list
    try:
        yield
    finally:
        requests.patch(url, json={"status": "ACTIVE"}, auth=auth, timeout=30).raise_for_status()


def test_an_alias_moved_in_mlflow_starts_the_canary_within_seconds_and_a_missed_move_by_the_next_poll(
    platform: Platform, client: MlflowClient, versions: RolloutVersions
) -> None:
    """The chart's receiver over HTTPS (the operator's CA, trusted by the server pods): the TrackingServer's
    webhook passes MLflow's test delivery; a move in MLflow starts the canary long before a 10-minute poll
    could; a move whose delivery MLflow drops (the webhook switched off in MLflow) is picked up by the next poll,
    and the operator's metrics show no event arrived for it."""
    kubectl = platform.kubectl

    def receiving_server() -> dict[str, Any] | None:
        found = kubectl.get("trackingserver", "mlflow", NAMESPACE)
        return found if registry_events_status(found) == "True/Receiving" else None

    tracking_server = eventually(receiving_server, timeout=240, what="the TrackingServer's webhook verified")
    assert "https://" in (condition(tracking_server, "RegistryEvents") or {})["message"]
    stable, inverted = seed_version(client), versions.inverted
    client.set_registered_model_alias("fraud", "events", str(stable))
    kubectl.apply(events_follower("10m"))
    try:
        wait_phase(kubectl, NAMESPACE, "follower", "Succeeded", timeout=300, stableVersion=stable)
        eventually(
            lambda: registry_events_status(kubectl.get("modeldeployment", "follower", NAMESPACE)) == "True/Receiving",
            timeout=60,
            what="the ModelDeployment receiving events",
        )
        client.set_registered_model_alias("fraud", "events", str(inverted))
        took = seconds_until(
            lambda: kubectl.get("deployment", f"follower-v{inverted}", NAMESPACE), "the canary Deployment", 120
        )
        print(f"registry events: alias moved -> canary Deployment created in {took:.1f} s (poll every 10 min)")
        assert took < 15, took

        kubectl.run(
            "patch", "modeldeployment", "follower", "-n", NAMESPACE, "--type", "merge", "-p",
            json.dumps({"spec": {"pollInterval": "20s", "registryEvents": {"pollInterval": "20s"}}}),
        )  # fmt: skip
        eventually(
            lambda: md_status(kubectl, NAMESPACE, "follower").get("observedGeneration") == 2,
            timeout=60,
            what="the new poll interval observed",
        )
        alias_events = ("mlflow_operator_registry_events_total", {"type": "model_version_alias.created"})
        with webhook_disabled(platform):
            delivered = operator_metric(platform, *alias_events)
            assert delivered >= 1  # the first move above arrived as an event
            client.set_registered_model_alias("fraud", "events", str(stable))
            missed = seconds_until(
                lambda: (md_status(kubectl, NAMESPACE, "follower").get("resolved") or {}).get("version") == stable,
                "the move resolved by polling",
                120,
            )
            assert operator_metric(platform, *alias_events) == delivered  # no event arrived: the poll found it
        print(f"registry events: a move whose event was dropped was resolved {missed:.1f} s later (poll 20 s)")
        assert missed <= 20 + 15, missed
    finally:
        kubectl.run("delete", "modeldeployment", "-n", NAMESPACE, "follower", "--ignore-not-found", timeout=180)
    eventually(lambda: not platform.pods("app.kubernetes.io/instance=follower"), timeout=120, what="no follower pods")


def version_pods_if_any(platform: Platform, deployment: str) -> list[dict[str, Any]]:
    if platform.kubectl.get("deployment", deployment, NAMESPACE) is None:
        return []
    return version_pods(platform, deployment)


# ------------------------------------------------------------------------------------- the Gateway (Traefik)

SPLIT_REQUESTS = 400
SPLIT_TOLERANCE = 0.07


def http_route(platform: Platform, name: str) -> dict[str, Any]:
    route = platform.kubectl.get("httproute.gateway.networking.k8s.io", name, NAMESPACE)
    assert route is not None, f"no HTTPRoute {name}"
    return route


def test_every_route_the_operator_writes_is_valid_for_the_api_server(platform: Platform) -> None:
    """Weights, header match and mirror (the filter Traefik cannot serve, but another Gateway can), all at
    once, checked by the API server against the installed Gateway API CRDs (server-side dry run)."""
    routing = GatewayAPIRouting.model_validate(
        {
            "parentRefs": [{"name": "mlflow-gateway", "namespace": "gateway-system", "sectionName": "web"}],
            "hostnames": ["dry-run.example"],
            "headerMatch": {"name": "X-Canary", "value": "always"},
            "mirrorPercent": 25,
        }
    )
    target = RouteTarget("dry-run", NAMESPACE, {}, "dry-run-stable", "dry-run-canary", SERVICE_PORT)
    for weights in (Weights(0, False), Weights(30, True), Weights(100, True)):
        (route,) = GatewayAPIRouter(routing).objects(target, weights)
        result = platform.kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(route), check=False)
        assert result.returncode == 0, (weights, result.stderr)


def test_weights_and_header_routing_on_real_traffic_then_a_rollback(
    platform: Platform, client: MlflowClient, versions: RolloutVersions
) -> None:
    """400 requests through the Gateway at each weight: the canary's share within 7 points; a header sends
    everything to the canary; the mirror the Gateway cannot do is left out (no request fails); a route the
    Gateway refuses shows as TrafficRouted/Ready False with the Gateway's message."""
    stable, canary = seed_version(client), versions.inverted
    host = {"Host": "splitter.example"}
    url = f"{platform.gateway}/invocations"
    client.set_registered_model_alias("fraud", "candidate", str(stable))
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    header = {"name": "X-Canary", "value": "always"}
    platform.kubectl.apply(gateway_canary("splitter", steps, headerMatch=header, mirrorPercent=50))
    try:
        wait_phase(platform.kubectl, NAMESPACE, "splitter", "Succeeded", timeout=300, stableVersion=stable)
        client.set_registered_model_alias("fraud", "candidate", str(canary))
        for weight, step in ((20, 1), (50, 3)):
            wait_phase(platform.kubectl, NAMESPACE, "splitter", "Paused", timeout=300, currentStep=step)
            eventually(
                lambda: traffic.share(traffic.burst(url, 20, headers=host), own_predictions(client, canary)) > 0,
                timeout=30,
                what="the Gateway applying the new weights",
            )
            answers = traffic.burst(url, SPLIT_REQUESTS, headers=host)
            assert all(a.status == 200 for a in answers), {a.status for a in answers}
            measured = traffic.share(answers, own_predictions(client, canary))
            print(f"weight {weight}: canary answered {measured:.1%} of {SPLIT_REQUESTS}")
            assert abs(measured - weight / 100) <= SPLIT_TOLERANCE, (weight, measured)
            assert traffic.share(answers, own_predictions(client, stable)) == pytest.approx(1 - measured)
            headed = traffic.burst(url, 50, headers={**host, header["name"]: header["value"]})
            assert traffic.share(headed, own_predictions(client, canary)) == 1.0
            mirrored = routed(platform, "splitter") or {}
            assert mirrored.get("reason") == "MirrorUnsupported", mirrored
            rules = http_route(platform, "splitter")["spec"]["rules"]
            assert not any(rule.get("filters") for rule in rules), rules
            platform.annotate("splitter", "mlflow.operator.dev/promote", f"step-{step}")
        wait_phase(platform.kubectl, NAMESPACE, "splitter", "Succeeded", timeout=120, stableVersion=canary)
        eventually(
            lambda: traffic.share(traffic.burst(url, 100, headers=host), own_predictions(client, canary)) == 1.0,
            timeout=30,
            what="every answer from the promoted version",
        )
        # The seed again as a canary, aborted at 20 %: everything back on the version that is stable now.
        client.set_registered_model_alias("fraud", "candidate", str(stable))
        wait_phase(platform.kubectl, NAMESPACE, "splitter", "Paused", timeout=300, currentStep=1, canaryVersion=stable)
        platform.annotate("splitter", "mlflow.operator.dev/promote", None)
        platform.annotate("splitter", "mlflow.operator.dev/abort", "enough")
        wait_phase(platform.kubectl, NAMESPACE, "splitter", "RolledBack", timeout=120, canaryWeight=0)
        eventually(
            lambda: traffic.share(traffic.burst(url, 100, headers=host), own_predictions(client, canary)) == 1.0,
            timeout=30,
            what="every answer from the stable version after the rollback",
        )

        # A listener that does not exist: the Gateway refuses the route and says so.
        refs = [{"name": "mlflow-gateway", "namespace": "gateway-system", "sectionName": "no-such-listener"}]
        patch = {"spec": {"trafficRouting": {"gatewayAPI": {"parentRefs": refs}}}}
        platform.kubectl.run(
            "patch", "modeldeployment", "-n", NAMESPACE, "splitter", "--type=merge", "-p", json.dumps(patch)
        )

        def refusal() -> dict[str, Any] | None:
            found = routed(platform, "splitter")
            return found if found and found["status"] == "False" else None

        refused = eventually(refusal, timeout=60, what="TrafficRouted False")
        assert "mlflow-gateway" in refused["message"], refused
        ready = condition(platform.kubectl.get("modeldeployment", "splitter", NAMESPACE), "Ready") or {}
        assert (ready.get("status"), ready.get("reason")) == ("False", refused["reason"]), ready
    finally:
        delete_model_deployment(platform, "splitter")


def test_a_canary_failing_on_real_traffic_is_rolled_back_by_analysis_within_an_interval(
    platform: Platform, client: MlflowClient, versions: RolloutVersions
) -> None:
    """The night-blind version answers day-time requests and fails night-time ones; under load through the
    Gateway the successRate template sees it and the rollout aborts within one interval + 10 s of its first
    failed request."""
    rollback = failing_canary_rollback(platform, client, versions.night_blind, interval_s=10)
    print(
        f"first failed request -> canary weight 0: {rollback.seconds:.1f} s (interval {rollback.interval_s} s); "
        f"other failed answers: {rollback.other_failures}"
    )
    assert rollback.seconds <= rollback.interval_s + 10, (rollback.seconds, rollback.timeline())
    assert rollback.status["rolledBackVersion"] == versions.night_blind
    failed = [r for r in rollback.status.get("analysisResults") or [] if r["outcome"] == "Failed"]
    assert failed and float(failed[-1]["value"]) < 0.99, rollback.status.get("analysisResults")


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


# ------------------------------------------------------------------------------------ database backups


def backed_up_tracking_server(name: str, **managed: Any) -> dict[str, Any]:
    """A small TrackingServer without auth whose database archives into the example's artifact bucket (the
    default store: backups/NAMESPACE/NAME/ there, with the artifacts' keys)."""
    small = small_resources()
    database = {
        "managed": {"storageSize": "1Gi", "resources": small, "backup": {}, **managed},
        "pooler": {"replicas": 1, "resources": small},
    }
    return small_tracking_server(name, database)


def backups_status(platform: Platform, name: str) -> dict[str, Any] | None:
    """status.backup once the TrackingServer is Ready and BackupsHealthy."""
    server = platform.kubectl.get("trackingserver", name, NAMESPACE) or {}
    ready, healthy = condition(server, "Ready"), condition(server, "BackupsHealthy")
    if not ready or ready["status"] != "True" or not healthy or healthy["status"] != "True":
        return None
    return dict((server.get("status") or {}).get("backup") or {})


def run_ids(client: MlflowClient) -> set[str]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {run.info.run_id for run in client.search_runs(experiments, max_results=1000)}


def test_a_point_in_time_restore_on_real_pods_brings_back_exactly_the_runs_before_the_target(
    platform: Platform,
) -> None:
    # Names of their own per run: a new database must not archive where an earlier one (a rerun on a kept
    # cluster) left its WAL.
    suffix = uuid.uuid4().hex[:6]
    source, restored = f"backed-{suffix}", f"restored-{suffix}"
    began = time.monotonic()
    platform.kubectl.apply(backed_up_tracking_server(source))
    try:
        first = eventually(lambda: backups_status(platform, source), timeout=900, interval=3, what="first base backup")
        print(f"Ready with its first base backup in {time.monotonic() - began:.0f} s")
        client = MlflowClient(tracking_uri=f"http://{platform.cluster_ip(source)}:5000")
        experiment = client.create_experiment("backed-up")
        before = {client.create_run(experiment).info.run_id for _ in range(3)}
        time.sleep(1.5)
        target = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        time.sleep(1.5)
        after = {client.create_run(experiment).info.run_id for _ in range(2)}
        (switched,) = platform.sql("SELECT pg_walfile_name(pg_switch_wal()) AS segment", server=source)
        eventually(
            lambda: (backups_status(platform, source) or {}).get("lastArchivedWal", "") >= switched["segment"],
            timeout=300,
            interval=3,
            what=f"status.backup.lastArchivedWal at {switched['segment']}",
        )
        # An on-demand backup: a Job of its own, and a newer base backup in status.
        request = f"{REQUEST_ANNOTATION}=e2e-{uuid.uuid4().hex[:8]}"
        platform.kubectl.run("annotate", "--overwrite", "-n", NAMESPACE, "trackingserver", source, request)
        eventually(
            lambda: (
                (backups_status(platform, source) or {}).get("lastBackupId", first["lastBackupId"])
                != first["lastBackupId"]
            ),
            timeout=300,
            interval=3,
            what="the requested base backup in status.backup",
        )
        platform.kubectl.apply(
            backed_up_tracking_server(restored, restore={"fromBackup": {"serverName": source}, "targetTime": target})
        )
        began = time.monotonic()
        eventually(lambda: backups_status(platform, restored), timeout=900, interval=3, what="restored server Ready")
        print(f"restored to {target}: Ready in {time.monotonic() - began:.0f} s")
        server = platform.kubectl.get("trackingserver", restored, NAMESPACE) or {}
        assert server["status"]["restore"]["backupId"] == first["lastBackupId"]  # the one that ends before T
        restored_client = MlflowClient(tracking_uri=f"http://{platform.cluster_ip(restored)}:5000")
        assert run_ids(restored_client) == before
        assert run_ids(client) == before | after
        # The restored server archives under its own name, never into its source's.
        assert server["status"]["backup"]["destination"].endswith(f"/backups/{NAMESPACE}/{restored}")
    finally:
        for name in (restored, source):
            platform.kubectl.run("delete", "trackingserver", "-n", NAMESPACE, name, "--ignore-not-found", timeout=300)
    eventually(lambda: not platform.pods(f"app.kubernetes.io/instance={source}"), timeout=180, what="pods gone")


# ------------------------------------------------------------------------------------ credential rotation
# Last in the file: they change the passwords the module's MLflow client was given.

# The longest run of failed tracking requests a database password rotation may cause (documented in
# docs/operations.md): Postgres restarts to take the new password, and PgBouncer pods that still have the old
# one cannot open connections to it until their Deployment has rolled. The servers log into PgBouncer with a
# login of their own and do not roll.
DATABASE_ROTATION_WINDOW_S = 30
ROTATED_WORKLOADS = ("statefulset/mlflow-postgres", "deployment/mlflow-pgbouncer")
DATABASE_CLIENTS = "app.kubernetes.io/instance=mlflow"


def basic_auth(secret: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{secret['username']}:{secret['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def annotate_tracking_server(platform: Platform, key: str, value: str) -> None:
    platform.kubectl.run("annotate", "--overwrite", "-n", NAMESPACE, "trackingserver/mlflow", f"{key}={value}")


def template_hash(platform: Platform, workload: str) -> str:
    return str(platform.json("get", workload)["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])


def terminating_pods(platform: Platform) -> list[str]:
    items = platform.json("get", "pods", "-l", DATABASE_CLIENTS)["items"]
    return [pod["metadata"]["name"] for pod in items if pod["metadata"].get("deletionTimestamp")]


def settled(platform: Platform) -> None:
    """Until every pod of the example's stack runs its workload's template and no old pod is left (a
    terminating pod may still answer a kept-alive connection)."""
    for workload in (*ROTATED_WORKLOADS, "deployment/mlflow"):
        platform.kubectl.run("rollout", "status", "-n", NAMESPACE, workload, "--timeout=300s", timeout=320)
    eventually(lambda: not terminating_pods(platform), timeout=120, what="the old pods gone")
    platform.kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "trackingserver/mlflow", "--timeout=300s")


def rolled_out(platform: Platform, before: dict[str, str]) -> None:
    """Until Postgres and PgBouncer have new pod templates and the stack has settled on them."""
    eventually(
        lambda: all(template_hash(platform, w) != before[w] for w in ROTATED_WORKLOADS),
        timeout=120,
        what="new pod templates for Postgres and PgBouncer",
    )
    settled(platform)


def test_a_database_password_rotation_fails_requests_only_within_its_window(
    platform: Platform, client: MlflowClient
) -> None:
    """Under steady writes (runs created through the Service), the annotation rotates the database password:
    Postgres and PgBouncer roll to it while the servers keep running, requests fail only within the
    documented window, every acknowledged write lands, and the old password is refused afterwards."""
    settled(platform)  # an earlier change (or a new operator, when the cluster is reused) may still roll
    experiment = client.create_experiment(f"rotation-{uuid.uuid4().hex[:8]}")
    old = platform.secret("mlflow-db")["password"]
    before = {workload: template_hash(platform, workload) for workload in ROTATED_WORKLOADS}
    server_template = template_hash(platform, "deployment/mlflow")
    load = traffic.SteadyLoad(
        f"{platform.tracking_uri}/api/2.0/mlflow/runs/create",
        bodies=({"experiment_id": experiment},),
        headers=basic_auth(platform.secret("mlflow-admin")),
        send=traffic.post_json,
        pause_s=0.1,
    )
    with load:
        began = time.monotonic()
        annotate_tracking_server(platform, ROTATE_DATABASE_PASSWORD, uuid.uuid4().hex)
        rolled_out(platform, before)
        rolled_at = time.monotonic()
        time.sleep(10)  # requests after the rollout: all must succeed
    answers = load.snapshot()
    failed = [a.at for a in answers if a.status != 200]
    window = max(failed) - min(failed) if failed else 0.0
    print(
        f"database password rotation: rolled out in {rolled_at - began:.0f} s; {len(failed)} of {len(answers)}"
        f" requests failed, within {window:.1f} s; statuses {sorted(Counter(str(a.status) for a in answers).items())}"
    )
    assert [a for a in answers if a.at > rolled_at and a.status != 200] == []
    assert window <= DATABASE_ROTATION_WINDOW_S, f"requests failed for {window:.1f} s"
    assert template_hash(platform, "deployment/mlflow") == server_template  # the servers did not roll
    assert platform.secret("mlflow-db")["password"] != old
    (row,) = platform.sql(f"SELECT count(*) AS runs FROM runs WHERE experiment_id = {int(experiment)}")
    assert int(row["runs"]) >= sum(1 for a in answers if a.status == 200)  # every acknowledged write landed
    (postgres,) = platform.pod_ips(POSTGRES_PODS)
    refused = subprocess.run(
        ["psql", f"host={postgres} dbname={DATABASE_NAME} user=mlflow connect_timeout=10", "-c", "select 1"],
        env={**os.environ, "PGPASSWORD": old},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr, refused.stderr


def test_an_admin_password_rotation_keeps_the_registry_in_sync(platform: Platform) -> None:
    """The annotation sets a new admin password in MLflow and then in the Secret; the old one is refused, and
    the RegisteredModel and the ModelDeployment keep reading and writing the registry with the new one."""
    settled(platform)
    old = platform.secret("mlflow-admin")
    server_template = template_hash(platform, "deployment/mlflow")
    users_get = f"{platform.tracking_uri}/api/2.0/mlflow/users/get"
    annotate_tracking_server(platform, ROTATE_ADMIN_PASSWORD, uuid.uuid4().hex)

    def rotated() -> dict[str, str] | None:
        secret = platform.secret("mlflow-admin")
        return secret if secret["password"] != old["password"] else None

    new = eventually(rotated, timeout=120, what="a new admin password in the Secret")
    assert PENDING_PASSWORD_KEY not in new
    # The servers roll to the new basic_auth.ini; until the old ones are gone they may still accept the old
    # password from their credential cache.
    eventually(
        lambda: template_hash(platform, "deployment/mlflow") != server_template,
        timeout=120,
        what="the servers' new pod template",
    )
    settled(platform)
    params = {"username": old["username"]}
    assert requests.get(users_get, params=params, headers=basic_auth(new), timeout=30).status_code == 200
    assert requests.get(users_get, params=params, headers=basic_auth(old), timeout=30).status_code == 401

    tag = uuid.uuid4().hex[:8]
    patch = json.dumps({"spec": {"tags": {"rotation-check": tag}}})
    platform.kubectl.run("patch", "registeredmodel", "fraud", "-n", NAMESPACE, "--type=merge", "-p", patch)
    registry = MlflowClient(tracking_uri=platform.tracking_uri)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", new["username"])
        env.setenv("MLFLOW_TRACKING_PASSWORD", new["password"])
        eventually(
            lambda: registry.get_registered_model("fraud").tags.get("rotation-check") == tag,
            timeout=120,
            what="the RegisteredModel's new tag in the registry",
        )
        seed = seed_version(registry)
    # A ModelDeployment created now: the operator sets its pods' reader up with the new admin password, and
    # the pods fetch the version with that reader and serve it.
    md = gateway_canary("rotated", [{"setWeight": 100}])
    md["spec"]["model"] = {"registeredModel": "fraud", "version": seed}
    platform.kubectl.apply(md)
    try:
        wait_phase(platform.kubectl, NAMESPACE, "rotated", "Succeeded", timeout=300, stableVersion=seed)
    finally:
        delete_model_deployment(platform, "rotated")
