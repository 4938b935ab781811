"""The RegisteredModel handler against an in-memory registry, a fake status interface and a frozen clock: what a
pass writes to status and Events, what it returns as its next pass, and how deletion ends. The registry is the
real ModelRegistry (its sync: read, plan, apply, read back) over an in-memory store in place of MLflow's REST
API; tests/integration/test_registry_adapter.py runs the same adapter against a real MLflow server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from mlflow_operator.adapters.kube import KubeStatus
from mlflow_operator.adapters.registry import ModelRegistry, RegistryUnavailable
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.handlers import memo
from mlflow_operator.handlers import registeredmodel as handler
from mlflow_operator.handlers.reconcile import FINALIZER
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import registeredmodel as rm

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
URI = "http://mlflow:5000"


@dataclass
class StoredModel:
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    versions: list[rm.ObservedVersion] = field(default_factory=list)


@dataclass
class InMemoryMlflow:
    """What MLflow's registry holds; `down` makes every call fail as an unreachable server does."""

    models: dict[str, StoredModel] = field(default_factory=dict)
    down: bool = False
    deleted: list[str] = field(default_factory=list)


class InMemoryRegistry(ModelRegistry):
    """ModelRegistry with MLflow's REST calls replaced by the in-memory store (sync, resolve... are the real ones)."""

    def __init__(self, endpoint: RegistryEndpoint, mlflow: InMemoryMlflow) -> None:
        super().__init__(endpoint)
        self.mlflow = mlflow

    def _reachable(self) -> None:
        if self.mlflow.down:
            raise RegistryUnavailable(f"MLflow at {self.endpoint.tracking_uri} unreachable")

    def observe(self, name: str) -> rm.ObservedModel | None:
        self._reachable()
        model = self.mlflow.models.get(name)
        if model is None:
            return None
        return rm.ObservedModel(name, model.description, dict(model.tags), dict(model.aliases), tuple(model.versions))

    def _send(self, name: str, action: rm.Action) -> None:
        self._reachable()
        if isinstance(action, rm.CreateModel):
            self.mlflow.models[name] = StoredModel(action.description or "", dict(action.tags))
            return
        model = self.mlflow.models[name]
        if isinstance(action, rm.SetDescription):
            model.description = action.description
        elif isinstance(action, rm.SetTag):
            model.tags[action.key] = action.value
        elif isinstance(action, rm.DeleteTag):
            model.tags.pop(action.key, None)
        elif isinstance(action, rm.RegisterVersion):
            number = len(model.versions) + 1
            version = rm.ObservedVersion(number, "READY", action.run_id, action.source, tags=dict(action.tags))
            model.versions.append(version)
        elif isinstance(action, rm.SetAlias):
            model.aliases[action.alias] = action.version
        elif isinstance(action, rm.DeleteAlias):
            model.aliases.pop(action.alias, None)

    def delete_model(self, name: str) -> bool:
        self._reachable()
        self.mlflow.deleted.append(name)
        return self.mlflow.models.pop(name, None) is not None


class FakeStatus:
    """The status interface: the object's status as patched, and the Events posted."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str, str]] = []
        self.metadata: list[dict[str, Any]] = []

    async def patch_status(self, kind: str, name: str, namespace: str, changes: dict[str, Any]) -> None:
        self.status.update(changes)

    async def patch_metadata(self, kind: str, name: str, namespace: str, metadata: dict[str, Any]) -> None:
        self.metadata.append(metadata)

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))


@dataclass
class World:
    mlflow: InMemoryMlflow
    status: FakeStatus
    clock: list[datetime]

    def runtime(self) -> Runtime:
        return Runtime(client=cast(Any, None), status=cast(KubeStatus, self.status), now=lambda: self.clock[0])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    mlflow = InMemoryMlflow()
    monkeypatch.setattr(handler, "ModelRegistry", lambda endpoint: InMemoryRegistry(endpoint, mlflow))
    yield World(mlflow, FakeStatus(), [NOW])
    memo.forget_object("RegisteredModel", "u1")  # as the controller does when the object is deleted


SPEC = {
    "trackingUri": URI,
    "description": "Fraud scoring",
    "tags": {"team": "risk"},
    "aliases": {"champion": 1},
    "versions": [{"source": "s3://models/fraud/1", "runId": "r1"}],
    "deletionPolicy": "Delete",
}


def body(world: World, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    meta = {"name": "fraud", "namespace": "ml", "uid": "u1", "generation": 1, "resourceVersion": "7"}
    meta["finalizers"] = [FINALIZER]
    return {"kind": "RegisteredModel", "metadata": meta | metadata, "spec": spec, "status": dict(world.status.status)}


def reconcile(world: World, obj: dict[str, Any]) -> float | None:
    return asyncio.run(handler.reconcile(world.runtime(), obj))


def condition(world: World, kind: str) -> dict[str, Any]:
    return next(c for c in world.status.status["conditions"] if c["type"] == kind)


def test_the_first_pass_creates_the_model_and_reports_it_synced(world: World) -> None:
    next_pass = reconcile(world, body(world, SPEC))
    model = world.mlflow.models["fraud"]
    assert (model.description, model.tags["team"], model.aliases) == ("Fraud scoring", "risk", {"champion": 1})
    assert [v.source for v in model.versions] == ["s3://models/fraud/1"]
    assert condition(world, "Synced")["status"] == "True" and condition(world, "Ready")["status"] == "True"
    status = world.status.status
    assert status["latestVersion"] == 1 and status["lastSyncTime"] == "2026-12-06T08:00:00Z"
    assert status["ownedAliases"] == ["champion"] and status["ownedTags"] == ["team"]
    assert next_pass == 300  # the spec's default resyncInterval (5m): the registry is polled no more often


def test_an_idle_resync_changes_nothing_not_even_the_sync_time(world: World) -> None:
    reconcile(world, body(world, SPEC))
    before = dict(world.status.status)
    world.clock[0] = NOW + timedelta(minutes=5)
    reconcile(world, body(world, SPEC))
    assert world.status.status == before
    assert not [e for e in world.status.events if e[1] == "DriftCorrected"]


def test_drift_is_put_back_with_one_event_and_a_new_sync_time(world: World) -> None:
    reconcile(world, body(world, SPEC))
    world.mlflow.models["fraud"].tags["team"] = "someone-else"
    world.clock[0] = NOW + timedelta(minutes=5)
    reconcile(world, body(world, SPEC))
    assert world.mlflow.models["fraud"].tags["team"] == "risk"
    (drift,) = [e for e in world.status.events if e[1] == "DriftCorrected"]
    assert "team" in drift[2]
    assert world.status.status["lastSyncTime"] == "2026-12-06T08:05:00Z"


def test_an_unreachable_registry_is_reported_and_retried_with_growing_delays(world: World) -> None:
    world.mlflow.down = True
    delays = [reconcile(world, body(world, SPEC)) or 0.0 for _ in range(3)]
    assert 0 < delays[0] < delays[1] < delays[2]
    synced = condition(world, "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "RegistryUnavailable")
    assert condition(world, "Ready")["reason"] == "RegistryUnavailable"
    world.mlflow.down = False
    reconcile(world, body(world, SPEC))  # recovers on its own, and the backoff starts over
    assert condition(world, "Synced")["status"] == "True"
    world.mlflow.down = True
    assert reconcile(world, body(world, SPEC)) == delays[0]


def test_deletion_removes_the_model_or_gives_up_visibly_after_the_deadline(world: World) -> None:
    reconcile(world, body(world, SPEC))
    deleting = body(world, SPEC, deletionTimestamp="2026-12-06T08:00:00Z")
    world.mlflow.down = True
    assert reconcile(world, deleting) is not None  # retried: the finalizer stays
    assert world.status.metadata == []
    world.clock[0] = NOW + timedelta(seconds=handler.DELETE_DEADLINE_SECONDS + 1)
    assert reconcile(world, deleting) is None
    (abandoned,) = [e for e in world.status.events if e[1] == "CleanupAbandoned"]
    assert abandoned[0] == "Warning" and "fraud" in abandoned[2]
    assert world.status.metadata == [{"finalizers": [], "resourceVersion": "7"}]
    assert "fraud" in world.mlflow.models  # given up: nothing deleted

    world.status.metadata.clear()
    world.mlflow.down = False
    world.clock[0] = NOW
    assert reconcile(world, deleting) is None
    assert "fraud" not in world.mlflow.models and world.status.metadata == [{"finalizers": [], "resourceVersion": "7"}]
