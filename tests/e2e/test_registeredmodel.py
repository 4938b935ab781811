"""RegisteredModel on a real API server against a real MLflow registry (a local `mlflow server`).

The operator runs outside the cluster here, so the resources use `trackingUri` with the server's loopback
URL, which is how a trackingUri is used whenever the operator cannot resolve in-cluster names.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.argocd import assert_live_health
from tests.e2e.operator_process import RESYNC_SECONDS, start_operator
from tests.e2e.serving import Registry, logged_registry
from tests.kube import Kubectl, condition, eventually

API = "mlflow.operator.dev/v1alpha1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with logged_registry(tmp_path_factory, "e2e", [1, 2]) as registry:
        yield registry


def model(name: str, registry_url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "RegisteredModel",
        "metadata": {"name": name},
        "spec": {"trackingUri": registry_url, **spec},
    }


def versions(registry: Registry) -> list[dict[str, Any]]:
    return [{"source": item["model_uri"], "runId": item["run_id"]} for item in registry.logged]


def synced(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kubectl.get("registeredmodel", name, namespace)
        found = condition(obj, "Synced")
        generation_seen = (
            obj is not None and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        )
        return obj if found and found["status"] == "True" and generation_seen else None

    return eventually(check, timeout=timeout, what=f"{name} Synced at its generation")


def test_model_versions_aliases_and_drift(kubectl: Kubectl, operator: Path, namespace: str, registry: Registry) -> None:
    spec = {
        "modelName": "fraud-e2e",
        "resyncInterval": f"{RESYNC_SECONDS}s",
        "description": "Card fraud.",
        "tags": {"team": "risk", "tier": "gold"},
        "versions": versions(registry),
        "aliases": {"champion": 1},
    }
    kubectl.apply(model("fraud", registry.url, **spec), namespace)
    obj = synced(kubectl, namespace, "fraud")
    kubectl.run("wait", "registeredmodel/fraud", "-n", namespace, "--for=condition=Ready", "--timeout=30s")
    assert_live_health(kubectl, "RegisteredModel", "fraud", namespace, "Healthy")
    status = obj["status"]
    assert status["modelName"] == "fraud-e2e" and status["latestVersion"] == 2
    assert [v["version"] for v in status["versions"]] == [2, 1]
    assert status["aliases"] == {"champion": 1} and status["lastSyncTime"].endswith("Z")
    seen = registry.read("fraud-e2e")
    assert seen["description"] == "Card fraud." and seen["aliases"] == {"champion": 1}
    assert {k: v for k, v in seen["tags"].items() if k in ("team", "tier")} == {"team": "risk", "tier": "gold"}
    assert seen["by_alias"]["champion"]["run_id"] == registry.logged[0]["run_id"]

    # Move an alias, add one, drop a tag from the spec.
    spec.update(aliases={"champion": 2, "challenger": 1}, tags={"team": "risk"})
    kubectl.apply(model("fraud", registry.url, **spec), namespace)
    synced(kubectl, namespace, "fraud")
    seen = registry.read("fraud-e2e")
    assert seen["aliases"] == {"champion": 2, "challenger": 1}
    assert "tier" not in seen["tags"]
    assert len(seen["versions"]) == 2, "no version registered twice"

    # Drift made by a script: owned alias moved, owned tag deleted, a foreign tag and alias added.
    registry.tamper(
        "fraud-e2e", set_aliases={"champion": 1, "shadow": 2}, delete_tags=["team"], set_tags={"owner": "someone"}
    )
    eventually(
        lambda: registry.read("fraud-e2e")["aliases"].get("champion") == 2,
        timeout=6 * RESYNC_SECONDS + 30,
        interval=2,
        what="alias put back",
    )
    seen = registry.read("fraud-e2e")
    assert seen["tags"]["team"] == "risk" and seen["tags"]["owner"] == "someone"
    assert seen["aliases"]["shadow"] == 2, "aliases the operator does not own are left alone"
    drift = eventually(
        lambda: [e for e in kubectl.events(namespace) if e["reason"] == "DriftCorrected"], what="DriftCorrected event"
    )
    assert "champion" in drift[0]["message"]


def test_alias_to_a_missing_version_changes_nothing(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry
) -> None:
    kubectl.apply(
        model(
            "missing", registry.url, modelName="missing-e2e", versions=versions(registry)[:1], aliases={"champion": 1}
        ),
        namespace,
    )
    synced(kubectl, namespace, "missing")
    kubectl.apply(
        model(
            "missing",
            registry.url,
            modelName="missing-e2e",
            versions=versions(registry)[:1],
            aliases={"champion": 1, "challenger": 7},
            description="new text",
        ),
        namespace,
    )

    def refused() -> dict[str, Any] | None:
        found = condition(kubectl.get("registeredmodel", "missing", namespace), "Synced")
        return found if found and found["reason"] == "VersionNotFound" else None

    assert "challenger" in eventually(refused, what="VersionNotFound")["message"]
    assert condition(kubectl.get("registeredmodel", "missing", namespace), "Ready")["status"] == "False"  # type: ignore[index]
    assert "challenger" in assert_live_health(kubectl, "RegisteredModel", "missing", namespace, "Degraded").message
    seen = registry.read("missing-e2e")
    assert seen["description"] != "new text", "nothing else changes in a refused pass"
    assert seen["aliases"] == {"champion": 1}


def test_registry_outage_is_reported_and_recovers_on_its_own(
    kubectl: Kubectl, operator: Path, namespace: str, registry: Registry
) -> None:
    kubectl.apply(model("outage", registry.url, modelName="outage-e2e", tags={"a": "b"}), namespace)
    synced(kubectl, namespace, "outage")
    registry.server.stop()
    try:
        kubectl.apply(model("outage", registry.url, modelName="outage-e2e", tags={"a": "c"}), namespace)

        def unavailable() -> dict[str, Any] | None:
            found = condition(kubectl.get("registeredmodel", "outage", namespace), "Synced")
            return found if found and found["reason"] == "RegistryUnavailable" else None

        eventually(unavailable, timeout=60, what="RegistryUnavailable")
    finally:
        registry.server.start()
    synced(kubectl, namespace, "outage", timeout=120)
    assert registry.read("outage-e2e")["tags"]["a"] == "c"


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_deletion_policy(kubectl: Kubectl, operator: Path, namespace: str, registry: Registry, policy: str) -> None:
    name = f"deletion-{policy.lower()}"
    kubectl.apply(model(name, registry.url, modelName=f"{name}-e2e", deletionPolicy=policy), namespace)
    obj = synced(kubectl, namespace, name)
    assert ("mlflow.operator.dev/cleanup" in (obj["metadata"].get("finalizers") or [])) == (policy == "Delete")
    kubectl.run("delete", "registeredmodel", name, "-n", namespace, "--timeout=60s")
    if policy == "Retain":
        assert "aliases" in registry.read(f"{name}-e2e")
    else:
        with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST"):
            registry.read(f"{name}-e2e")


def test_operator_killed_mid_registration_registers_nothing_twice(
    kubectl: Kubectl, kubeconfig: str, crds: None, registry: Registry, tmp_path: Path
) -> None:
    """SIGKILL the operator at several moments while it registers versions, start it again: every version
    exists once. The namespace is outside the session operator's, so this test owns its operator."""
    namespace = f"mlflow-restart-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", namespace)
    # Four distinct sources (two per logged model) make four versions to register.
    sources = [{"source": item["model_uri"]} for item in registry.logged]
    sources += [{"source": f"runs:/{item['run_id']}/model"} for item in registry.logged]
    try:
        for attempt, kill_after in enumerate((0.3, 1.0, 2.0)):
            name = f"restart-{attempt}"
            operator = start_operator(kubeconfig, namespace, tmp_path / f"operator-{attempt}.log")
            kubectl.apply(
                model(name, registry.url, modelName=f"{name}-e2e", versions=sources, aliases={"champion": 1}), namespace
            )
            time.sleep(kill_after)
            operator.kill()
            restarted = start_operator(kubeconfig, namespace, tmp_path / f"operator-{attempt}-again.log")
            try:
                synced(kubectl, namespace, name)
            finally:
                restarted.stop()
            seen = registry.read(f"{name}-e2e")
            keys = [v["tags"]["mlflow.operator.dev/source-key"] for v in seen["versions"]]
            assert len(seen["versions"]) == 4 and len(set(keys)) == 4, seen["versions"]
            assert sorted(v["source"] for v in seen["versions"]) == sorted(s["source"] for s in sources)
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
