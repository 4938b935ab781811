"""ModelDeployment on a real API server, against a real MLflow registry and a real Prometheus.

The registry is a local `mlflow server` (trackingUri with its loopback URL, as for RegisteredModel); the
canary's metrics come from an exporter whose series the test sets, scraped by Prometheus every second.
kwok runs the model-server pods (they become Ready without running), so this proves the operator's side:
resolution, Deployments per version, HTTPRoute weights, analysis, rollback, promotion and registry
write-back. The model server itself is proven against real processes in
tests/integration/test_model_server.py. The registry, metrics and gateway_api fixtures are tests/e2e/conftest.py's,
the helpers tests/e2e/serving.py's.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.argocd import assert_argocd_health, assert_live_health
from tests.e2e.operator_process import IMAGE_MIRROR, start_operator
from tests.e2e.serving import (
    API,
    INTERVAL_SECONDS,
    Metrics,
    Registry,
    deployments,
    events,
    model_deployment,
    route_weights,
)
from tests.kube import Kubectl, condition, eventually, md_status, wait_passes, wait_phase


def in_order(seen: list[str], expected: list[str]) -> bool:
    """Whether `expected` occurs in `seen` as a subsequence."""
    remaining = iter(seen)
    return all(any(item == wanted for item in remaining) for wanted in expected)


def images(kubectl: Kubectl, namespace: str, deployment: str) -> set[str]:
    """The images of a Deployment's containers and init containers (the session operator gives children
    their default images from conftest.IMAGE_MIRROR)."""
    pod = kubectl.get("deployment", deployment, namespace)["spec"]["template"]["spec"]  # type: ignore[index]
    return {c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]}


def test_alias_moves_roll_out_with_analysis_then_a_failing_version_rolls_back(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry, metrics: Metrics, gateway_api: None
) -> None:
    name, model = "fraud", f"fraud-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    metrics.set_error_rate(namespace, name, 0.0)
    kubectl.apply(model_deployment(name, registry, metrics.prometheus.url, model), namespace)

    first = wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
    assert first["resolved"]["version"] == 1 and first["resolved"]["runId"] == registry.logged[0]["run_id"]
    assert route_weights(kubectl, namespace, name) == (100, 0)
    assert deployments(kubectl, namespace) == [f"{name}-v1"]
    assert images(kubectl, namespace, f"{name}-v1") == {f"{IMAGE_MIRROR}/mlflow-operator/mlflow-model-server:3.17.2"}

    # The alias moves: a canary of version 2 goes through every step; weights follow them in order.
    registry.move_alias(model, "champion", 2)
    seen_weights: list[tuple[int, int]] = []

    def promoted() -> dict[str, Any] | None:
        weights = route_weights(kubectl, namespace, name)
        if weights is not None and (not seen_weights or seen_weights[-1] != weights):
            seen_weights.append(weights)
        current = md_status(kubectl, namespace, name)
        return current if current.get("phase") == "Succeeded" and current.get("stableVersion") == 2 else None

    done = eventually(promoted, timeout=120, interval=0.3, what="version 2 promoted")
    promoted()  # the route as the promotion left it
    assert in_order([str(w) for w in seen_weights], [str(w) for w in [(75, 25), (50, 50), (100, 0)]]), seen_weights
    assert all(canary <= 50 for _, canary in seen_weights[:-1]), seen_weights
    assert [r["outcome"] for r in done["history"]] == ["Succeeded", "Succeeded"]
    assert [r["outcome"] for r in done["analysisResults"]] == ["Passed", "Passed"]
    eventually(lambda: deployments(kubectl, namespace) == [f"{name}-v2"], timeout=30, what="version 1 removed")
    read = registry.read(model)
    assert read["aliases"] == {"champion": 2, "production": 2}
    tags = {v["version"]: v["tags"] for v in read["versions"]}
    assert tags[2]["mlflow.operator.dev/rollout"] == "Deployed"
    assert tags[2]["mlflow.operator.dev/deployment"] == f"{namespace}/{name}"

    # A failing version: the first measurement fails it, within one interval (+10 s) of its analysis.
    metrics.set_error_rate(namespace, name, 0.5)
    registry.move_alias(model, "champion", 3)
    analysing = eventually(
        lambda: (
            md_status(kubectl, namespace, name).get("currentStep") == 1
            and md_status(kubectl, namespace, name).get("canaryVersion") == 3
        ),
        timeout=60,
        interval=0.2,
        what="version 3 in its analysis step",
    )
    assert analysing
    started = time.monotonic()
    rolled_back = wait_phase(kubectl, namespace, name, "RolledBack", timeout=INTERVAL_SECONDS + 10)
    assert time.monotonic() - started <= INTERVAL_SECONDS + 10
    assert rolled_back["stableVersion"] == 2 and rolled_back["rolledBackVersion"] == 3
    assert rolled_back.get("canaryVersion") is None and rolled_back["canaryWeight"] == 0
    assert route_weights(kubectl, namespace, name) == (100, 0)
    assert (condition({"status": rolled_back}, "Ready") or {}).get("status") == "True"  # the stable serves: healthy
    # Argo CD shows it Healthy (the stable serves) and says why.
    assert (
        "Rolled back: version 3" in assert_live_health(kubectl, "ModelDeployment", name, namespace, "Healthy").message
    )
    eventually(lambda: deployments(kubectl, namespace) == [f"{name}-v2"], timeout=30, what="version 3 removed")

    def tagged() -> dict[str, str] | None:
        version = next(v for v in registry.read(model)["versions"] if v["version"] == 3)
        return version["tags"] if version["tags"].get("mlflow.operator.dev/rollout") == "RolledBack" else None

    tags3 = eventually(tagged, timeout=30, interval=2, what="version 3 tagged RolledBack")
    assert "error-rate" in tags3["mlflow.operator.dev/rollout-reason"]
    assert tags3["mlflow.operator.dev/rollout-by"] == "mlflow-operator"
    assert registry.read(model)["aliases"]["production"] == 2  # a rolled-back version is never promoted

    reasons = [reason for reason, _ in events(kubectl, namespace, name)]
    expected = [
        *["RolloutStarted", "RolloutSucceeded"],  # version 1, directly
        *["RolloutStarted", "TrafficShifted", "StepCompleted", "AnalysisPassed", "AnalysisPassed"],
        *["StepCompleted", "TrafficShifted", "StepCompleted", "StepCompleted", "RolloutSucceeded"],
        *["RolloutStarted", "TrafficShifted", "StepCompleted", "AnalysisFailed", "RolledBack"],
    ]
    assert in_order(reasons, expected), reasons


def test_no_data_pauses_as_inconclusive_until_promoted(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry, metrics: Metrics, gateway_api: None
) -> None:
    name, model = "nodata", f"nodata-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    kubectl.apply(model_deployment(name, registry, metrics.prometheus.url, model), namespace)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
    assert_live_health(kubectl, "ModelDeployment", name, namespace, "Healthy")

    registry.move_alias(model, "champion", 2)  # nobody exports the canary's error rate: no data
    # Argo CD reads the canary (a setWeight step, then the analysis collecting its samples) as Progressing.
    canary = eventually(
        lambda: (o := kubectl.get("modeldeployment", name, namespace)) and o["status"].get("canaryVersion") == 2 and o,
        timeout=60,
        interval=0.3,
        what="the canary of version 2",
    )
    assert canary["status"]["phase"] == "Progressing", canary["status"]
    assert_argocd_health(canary, "Progressing")
    paused = wait_phase(kubectl, namespace, name, "Paused", timeout=60, canaryVersion=2)
    progressing = condition({"status": paused}, "Progressing")
    assert progressing is not None and progressing["status"] == "False" and progressing["reason"] == "Inconclusive"
    assert "no data" in progressing["message"]
    assert paused["analysisResults"][-1]["outcome"] == "Inconclusive"
    assert paused["canaryWeight"] == 25  # paused where it was: neither promoted nor rolled back
    assert (condition({"status": paused}, "Ready") or {}).get("status") == "True"  # version 1 still serves
    assert "no data" in assert_live_health(kubectl, "ModelDeployment", name, namespace, "Suspended").message

    # A person looks at it and promotes: the analysis step is skipped, the rollout completes.
    kubectl.run("annotate", "modeldeployment", name, "-n", namespace, "mlflow.operator.dev/promote=1")
    done = wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=2)
    assert done["handledRequest"] == "promote:1"
    messages = [message for reason, message in events(kubectl, namespace, name) if reason == "Promoted"]
    assert messages and "kubectl-annotate" in messages[0]


def test_alias_that_does_not_exist_is_reported(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry, metrics: Metrics, gateway_api: None
) -> None:
    name, model = "missing", f"missing-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    spec = model_deployment(name, registry, metrics.prometheus.url, model)
    spec["spec"]["model"]["alias"] = "nope"
    kubectl.apply(spec, namespace)

    def reported() -> dict[str, Any] | None:
        ready = condition(kubectl.get("modeldeployment", name, namespace), "Ready")
        return ready if ready is not None and ready["reason"] == "AliasNotFound" else None

    ready = eventually(reported, timeout=60, what="Ready=False AliasNotFound")
    assert ready["status"] == "False" and "nope" in ready["message"]
    assert "nope" in assert_live_health(kubectl, "ModelDeployment", name, namespace, "Degraded").message
    assert deployments(kubectl, namespace) == []
    assert any(r == "AliasNotFound" for r, _ in events(kubectl, namespace, name))


def test_operator_killed_mid_rollout_resumes_from_status(
    kubectl: Kubectl,
    kubeconfig: str,
    crds: None,
    registry: Registry,
    metrics: Metrics,
    gateway_api: None,
    tmp_path: Path,
) -> None:
    """SIGKILL the operator while a canary pauses; a new one finishes the same rollout: one start, one
    success, no step repeated. The namespace is outside the session operator's: this test owns its own."""
    namespace = f"mlflow-restart-{uuid.uuid4().hex[:8]}"
    name, model = "resume", f"resume-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    registry.register(model, champion=1)
    spec = model_deployment(name, registry, metrics.prometheus.url, model)
    spec["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 30}, {"pause": {"duration": "6s"}}, {"setWeight": 60}]
    del spec["spec"]["analysis"]
    operator = start_operator(kubeconfig, namespace, tmp_path / "operator-1.log")
    try:
        kubectl.apply(spec, namespace)
        wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
        registry.move_alias(model, "champion", 2)
        wait_phase(kubectl, namespace, name, "Progressing", timeout=60, canaryVersion=2, currentStep=1)
        operator.kill()
        operator = start_operator(kubeconfig, namespace, tmp_path / "operator-2.log")
        done = wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=2)
        assert [r["outcome"] for r in done["history"]] == ["Succeeded", "Succeeded"]
        reasons = [reason for reason, _ in events(kubectl, namespace, name)]
        assert reasons.count("RolloutStarted") == 2 and reasons.count("RolloutSucceeded") == 2, reasons
        assert reasons.count("StepCompleted") == 3, reasons  # each of the 3 steps once, across the restart
        assert route_weights(kubectl, namespace, name) == (100, 0)
    finally:
        operator.stop()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def replicas(kubectl: Kubectl, namespace: str, name: str) -> int | None:
    deployment = kubectl.get("deployment", name, namespace)
    return None if deployment is None else int(deployment["spec"]["replicas"])


def resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    kinds = "modeldeployments,deployments,services,poddisruptionbudgets,serviceaccounts"
    items = json.loads(kubectl.run("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def test_replica_ratio_splits_by_replicas_and_idle_resyncs_write_nothing(
    kubectl: Kubectl,
    operator: Path,
    namespace: str,
    registry: Registry,
    metrics: Metrics,
    gateway_api: None,
    metrics_url: str,
) -> None:
    """No router: the entry Service selects both versions and the weight is approximated by replicas."""
    name, model = "ratio", f"ratio-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    spec = model_deployment(name, registry, metrics.prometheus.url, model, replicas=4)
    spec["spec"]["trafficRouting"] = {"replicaRatio": {}}
    spec["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 25}, {"pause": {}}]
    del spec["spec"]["analysis"]
    kubectl.apply(spec, namespace)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
    assert replicas(kubectl, namespace, f"{name}-v1") == 4

    registry.move_alias(model, "champion", 2)
    paused = wait_phase(kubectl, namespace, name, "Paused", timeout=60, canaryVersion=2)
    assert (paused["canaryWeight"], paused["effectiveCanaryWeight"], paused["weightApproximate"]) == (25, 25, True)
    assert (replicas(kubectl, namespace, f"{name}-v1"), replicas(kubectl, namespace, f"{name}-v2")) == (3, 1)
    entry = kubectl.get("service", name, namespace)
    assert entry is not None and "mlflow.operator.dev/model-version" not in entry["spec"]["selector"]
    assert kubectl.get("httproute", name, namespace) is None

    # Paused indefinitely: nothing changes while the operator resyncs (every 5 s here).
    before = resource_versions(kubectl, namespace)
    wait_passes(metrics_url, "ModelDeployment")
    assert resource_versions(kubectl, namespace) == before

    kubectl.run("annotate", "modeldeployment", name, "-n", namespace, "mlflow.operator.dev/promote=go")
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=2)
    eventually(lambda: deployments(kubectl, namespace) == [f"{name}-v2"], timeout=30, what="version 1 removed")
    assert replicas(kubectl, namespace, f"{name}-v2") == 4


def test_without_a_strategy_a_pinned_version_change_replaces_the_old_one(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry
) -> None:
    name, model = "pinned", f"pinned-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    body: dict[str, Any] = {
        "trackingUri": registry.url,
        "model": {"registeredModel": model, "version": 1},
        "replicas": 1,
    }
    md = {"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}
    kubectl.apply(md, namespace)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)

    body["model"]["version"] = 2
    kubectl.apply(md, namespace)
    done = wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=2)
    assert done["resolved"]["version"] == 2 and done.get("canaryVersion") is None
    eventually(lambda: deployments(kubectl, namespace) == [f"{name}-v2"], timeout=30, what="version 1 removed")
    stable = kubectl.get("service", f"{name}-stable", namespace)
    assert stable is not None and stable["spec"]["selector"]["mlflow.operator.dev/model-version"] == "2"
    reasons = [reason for reason, _ in events(kubectl, namespace, name)]
    assert reasons.count("RolloutStarted") == 2 and "StepCompleted" not in reasons, reasons


def test_registry_down_mid_rollout_rolls_back_anyway_and_tags_once_it_returns(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry, metrics: Metrics, gateway_api: None
) -> None:
    """Safety never waits for the registry: the rollback happens while MLflow is down, the tag it decided
    waits in status.pendingRegistryWrites and is written when MLflow is back, with nobody's help."""
    name, model = "outage", f"outage-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    metrics.set_error_rate(namespace, name, 0.5)  # version 2 will fail its analysis
    kubectl.apply(model_deployment(name, registry, metrics.prometheus.url, model), namespace)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
    registry.move_alias(model, "champion", 2)
    wait_phase(kubectl, namespace, name, "Progressing", timeout=60, canaryVersion=2, currentStep=1)
    registry.server.stop()
    try:
        rolled_back = wait_phase(kubectl, namespace, name, "RolledBack", timeout=INTERVAL_SECONDS + 20)
        assert route_weights(kubectl, namespace, name) == (100, 0)

        def pending() -> dict[str, Any] | None:
            current = md_status(kubectl, namespace, name)
            resolved = condition({"status": current}, "ModelResolved") or {}
            waiting = current.get("pendingRegistryWrites") and resolved.get("reason") == "RegistryUnavailable"
            return current if waiting else None

        waiting = eventually(pending, timeout=60, what="the tag pending while MLflow is down")
        assert waiting["pendingRegistryWrites"][0]["version"] == 2
        assert rolled_back["stableVersion"] == 1
        assert (condition({"status": waiting}, "Ready") or {}).get("status") == "True"  # version 1 serves throughout
    finally:
        registry.server.start()

    def flushed() -> dict[str, Any] | None:
        current = md_status(kubectl, namespace, name)
        return current if not current.get("pendingRegistryWrites") else None

    eventually(flushed, timeout=120, interval=1, what="pending registry writes flushed after the outage")
    version = next(v for v in registry.read(model)["versions"] if v["version"] == 2)
    assert version["tags"]["mlflow.operator.dev/rollout"] == "RolledBack"
    reasons = [reason for reason, _ in events(kubectl, namespace, name)]
    assert "RegistryUnavailable" in reasons and "RolledBack" in reasons, reasons


def test_a_promotion_alias_owned_by_a_registered_model_is_reported_and_left_alone(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry
) -> None:
    name, model = "owned", f"owned-{uuid.uuid4().hex[:6]}"
    registry.register(model, champion=1)
    owner = {
        "apiVersion": API,
        "kind": "RegisteredModel",
        "metadata": {"name": "owner"},
        "spec": {"trackingUri": registry.url, "modelName": model, "aliases": {"production": 1}},
    }
    kubectl.apply(owner, namespace)
    body = {
        "trackingUri": registry.url,
        "model": {"registeredModel": model, "alias": "champion"},
        "pollInterval": "2s",
        "replicas": 1,
        "promotion": {"setAlias": "production"},
    }
    kubectl.apply({"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}, namespace)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=1)
    registry.move_alias(model, "champion", 2)
    wait_phase(kubectl, namespace, name, "Succeeded", stableVersion=2)

    conflict = condition(kubectl.get("modeldeployment", name, namespace), "AliasConflict")
    assert conflict is not None and (conflict["status"], conflict["reason"]) == ("True", "PromotionAliasOwned")
    assert "RegisteredModel owner" in conflict["message"]

    def tagged() -> dict[str, Any] | None:
        read = registry.read(model)
        version = next(v for v in read["versions"] if v["version"] == 2)
        return read if version["tags"].get("mlflow.operator.dev/rollout") == "Deployed" else None

    read = eventually(tagged, timeout=30, what="version 2 tagged Deployed")
    assert read["aliases"]["production"] == 1, "the RegisteredModel's alias was not moved by the promotion"
    succeeded = [message for reason, message in events(kubectl, namespace, name) if reason == "RolloutSucceeded"]
    assert succeeded and all("alias" not in message for message in succeeded), succeeded
