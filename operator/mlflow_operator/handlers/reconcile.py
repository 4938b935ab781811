"""The shared reconcile step every kind starts with: validate the spec, report what was seen."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import kopf

from mlflow_operator.api import KindInfo
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic.status import changed_fields
from mlflow_operator.logic.validation import Invalid, validate_spec

INVALID_SPEC = "InvalidSpec"


def utcnow() -> datetime:
    return datetime.now(UTC)


def write_status(patch: kopf.Patch, status: dict[str, Any] | Any, desired: dict[str, Any]) -> None:
    """Patch only fields that changed (through the status subresource, as kopf does for status)."""
    for key, value in changed_fields(dict(status or {}), desired).items():
        patch.status[key] = value


def observe_spec(
    info: KindInfo,
    condition_types: Sequence[str],
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    now: datetime,
) -> Any | None:
    """Validate spec and set first-sight conditions. Returns the typed spec, or None when invalid.

    An invalid spec is final until the spec changes: Ready=False/InvalidSpec, one Warning Event per new
    message, and no exception, so kopf does not retry it in a loop.
    """
    generation = meta.get("generation")
    current = list(status.get("conditions") or [])
    result = validate_spec(info.spec_model, spec)
    if isinstance(result, Invalid):
        previous = cond.find(current, cond.READY)
        if previous is None or previous.get("message") != result.message:
            kopf.warn(body, reason=INVALID_SPEC, message=result.message)
        update = cond.ConditionUpdate(cond.READY, "False", INVALID_SPEC, result.message)
        write_status(
            patch,
            status,
            {
                "observedGeneration": generation,
                "conditions": cond.apply_updates(current, [update], generation, now),
            },
        )
        return None
    unseen = [t for t in condition_types if cond.find(current, t) is None]
    updates = cond.initial_unknown(unseen, "Reconciling", "not yet observed")
    previous_ready = cond.find(current, cond.READY)
    if previous_ready is not None and previous_ready.get("reason") == INVALID_SPEC:
        updates.append(cond.ConditionUpdate(cond.READY, "Unknown", "Reconciling", "spec is valid again"))
    conditions = cond.apply_updates(current, updates, generation, now)
    write_status(patch, status, {"conditions": conditions})
    return result.spec


def reconcile_skeleton(
    info: KindInfo,
    condition_types: Sequence[str],
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
) -> Any | None:
    """Validate and report the generation seen, for kinds whose children are not reconciled yet."""
    typed = observe_spec(info, condition_types, body, spec, status, meta, patch, utcnow())
    if typed is not None:
        write_status(patch, status, {"observedGeneration": meta.get("generation")})
    return typed
