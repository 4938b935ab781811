"""handlers.reconcile.AppliedChildren: the shared skip of re-applying unchanged children (TrackingServer stages,
ModelDeployment children)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlflow_operator.handlers.reconcile import REAPPLY_SECONDS, AppliedChildren, fingerprint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OBJECTS = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}}]


def test_same_objects_within_the_window_are_unchanged() -> None:
    applied = AppliedChildren()
    assert not applied.unchanged("uid/db", OBJECTS, T0)  # never applied
    applied.remember("uid/db", OBJECTS, T0)
    assert applied.unchanged("uid/db", OBJECTS, T0 + timedelta(seconds=REAPPLY_SECONDS - 1))
    assert not applied.unchanged("uid/db", OBJECTS, T0 + timedelta(seconds=REAPPLY_SECONDS))  # re-applied then
    changed = [{**OBJECTS[0], "spec": {"ports": [{"port": 81}]}}]
    assert not applied.unchanged("uid/db", changed, T0)
    assert not applied.unchanged("uid/pooler", OBJECTS, T0)  # keys are separate


def test_fingerprint_ignores_key_order() -> None:
    reordered = [{"spec": {"ports": [{"port": 80}]}, "metadata": {"name": "a"}, "kind": "Service", "apiVersion": "v1"}]
    assert fingerprint(OBJECTS) == fingerprint(reordered)


def test_forget_drops_the_owner_and_its_stages() -> None:
    applied = AppliedChildren()
    for key in ("uid", "uid/db", "uid/pooler", "uid2/db"):
        applied.remember(key, OBJECTS, T0)
    applied.forget("uid")
    assert len(applied) == 1 and applied.unchanged("uid2/db", OBJECTS, T0)


def test_stale_keys_are_pruned() -> None:
    applied = AppliedChildren(prune_above=2)
    applied.remember("gone/db", OBJECTS, T0)
    applied.remember("gone/pooler", OBJECTS, T0)
    later = T0 + timedelta(seconds=REAPPLY_SECONDS + 1)
    applied.remember("live/db", OBJECTS, later)
    assert len(applied) == 1 and applied.unchanged("live/db", OBJECTS, later)
