"""E2E fixtures: a real cluster ($KUBECONFIG, or the local control plane), CRDs, the operator process, and
what the modules share: the session's S3 server (moto), the Gateway API CRDs, and per module a Postgres-backed
MLflow registry with logged models and a Prometheus scraping an exporter the tests set.

A user with kind, or any cluster, sets KUBECONFIG and gets the same tests. Without it, the local control
plane (hack/localcluster.py) is started for the session, with kwok nodes only (--no-real-node): the operator's
pods need images that the real node does not have yet, and kwok makes them Ready. tests/e2e/test_real_node.py
starts its own cluster with the real node (one per machine) beside it. If a cluster cannot start, the run
fails: no skip markers hide the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from mlflow_operator.api import KINDS
from tests.e2e.operator_process import start_operator
from tests.e2e.real_node_cluster import VERSIONS, RealNodeCluster, record_real_node
from tests.e2e.serving import Metrics, Registry, gateway_api_crds_dir, logged_registry
from tests.integration.prometheus_server import MetricsExporter, start_prometheus
from tests.integration.registry_server import (
    RegistryServer,
    sqlite_registry,
)
from tests.integration.s3_servers import S3Server, moto_server
from tests.kube import ROOT, Kubectl, eventually, find_kubectl

NAMESPACE_PREFIX = "mlflow-e2e-"
_session_operator: dict[str, int] = {}  # the session operator's metrics port, for the `metrics_url` fixture


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    if os.environ.get("KUBECONFIG"):
        yield os.environ["KUBECONFIG"]
        return
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-operator-cluster-"))
    script = str(ROOT / "hack" / "localcluster.py")
    try:
        result = subprocess.run(
            [sys.executable, script, "up", "--dir", str(workdir), "--no-real-node"],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"local control plane did not start:\n{result.stderr[-4000:]}", pytrace=False)
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [sys.executable, script, "down", "--dir", str(workdir)], capture_output=True, timeout=120, check=False
        )


@pytest.fixture(scope="module")
def real_node_cluster() -> Iterator[RealNodeCluster]:
    """Always the local real node, even with $KUBECONFIG set: these tests are about hack/localcluster.py's
    node. One real node runs per machine, so a running `make cluster` makes them fail (stop it first)."""
    images = subprocess.run(
        [str(ROOT / "hack" / "node-images.sh"), "test"], capture_output=True, text=True, timeout=900, check=False
    )
    assert images.returncode == 0, f"test image build failed:\n{images.stderr[-3000:]}"
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-operator-realnode-"))
    cluster = RealNodeCluster(workdir, Kubectl(kubeconfig=str(workdir / "kubeconfig"), binary=find_kubectl()))
    try:
        cluster.up()
        record_real_node(cluster.kubectl)
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Kubectl:
    client = Kubectl(kubeconfig=kubeconfig, binary=find_kubectl())
    version = json.loads(client.run("version", "-o", "json").stdout)
    VERSIONS["server"] = version["serverVersion"]["gitVersion"]
    VERSIONS["client"] = version["clientVersion"]["gitVersion"]
    return client


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    names = [f"crd/{info.crd_name}" for info in KINDS]

    # `kubectl wait` fails at once ("conditions accessor error") on a CRD whose status has no conditions yet,
    # which is how a just-created CRD starts: ask again until the API server has written them.
    def established() -> bool:
        result = kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *names, check=False)
        return result.returncode == 0

    eventually(established, timeout=90, what="CRDs Established")


@pytest.fixture(scope="session")
def operator(kubeconfig: str, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One operator for the session, watching the e2e namespaces."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    running = start_operator(kubeconfig, f"{NAMESPACE_PREFIX}*", log_path)
    _session_operator["metrics_port"] = int(running.metrics_port or 0)
    try:
        yield log_path
    finally:
        code = running.stop()
        assert code in (0, -15), f"operator did not shut down cleanly: {code}"


@pytest.fixture(scope="session")
def tracking_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A real MLflow registry (sqlite backend) that stands in for TrackingServers' own servers, which do not
    run on kwok nodes: tests point a TrackingServer at it with REGISTRY_URL_ANNOTATION, so that the
    operator's lifecycle safety check reads a real registry."""
    with sqlite_registry(tmp_path_factory.mktemp("tracking-registry")) as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto on 127.0.0.1 for the TrackingServers' buckets: every test creates its own bucket, and none stops
    the server (tests/e2e/test_chaos.py, which kills its S3 server, runs its own MinIO)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A Postgres-backed `mlflow server` with three logged models, per module (the modules register models
    of their own names and move their aliases)."""
    with logged_registry(tmp_path_factory, "e2e-serving", [1, 2, 3]) as registry:
        yield registry


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metrics]:
    with MetricsExporter() as exporter:
        prometheus = start_prometheus([exporter.target], tmp_path_factory.mktemp("prometheus"))
        with prometheus:
            yield Metrics(exporter, prometheus)


@pytest.fixture(scope="session")
def gateway_api(kubectl: Kubectl) -> None:
    """The Gateway API CRDs from the sigs.k8s.io/gateway-api module (hack/build-binaries.sh gateway-api),
    applied once: nothing removes them."""
    directory = gateway_api_crds_dir()
    if not (directory / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        subprocess.run([str(ROOT / "hack" / "build-binaries.sh"), "gateway-api"], check=True, timeout=600)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")


@pytest.fixture
def metrics_url(operator: Path) -> str:
    """The session operator's /metrics URL (on 127.0.0.1)."""
    return f"http://127.0.0.1:{_session_operator['metrics_port']}/metrics"


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        events = kubectl.run("get", "events", "-n", name, "--sort-by=.lastTimestamp", check=False).stdout
        print(f"\n--- events in {name} ---\n{events}")
        log = request.getfixturevalue("operator") if "operator" in request.fixturenames else None
        if log is not None:
            print(f"--- operator log (tail) ---\n{Path(log).read_text()[-6000:]}")
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "server" in VERSIONS:
        terminalreporter.write_line(f"e2e cluster: kube-apiserver {VERSIONS['server']}, kubectl {VERSIONS['client']}")
    if "node" in VERSIONS:
        terminalreporter.write_line(f"e2e real node: {VERSIONS['node']}")
