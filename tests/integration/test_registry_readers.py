"""A ModelDeployment's own MLflow reader (adapters.registry_users, logic.registry_reader) against a real MLflow
server with basic auth and `default_permission = NO_PERMISSIONS`: the reader downloads its model's version
with the real client, the way the model server's fetch container does, and is refused a write and any other
model; a new password replaces the old one; deleting the user locks it out."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.adapters.registry_users import RegistryUsers
from mlflow_operator.logic.registry_reader import reader_of, reader_username
from tests.integration.dataplane import Postgres, server_venv
from tests.integration.registry_server import (
    ADD_N_MODEL,
    Admin,
    RegistryServer,
    migrated_server,
    new_admin,
    run_client,
)

NAMESPACE = "ml"

# Logs one model per name with the admin's credentials (one experiment each) and registers it as version 1.
REGISTER_SCRIPT = (
    """\
import json, os
import mlflow

params = json.loads(os.environ["TEST_PARAMS"])


"""
    + ADD_N_MODEL
    + """

registered = {}
for n, name in enumerate(params["names"]):
    mlflow.set_experiment(f"experiment-{name}")
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=AddN(n), pip_requirements=["mlflow==" + mlflow.__version__]
        )
    version = mlflow.register_model(info.model_uri, name)
    registered[name] = {"source": version.source, "run_id": run.info.run_id}
print(json.dumps(registered))
"""
)

# What a model server's pod does with its credentials (the fetch container runs `mlflow artifacts download`
# on models:/NAME/VERSION), then what it must not be able to do.
READER_SCRIPT = """\
import json, os, tempfile
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

params = json.loads(os.environ["TEST_PARAMS"])
client = MlflowClient()


def attempt(call):
    try:
        call()
        return "ok"
    except MlflowException as error:
        return str(error.error_code)


def download(name):
    with tempfile.TemporaryDirectory() as directory:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/1", dst_path=directory)
        return sorted(os.listdir(path))


result = {"own": attempt(lambda: client.get_registered_model(params["own"]))}
if result["own"] == "ok":
    result["files"] = download(params["own"])
    result["write"] = attempt(lambda: client.set_registered_model_alias(params["own"], "hijacked", "1"))
    result["other"] = attempt(lambda: client.get_registered_model(params["other"]))
    result["other_download"] = attempt(lambda: download(params["other"]))
print(json.dumps(result))
"""


@dataclass
class Registry:
    server: RegistryServer
    admin: Admin
    models: dict[str, dict[str, str]]  # name -> source, run_id of version 1

    @property
    def users(self) -> RegistryUsers:
        endpoint = RegistryEndpoint(self.server.url, username=self.admin.username, password=self.admin.password)
        return RegistryUsers(endpoint)

    def as_user(self, username: str, password: str, own: str, other: str) -> dict[str, Any]:
        result: dict[str, Any] = run_client(
            self.server.url, READER_SCRIPT, {"own": own, "other": other}, admin=Admin(username, password)
        )
        return result


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server_venv()
    logs: Path = tmp_path_factory.mktemp("reader-logs")
    artifacts: Path = tmp_path_factory.mktemp("reader-artifacts")
    admin = new_admin()
    with Postgres({"max_connections": "50"}, log_dir=logs) as postgres:
        server = migrated_server(postgres, "readers", artifacts, logs, admin=admin, default_permission="NO_PERMISSIONS")
        try:
            models = run_client(server.url, REGISTER_SCRIPT, {"names": ["fraud", "churn"]}, admin=admin)
            yield Registry(server, admin, models)
        finally:
            server.stop()


def set_up_reader(registry: Registry, username: str, password: str, model: str) -> None:
    users = registry.users
    version = registry.models[model]
    experiment = users.experiment_of(version["source"], version["run_id"])
    assert experiment is not None
    users.ensure_reader(username, password, model, {experiment})


def test_a_reader_fetches_its_model_and_nothing_else(registry: Registry) -> None:
    username, password = reader_username(NAMESPACE, "fraud-scorer"), secrets.token_urlsafe(18)
    set_up_reader(registry, username, password, "fraud")
    seen = registry.as_user(username, password, own="fraud", other="churn")
    assert seen["own"] == "ok" and "MLmodel" in seen["files"], seen
    assert seen["write"] == "PERMISSION_DENIED", seen
    assert seen["other"] == "PERMISSION_DENIED" and seen["other_download"] == "PERMISSION_DENIED", seen
    set_up_reader(registry, username, password, "fraud")  # again: idempotent
    assert registry.as_user(username, password, own="fraud", other="churn")["own"] == "ok"


def test_a_new_password_replaces_the_old_and_deleting_locks_the_reader_out(registry: Registry) -> None:
    username = reader_username(NAMESPACE, "churn-scorer")
    old, new = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    set_up_reader(registry, username, old, "churn")
    assert registry.as_user(username, old, own="churn", other="fraud")["own"] == "ok"
    set_up_reader(registry, username, new, "churn")  # the Secret was deleted: rotated
    assert registry.as_user(username, old, own="churn", other="fraud")["own"] == "UNAUTHENTICATED"
    assert registry.as_user(username, new, own="churn", other="fraud")["own"] == "ok"

    readers = [user for user in registry.users.usernames() if reader_of(user, NAMESPACE)]
    assert username in readers and registry.admin.username not in readers
    assert registry.users.delete_user(username) is True
    assert registry.users.delete_user(username) is False
    assert registry.as_user(username, new, own="churn", other="fraud")["own"] == "UNAUTHENTICATED"


def test_the_admin_rotates_its_own_password_with_the_current_one(registry: Registry) -> None:
    """What a rotation of the TrackingServer's admin password does (handlers.credential_rotation): the
    current password sets the new one, after which only the new one authenticates."""
    admin, new = registry.admin, secrets.token_urlsafe(18)
    as_new = RegistryUsers(RegistryEndpoint(registry.server.url, username=admin.username, password=new))
    assert registry.users.authenticates() and not as_new.authenticates()
    registry.users.set_password(admin.username, new)
    assert as_new.authenticates() and not registry.users.authenticates()
    as_new.set_password(admin.username, admin.password)  # back: the module's fixture holds the first one
    assert registry.users.authenticates()
