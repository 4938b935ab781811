"""The ModelDeployment handler's decisions that are not the rollout itself (that is logic.rollout): what the
cluster and the registry say, read into the rollout's observations, and what the handler reports.

Pure: the handler passes in what it read (Deployments, annotations, the registry's answer, the clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import gateway_route
from mlflow_operator.logic.conditions import ConditionUpdate
from mlflow_operator.logic.readiness import deployment_readiness
from mlflow_operator.logic.rollout import (
    RequestKind,
    SetAlias,
    TagVersion,
    TrackObservation,
    UserRequest,
    parse_duration,
)
from mlflow_operator.logic.rollout_report import AVAILABLE, PROGRESSING

MODEL_RESOLVED = "ModelResolved"
REASON_RESOLVED = "Resolved"
REASON_VERSION_NOT_READY = "VersionNotReady"
REASON_ROUTER_UNAVAILABLE = "RouterUnavailable"
REASON_READY = "Serving"

# Request annotations, in the order they win when several are present: stopping a rollout beats
# continuing it. `rollback` is a synonym of `abort` (the words users reach for differ).
ANNOTATION_PREFIX = "mlflow.operator.dev/"
REQUEST_ANNOTATIONS: tuple[tuple[str, RequestKind], ...] = (
    (ANNOTATION_PREFIX + "abort", "abort"),
    (ANNOTATION_PREFIX + "rollback", "abort"),
    (ANNOTATION_PREFIX + "promote", "promote"),
    (ANNOTATION_PREFIX + "retry", "retry"),
)
READY_VERSION_STATUS = "READY"


# --- observations ---------------------------------------------------------------------------------------


def _progress_failed(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the Deployment gave up (Progressing=False, ProgressDeadlineExceeded), and its message."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            return True, f"{condition.get('reason', 'ProgressDeadlineExceeded')}: {condition.get('message', '')}"
    return False, ""


def track_observation(version: int, deployment: Mapping[str, Any]) -> TrackObservation:
    """The Deployment of one model version as the rollout sees it."""
    readiness = deployment_readiness(dict(deployment))
    failed, why = _progress_failed(deployment)
    available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    return TrackObservation(
        version=version,
        ready=readiness.ready,
        available_replicas=available,
        failed=failed,
        message=why or readiness.message,
    )


def annotation_setter(metadata: Mapping[str, Any], key: str) -> str:
    """Who set an annotation, from managedFields (the field manager, e.g. kubectl-annotate): Kubernetes
    records no user on objects, and the manager is what tells a person's kubectl from a GitOps tool."""
    for entry in metadata.get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in annotations:
            return str(entry.get("manager") or "a user")
    return "a user"


def user_request(metadata: Mapping[str, Any]) -> UserRequest | None:
    """The request annotation that wins (REQUEST_ANNOTATIONS order); its value is the request's token, so
    setting the same annotation to a new value asks again."""
    annotations = metadata.get("annotations") or {}
    for key, kind in REQUEST_ANNOTATIONS:
        if key in annotations:
            return UserRequest(kind, str(annotations[key]), annotation_setter(metadata, key))
    return None


# --- resolving the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The registry's answer for spec.model at one time: a version to roll out, or why there is none."""

    key: str  # what was resolved (model reference and registry): a different key is resolved at once
    at: datetime
    condition: ConditionUpdate
    version: int | None = None
    source: str | None = None
    run_id: str | None = None
    failures: int = 0  # consecutive failed attempts, for the backoff

    def status_fields(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        resolved = {"version": self.version, "source": self.source, "runId": self.run_id}
        return {key: value for key, value in resolved.items() if value is not None}


def model_reference(spec: ModelDeploymentSpec) -> str:
    model = spec.model
    if model.alias is not None:
        return f"{model.registered_model}@{model.alias}"
    return f"{model.registered_model}/{model.version}"


def resolution_key(spec: ModelDeploymentSpec) -> str:
    connection = spec.tracking_uri or (spec.tracking_server_ref.name if spec.tracking_server_ref else "")
    return f"{connection} {model_reference(spec)}"


def next_resolution_at(
    spec: ModelDeploymentSpec, previous: Resolution, retry_delay: float, poll_seconds: float | None = None
) -> datetime:
    """A good answer is refreshed every pollInterval (an alias moves in the registry, not in the spec), or
    `poll_seconds` when registry events lengthen it; a failed one is retried with backoff."""
    if previous.version is not None:
        poll = poll_seconds if poll_seconds is not None else parse_duration(spec.poll_interval).total_seconds()
        return previous.at + timedelta(seconds=poll)
    return previous.at + timedelta(seconds=retry_delay)


def resolution_due(
    spec: ModelDeploymentSpec,
    previous: Resolution | None,
    now: datetime,
    retry_delay: float,
    poll_seconds: float | None = None,
    event_at: datetime | None = None,
) -> bool:
    """Resolve now: nothing resolved yet, a different reference, the poll is due, or a registry event about
    the model arrived since the last answer."""
    if previous is None or previous.key != resolution_key(spec):
        return True
    if event_at is not None and event_at >= previous.at:
        return True
    return now >= next_resolution_at(spec, previous, retry_delay, poll_seconds)


def resolved(
    spec: ModelDeploymentSpec, now: datetime, version: int, status: str | None, source: str | None, run_id: str | None
) -> Resolution:
    reference = model_reference(spec)
    key = resolution_key(spec)
    if status not in (None, READY_VERSION_STATUS):
        # PENDING_REGISTRATION: the artifacts may still be copied; FAILED_REGISTRATION: they never will be.
        return Resolution(
            key,
            now,
            ConditionUpdate(
                MODEL_RESOLVED,
                "False",
                REASON_VERSION_NOT_READY,
                f"{reference} is version {version}, "
                f"whose registration status is {status}: not rolled out until it is READY",
            ),
            failures=1,
        )
    where = f" from {source}" if source else ""
    condition = ConditionUpdate(MODEL_RESOLVED, "True", REASON_RESOLVED, f"{reference} is version {version}{where}")
    return Resolution(key, now, condition, version, source, run_id)


def unresolved(spec: ModelDeploymentSpec, now: datetime, reason: str, message: str, failures: int) -> Resolution:
    condition = ConditionUpdate(MODEL_RESOLVED, "False", reason, f"{model_reference(spec)}: {message}")
    return Resolution(resolution_key(spec), now, condition, failures=failures)


# --- registry write-back --------------------------------------------------------------------------------


def registry_writes(actions: Sequence[object]) -> list[dict[str, Any]]:
    """The rollout's registry actions as status.pendingRegistryWrites entries: kept in status until the
    registry confirms them, so a registry outage or an operator restart loses no tag and no alias move."""
    writes: list[dict[str, Any]] = []
    for action in actions:
        if isinstance(action, TagVersion):
            writes.append({"version": action.version, "tags": dict(action.tags)})
        elif isinstance(action, SetAlias):
            writes.append({"version": action.version, "alias": action.alias})
    return writes


# --- Ready ----------------------------------------------------------------------------------------------


def ready_condition(updates: Sequence[ConditionUpdate], routed: ConditionUpdate | None = None) -> ConditionUpdate:
    """Ready means serving: the stable version has ready pods, and a Gateway API route, when there is one, was
    not refused by its Gateway (`routed`, logic.gateway_route). A rolled-back or paused deployment whose
    stable serves is Ready (GitOps must not see a safe rollback as broken). Before anything serves, the
    registry's problem is the most useful reason, else what Available waits for."""
    if routed is not None and gateway_route.route_refused(routed):
        return ConditionUpdate(cond.READY, "False", routed.reason, routed.message)
    by_type = {update.type: update for update in updates}
    available = by_type.get(AVAILABLE)
    if available is not None and available.status == "True":
        progressing = by_type.get(PROGRESSING)
        detail = f"; {progressing.message}" if progressing is not None and progressing.message else ""
        return ConditionUpdate(cond.READY, "True", REASON_READY, f"{available.message}{detail}")
    resolved_update = by_type.get(MODEL_RESOLVED)
    if resolved_update is not None and resolved_update.status == "False":
        return ConditionUpdate(cond.READY, "False", resolved_update.reason, resolved_update.message)
    if available is None:
        return ConditionUpdate(cond.READY, "Unknown", "Reconciling", "not yet observed")
    if available.status == "False":
        return ConditionUpdate(cond.READY, "False", available.reason, available.message)
    return ConditionUpdate(cond.READY, "Unknown", available.reason, available.message)
