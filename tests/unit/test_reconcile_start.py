"""The start every pass of a kind with a finalizer shares (handlers.reconcile.with_finalizer), against a fake of
the status interface and a frozen clock: a deleted object is finalized even with an invalid spec, an invalid
spec is reported once and builds nothing, and the finalizer is in place before the kind's own work runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from mlflow_operator.adapters.kube import KubeStatus
from mlflow_operator.api.kinds import REGISTERED_MODEL
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.handlers.reconcile import FINALIZER, with_finalizer
from mlflow_operator.handlers.runtime import Runtime

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
VALID = {"trackingUri": "http://mlflow:5000", "deletionPolicy": "Delete"}


class FakeStatus:
    """Records the writes a pass makes; each in the order made."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    async def patch_status(self, kind: str, name: str, namespace: str, changes: dict[str, Any]) -> None:
        self.writes.append(("status", changes))

    async def patch_metadata(self, kind: str, name: str, namespace: str, metadata: dict[str, Any]) -> None:
        self.writes.append(("metadata", metadata))

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.writes.append(("event", (type_, reason, now)))


def body(spec: dict[str, Any], *, deleting: bool = False, finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "fraud", "namespace": "ml", "uid": "u1", "generation": 1}
    meta |= {"resourceVersion": "7", "finalizers": list(finalizers)}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T07:59:00Z"
    return {"apiVersion": "mlflow.operator.dev/v1alpha1", "kind": "RegisteredModel", "metadata": meta, "spec": spec}


def run(obj: dict[str, Any]) -> tuple[FakeStatus, list[str]]:
    """One pass's start; what it wrote and which of finalize/reconcile_spec ran (with what spec)."""
    status, ran = FakeStatus(), []
    rt = Runtime(client=cast(Any, None), status=cast(KubeStatus, status), now=lambda: NOW)

    async def finalize(rt: Runtime, body: dict[str, Any], spec: Any | None) -> float | None:
        ran.append(f"finalize({type(spec).__name__})")
        return None

    async def reconcile_spec(rt: Runtime, body: dict[str, Any], spec: Any) -> float | None:
        assert isinstance(spec, RegisteredModelSpec)
        ran.append(f"reconcile_spec(writes before: {len(status.writes)})")
        return 30.0

    def finalizer_wanted(spec: RegisteredModelSpec) -> bool:
        return spec.deletion_policy == "Delete"

    asyncio.run(
        with_finalizer(
            rt,
            REGISTERED_MODEL,
            obj,
            finalize=finalize,
            finalizer_wanted=finalizer_wanted,
            reconcile_spec=reconcile_spec,
        )
    )
    return status, ran


def test_a_deleted_object_is_finalized_even_with_an_invalid_spec_and_nothing_else_runs() -> None:
    status, ran = run(body({"bogus": 1}, deleting=True, finalizers=(FINALIZER,)))
    assert ran == ["finalize(NoneType)"] and status.writes == []
    status, ran = run(body(VALID, deleting=True, finalizers=(FINALIZER,)))
    assert ran == ["finalize(RegisteredModelSpec)"] and status.writes == []


def test_an_invalid_spec_is_reported_naming_the_field_and_builds_nothing() -> None:
    status, ran = run(body({"trackingUri": "http://mlflow:5000", "deletionPolicy": "Orphan"}))
    assert ran == []
    (kind, changes), (event_kind, (type_, reason, when)) = status.writes
    assert kind == "status" and event_kind == "event"
    (ready,) = changes["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "deletionPolicy" in ready["message"]
    assert (type_, reason, when) == ("Warning", "InvalidSpec", "2026-12-06T08:00:00Z")


def test_the_finalizer_is_added_before_the_kinds_work_and_removed_when_no_longer_needed() -> None:
    status, ran = run(body(VALID))
    assert status.writes == [("metadata", {"finalizers": [FINALIZER], "resourceVersion": "7"})]
    assert ran == ["reconcile_spec(writes before: 1)"]
    status, ran = run(body({**VALID, "deletionPolicy": "Retain"}, finalizers=(FINALIZER,)))
    assert status.writes == [("metadata", {"finalizers": [], "resourceVersion": "7"})]
    status, ran = run(body(VALID, finalizers=(FINALIZER,)))  # already there: no write
    assert status.writes == [] and ran == ["reconcile_spec(writes before: 0)"]
