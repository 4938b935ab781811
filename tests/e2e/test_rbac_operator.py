"""The operator runs with exactly the permissions the Helm chart grants, and they are enough.

The chart is installed for one namespace (`watchNamespaces`, the smallest grant: a Role there plus list/watch
of CRDs and namespaces cluster-wide). The operator then runs as a local process, like the other e2e tests,
but as the chart's ServiceAccount: its kubeconfig holds a TokenRequest token for that account and nothing
else. Each scenario takes a resource through to its children and status; any 403 in the operator's log
fails the test, since a missing rule often surfaces only as a logged, retried error.

A scenario is a function of the ServiceAccount's kubeconfig (see `OperatorUnderTest`): one for a
TrackingServer, one for a ModelDeployment (its registry, Prometheus and Gateway API fixtures are
tests/e2e/conftest.py's, as for tests/e2e/test_modeldeployment.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mlflow_operator.api.kinds import API_VERSION
from mlflow_operator.logic.credential_rotation import ROTATE_DATABASE_PASSWORD
from tests.argocd import assert_argocd_health
from tests.e2e.operator_process import RESYNC_SECONDS, OperatorProcess
from tests.e2e.serving import Metrics, Registry, model_deployment, route_weights
from tests.e2e.stacks import apply_all, stack
from tests.integration.dataplane import free_port
from tests.integration.packaging import CHART, helm
from tests.integration.registry_server import RegistryServer
from tests.integration.s3_servers import S3Server
from tests.kube import Kubectl, condition, eventually

T = TypeVar("T")
# An HTTP 403 or the word, never the digits 403 inside a log timestamp such as "18:43:38,403".
FORBIDDEN = re.compile(r"(?<![\d,.:])\b403\b(?![.,:]\d)|forbidden", re.IGNORECASE)


@dataclass
class OperatorUnderTest:
    """The operator process running as the chart's ServiceAccount, and that account's kubeconfig."""

    namespace: str
    kubeconfig: str  # the ServiceAccount's: scenarios may use it to check what the operator can see
    admin: Kubectl  # the test's own view of the cluster
    log_path: Path

    def forbidden_lines(self, since: int = 0) -> list[str]:
        text = self.log_path.read_text(errors="replace")[since:]
        return [line for line in text.splitlines() if FORBIDDEN.search(line)]

    def log_size(self) -> int:
        return len(self.log_path.read_text(errors="replace"))

    def assert_nothing_forbidden(self, since: int) -> None:
        """Fails with the first 403 lines the operator logged after offset `since` of its log, if any."""
        if forbidden := self.forbidden_lines(since):
            raise AssertionError("the chart's RBAC is missing rules:\n" + "\n".join(forbidden[:20]))

    def wait_for(self, check: Callable[[], T | None], what: str, timeout: float = 180) -> T:
        """eventually(check), failing at once when the operator logs a 403 instead of after the timeout."""
        start = self.log_size()

        def checked() -> T | None:
            self.assert_nothing_forbidden(start)
            return check()

        return eventually(checked, timeout=timeout, interval=1, what=what)


def service_account_kubeconfig(kubectl: Kubectl, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig for the admin's cluster whose only credential is a token for namespace/account."""
    token = kubectl.run("create", "token", account, "-n", namespace, "--duration", "2h").stdout.strip()
    admin = json.loads(kubectl.run("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": cluster["name"], "user": account, "namespace": namespace}}
        ],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return str(path)


def start_operator_as(kubeconfig: str, namespace: str, log_path: Path) -> OperatorProcess:
    """The console script as the chart's Deployment runs it (`run --namespace=NS`), on loopback ports."""
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "mlflow-operator"),
        "run",
        f"--namespace={namespace}",
        f"--liveness=http://127.0.0.1:{port}/healthz",
        f"--metrics-address=127.0.0.1:{free_port()}",
        "--log-format=text",
        "--verbose",
        f"--resync-seconds={RESYNC_SECONDS}",
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_SERVICE")}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env={**env, "KUBECONFIG": kubeconfig}, stdout=log, stderr=subprocess.STDOUT)
    operator = OperatorProcess(process, log_path, port)
    operator.wait_healthy()
    return operator


@pytest.fixture(scope="module")
def operator_as_service_account(
    kubectl: Kubectl, kubeconfig: str, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorUnderTest]:
    # Outside the mlflow-e2e-* glob the session's (admin) operator watches.
    namespace = f"mlflow-rbac-{uuid.uuid4().hex[:8]}"
    release = "rbac"
    account = f"{release}-mlflow-operator"
    kubectl.run("create", "namespace", namespace)
    workdir = tmp_path_factory.mktemp("rbac")
    running = None
    try:
        helm(
            kubeconfig, "install", release, str(CHART), "--namespace", namespace,
            "--set", f"watchNamespaces={{{namespace}}}",
        )  # fmt: skip
        sa_kubeconfig = service_account_kubeconfig(kubectl, namespace, account, workdir / "kubeconfig")
        # The token is the account's and nothing more: it may not read Secrets elsewhere.
        probe = Kubectl(sa_kubeconfig, kubectl.binary)
        assert probe.run("auth", "can-i", "get", "secrets", "-n", "kube-system", check=False).stdout.strip() == "no"
        assert probe.run("auth", "can-i", "patch", "trackingservers", "-n", namespace).stdout.strip() == "yes"
        log_path = workdir / "operator.log"
        running = start_operator_as(sa_kubeconfig, namespace, log_path)
        yield OperatorUnderTest(namespace, sa_kubeconfig, kubectl, log_path)
    finally:
        if running is not None:
            code = running.stop()
            assert code in (0, -15), f"operator did not shut down cleanly: {code}"
        helm(kubeconfig, "uninstall", release, "--namespace", namespace, check=False)
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def trackingserver_scenario(operator: OperatorUnderTest, s3: S3Server, registry: RegistryServer) -> None:
    """The example TrackingServer (managed Postgres, PgBouncer, S3 on moto, auth, gc) to Ready and back out."""
    kubectl, namespace = operator.admin, operator.namespace
    bucket = s3.create_bucket()

    def ready(generation: int) -> dict[str, Any] | None:
        ts = kubectl.get("trackingserver", "mlflow", namespace)
        found = condition(ts, "Ready")
        return ts if found and found["status"] == "True" and found["observedGeneration"] == generation else None

    # Every version the API server recorded, not polls: on a busy machine a poll can miss every state between
    # the first and Ready.
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/trackingservers"
    since = kubectl.resource_version(path)
    apply_all(kubectl, stack(s3, bucket, registry), namespace)
    ts = operator.wait_for(lambda: ready(1), what="TrackingServer Ready")
    versions = kubectl.changes_since(path, since)
    assert ts["status"]["observedGeneration"] == ts["metadata"]["generation"]
    # What Argo CD shows on the way (pods starting, the migration Job) and once it serves.
    provisioning = [v for v in versions if (v.get("status") or {}).get("phase") not in (None, "Ready")]
    assert provisioning, f"no phase seen before Ready: {[(v.get('status') or {}).get('phase') for v in versions]}"
    assert_argocd_health(provisioning[0], "Progressing")
    assert_argocd_health(ts, "Healthy", f"MLflow 3.17.2 serves at http://mlflow.{namespace}.svc:5000")
    assert {c["type"]: c["status"] for c in ts["status"]["conditions"]}["ArtifactsReady"] == "True"
    for kind, name in [
        ("secret", "mlflow-db"),
        ("secret", "mlflow-admin"),
        ("secret", "mlflow-backend"),
        ("secret", "mlflow-pgbouncer-client"),
        ("secret", "mlflow-registry-events"),
        ("statefulset", "mlflow-postgres"),
        ("configmap", "mlflow-pgbouncer"),
        ("deployment", "mlflow-pgbouncer"),
        ("deployment", "mlflow"),
        ("serviceaccount", "mlflow"),
        ("service", "mlflow"),
        ("pdb", "mlflow"),
        ("networkpolicy", "mlflow-postgres"),
        ("cronjob", "mlflow-gc"),
        ("job", "mlflow-migrate-3-17-2"),
    ]:
        assert kubectl.get(kind, name, namespace) is not None, f"{kind}/{name} missing"
    # Events were written with the account's permissions.
    reasons = {e["reason"] for e in kubectl.events(namespace) if e["involvedObject"].get("kind") == "TrackingServer"}
    assert reasons, "the operator wrote no Events for the TrackingServer"
    # A change is picked up and written back (patch of the resource and of its status).
    kubectl.run("patch", "trackingserver", "mlflow", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":1}}')
    operator.wait_for(
        lambda: (kubectl.get("deployment", "mlflow", namespace) or {}).get("spec", {}).get("replicas") == 1,
        what="the server Deployment scaled to 1",
    )
    operator.wait_for(lambda: ready(2), what="Ready after the change")
    # A requested password rotation rewrites the generated Secret (patch) and posts its Event.
    old_password = kubectl.get("secret", "mlflow-db", namespace)["data"]["password"]  # type: ignore[index]
    kubectl.run("annotate", "-n", namespace, "trackingserver/mlflow", f"{ROTATE_DATABASE_PASSWORD}=rbac")
    operator.wait_for(
        lambda: (kubectl.get("secret", "mlflow-db", namespace) or {}).get("data", {}).get("password") != old_password,
        what="the database password rotated",
    )
    # Deletion goes through the operator's finalizer (if any) with the same permissions.
    kubectl.run("delete", "trackingserver", "mlflow", "-n", namespace, "--timeout=120s", timeout=130)
    assert kubectl.get("trackingserver", "mlflow", namespace) is None


def test_trackingserver_with_only_the_charts_permissions(
    operator_as_service_account: OperatorUnderTest, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    operator = operator_as_service_account
    start = operator.log_size()
    trackingserver_scenario(operator, s3, tracking_registry)
    operator.assert_nothing_forbidden(start)


def modeldeployment_scenario(operator: OperatorUnderTest, registry: Registry, metrics: Metrics) -> None:
    """A canary with analysis through the HTTPRoute to promotion, with autoscaling (HPAs per version), then
    the old version's Deployment, budget and autoscaler pruned: every kind and verb the handler uses."""
    kubectl, namespace = operator.admin, operator.namespace
    name, model = "fraud", f"rbac-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    metrics.set_error_rate(namespace, name, 0.0)
    spec = model_deployment(name, registry, metrics.prometheus.url, model)
    del spec["spec"]["replicas"]
    spec["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2}
    kubectl.apply(spec, namespace)

    def phase(wanted: str, stable: int) -> dict[str, Any] | None:
        status = (kubectl.get("modeldeployment", name, namespace) or {}).get("status") or {}
        return status if status.get("phase") == wanted and status.get("stableVersion") == stable else None

    operator.wait_for(lambda: phase("Succeeded", 1), what="version 1 serving")
    assert kubectl.get("hpa", f"{name}-v1", namespace) is not None
    registry.move_alias(model, "champion", 2)
    operator.wait_for(lambda: phase("Succeeded", 2), what="version 2 promoted")
    operator.wait_for(
        lambda: all(kubectl.get(kind, f"{name}-v1", namespace) is None for kind in ("deployment", "pdb", "hpa")),
        what="version 1's Deployment, budget and autoscaler pruned",
    )
    assert route_weights(kubectl, namespace, name) == (100, 0)
    assert registry.read(model)["aliases"]["production"] == 2  # registry write-back under the same account


def test_modeldeployment_with_only_the_charts_permissions(
    operator_as_service_account: OperatorUnderTest, registry: Registry, metrics: Metrics, gateway_api: None
) -> None:
    operator = operator_as_service_account
    start = operator.log_size()
    modeldeployment_scenario(operator, registry, metrics)
    operator.assert_nothing_forbidden(start)


def test_operator_log_has_no_forbidden_at_all(operator_as_service_account: OperatorUnderTest) -> None:
    """Startup included (kopf's discovery of CRDs and namespaces, watches of every kind and child kind)."""
    assert operator_as_service_account.forbidden_lines() == []
