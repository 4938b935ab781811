"""MLflow servers for the registry adapter's tests: the real `mlflow server` on a local Postgres, with or
without MLflow's basic-auth app, restartable on the same port (to test an outage and the recovery after it).

One Postgres holds every database: a backend store per server and the basic-auth app's user store. Each
backend is migrated with `mlflow db upgrade` before its server starts; the basic-auth app migrates its own
store when it starts.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.dataplane import MlflowServer, Postgres, free_port, run_mlflow, run_server_python

# One sync worker is plenty for these tests and leaves CPU to the others running on this machine. gunicorn
# >= 26 opens a control socket in $HOME unless told not to.
GUNICORN_OPTS = "--worker-class sync --timeout 60 --no-control-socket"
CLIENT_TIMEOUT = 300  # a client script imports the full mlflow (and pandas to log a model): slow on 2 busy cores


@dataclass(frozen=True)
class Admin:
    username: str
    password: str


def create_database(postgres: Postgres, name: str) -> str:
    """A new database owned by the application user; returns its direct SQLAlchemy URI."""
    postgres.psql(f"CREATE DATABASE {name} OWNER {postgres.user}")
    return postgres.uri().rsplit("/", 1)[0] + f"/{name}"


def write_auth_config(directory: Path, database_uri: str, admin: Admin, default_permission: str = "READ") -> Path:
    """basic_auth.ini as the operator renders it (builders.trackingserver.render_auth_config)."""
    path = directory / "basic_auth.ini"
    path.write_text(
        textwrap.dedent(f"""\
            [mlflow]
            default_permission = {default_permission}
            database_uri = {database_uri}
            admin_username = {admin.username}
            admin_password = {admin.password}
            authorization_function = mlflow.server.auth:authenticate_request_basic_auth
            """)
    )
    return path


class RegistryServer:
    """`mlflow server` on a fixed port: stop() and start() again keep the URL and the data."""

    def __init__(
        self,
        backend_uri: str,
        artifacts: Path,
        logs: Path,
        *,
        auth_config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.port = free_port()
        argv = ["mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts.as_uri()]
        argv += ["--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        argv += ["--gunicorn-opts", GUNICORN_OPTS]
        # `env` adds to the server's environment (e.g. the webhook settings), kept across stop() and start().
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        if auth_config is not None:
            argv += ["--app-name", "basic-auth"]
            # The basic-auth app refuses to start without a static CSRF key (the operator renders one too).
            env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            }
        self.server = MlflowServer(argv, env=env, log_dir=logs)
        self.url = self.server.url

    def start(self) -> None:
        try:
            self.server.start()
        except BaseException:
            self.server.stop()
            raise

    def stop(self) -> None:
        self.server.stop()

    def log_tail(self) -> str:
        return self.server.log_tail()


@contextmanager
def sqlite_registry(root: Path, env: Mapping[str, str] | None = None) -> Iterator[RegistryServer]:
    """A started server on a sqlite backend in root (no Postgres needed), stopped on exit; `env` adds to its
    environment."""
    server = RegistryServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def migrated_server(
    postgres: Postgres,
    database: str,
    artifacts: Path,
    logs: Path,
    *,
    admin: Admin | None = None,
    default_permission: str = "READ",
) -> RegistryServer:
    """A started server on a fresh, migrated backend database; with basic auth when an admin is given
    (`default_permission` for users without a grant). Its log and config files go to logs/<database>/."""
    logs = logs / database
    logs.mkdir(parents=True, exist_ok=True)
    backend = create_database(postgres, database)
    run_mlflow(["db", "upgrade", backend])  # the backend's schema, as the operator's migration Job does
    auth_config = None
    if admin is not None:
        users = create_database(postgres, f"{database}_users")
        auth_config = write_auth_config(logs, users, admin, default_permission)
    server = RegistryServer(backend, artifacts, logs, auth_config=auth_config)
    server.start()
    return server


def new_admin() -> Admin:
    return Admin("admin", secrets.token_urlsafe(18))


def run_client(url: str, script: str, params: Mapping[str, Any], *, admin: Admin | None = None) -> Any:
    """A script with the real MLflow client (server venv), params as JSON in TEST_PARAMS; returns the JSON
    its last output line holds."""
    env = {"MLFLOW_TRACKING_URI": url, "TEST_PARAMS": json.dumps(params)}
    if admin is not None:
        env |= {"MLFLOW_TRACKING_USERNAME": admin.username, "MLFLOW_TRACKING_PASSWORD": admin.password}
    output = run_server_python(script, env=env, timeout=CLIENT_TIMEOUT)
    return json.loads(output.strip().splitlines()[-1])


# The tiny pyfunc model the client scripts log: it adds n to column x, so a prediction tells which it was.
ADD_N_MODEL = """\
class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input["x"] + self.n
"""

# Logs tiny pyfunc models, one run each, and prints what a registration needs.
LOG_MODELS_SCRIPT = (
    """\
import json, os
import mlflow

params = json.loads(os.environ["TEST_PARAMS"])


"""
    + ADD_N_MODEL
    + """

mlflow.set_experiment(params["experiment"])
logged = []
for n in params["adds"]:
    with mlflow.start_run() as run:
        # Pinned requirements: inferring them would load the model in yet another process.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=AddN(n), pip_requirements=["mlflow==" + mlflow.__version__]
        )
    logged.append({"run_id": run.info.run_id, "model_uri": info.model_uri, "model_id": info.model_id})
print(json.dumps(logged))
"""
)

# Reads a registered model back with the real client: what MlflowClient users and the UI see.
READ_MODEL_SCRIPT = """\
import json, os
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
client = MlflowClient()
model = client.get_registered_model(params["name"])
by_alias = {}
for alias in sorted(model.aliases):
    version = client.get_model_version_by_alias(params["name"], alias)
    by_alias[alias] = {"version": int(version.version), "source": version.source, "run_id": version.run_id}
versions = client.search_model_versions(f"name = '{params['name']}'")
print(json.dumps({
    "description": model.description,
    "tags": model.tags,
    "aliases": {alias: int(version) for alias, version in model.aliases.items()},
    "by_alias": by_alias,
    "versions": sorted(
        [{"version": int(v.version), "source": v.source, "run_id": v.run_id, "tags": v.tags} for v in versions],
        key=lambda v: v["version"],
    ),
}))
"""

# Changes made behind the operator's back, as a user in the UI or a script would.
TAMPER_SCRIPT = """\
import json, os
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
client = MlflowClient()
name = params["name"]
for alias, version in params.get("set_aliases", {}).items():
    client.set_registered_model_alias(name, alias, version)
for key in params.get("delete_tags", []):
    client.delete_registered_model_tag(name, key)
for key, value in params.get("set_tags", {}).items():
    client.set_registered_model_tag(name, key, value)
if "description" in params:
    client.update_registered_model(name, params["description"])
print(json.dumps({"ok": True}))
"""
