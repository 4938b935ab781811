"""RegisteredModel reconciler: the MLflow registry entry kept as the spec says.

Each pass observes the registry (reads only when nothing changed), applies the planned actions through
the official client's REST store (off the event loop, bounded), and reports what the registry holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlflow_operator.adapters.registry import ModelRegistry, RegistryEndpoint, RegistryError
from mlflow_operator.api.kinds import API_VERSION, REGISTERED_MODEL, TRACKING_SERVER
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.handlers.reconcile import (
    FINALIZER,
    SecretProblem,
    current_conditions,
    ensure_finalizer,
    first_sight,
    generation,
    read_secret_keys,
    validated,
    write_status,
)
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import registeredmodel as plan
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339
from mlflow_operator.logic.status import duration_seconds

SYNCED = plan.CONDITION_TYPE
CONDITIONS = (SYNCED, cond.READY)
DELETE_DEADLINE_SECONDS = 600.0  # a Delete policy gives up on an unreachable registry after this
FOLLOW_UP_SECONDS = 5.0

# Consecutive failures per object (uid), for the backoff of RegistryUnavailable and friends.
_failures: dict[str, int] = {}


async def registry_endpoint(rt: Runtime, body: dict[str, Any], spec: RegisteredModelSpec) -> RegistryEndpoint:
    """trackingUri (+ credentialsSecret), or the referenced TrackingServer's URL and admin credentials."""
    namespace = body["metadata"]["namespace"]
    if spec.tracking_uri is not None:
        ref = spec.credentials_secret
        if ref is None:
            return RegistryEndpoint(spec.tracking_uri)
        if ref.token_key:
            token = await read_secret_keys(
                rt, namespace, ref.name, "spec.credentialsSecret", {ref.token_key: "tokenKey"}
            )
            return RegistryEndpoint(spec.tracking_uri, token=token[ref.token_key])
        user_key, password_key = ref.username_key or "username", ref.password_key or "password"
        data = await read_secret_keys(
            rt, namespace, ref.name, "spec.credentialsSecret", {user_key: "usernameKey", password_key: "passwordKey"}
        )
        return RegistryEndpoint(spec.tracking_uri, username=data[user_key], password=data[password_key])
    assert spec.tracking_server_ref is not None  # the API refuses neither/both
    server_name = spec.tracking_server_ref.name
    server = await rt.kube("registeredmodel").get(API_VERSION, TRACKING_SERVER.kind, server_name, namespace)
    url = ((server or {}).get("status") or {}).get("url")
    if not url:
        raise SecretProblem(
            "TrackingServerNotReady", f"TrackingServer {server_name} (spec.trackingServerRef.name) has no URL yet"
        )
    auth = ((server or {}).get("spec") or {}).get("auth") or {}
    if not auth.get("enabled"):
        return RegistryEndpoint(url)
    admin = (auth.get("adminSecret") or {}).get("name") or f"{server_name}-admin"
    data = await read_secret_keys(
        rt, namespace, admin, "TrackingServer spec.auth.adminSecret", {"username": "username", "password": "password"}
    )
    return RegistryEndpoint(url, username=data["username"], password=data["password"])


def was_synced(body: dict[str, Any]) -> bool:
    """A pass at an unchanged generation after a successful sync: corrections are drift, worth an Event."""
    status = body.get("status") or {}
    synced = cond.find(current_conditions(body), SYNCED)
    return status.get("observedGeneration") == generation(body) and synced is not None and synced["status"] == "True"


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    spec, invalid = validated(REGISTERED_MODEL, body)
    if body["metadata"].get("deletionTimestamp"):
        return await finalize(rt, body, spec)
    if spec is None:
        await write_status(rt, REGISTERED_MODEL, body, invalid)
        return None
    await ensure_finalizer(rt, REGISTERED_MODEL, body, wanted=spec.deletion_policy == "Delete")
    uid = body["metadata"]["uid"]
    desired = plan.desired_model(spec, body["metadata"]["name"])
    status = body.get("status") or {}
    try:
        registry = await ModelRegistry.open_async(await registry_endpoint(rt, body, spec))
        outcome = await registry.sync_async(
            desired, status.get("ownedTags") or [], status.get("ownedAliases") or [], resync=was_synced(body)
        )
    except (SecretProblem, RegistryError) as problem:
        failures = _failures[uid] = _failures.get(uid, 0) + 1
        failure = plan.sync_failure(problem.reason, problem.message)
        await write_status(rt, REGISTERED_MODEL, body, [*first_sight(body, CONDITIONS), failure, ready_from(failure)])
        return plan.retry_delay(failures)
    _failures.pop(uid, None)
    fields = plan.status_fields(desired.name, outcome.observed, outcome.owned_tags, outcome.owned_aliases)
    synced = plan.synced_condition(outcome.plan, desired, outcome.observed)
    # lastSyncTime moves when the registry was changed to match (or first verified): an idle resync that
    # only reads writes nothing, not even a timestamp.
    fields["lastSyncTime"] = status.get("lastSyncTime")
    if outcome.applied or not fields["lastSyncTime"]:
        fields["lastSyncTime"] = rfc3339(rt.now())
    await write_status(rt, REGISTERED_MODEL, body, [synced, ready_from(synced)], fields)
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
    return duration_seconds(spec.resync_interval) if outcome.plan.in_sync else FOLLOW_UP_SECONDS


def ready_from(synced: ConditionUpdate) -> ConditionUpdate:
    return ConditionUpdate(cond.READY, synced.status, synced.reason, synced.message)


async def finalize(rt: Runtime, body: dict[str, Any], spec: RegisteredModelSpec | None) -> float | None:
    """deletionPolicy Delete: remove the registered model. An unreachable registry is retried with backoff
    for DELETE_DEADLINE_SECONDS, then given up with a Warning Event, so deletion never hangs forever."""
    if FINALIZER not in (body["metadata"].get("finalizers") or []):
        return None
    if spec is not None and spec.deletion_policy == "Delete":
        name = plan.desired_model(spec, body["metadata"]["name"]).name
        try:
            registry = await ModelRegistry.open_async(await registry_endpoint(rt, body, spec))
            await registry.delete_model_async(name)
        except (SecretProblem, RegistryError) as problem:
            deleted_at = datetime.fromisoformat(body["metadata"]["deletionTimestamp"].replace("Z", "+00:00"))
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
