"""Read the readiness of built-in workloads from their status, as `kubectl rollout status` does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str


def deployment_readiness(deployment: dict[str, Any] | None) -> Readiness:
    if deployment is None:
        return Readiness(False, "NotCreated", "the Deployment does not exist yet")
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    name = deployment["metadata"]["name"]
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return Readiness(False, "RolloutPending", f"Deployment {name} has not observed its latest spec yet")
    updated, available = int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0))
    if updated < wanted:
        return Readiness(False, "RollingOut", f"Deployment {name}: {updated}/{wanted} replicas updated")
    if available < wanted:
        return Readiness(False, "PodsNotReady", f"Deployment {name}: {available}/{wanted} replicas available")
    return Readiness(True, "Available", f"Deployment {name}: {available}/{wanted} replicas available")


def statefulset_readiness(statefulset: dict[str, Any] | None) -> Readiness:
    if statefulset is None:
        return Readiness(False, "NotCreated", "the StatefulSet does not exist yet")
    wanted = int((statefulset.get("spec") or {}).get("replicas", 1))
    status = statefulset.get("status") or {}
    name = statefulset["metadata"]["name"]
    ready = int(status.get("readyReplicas", 0))
    if status.get("observedGeneration", 0) < statefulset["metadata"].get("generation", 0):
        return Readiness(False, "RolloutPending", f"StatefulSet {name} has not observed its latest spec yet")
    if ready < wanted or int(status.get("updatedReplicas", wanted)) < wanted:
        return Readiness(False, "PodsNotReady", f"StatefulSet {name}: {ready}/{wanted} pods ready")
    return Readiness(True, "Ready", f"StatefulSet {name}: {ready}/{wanted} pods ready")


JobState = Literal["Running", "Succeeded", "Failed"]


def job_state(job: dict[str, Any]) -> tuple[JobState, str]:
    """The Job's outcome and, for a failure, the reason Kubernetes gives (BackoffLimitExceeded, ...)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition["type"] == "Complete":
            return "Succeeded", "completed"
        if condition["type"] == "Failed":
            return "Failed", f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}".strip(": ")
    return "Running", "running"
