"""RegisteredModel reconciler: the MLflow registry entry kept as the spec says.

Each pass observes the registry (reads only when nothing changed), applies the planned actions through
the official client's REST store (off the event loop, bounded), and reports what the registry holds.
"""

from __future__ import annotations

from typing import Any

from mlflow_operator import metrics
from mlflow_operator.adapters.registry import ModelRegistry, RegistryError
from mlflow_operator.api.common import duration_seconds
from mlflow_operator.api.kinds import REGISTERED_MODEL
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.handlers import registry_events
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import (
    FINALIZER,
    SecretProblem,
    current_conditions,
    ensure_finalizer,
    first_sight,
    generation,
    with_finalizer,
    write_status,
)
from mlflow_operator.handlers.registry_access import registry_access, wake_tracking_server
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import registeredmodel as plan
from mlflow_operator.logic.conditions import ConditionUpdate, parse_time, rfc3339

SYNCED = plan.CONDITION_TYPE
CONDITIONS = (SYNCED, registry_events.REGISTRY_EVENTS, cond.READY)
DELETE_DEADLINE_SECONDS = 600.0  # a Delete policy gives up on an unreachable registry after this
FOLLOW_UP_SECONDS = 5.0

# Consecutive failures per object (uid), for the backoff of RegistryUnavailable and friends.
_failures: Memo[int] = Memo(REGISTERED_MODEL.kind)


def was_synced(body: dict[str, Any]) -> bool:
    """A pass at an unchanged generation after a successful sync: corrections are drift, worth an Event."""
    status = body.get("status") or {}
    synced = cond.find(current_conditions(body), SYNCED)
    return status.get("observedGeneration") == generation(body) and synced is not None and synced["status"] == "True"


def deletes_from_the_registry(spec: RegisteredModelSpec) -> bool:
    """deletionPolicy Delete: the finalizer stays on, and deleting the resource deletes the registered model."""
    return spec.deletion_policy == "Delete"


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    return await with_finalizer(
        rt,
        REGISTERED_MODEL,
        body,
        finalize=finalize,
        finalizer_wanted=deletes_from_the_registry,
        reconcile_spec=reconcile_spec,
    )


async def reconcile_spec(rt: Runtime, body: dict[str, Any], spec: RegisteredModelSpec) -> float | None:
    uid = body["metadata"]["uid"]
    desired = plan.desired_model(spec, body["metadata"]["name"])
    events, poll = registry_events.follower_events(rt, body, duration_seconds(spec.resync_interval))
    status = body.get("status") or {}
    try:
        registry = ModelRegistry((await registry_access(rt, body, spec)).endpoint)
        outcome = await registry.sync_async(
            desired, status.get("ownedTags") or [], status.get("ownedAliases") or [], resync=was_synced(body)
        )
    except (SecretProblem, RegistryError) as problem:
        failures = _failures.set(uid, (_failures.get(uid) or 0) + 1)
        metrics.count_registry_sync_error(body["metadata"]["namespace"], body["metadata"]["name"], problem.reason)
        failure = plan.sync_failure(problem.reason, problem.message)
        updates = [*first_sight(body, CONDITIONS), failure, ready_from(failure), events]
        await write_status(rt, REGISTERED_MODEL, body, updates)
        return plan.retry_delay(failures)
    _failures.pop(uid)
    fields = plan.status_fields(desired.name, outcome.observed, outcome.owned_tags, outcome.owned_aliases)
    if fields["latestVersion"] != status.get("latestVersion"):
        wake_tracking_server(rt, spec, body["metadata"]["namespace"])
    synced = plan.synced_condition(outcome.plan, desired, outcome.observed)
    # lastSyncTime moves when the registry was changed to match (or first verified): an idle resync that
    # only reads writes nothing, not even a timestamp.
    fields["lastSyncTime"] = status.get("lastSyncTime")
    if outcome.applied or not fields["lastSyncTime"]:
        fields["lastSyncTime"] = rfc3339(rt.now())
    await write_status(rt, REGISTERED_MODEL, body, [synced, ready_from(synced), events], fields)
    if outcome.drift:
        await rt.status.post_event(
            body,
            "Normal",
            plan.REASON_DRIFT_CORRECTED,
            "corrected registry drift: " + "; ".join(outcome.drift),
            rfc3339(rt.now()),
        )
    # The next drift check follows the resource's own resyncInterval (RegisteredModels have no global
    # resync): a registry is polled as often as its owner asked, and no more.
    return poll if outcome.plan.in_sync else FOLLOW_UP_SECONDS


def ready_from(synced: ConditionUpdate) -> ConditionUpdate:
    return ConditionUpdate(cond.READY, synced.status, synced.reason, synced.message)


async def finalize(rt: Runtime, body: dict[str, Any], spec: RegisteredModelSpec | None) -> float | None:
    """deletionPolicy Delete: remove the registered model. An unreachable registry is retried with backoff
    for DELETE_DEADLINE_SECONDS, then given up with a Warning Event, so deletion never hangs forever."""
    if FINALIZER not in (body["metadata"].get("finalizers") or []):
        return None
    if spec is not None and deletes_from_the_registry(spec):
        name = plan.desired_model(spec, body["metadata"]["name"]).name
        try:
            registry = ModelRegistry((await registry_access(rt, body, spec)).endpoint)
            await registry.delete_model_async(name)
        except (SecretProblem, RegistryError) as problem:
            deleted_at = parse_time(body["metadata"]["deletionTimestamp"])
            if (rt.now() - deleted_at).total_seconds() < DELETE_DEADLINE_SECONDS:
                return FOLLOW_UP_SECONDS * 2
            await rt.status.post_event(
                body,
                "Warning",
                "CleanupAbandoned",
                f"registered model {name} not deleted: {problem}",
                rfc3339(rt.now()),
            )
    await ensure_finalizer(rt, REGISTERED_MODEL, body, wanted=False)
    return None
