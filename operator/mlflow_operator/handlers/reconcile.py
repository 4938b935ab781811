"""The steps every kind's reconcile shares: validate the spec, then write status and Events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow_operator.api import KindInfo
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339
from mlflow_operator.logic.status import changed_fields
from mlflow_operator.logic.validation import Invalid, validate_spec

INVALID_SPEC = "InvalidSpec"
# Only for deletionPolicy: Delete, where there is work outside the cluster: with Retain (the default)
# deleting a resource never waits for the operator.
FINALIZER = "mlflow.operator.dev/cleanup"


class SecretProblem(Exception):
    """A referenced Secret or key is missing: reported as a condition, never retried in a hot loop."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def read_secret_keys(rt: Runtime, namespace: str, name: str, field: str, keys: dict[str, str]) -> dict[str, str]:
    """The values of `keys` (key -> the spec field naming it) from Secret `name`, or a SecretProblem whose
    message names the spec field to fix."""
    data = await rt.status.read_secret(name, namespace)
    if data is None:
        raise SecretProblem("SecretNotFound", f"Secret {name} ({field}.name) not found")
    for key, path in keys.items():
        if key not in data:
            raise SecretProblem("SecretKeyNotFound", f"Secret {name} has no key {key} ({field}.{path})")
    return {key: data[key] for key in keys}


class ResourcePass:
    """What every kind's reconcile pass knows of the resource it works on (mixed into each kind's Pass)."""

    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])


def generation(body: dict[str, Any]) -> int | None:
    value = body["metadata"].get("generation")
    return int(value) if value is not None else None


def current_conditions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


def validated(info: KindInfo, body: dict[str, Any]) -> tuple[Any | None, list[ConditionUpdate]]:
    """The typed spec, or None and the InvalidSpec condition. Invalid specs are final until the spec
    changes: no exception, so nothing retries them in a loop."""
    result = validate_spec(info.spec_model, body.get("spec") or {})
    if isinstance(result, Invalid):
        return None, [ConditionUpdate(cond.READY, "False", INVALID_SPEC, result.message)]
    return result.spec, []


def first_sight(body: dict[str, Any], condition_types: Sequence[str]) -> list[ConditionUpdate]:
    """Conditions never seen before start as Unknown, so `kubectl wait` and dashboards see them at once."""
    current = current_conditions(body)
    return cond.initial_unknown(
        [t for t in condition_types if cond.find(current, t) is None], "Reconciling", "not yet observed"
    )


async def write_status(
    rt: Runtime,
    info: KindInfo,
    body: dict[str, Any],
    updates: Sequence[ConditionUpdate],
    fields: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Apply condition updates and other status fields; patch only what changed; one Event per transition."""
    now = rt.now()
    old = current_conditions(body)
    new = cond.apply_updates(old, updates, generation(body), now)
    desired = {**(fields or {}), "conditions": new, "observedGeneration": generation(body)}
    changes = changed_fields(body.get("status"), desired)
    meta = body["metadata"]
    if changes:
        await rt.status.patch_status(info.kind, meta["name"], meta["namespace"], changes)
    for event in cond.transition_events(old, new):
        await rt.status.post_event(body, event.type, event.reason, event.message, rfc3339(now))
    return new


async def reconcile_skeleton(rt: Runtime, info: KindInfo, condition_types: Sequence[str], body: dict[str, Any]) -> None:
    """For kinds whose children are not reconciled yet: validate and report what was seen."""
    spec, invalid = validated(info, body)
    updates = invalid if spec is None else first_sight(body, condition_types)
    if spec is not None and (cond.find(current_conditions(body), cond.READY) or {}).get("reason") == INVALID_SPEC:
        updates.append(ConditionUpdate(cond.READY, "Unknown", "Reconciling", "spec is valid again"))
    await write_status(rt, info, body, updates)


async def ensure_finalizer(rt: Runtime, info: KindInfo, body: dict[str, Any], wanted: bool) -> None:
    finalizers = list(body["metadata"].get("finalizers") or [])
    if (FINALIZER in finalizers) == wanted:
        return
    updated = [*finalizers, FINALIZER] if wanted else [f for f in finalizers if f != FINALIZER]
    # resourceVersion makes this an optimistic update: a concurrent change fails it and the pass is retried.
    meta = body["metadata"]
    await rt.status.patch_metadata(
        info.kind, meta["name"], meta["namespace"], {"finalizers": updated, "resourceVersion": meta["resourceVersion"]}
    )
