"""Password rotation on request: the decisions (logic.credential_rotation), and the handler's steps
(handlers.credential_rotation) against in-memory fakes of the Secret/Event interface and of MLflow's user
table, including a pass that stops between MLflow's update and the Secret's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from mlflow_operator.adapters.registry import RegistryUnavailable, Unauthorized
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.handlers import credential_rotation as handler
from mlflow_operator.handlers import memo
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import credential_rotation as rotation
from mlflow_operator.logic.credential_rotation import AdminStep

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
URL = "http://mlflow.ml.svc:5000"


class FakeStatus:
    """Secrets (merge-patched like the API server does: None removes a key) and Events, in memory."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets
        self.events: list[tuple[str, str, str]] = []

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        return dict(self.secrets[name]) if name in self.secrets else None

    async def patch_secret(self, name: str, namespace: str, changes: dict[str, str | None]) -> None:
        data = self.secrets[name]
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))


class FakeMlflowUsers:
    """MLflow's user table: a password changes only with the current one."""

    passwords: dict[str, str] = {}
    unreachable = False
    updates = 0

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        assert endpoint.tracking_uri == URL
        self.endpoint = endpoint

    def _check(self) -> None:
        if FakeMlflowUsers.unreachable:
            raise RegistryUnavailable(f"MLflow at {URL}: connection refused")
        if FakeMlflowUsers.passwords.get(self.endpoint.username or "") != self.endpoint.password:
            raise Unauthorized("401")

    async def authenticates_async(self) -> bool:
        try:
            self._check()
        except Unauthorized:
            return False
        return True

    async def set_password_async(self, username: str, password: str) -> None:
        self._check()
        FakeMlflowUsers.passwords[username] = password
        FakeMlflowUsers.updates += 1


@pytest.fixture(autouse=True)
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(handler, "RegistryUsers", FakeMlflowUsers)
    FakeMlflowUsers.passwords, FakeMlflowUsers.unreachable, FakeMlflowUsers.updates = {"admin": "old"}, False, 0
    yield
    memo.forget_object("TrackingServer", "u1")


def server(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "mlflow", "namespace": "ml", "uid": "u1", "annotations": annotations}}


def runtime(status: FakeStatus) -> Runtime:
    return Runtime(client=cast(Any, None), status=cast(Any, status), now=lambda: NOW)


# ------------------------------------------------------------------------------------------------ decisions


def test_a_request_is_an_annotation_value_the_secret_has_not_carried_out() -> None:
    assert rotation.requested({rotation.ROTATE_ADMIN_PASSWORD: " 2026-12-05 "}, rotation.ROTATE_ADMIN_PASSWORD) == (
        "2026-12-05"
    )
    assert rotation.requested({rotation.ROTATE_ADMIN_PASSWORD: " "}, rotation.ROTATE_ADMIN_PASSWORD) is None
    assert rotation.requested(None, rotation.ROTATE_ADMIN_PASSWORD) is None
    assert rotation.rotation_due("a", {"password": "p"})
    assert not rotation.rotation_due("a", {"password": "p", rotation.ROTATED_KEY: "a"})
    assert rotation.rotation_due("b", {"password": "p", rotation.ROTATED_KEY: "a"})
    assert not rotation.rotation_due(None, {"password": "p"})


def test_a_staged_admin_password_is_finished_before_anything_else() -> None:
    staged = {"password": "p", rotation.PENDING_PASSWORD_KEY: "n", rotation.PENDING_ROTATION_KEY: "a"}
    assert rotation.admin_step(None, staged) is AdminStep.APPLY  # even with the annotation gone
    assert rotation.admin_step("b", staged) is AdminStep.APPLY
    assert rotation.admin_step("a", {"password": "p"}) is AdminStep.STAGE
    assert rotation.admin_step("a", {"password": "p", rotation.ROTATED_KEY: "a"}) is AdminStep.IDLE
    assert rotation.finished(staged) == {
        "password": "n",
        rotation.ROTATED_KEY: "a",
        rotation.PENDING_PASSWORD_KEY: None,
        rotation.PENDING_ROTATION_KEY: None,
    }


# ------------------------------------------------------------------------------------------------- database


def test_the_database_password_rotates_once_per_request() -> None:
    status = FakeStatus({"mlflow-db": {"username": "mlflow", "password": "old"}})
    body = server(**{rotation.ROTATE_DATABASE_PASSWORD: "r1"})
    data = asyncio.run(
        handler.rotate_database_password(runtime(status), body, "mlflow-db", {**status.secrets["mlflow-db"]})
    )
    assert data["password"] != "old" and len(data["password"]) >= 32
    assert data[rotation.ROTATED_KEY] == "r1" and status.secrets["mlflow-db"] == data
    assert [e[:2] for e in status.events] == [("Normal", rotation.EVENT_ROTATED)]
    again = asyncio.run(handler.rotate_database_password(runtime(status), body, "mlflow-db", data))
    assert again == data and len(status.events) == 1  # carried out: nothing more
    unrequested = asyncio.run(handler.rotate_database_password(runtime(status), server(), "mlflow-db", data))
    assert unrequested == data


# ---------------------------------------------------------------------------------------------------- admin


# The admin Secret with a new password staged for request r1.
STAGED = {
    "username": "admin",
    "password": "old",
    rotation.PENDING_PASSWORD_KEY: "new",
    rotation.PENDING_ROTATION_KEY: "r1",
}


def admin_secret(status: FakeStatus) -> dict[str, str]:
    return dict(status.secrets["mlflow-admin"])


def test_the_admin_password_is_staged_set_in_mlflow_then_made_current() -> None:
    status = FakeStatus({"mlflow-admin": {"username": "admin", "password": "old"}})
    rt, body = runtime(status), server(**{rotation.ROTATE_ADMIN_PASSWORD: "r1"})
    staged = asyncio.run(handler.stage_admin_password(rt, body, "mlflow-admin", admin_secret(status)))
    new = staged[rotation.PENDING_PASSWORD_KEY]
    assert staged["password"] == "old" and new != "old"  # clients keep the password MLflow still accepts
    assert FakeMlflowUsers.passwords == {"admin": "old"}

    assert asyncio.run(handler.apply_admin_password(rt, body, URL, "mlflow-admin", staged))
    assert FakeMlflowUsers.passwords == {"admin": new}
    assert admin_secret(status) == {"username": "admin", "password": new, rotation.ROTATED_KEY: "r1"}
    assert [e[:2] for e in status.events] == [("Normal", rotation.EVENT_ROTATED)]
    # Done: the same request stages nothing and applies nothing.
    assert asyncio.run(handler.stage_admin_password(rt, body, "mlflow-admin", admin_secret(status))) == admin_secret(
        status
    )
    assert not asyncio.run(handler.apply_admin_password(rt, body, URL, "mlflow-admin", admin_secret(status)))
    assert FakeMlflowUsers.updates == 1


def test_a_pass_that_stopped_after_mlflows_update_finishes_without_a_second_one() -> None:
    staged = dict(STAGED)
    status = FakeStatus({"mlflow-admin": dict(staged)})
    FakeMlflowUsers.passwords = {"admin": "new"}  # set in MLflow; the Secret update never happened
    assert asyncio.run(handler.apply_admin_password(runtime(status), server(), URL, "mlflow-admin", staged))
    assert FakeMlflowUsers.updates == 0
    assert admin_secret(status) == {"username": "admin", "password": "new", rotation.ROTATED_KEY: "r1"}


def test_mlflow_unreachable_keeps_the_secrets_password_the_one_mlflow_accepts() -> None:
    staged = dict(STAGED)
    status = FakeStatus({"mlflow-admin": dict(staged)})
    FakeMlflowUsers.unreachable = True
    assert not asyncio.run(handler.apply_admin_password(runtime(status), server(), URL, "mlflow-admin", staged))
    assert admin_secret(status) == staged
    ((kind, reason, message),) = status.events
    assert (kind, reason) == ("Warning", rotation.EVENT_ROTATION_FAILED) and "connection refused" in message
    FakeMlflowUsers.unreachable = False  # the next pass
    assert asyncio.run(handler.apply_admin_password(runtime(status), server(), URL, "mlflow-admin", staged))
    assert FakeMlflowUsers.passwords == {"admin": "new"} and admin_secret(status)["password"] == "new"


def test_a_rotation_of_a_password_the_operator_does_not_own_is_refused_once_per_request() -> None:
    status = FakeStatus({})
    why = "Secret mine (spec.auth.adminSecret) is yours"
    for request in ("r1", "r1", "r2"):
        body = server(**{rotation.ROTATE_ADMIN_PASSWORD: request})
        asyncio.run(handler.refuse_rotation(runtime(status), body, rotation.ROTATE_ADMIN_PASSWORD, why))
    assert [(e[1], e[2]) for e in status.events] == [
        (rotation.EVENT_ROTATION_UNSUPPORTED, f"{rotation.ROTATE_ADMIN_PASSWORD}=r1 ignored: {why}"),
        (rotation.EVENT_ROTATION_UNSUPPORTED, f"{rotation.ROTATE_ADMIN_PASSWORD}=r2 ignored: {why}"),
    ]
