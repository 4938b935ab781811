"""The ModelDeployment handler's swap of a TrackingServer's admin credentials for the ModelDeployment's own
reader (handlers.registry_reader), against fakes of the Secret/Event interface and of MLflow's user API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from mlflow_operator.adapters.kube import Kube
from mlflow_operator.adapters.registry import RegistryUnavailable
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.handlers import modeldeployment as handler
from mlflow_operator.handlers import registry_reader
from mlflow_operator.handlers.registry_access import RegistryAccess
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import modeldeployment as decide
from mlflow_operator.logic.conditions import ConditionUpdate

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ADMIN = RegistryCredentials(name="mlflow-admin", username_key="username", password_key="password")
SOURCE = "models:/m-abc"


class FakeStatus:
    """Secrets and Events, in memory."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {}
        self.events: list[tuple[str, str, str]] = []

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    async def create_if_absent(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> None:
        assert owner is not None and owner["metadata"]["uid"] == "u1"  # goes with its ModelDeployment
        self.secrets.setdefault(obj["metadata"]["name"], dict(obj["stringData"]))

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))


class FakeUsers:
    """MLflow's user API: what was set up, or a failure."""

    calls: list[tuple[str, str, str, tuple[str, ...]]] = []
    failing = False

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        assert endpoint.username == "admin"  # the operator sets readers up as the admin

    async def experiment_of_async(self, source: str, run_id: str | None) -> str | None:
        return "7" if source == SOURCE else None

    async def ensure_reader_async(self, username: str, password: str, model: str, experiments: Any) -> None:
        if FakeUsers.failing:
            raise RegistryUnavailable("MLflow at http://mlflow:5000 unreachable")
        FakeUsers.calls.append((username, password, model, tuple(sorted(experiments))))


@pytest.fixture(autouse=True)
def fake_users(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry_reader, "RegistryUsers", FakeUsers)
    FakeUsers.calls, FakeUsers.failing = [], False
    yield
    handler.forget({"metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"}})  # its retries and reader


def a_pass(status: FakeStatus, admin: bool = True) -> handler.Pass:
    body = {"metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"}}
    spec = ModelDeploymentSpec.model_validate(
        {"trackingServerRef": {"name": "mlflow"}, "model": {"registeredModel": "fraud", "alias": "champion"}}
    )
    rt = Runtime(client=cast(Any, None), status=cast(Any, status))
    md = handler.Pass(rt, cast(Kube, None), body, spec, NOW)
    endpoint = RegistryEndpoint("http://mlflow:5000", username="admin", password="pw")
    md.access = RegistryAccess(endpoint, ADMIN, admin=admin)
    return md


def resolution() -> decide.Resolution:
    return decide.Resolution("k", NOW, ConditionUpdate("ModelResolved", "True", "Resolved", ""), 3, SOURCE, "run1")


def swap(md: handler.Pass) -> handler.Pass:
    asyncio.run(handler.use_own_reader(md, resolution()))
    return md


def test_pods_get_the_readers_secret_set_up_once_in_mlflow() -> None:
    status = FakeStatus()
    md = swap(a_pass(status))
    assert md.access is not None and md.access.secret is not None
    assert md.access.secret.name == "fraud-registry-reader" and md.access.endpoint.username == "admin"
    password = status.secrets["fraud-registry-reader"]["password"]
    assert FakeUsers.calls == [("modeldeployment/ml/fraud", password, "fraud", ("7",))]
    assert md.credentials_revision and password not in md.credentials_revision
    swap(a_pass(status))  # the next pass: nothing new to set up
    assert len(FakeUsers.calls) == 1


def test_a_deleted_secret_rotates_the_password_and_the_revision() -> None:
    status = FakeStatus()
    first = swap(a_pass(status)).credentials_revision
    del status.secrets["fraud-registry-reader"]
    second = swap(a_pass(status)).credentials_revision
    assert first != second and len(FakeUsers.calls) == 2
    assert FakeUsers.calls[1][1] == status.secrets["fraud-registry-reader"]["password"] != FakeUsers.calls[0][1]


def test_mlflow_refusing_keeps_the_reader_never_the_admin_and_says_why() -> None:
    FakeUsers.failing = True
    status = FakeStatus()
    md = swap(a_pass(status))
    assert md.access is not None and md.access.secret is not None
    assert md.access.secret.name == "fraud-registry-reader"
    assert [reason for _, reason, _ in status.events] == [handler.EVENT_READER_FAILED]
    assert "unreachable" in status.events[0][2] and md.requeue
    FakeUsers.failing = False
    swap(a_pass(status))  # set up on the retry
    assert len(FakeUsers.calls) == 1


def test_credentials_that_are_not_an_admins_are_left_alone() -> None:
    status = FakeStatus()
    md = swap(a_pass(status, admin=False))
    assert md.access is not None and md.access.secret == ADMIN and md.credentials_revision is None
    assert FakeUsers.calls == [] and status.secrets == {}
