"""The example TrackingServer's data plane as the operator renders it, running as local processes.

Postgres <- PgBouncer (the rendered pgbouncer.ini and userlist.txt) <- `mlflow server` (the rendered argv and
env, basic auth from the rendered basic_auth.ini) -> MinIO (artifacts, proxied by the server). The schema is
migrated by the rendered migration Job's command, straight on Postgres. tests/integration/rendered.py does the
only rewrites: addresses, mount paths and Secret values. Used by the data-plane, gc and lifecycle-safety tests.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_operator.builders.trackingserver import (
    POOLER_CLIENT_USER,
    Credentials,
    TrackingServerInputs,
    get_migration_job,
    get_pgbouncer_config,
)
from tests.integration import rendered
from tests.integration.dataplane import (
    MlflowServer,
    PgBouncer,
    Postgres,
    free_port,
    log_tails,
    run_mlflow,
    run_server_python,
)
from tests.integration.registry_server import ADD_N_MODEL
from tests.integration.s3_servers import S3Server

NAMESPACE = "mlflow-dataplane"
CLIENT_TIMEOUT = 300  # logging a model imports pandas and pickles it: slow on a busy 2-core machine

# How a client script for run_client starts when it logs into an experiment of its own: its params, the AddN
# model it may log, a client, the experiment (named by params["experiment"]) and a scratch directory.
EXPERIMENT_SCRIPT_HEAD = (
    """\
import json, os, pathlib, tempfile
import mlflow
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])


"""
    + ADD_N_MODEL
    + """

client = MlflowClient()
experiment_id = mlflow.create_experiment(params["experiment"])
workdir = pathlib.Path(tempfile.mkdtemp())
"""
)


@dataclass
class Plane:
    """The rendered data plane, running."""

    inputs: TrackingServerInputs
    postgres: Postgres
    pgbouncer: PgBouncer
    server: MlflowServer
    s3: S3Server
    bucket: str
    secrets: rendered.SecretValues


def tracking_inputs(s3: S3Server, bucket: str, database: Credentials) -> TrackingServerInputs:
    """The example TrackingServer on the local MinIO, with the resolved credentials a handler passes."""
    spec = rendered.example_spec(s3_endpoint=s3.endpoint_url, bucket=bucket)
    admin = Credentials("admin", secrets.token_urlsafe(24))  # as the operator generates it
    # The servers' own PgBouncer login, as the operator generates it: PgBouncer logs into Postgres as the
    # database user, whoever the client is.
    pooler = Credentials(POOLER_CLIENT_USER, secrets.token_urlsafe(24))
    return TrackingServerInputs("mlflow", NAMESPACE, spec, spec.version, database, admin, pooler_credentials=pooler)


def migrate(inputs: TrackingServerInputs, local_secrets: rendered.SecretValues) -> None:
    """Runs the migration Job's container command, $(MLFLOW_DIRECT_URI) expanded from the direct URI."""
    job = get_migration_job(inputs, inputs.spec.version)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    argv = rendered.container_argv(container, local_secrets)
    assert argv[:3] == ["mlflow", "db", "upgrade"] and "$(" not in argv[3], argv[:3]
    run_mlflow(argv[1:])


def start_pgbouncer(stack: ExitStack, inputs: TrackingServerInputs, postgres: Postgres, logs: Path) -> PgBouncer:
    files = rendered.pgbouncer_files(inputs, (postgres.host, postgres.port))
    pgbouncer = stack.enter_context(PgBouncer(files.ini, files.userlist, overrides=files.overrides, log_dir=logs))
    # What PgBouncer runs differs from the ConfigMap in addresses and the userlist path only.
    changed = rendered.pgbouncer_changes(files.ini, pgbouncer.config_path.read_text())
    relocated = {("pgbouncer", key) for key in rendered.PGBOUNCER_RELOCATED}
    assert changed == relocated | {("databases", get_pgbouncer_config(inputs).database)}, changed
    return pgbouncer


def tracking_server(inputs: TrackingServerInputs, local: rendered.SecretValues, workdir: Path) -> MlflowServer:
    """The server from the rendered argv and env, its files (HOME, Prometheus, basic_auth.ini) in workdir."""
    home, prometheus = workdir / "home", workdir / "prometheus"
    home.mkdir()
    prometheus.mkdir()
    auth_config = rendered.write_auth_config(inputs, local, workdir)
    argv = rendered.server_argv(inputs, free_port(), prometheus)
    env = rendered.server_env(inputs, local, home=home, auth_config=auth_config)
    return MlflowServer(argv, env=env, log_dir=workdir / "logs")


@contextmanager
def rendered_plane(
    postgres: Postgres, inputs: TrackingServerInputs, s3: S3Server, bucket: str, workdir: Path
) -> Iterator[Plane]:
    """PgBouncer, the migration and the server, in the operator's order; log tails printed on failure."""
    services: list[Postgres | PgBouncer | MlflowServer] = [postgres]
    try:
        with ExitStack() as stack:
            pgbouncer = start_pgbouncer(stack, inputs, postgres, workdir / "logs")
            services.append(pgbouncer)
            local = rendered.local_secrets(
                inputs,
                postgres=(postgres.host, postgres.port),
                pgbouncer=(pgbouncer.host, pgbouncer.port),
                s3_keys=(s3.access_key_id, s3.secret_access_key),
            )
            migrate(inputs, local)
            server = tracking_server(inputs, local, workdir)
            services.append(server)
            stack.enter_context(server)
            yield Plane(inputs, postgres, pgbouncer, server, s3, bucket, local)
    except BaseException:
        # pytest shows a failing test's captured output: the logs of everything involved.
        print(log_tails(*services), f"--- minio ---\n{s3.log_tail()}", sep="\n")
        raise


# --- talking to the plane -----------------------------------------------------------------------------------


def run_client(plane: Plane, script: str, params: dict[str, Any]) -> dict[str, Any]:
    """A client script with the admin's credentials, as a user of the server would run it."""
    admin = plane.inputs.admin_credentials
    assert admin is not None
    env = {
        "MLFLOW_TRACKING_URI": plane.server.url,
        "MLFLOW_TRACKING_USERNAME": admin.username,
        "MLFLOW_TRACKING_PASSWORD": admin.password,
        "TEST_PARAMS": json.dumps(params),
    }
    output = run_server_python(script, env=env, timeout=CLIENT_TIMEOUT)
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result
