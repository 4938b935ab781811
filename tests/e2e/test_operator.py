"""The operator sees each kind: validates it, sets conditions on first sight, reports observedGeneration."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd import assert_live_health
from tests.kube import ROOT, Kubectl, condition, eventually, wait_object_pass

EXPECTED_CONDITIONS = {
    "TrackingServer": {
        "DatabaseReady",
        "PoolerReady",
        "Available",
        "Migrated",
        "ArtifactsReady",
        "LifecycleApplied",
        "GarbageCollected",
        "RegistryEvents",
        "Ready",
    },
    "RegisteredModel": {"Synced", "RegistryEvents", "Ready"},
    "ModelDeployment": {"ModelResolved", "Available", "Progressing", "AliasConflict", "RegistryEvents", "Ready"},
}


def example_file(kind: str) -> list[dict[str, Any]]:
    """Every document of the example that holds `kind` (Secrets it references included)."""
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        if any(doc["kind"] == kind for doc in docs):
            return docs
    raise LookupError(kind)


def example(kind: str) -> dict[str, Any]:
    return next(doc for doc in example_file(kind) if doc["kind"] == kind)


@pytest.mark.parametrize("kind", sorted(EXPECTED_CONDITIONS))
def test_valid_resource_gets_conditions_and_observed_generation(
    kubectl: Kubectl, operator: Path, namespace: str, kind: str
) -> None:
    docs = example_file(kind)
    for doc in docs:
        kubectl.apply(doc, namespace)
    name = example(kind)["metadata"]["name"]
    seen = eventually(
        lambda: (
            (o := kubectl.get(kind, name, namespace)) and (o.get("status") or {}).get("observedGeneration") == 1 and o
        ),
        what=f"{kind} observedGeneration",
    )
    types = {c["type"] for c in seen["status"]["conditions"]}
    assert types == EXPECTED_CONDITIONS[kind]
    for item in seen["status"]["conditions"]:
        assert item["observedGeneration"] == 1
        assert item["lastTransitionTime"].endswith("Z")
    # What users and pipelines type works on these conditions.
    kubectl.run(
        "wait",
        f"{kind.lower()}/{name}",
        "-n",
        namespace,
        '--for=jsonpath={.status.conditions[?(@.type=="Ready")].type}=Ready',
        "--timeout=30s",
    )
    kubectl.run(
        "wait",
        f"{kind.lower()}/{name}",
        "-n",
        namespace,
        "--for=jsonpath={.status.observedGeneration}=1",
        "--timeout=30s",
    )


def test_spec_admitted_but_refused_by_operator_is_invalid_spec_with_event(
    kubectl: Kubectl, operator: Path, namespace: str
) -> None:
    obj = example("TrackingServer")
    obj["spec"]["version"] = "2.3.0"  # admitted by the schema; this operator needs MLflow >= 2.9
    kubectl.apply(obj, namespace)

    def invalid() -> dict[str, Any] | None:
        ready = condition(kubectl.get("trackingserver", "mlflow", namespace), "Ready")
        return ready if ready and ready["reason"] == "InvalidSpec" else None

    ready = eventually(invalid, what="Ready=False/InvalidSpec")
    assert ready["status"] == "False"
    assert "spec.version" in ready["message"] and "2.9.0 or newer" in ready["message"]
    assert_live_health(kubectl, "TrackingServer", "mlflow", namespace, "Degraded", f"InvalidSpec: {ready['message']}")
    warnings = eventually(
        lambda: [e for e in kubectl.events(namespace) if e["reason"] == "InvalidSpec" and e["type"] == "Warning"],
        what="InvalidSpec Warning event",
    )
    assert "spec.version" in warnings[0]["message"]
    kubectl.run("wait", "trackingserver/mlflow", "-n", namespace, "--for=condition=Ready=False", "--timeout=30s")

    # Fixing the spec clears it: the resource is reconciled again at the new generation.
    obj["spec"]["version"] = "3.17.2"
    kubectl.apply(obj, namespace)
    fixed = eventually(
        lambda: (
            (o := kubectl.get("trackingserver", "mlflow", namespace))
            and o["status"].get("observedGeneration") == 2
            and o
        ),
        what="observedGeneration 2",
    )
    assert condition(fixed, "Ready")["reason"] != "InvalidSpec"  # type: ignore[index]
    # No retry storm: the warning was emitted once, not on every retry.
    assert len([e for e in kubectl.events(namespace) if e["reason"] == "InvalidSpec"]) == 1


def test_idle_resync_writes_nothing(kubectl: Kubectl, operator: Path, metrics_url: str, namespace: str) -> None:
    obj = example("RegisteredModel")
    kubectl.apply(obj, namespace)
    first = eventually(
        lambda: (
            (o := kubectl.get("registeredmodel", "fraud", namespace))
            and (o.get("status") or {}).get("observedGeneration") == 1
            and o
        ),
        what="observed",
    )
    # A no-op apply and a label change are handled again, but write no status: nothing churns.
    kubectl.apply(obj, namespace)
    touched = time.time()
    kubectl.run("label", "registeredmodel/fraud", "-n", namespace, "touched=yes")
    labelled = kubectl.get("registeredmodel", "fraud", namespace)
    wait_object_pass(metrics_url, "RegisteredModel", namespace, "fraud", after=touched)
    later = kubectl.get("registeredmodel", "fraud", namespace)
    assert labelled is not None and later is not None
    assert later["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    assert later["status"] == first["status"]
