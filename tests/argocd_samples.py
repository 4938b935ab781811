"""Sample statuses of each kind and the Argo CD health the shipped checks (docs/argocd/argocd-cm.yaml) must give them:
data for tests/unit/test_argocd_health.py (the Lua, run by lupa) and tests/integration/test_argocd_cli.py (the
Argo CD CLI), whose verdicts must agree."""

from __future__ import annotations

from typing import Any, NamedTuple

from tests.argocd import KINDS

API = "mlflow.operator.dev/v1alpha1"
WAITING = "Waiting for the operator to observe the latest spec"


class Sample(NamedTuple):
    id: str
    obj: dict[str, Any]
    status: str
    message: str


def resource(
    kind: str,
    generation: int = 2,
    observed: int | None = 2,
    conditions: dict[str, tuple[str, str]] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """An object with conditions given as {type: (status, reason)}; message is "<reason> message"."""
    items = [
        {"type": t, "status": s, "reason": r, "message": f"{r} message", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for t, (s, r) in (conditions or {}).items()
    ]
    body: dict[str, Any] = {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ml", "generation": generation},
    }
    if observed is not None or items or status:
        body["status"] = {**status, "conditions": items}
        if observed is not None:
            body["status"]["observedGeneration"] = observed
    return body


def common_samples(kind: str) -> list[Sample]:
    invalid = {"Ready": ("False", "InvalidSpec")}
    return [
        Sample(f"{kind}-no-status", resource(kind, observed=None), "Progressing", WAITING),
        Sample(
            f"{kind}-stale", resource(kind, generation=3, observed=2, conditions={"Ready": ("True", "Ready")}),
            "Progressing", WAITING,
        ),
        Sample(
            f"{kind}-invalid-spec", resource(kind, generation=3, observed=3, conditions=invalid),
            "Degraded", "InvalidSpec: InvalidSpec message",
        ),
        # InvalidSpec is reported even before observedGeneration catches up (status is written with it).
        Sample(
            f"{kind}-invalid-spec-not-yet-observed", resource(kind, generation=4, observed=3, conditions=invalid),
            "Degraded", "InvalidSpec: InvalidSpec message",
        ),
        Sample(
            f"{kind}-first-sight", resource(kind, conditions={"Ready": ("Unknown", "Reconciling")}),
            "Progressing", "Reconciling: Reconciling message",
        ),
    ]  # fmt: skip


def tracking_server_samples() -> list[Sample]:
    ts = "TrackingServer"
    ready = resource(
        ts, conditions={"Ready": ("True", "Ready")}, phase="Ready", version="3.17.2", url="http://mlflow.ml.svc:5000"
    )
    migrating = resource(
        ts, conditions={"Migrated": ("False", "Migrating"), "Ready": ("False", "Migrating")}, phase="Migrating"
    )
    broken = resource(ts, conditions={"Ready": ("False", "BucketUnreachable")}, phase="Failed")
    pending = resource(ts, conditions={"Ready": ("False", "PodsNotReady")}, phase="Provisioning")
    return [
        Sample("TrackingServer-ready", ready, "Healthy", "MLflow 3.17.2 serves at http://mlflow.ml.svc:5000"),
        Sample("TrackingServer-migrating", migrating, "Progressing", "Migrating: Migrating message"),
        Sample("TrackingServer-failed", broken, "Degraded", "BucketUnreachable: BucketUnreachable message"),
        Sample("TrackingServer-provisioning", pending, "Progressing", "PodsNotReady: PodsNotReady message"),
    ]


def registered_model_samples() -> list[Sample]:
    rm = "RegisteredModel"
    synced = resource(rm, conditions={"Synced": ("True", "Synced"), "Ready": ("True", "Synced")})
    down = resource(
        rm, conditions={"Synced": ("False", "RegistryUnavailable"), "Ready": ("False", "RegistryUnavailable")}
    )
    syncing = resource(rm, conditions={"Ready": ("Unknown", "Syncing")})
    return [
        Sample("RegisteredModel-synced", synced, "Healthy", "Synced: Synced message"),
        Sample("RegisteredModel-registry-down", down, "Degraded", "RegistryUnavailable: RegistryUnavailable message"),
        Sample("RegisteredModel-syncing", syncing, "Progressing", "Syncing: Syncing message"),
    ]


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
    return resource("ModelDeployment", conditions=conditions, **status)


def model_deployment_samples() -> list[Sample]:
    no_stable = "stable version 4 has no ready pods"
    return [
        Sample(
            "ModelDeployment-succeeded", deployment("Succeeded", "True", "True", "version 4 is rolled out"),
            "Healthy", "version 4 is rolled out",
        ),
        Sample(
            "ModelDeployment-progressing",
            deployment("Progressing", "True", "Unknown", "version 5, step 1/4, weight 10%"),
            "Progressing", "version 5, step 1/4, weight 10%",
        ),
        Sample(
            "ModelDeployment-paused", deployment("Paused", "True", "Unknown", "paused until promoted"),
            "Suspended", "paused until promoted",
        ),
        Sample("ModelDeployment-degraded", deployment("Degraded", "False", "False", no_stable), "Degraded", no_stable),
        # Rolled back, the stable serves: healthy, with why.
        Sample(
            "ModelDeployment-rolled-back", deployment("RolledBack", "True", "True", "version 5: error-rate 0.2 > 0.01"),
            "Healthy", "Rolled back: version 5: error-rate 0.2 > 0.01",
        ),
        # Rolled back and the stable does not serve: degraded.
        Sample(
            "ModelDeployment-rolled-back-no-stable", deployment("RolledBack", "False", "False", no_stable),
            "Degraded", no_stable,
        ),
        # No message in status: the condition explains.
        Sample(
            "ModelDeployment-paused-no-message", deployment("Paused", "True", "Unknown"),
            "Suspended", "RollingOut: RollingOut message",
        ),
        # Without a phase, Ready decides.
        Sample(
            "ModelDeployment-no-phase-unknown", deployment(None, "Unknown", "Unknown"),
            "Progressing", "RollingOut: RollingOut message",
        ),
        Sample("ModelDeployment-no-phase-ready", deployment(None, "True", "True"), "Healthy", "Ready: Ready message"),
        Sample(
            "ModelDeployment-no-phase-not-ready", deployment(None, "False", "False"),
            "Degraded", "RollingOut: RollingOut message",
        ),
    ]  # fmt: skip


SAMPLES = [
    *(sample for kind in KINDS for sample in common_samples(kind)),
    *tracking_server_samples(),
    *registered_model_samples(),
    *model_deployment_samples(),
]
