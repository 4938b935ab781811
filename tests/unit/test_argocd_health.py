"""Argo CD health checks (docs/argocd/*.lua) run in Lua 5.1 (Argo CD's gopher-lua is 5.1) against sample
statuses; the argocd-cm snippet embeds exactly the .lua files."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.kube import ROOT

ARGOCD = ROOT / "docs" / "argocd"
KINDS = ("TrackingServer", "RegisteredModel", "ModelDeployment")


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((ARGOCD / f"health-{kind.lower()}.lua").read_text())
    return str(result["status"]), str(result["message"])


def resource(
    generation: int = 2, observed: int | None = 2, conditions: dict[str, tuple[str, str]] | None = None, **status: Any
) -> dict[str, Any]:
    """An object with conditions given as {type: (status, reason)}; message is "<reason> message"."""
    items = [
        {"type": t, "status": s, "reason": r, "message": f"{r} message", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for t, (s, r) in (conditions or {}).items()
    ]
    body: dict[str, Any] = {"metadata": {"name": "x", "namespace": "ml", "generation": generation}}
    if observed is not None or items or status:
        body["status"] = {**status, "conditions": items}
        if observed is not None:
            body["status"]["observedGeneration"] = observed
    return body


@pytest.mark.parametrize("kind", KINDS)
def test_common_rules(kind: str) -> None:
    assert health(kind, resource(observed=None)) == (
        "Progressing",
        "Waiting for the operator to observe the latest spec",
    )
    stale = resource(generation=3, observed=2, conditions={"Ready": ("True", "Ready")})
    assert health(kind, stale)[0] == "Progressing"
    invalid = resource(generation=3, observed=3, conditions={"Ready": ("False", "InvalidSpec")})
    assert health(kind, invalid) == ("Degraded", "InvalidSpec: InvalidSpec message")
    # InvalidSpec is reported even before observedGeneration catches up (status is written with it).
    assert (
        health(kind, resource(generation=4, observed=3, conditions={"Ready": ("False", "InvalidSpec")}))[0]
        == "Degraded"
    )
    first_sight = resource(conditions={"Ready": ("Unknown", "Reconciling")})
    assert health(kind, first_sight)[0] == "Progressing"


def test_tracking_server() -> None:
    ready = resource(
        conditions={"Ready": ("True", "Ready")}, phase="Ready", version="3.17.2", url="http://mlflow.ml.svc:5000"
    )
    assert health("TrackingServer", ready) == ("Healthy", "MLflow 3.17.2 serves at http://mlflow.ml.svc:5000")
    migrating = resource(
        conditions={"Migrated": ("False", "Migrating"), "Ready": ("False", "Migrating")}, phase="Migrating"
    )
    assert health("TrackingServer", migrating) == ("Progressing", "Migrating: Migrating message")
    broken = resource(conditions={"Ready": ("False", "BucketUnreachable")}, phase="Failed")
    assert health("TrackingServer", broken) == ("Degraded", "BucketUnreachable: BucketUnreachable message")
    pending = resource(conditions={"Ready": ("False", "PodsNotReady")}, phase="Provisioning")
    assert health("TrackingServer", pending)[0] == "Progressing"


def test_registered_model() -> None:
    synced = resource(conditions={"Synced": ("True", "Synced"), "Ready": ("True", "Synced")})
    assert health("RegisteredModel", synced) == ("Healthy", "Synced: Synced message")
    down = resource(conditions={"Synced": ("False", "RegistryUnavailable"), "Ready": ("False", "RegistryUnavailable")})
    assert health("RegisteredModel", down) == ("Degraded", "RegistryUnavailable: RegistryUnavailable message")
    syncing = resource(conditions={"Ready": ("Unknown", "Syncing")})
    assert health("RegisteredModel", syncing) == ("Progressing", "Syncing: Syncing message")


def deployment(phase: str | None, available: str, ready: str, message: str = "", **extra: Any) -> dict[str, Any]:
    reasons = {"True": "StableAvailable", "False": "NoReadyReplicas", "Unknown": "Deploying"}
    conditions = {
        "ModelResolved": ("True", "Resolved"),
        "Available": (available, reasons[available]),
        "Progressing": ("True", "RollingOut"),
        "Ready": (ready, "Ready" if ready == "True" else "RollingOut"),
    }
    status: dict[str, Any] = {"message": message, **extra}
    if phase is not None:
        status["phase"] = phase
    return resource(conditions=conditions, **status)


def test_model_deployment_phases() -> None:
    md = "ModelDeployment"
    assert health(md, deployment("Succeeded", "True", "True", "version 4 is rolled out")) == (
        "Healthy",
        "version 4 is rolled out",
    )
    assert health(md, deployment("Progressing", "True", "Unknown", "version 5, step 1/4, weight 10%")) == (
        "Progressing",
        "version 5, step 1/4, weight 10%",
    )
    assert health(md, deployment("Paused", "True", "Unknown", "paused until promoted")) == (
        "Suspended",
        "paused until promoted",
    )
    assert health(md, deployment("Degraded", "False", "False", "stable version 4 has no ready pods")) == (
        "Degraded",
        "stable version 4 has no ready pods",
    )
    # Rolled back, the stable serves: healthy, with why.
    assert health(md, deployment("RolledBack", "True", "True", "version 5: error-rate 0.2 > 0.01")) == (
        "Healthy",
        "Rolled back: version 5: error-rate 0.2 > 0.01",
    )
    # Rolled back and the stable does not serve: degraded.
    assert health(md, deployment("RolledBack", "False", "False", "stable version 4 has no ready pods"))[0] == "Degraded"
    # No message in status: the condition explains.
    assert health(md, deployment("Paused", "True", "Unknown")) == ("Suspended", "RollingOut: RollingOut message")


def test_model_deployment_without_phase_follows_ready() -> None:
    md = "ModelDeployment"
    assert health(md, deployment(None, "Unknown", "Unknown"))[0] == "Progressing"
    assert health(md, deployment(None, "True", "True")) == ("Healthy", "Ready: Ready message")
    assert health(md, deployment(None, "False", "False"))[0] == "Degraded"


def test_argocd_cm_snippet_embeds_the_lua_files_exactly() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert snippet["kind"] == "ConfigMap" and snippet["metadata"]["name"] == "argocd-cm"
    expected = {
        f"resource.customizations.health.mlflow.operator.dev_{kind}": (
            ARGOCD / f"health-{kind.lower()}.lua"
        ).read_text()
        for kind in KINDS
    }
    assert snippet["data"] == expected
    assert {path.name for path in ARGOCD.glob("*.lua")} == {f"health-{kind.lower()}.lua" for kind in KINDS}
