"""The gc CronJob's container, exactly as rendered, against the rendered tracking server with MinIO artifacts.

The example TrackingServer (retention.deletedRunsOlderThan: 30d, basic auth, proxied artifacts) runs as local
processes (tests/integration/test_trackingserver_dataplane.py's plane). The gc command and env are taken from
the rendered CronJob; secretKeyRef values come from the rendered Secrets and the admin Secret the operator
generates, $(VAR) is expanded as the kubelet does, and only the Service URL is pointed at the local server.
"Deleted 40 days ago" is written into Postgres directly: `mlflow gc --older-than` compares runs.deleted_time.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlflow_operator.builders.trackingserver import (
    Credentials,
    gc_older_than,
    get_admin_secret,
    get_gc_cronjob,
    tracking_url,
)
from tests.integration import rendered
from tests.integration.dataplane import Postgres, server_venv
from tests.integration.s3_servers import S3Server, minio_server
from tests.integration.test_trackingserver_dataplane import Plane, rendered_plane, run_client, tracking_inputs

GC_TIMEOUT = 900  # against a dead S3 the MLflow client retries each 500 with backoff: the gc took 240-260 s
DAY_MS = 86_400_000

# Runs with one artifact each, a model registered from a logged model of a run, then some runs deleted.
SETUP_SCRIPT = """\
import json, os, pathlib, tempfile
import mlflow
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input["x"] + self.n


client = MlflowClient()
experiment_id = mlflow.create_experiment(params["experiment"])
workdir = pathlib.Path(tempfile.mkdtemp())
runs, model_id = {}, None
for label in params["runs"]:
    note = workdir / f"{label}.txt"
    note.write_text(f"{label}\\n")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(str(note), artifact_path="notes")
        if label == params["model_run"]:
            info = mlflow.pyfunc.log_model(
                name="model", python_model=AddN(10), registered_model_name=params["model"],
                pip_requirements=["mlflow==" + mlflow.__version__],
            )
            model_id = info.model_id
    runs[label] = run.info.run_id
for label in params["delete"]:
    client.delete_run(runs[label])
print(json.dumps({"experiment_id": experiment_id, "runs": runs, "model_id": model_id}))
"""

LOAD_SCRIPT = """\
import json, os
import mlflow
import pandas as pd
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
version = MlflowClient().get_model_version(params["model"], "1")
loaded = mlflow.pyfunc.load_model(f"models:/{params['model']}/1")
print(json.dumps({"status": version.status, "prediction": loaded.predict(pd.DataFrame({"x": [1, 2]})).tolist()}))
"""


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with minio_server(tmp_path_factory.mktemp("minio")) as server:
        yield server


# --- the rendered gc container ------------------------------------------------------------------------------


def gc_container(plane: Plane) -> dict[str, Any]:
    cronjob = get_gc_cronjob(plane.inputs)
    assert cronjob is not None, "the example sets spec.retention"
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def gc_secrets(plane: Plane) -> rendered.SecretValues:
    """The plane's Secrets plus the admin Secret the operator generates (created once, not rendered)."""
    admin = plane.inputs.admin_credentials
    assert admin is not None
    secret = get_admin_secret(plane.inputs.name, plane.inputs.namespace, admin.password)
    name = secret["metadata"]["name"]
    return {**plane.secrets, **{(name, key): value for key, value in secret["stringData"].items()}}


def gc_env(plane: Plane, home: Path) -> dict[str, str]:
    """The container's env resolved, MLFLOW_TRACKING_URI (the Service) pointed at the local server, plus what
    the image provides (its ENV HOME=/tmp, here a temp dir, and PATH to its virtualenv). Nothing else of
    this machine's environment leaks in."""
    env = rendered.resolve_env(gc_container(plane)["env"], gc_secrets(plane))
    service = tracking_url(plane.inputs.name, plane.inputs.namespace)
    assert env["MLFLOW_TRACKING_URI"] == service, env["MLFLOW_TRACKING_URI"]
    env["MLFLOW_TRACKING_URI"] = plane.server.url
    return {"PATH": f"{server_venv() / 'bin'}:/usr/bin:/bin", "HOME": str(home), **env}


def run_gc(plane: Plane, home: Path) -> subprocess.CompletedProcess[str]:
    """The container's command, $(VAR) expanded from its env, with the image's `mlflow`."""
    env = gc_env(plane, home)
    argv = rendered.expand_dependent_vars(gc_container(plane)["command"], env)
    assert argv[:2] == ["mlflow", "gc"] and not any("$(" in arg for arg in argv), argv[:2]
    mlflow = str(server_venv() / "bin" / "mlflow")
    return subprocess.run([mlflow, *argv[1:]], env=env, capture_output=True, text=True, timeout=GC_TIMEOUT, check=False)


# --- what the plane holds -----------------------------------------------------------------------------------


def etags(plane: Plane, prefix: str = "") -> dict[str, str]:
    """Key -> ETag of every object under prefix in the artifact bucket (all pages)."""
    client = plane.s3.client()
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=plane.bucket, Prefix=prefix):
        found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return found


def run_prefix(plane: Plane, experiment_id: str, run_id: str) -> str:
    return f"{plane.inputs.spec.artifacts.s3.prefix}/{experiment_id}/{run_id}/"


def run_rows(postgres: Postgres) -> set[str]:
    return set(postgres.psql("SELECT run_uuid FROM runs", dbname=postgres.dbname).split())


def deleted_days_ago(postgres: Postgres, run_ids: list[str], days: int) -> None:
    """What `mlflow gc --older-than` compares: runs.deleted_time (epoch ms), as if deleted `days` ago."""
    listed = ",".join(f"'{run_id}'" for run_id in run_ids)
    sql = f"UPDATE runs SET deleted_time = deleted_time - {days}::bigint * {DAY_MS} WHERE run_uuid IN ({listed})"
    postgres.psql(sql, dbname=postgres.dbname)


def set_up_runs(plane: Plane, experiment: str, labels: list[str], delete: list[str], model_run: str) -> dict[str, Any]:
    params = {"experiment": experiment, "runs": labels, "delete": delete, "model_run": model_run, "model": experiment}
    return run_client(plane, SETUP_SCRIPT, params)


# --- tests ----------------------------------------------------------------------------------------------------


def test_rendered_gc_deletes_old_deleted_runs_and_their_artifacts_only(minio: S3Server, tmp_path: Path) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, postgres.password))
        assert inputs.spec.retention is not None and inputs.spec.retention.deleted_runs_older_than == "30d"
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            # "trained" logged and registered the model, then its run was deleted long ago: the registered
            # version's files live with the logged model (models/<id>/), not in the run's artifacts.
            made = set_up_runs(
                plane,
                "gc",
                ["old", "trained", "young", "live"],
                delete=["old", "trained", "young"],
                model_run="trained",
            )
            runs, experiment_id = made["runs"], made["experiment_id"]
            deleted_days_ago(postgres, [runs["old"], runs["trained"]], days=40)
            deleted_days_ago(postgres, [runs["young"]], days=29)
            before = etags(plane)
            model_prefix = f"{inputs.spec.artifacts.s3.prefix}/{experiment_id}/models/{made['model_id']}/"
            assert etags(plane, model_prefix), sorted(before)

            result = run_gc(plane, tmp_path)
            print(result.stdout, result.stderr[-4000:], sep="\n")
            assert result.returncode == 0, result.stderr[-4000:]

            collected = {runs["old"], runs["trained"]}
            assert {line for line in result.stdout.splitlines() if "permanently deleted" in line} == {
                f"Run with ID {run_id} has been permanently deleted." for run_id in collected
            }
            assert run_rows(postgres) == {runs["young"], runs["live"]}
            for run_id in collected:
                assert etags(plane, run_prefix(plane, experiment_id, run_id)) == {}
            kept = {key: tag for key, tag in before.items() if not key.startswith(tuple(
                run_prefix(plane, experiment_id, run_id) for run_id in collected
            ))}  # fmt: skip
            assert etags(plane) == kept
            assert {run_prefix(plane, experiment_id, runs[label]) + "artifacts/notes/" + f"{label}.txt"
                    for label in ("young", "live")} <= set(kept)  # fmt: skip
            assert any(key.startswith(model_prefix) for key in kept)
            loaded = run_client(plane, LOAD_SCRIPT, {"model": "gc"})
            assert loaded == {"status": "READY", "prediction": [11, 12]}


def test_rendered_gc_fails_visibly_when_the_bucket_is_unreachable(minio: S3Server, tmp_path: Path) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, postgres.password))
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            made = set_up_runs(plane, "gc-down", ["old", "live"], delete=["old"], model_run="")
            old, experiment_id = made["runs"]["old"], made["experiment_id"]
            deleted_days_ago(postgres, [old], days=40)
            before = etags(plane)
            minio.stop()
            try:
                result = run_gc(plane, tmp_path)
            finally:
                minio.restart()
            output = result.stdout + result.stderr
            print(output[-4000:])
            # The Job fails (non-zero: Kubernetes marks it Failed) and its log names the artifact deletion the
            # server's proxy could not do; the server's log names the S3 endpoint it could not reach.
            assert result.returncode != 0
            assert f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{old}/artifacts" in output, output[-4000:]
            assert "500 error responses" in output, output[-4000:]
            assert plane.server.process is not None
            server_log = plane.server.process.log_path.read_text(errors="replace")
            assert f'Could not connect to the endpoint URL: "{minio.endpoint_url}/{bucket}' in server_log
            # Artifacts are deleted before the row: the run stays to be collected next time, nothing half-done.
            assert run_rows(postgres) == set(made["runs"].values())
            assert etags(plane) == before


def test_rendered_older_than_forms_are_accepted_by_mlflow_gc(tmp_path: Path) -> None:
    """The --older-than the builder renders for awkward API durations parses in the real `mlflow gc`, and the
    API strings themselves do not (why the builder converts them)."""
    mlflow = str(server_venv() / "bin" / "mlflow")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def gc(older_than: str) -> subprocess.CompletedProcess[str]:
        argv = [mlflow, "gc", "--older-than", older_than, "--backend-store-uri", store]
        argv += ["--tracking-uri", "http://127.0.0.1:9"]  # nothing to delete: never contacted
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)

    for duration in ("30m1h", "500ms", "1d1d"):
        refused = gc(duration)
        assert refused.returncode != 0 and "Could not parse any time information" in refused.stderr, duration
        accepted = gc(gc_older_than(duration))
        assert accepted.returncode == 0, (duration, accepted.stderr[-2000:])
