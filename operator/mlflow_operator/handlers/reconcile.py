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
