"""The ModelDeployment handler's pure decisions: reading Deployments and annotations, when to resolve the
model again, what goes back to the registry, and what Ready says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import Weights
from mlflow_operator.logic import modeldeployment as decide
from mlflow_operator.logic.conditions import ConditionUpdate
from mlflow_operator.logic.rollout import SetAlias, TagVersion

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def spec(**model: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "trackingUri": "http://mlflow:5000",
            "model": {"registeredModel": "fraud", **(model or {"alias": "champion"})},
            "pollInterval": "30s",
        }
    )


def deployment(
    replicas: int = 2, available: int = 2, generation: int = 1, observed: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud-v3", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            **extra,
        },
    }


def test_a_ready_deployment_is_a_ready_track() -> None:
    track = decide.track_observation(3, deployment())
    assert (track.version, track.ready, track.available_replicas, track.failed) == (3, True, 2, False)


def test_a_resize_not_yet_observed_is_not_ready_but_still_serves() -> None:
    track = decide.track_observation(3, deployment(generation=2, observed=1))
    assert not track.ready and track.available_replicas == 2 and "not observed" in track.message


def test_progress_deadline_exceeded_is_a_failed_track() -> None:
    stuck = deployment(
        available=0,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}
        ],
    )
    track = decide.track_observation(3, stuck)
    assert track.failed and not track.ready and track.message == "ProgressDeadlineExceeded: too slow"


def annotated(annotations: dict[str, str], manager: str = "kubectl-annotate") -> dict[str, Any]:
    fields: dict[str, Any] = {f"f:{key}": {} for key in annotations}
    return {
        "annotations": annotations,
        "managedFields": [
            {"manager": "argocd-controller", "fieldsV1": {"f:spec": {}}},
            {"manager": manager, "fieldsV1": {"f:metadata": {"f:annotations": fields}}},
        ],
    }


def test_request_annotations_name_the_manager_that_set_them() -> None:
    request = decide.user_request(annotated({"mlflow.operator.dev/promote": "2026-11-23"}))
    assert request is not None
    assert (request.kind, request.token, request.requested_by) == ("promote", "2026-11-23", "kubectl-annotate")


def test_abort_beats_promote_and_rollback_means_abort() -> None:
    both = decide.user_request(annotated({"mlflow.operator.dev/promote": "1", "mlflow.operator.dev/abort": "1"}))
    assert both is not None and both.kind == "abort"
    rollback = decide.user_request(annotated({"mlflow.operator.dev/rollback": "now"}))
    assert rollback is not None and rollback.kind == "abort" and rollback.key == "abort:now"


def test_unrelated_annotations_are_no_request() -> None:
    assert decide.user_request({"annotations": {"team": "fraud"}}) is None
    assert decide.user_request({}) is None


def test_an_alias_is_polled_every_poll_interval() -> None:
    current = decide.resolved(spec(), NOW, 3, "READY", "models:/m-1", "run1")
    assert not decide.resolution_due(spec(), current, NOW + timedelta(seconds=29), retry_delay=5)
    assert decide.resolution_due(spec(), current, NOW + timedelta(seconds=30), retry_delay=5)


def test_a_changed_model_reference_is_resolved_at_once() -> None:
    current = decide.resolved(spec(), NOW, 3, "READY", None, None)
    assert decide.resolution_due(spec(alias="challenger"), current, NOW, retry_delay=5)
    assert decide.resolution_due(spec(version=2), current, NOW, retry_delay=5)


def test_a_failed_resolution_is_retried_after_the_backoff_not_the_poll_interval() -> None:
    failed = decide.unresolved(spec(), NOW, "RegistryUnavailable", "refused", failures=1)
    assert not decide.resolution_due(spec(), failed, NOW + timedelta(seconds=4), retry_delay=5)
    assert decide.resolution_due(spec(), failed, NOW + timedelta(seconds=5), retry_delay=5)
    assert failed.version is None and failed.condition.status == "False"
    assert failed.condition.message == "fraud@champion: refused"


def test_a_version_still_registering_is_not_rolled_out() -> None:
    pending = decide.resolved(spec(), NOW, 4, "PENDING_REGISTRATION", None, None)
    assert pending.version is None
    assert (
        pending.condition.reason == decide.REASON_VERSION_NOT_READY
        and "PENDING_REGISTRATION" in pending.condition.message
    )


def test_resolved_status_fields_leave_out_what_the_registry_did_not_say() -> None:
    assert decide.resolved(spec(version=2), NOW, 2, "READY", None, "r").status_fields() == {"version": 2, "runId": "r"}
    assert decide.unresolved(spec(), NOW, "X", "y", 1).status_fields() is None


def test_registry_actions_become_pending_writes_in_order() -> None:
    actions = [Weights(0, False), TagVersion(3, {"k": "v"}), SetAlias("production", 3)]
    assert decide.registry_writes(actions) == [
        {"version": 3, "tags": {"k": "v"}},
        {"version": 3, "alias": "production"},
    ]


def update(type_: str, status: str, reason: str, message: str = "") -> ConditionUpdate:
    return ConditionUpdate(type_, status, reason, message)  # type: ignore[arg-type]


def test_ready_follows_the_stable_even_while_a_rollout_is_paused() -> None:
    ready = decide.ready_condition(
        [
            update("ModelResolved", "True", "Resolved"),
            update("Available", "True", "StableAvailable", "version 2 serves"),
            update("Progressing", "False", "Inconclusive", "analysis inconclusive"),
        ]
    )
    assert (ready.status, ready.reason) == ("True", decide.REASON_READY)
    assert ready.message == "version 2 serves; analysis inconclusive"


def test_ready_names_the_registry_problem_before_anything_serves() -> None:
    ready = decide.ready_condition(
        [
            update("ModelResolved", "False", "AliasNotFound", "fraud@nope: not found"),
            update("Available", "Unknown", "WaitingForModel"),
        ]
    )
    assert (ready.status, ready.reason, ready.message) == ("False", "AliasNotFound", "fraud@nope: not found")


def test_ready_is_false_when_the_stable_has_no_pods() -> None:
    ready = decide.ready_condition(
        [update("ModelResolved", "True", "Resolved"), update("Available", "False", "NoReadyReplicas", "none")]
    )
    assert (ready.status, ready.reason) == ("False", "NoReadyReplicas")
