"""The data-plane harness, proven with a hand-written config before the operator renders one.

Postgres <- PgBouncer (transaction mode) <- `mlflow server` (gunicorn sync workers) <- the real MLflow
client. The schema is migrated straight on Postgres first (`mlflow db upgrade`): a migration may rely on
session state (SET, locks, prepared statements) that a transaction-mode pooler does not keep between
transactions.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dataplane import (
    RUN_DATA_SCRIPT,
    MlflowServer,
    PgBouncer,
    Postgres,
    assert_run_data,
    free_port,
    log_tails,
    run_mlflow,
    run_server_python,
    server_venv,
)

POOL_SIZE = 2
WORKERS = 2
CONCURRENT_REQUESTS = 50
# Sync workers bound the requests in flight per worker (see NOTES: the default uvicorn server exhausts its
# SQLAlchemy pools under load). gunicorn >= 26 opens a control socket in $HOME unless told not to, which
# would collide between servers sharing a HOME (and HOME is read-only in the pod).
GUNICORN_OPTS = "--worker-class sync --timeout 60 --no-control-socket"

# Shaped like what the operator mounts from its ConfigMap: a Service host name, container paths and port.
# The harness moves listen_addr/listen_port/auth_file to local ones; the fixture points [databases] at the
# local Postgres.
PGBOUNCER_INI = f"""\
[databases]
mlflow = host=mlflow-postgres port=5432 dbname=mlflow

[pgbouncer]
auth_file = /etc/pgbouncer/userlist.txt
auth_type = scram-sha-256
default_pool_size = {POOL_SIZE}
ignore_startup_parameters = extra_float_digits
listen_addr = 0.0.0.0
listen_port = 6432
max_client_conn = 200
pool_mode = transaction
reserve_pool_size = 0
"""

# Runs in the server's virtualenv, where the full mlflow package lives; prints what it read back as JSON.
CLIENT_SCRIPT = (
    """\
import json, os, pathlib, tempfile
import mlflow
from mlflow import MlflowClient

"""
    + RUN_DATA_SCRIPT
    + """

client = MlflowClient()
experiment_id = mlflow.create_experiment("harness-smoke")
workdir = pathlib.Path(tempfile.mkdtemp())
with mlflow.start_run(experiment_id=experiment_id) as run:
    log_run_data(workdir, "hello from the harness\\n")
run_id = run.info.run_id
downloaded = mlflow.artifacts.download_artifacts(
    run_id=run_id, artifact_path="notes/hello.txt", dst_path=str(workdir / "download")
)
print(json.dumps({
    "artifact_location": client.get_experiment(experiment_id).artifact_location,
    **read_run_data(client, run_id, downloaded),
}))
"""
)


@dataclass
class Dataplane:
    postgres: Postgres
    pgbouncer: PgBouncer
    server: MlflowServer
    artifacts: Path


def userlist(postgres: Postgres) -> str:
    """userlist.txt as the operator's Secret holds it: plain-text password, which scram-sha-256 accepts."""
    return f'"{postgres.user}" "{postgres.password}"\n'


def server_argv(backend_store_uri: str, artifacts: Path, port: int) -> list[str]:
    return [
        "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts.as_uri(),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(WORKERS),
        "--gunicorn-opts", GUNICORN_OPTS,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dataplane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataplane]:
    server_venv()  # fails fast, with "run `make deps`", before anything starts
    logs = tmp_path_factory.mktemp("dataplane-logs")
    artifacts = tmp_path_factory.mktemp("artifacts")
    failed_before = request.session.testsfailed
    with ExitStack() as stack:
        postgres = stack.enter_context(Postgres({"max_connections": "50"}, log_dir=logs))
        run_mlflow(["db", "upgrade", postgres.uri()])  # directly on Postgres, never through the pooler
        local_database = f"host={postgres.host} port={postgres.port} dbname={postgres.dbname}"
        pgbouncer = stack.enter_context(
            PgBouncer(
                PGBOUNCER_INI, userlist(postgres), overrides={"databases": {"mlflow": local_database}}, log_dir=logs
            )
        )
        pooled_uri = (
            f"postgresql+psycopg2://{postgres.user}:{postgres.password}@{pgbouncer.host}:{pgbouncer.port}/mlflow"
        )
        server = stack.enter_context(
            MlflowServer(
                server_argv(pooled_uri, artifacts, free_port()),
                env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                log_dir=logs,
            )
        )
        yield Dataplane(postgres, pgbouncer, server, artifacts)
        if request.session.testsfailed > failed_before:
            _show(request, log_tails(postgres, pgbouncer, server))


def _show(request: pytest.FixtureRequest, text: str) -> None:
    # This teardown may run after a later, passing test, whose captured output pytest does not display:
    # write to the terminal with capturing suspended.
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n=== data-plane logs (a test using them failed) ===\n{text}")


def api(server: MlflowServer, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One MLflow REST call: POST with a JSON body, or GET without."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path, data=data, method="POST" if data else "GET", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_mlflow_client_round_trip_through_pgbouncer(dataplane: Dataplane) -> None:
    output = run_server_python(CLIENT_SCRIPT, env={"MLFLOW_TRACKING_URI": dataplane.server.url})
    read = json.loads(output.strip().splitlines()[-1])

    assert_run_data(read, "hello from the harness\n")
    # Proxied artifacts: the client only knows the server's endpoint, and the server wrote the file.
    assert read["artifact_location"].startswith("mlflow-artifacts:")
    stored = list(dataplane.artifacts.rglob("notes/hello.txt"))
    assert [path.read_text() for path in stored] == ["hello from the harness\n"]


def test_server_connections_stay_within_the_pool_under_concurrent_requests(dataplane: Dataplane) -> None:
    experiment = api(dataplane.server, "/api/2.0/mlflow/experiments/create", {"name": "harness-load"})
    run = api(dataplane.server, "/api/2.0/mlflow/runs/create", {"experiment_id": experiment["experiment_id"]})
    run_id = run["run"]["info"]["run_id"]
    start_together = threading.Barrier(CONCURRENT_REQUESTS, timeout=30)

    def log_metric(step: int) -> None:
        start_together.wait()
        body = {"run_id": run_id, "key": "load", "value": float(step), "timestamp": 0, "step": step}
        api(dataplane.server, "/api/2.0/mlflow/runs/log-metric", body)

    began = time.monotonic()
    # Straight on Postgres, these 2 sync workers were measured to hold up to 4 connections at once.
    with dataplane.postgres.sample_connections() as sampler, ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        list(pool.map(log_metric, range(CONCURRENT_REQUESTS)))  # re-raises the first failed request
    elapsed = time.monotonic() - began

    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": "load", "max_results": 1000})
    history = api(dataplane.server, f"/api/2.0/mlflow/metrics/get-history?{query}")["metrics"]
    assert sorted(int(m["step"]) for m in history) == list(range(CONCURRENT_REQUESTS))
    assert 1 <= sampler.peak <= POOL_SIZE, (
        f"{sampler.peak} server connections at peak ({sampler.samples} samples in {elapsed:.1f} s); "
        f"PgBouncer's pool is {POOL_SIZE}"
    )
