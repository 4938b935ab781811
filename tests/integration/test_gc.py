"""The gc CronJob's container, exactly as rendered, against the rendered tracking server with MinIO artifacts.

The example TrackingServer (retention.deletedRunsOlderThan: 30d, basic auth, proxied artifacts) runs as local
processes (tests/integration/tracking_plane.py), on the session's MinIO. The gc command and env are taken from
the rendered CronJob; secretKeyRef values come from the rendered Secrets and the admin Secret the operator
generates, $(VAR) is expanded as the kubelet does, and only the Service URL is pointed at the local server.
The command runs the script the rendered ConfigMap holds (written to a temp dir, its mount path rewritten).
"Deleted 40 days ago" is written into Postgres directly: `mlflow gc --older-than` compares runs.deleted_time,
logged_models.last_updated_timestamp_ms and experiments.last_update_time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mlflow_operator.builders.trackingserver import (
    Credentials,
    gc_older_than,
    get_admin_secret,
    get_gc_configmap,
    get_gc_cronjob,
    tracking_url,
)
from tests.integration import rendered
from tests.integration.dataplane import Postgres, server_venv
from tests.integration.registry_server import ADD_N_MODEL
from tests.integration.s3_servers import S3Server
from tests.integration.tracking_plane import (
    EXPERIMENT_SCRIPT_HEAD,
    Plane,
    rendered_plane,
    run_client,
    tracking_inputs,
)

GC_TIMEOUT = 900  # against a dead S3 the MLflow client retries each 500 with backoff: the gc took 240-260 s
DAY_MS = 86_400_000

# Runs with one artifact each, a model registered from a logged model of a run, then some runs deleted.
SETUP_SCRIPT = (
    EXPERIMENT_SCRIPT_HEAD
    + """\
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
)

# Every way a registered version comes to need a resource gc collects, next to resources nobody needs:
#   gc/trained:   log_model(registered_model_name=...) in a run deleted since (the version names the run);
#   gc/from-run:  a model saved into a run's artifacts, registered from runs:/<run>/model, the run deleted;
#   gc-lm/lm:     a version of a logged model deleted since (models:/m-...), its run live;
#   gc-exp-kept:  an experiment deleted with the run whose logged model a version was registered from;
#   gc/old, gc-exp-gone: a deleted run and a deleted experiment that no version needs.
REGISTRY_SCRIPT = (
    """\
import json, os, pathlib, tempfile
import mlflow
from mlflow import MlflowClient


"""
    + ADD_N_MODEL
    + """

client = MlflowClient()
workdir = pathlib.Path(tempfile.mkdtemp())
pip = ["mlflow==" + mlflow.__version__]
made = {"experiments": {}, "runs": {}, "models": {}}


def run_in(experiment, label, model=None, how=None):
    if experiment not in made["experiments"]:
        made["experiments"][experiment] = mlflow.create_experiment(experiment)
    note = workdir / f"{label}.txt"
    note.write_text(f"{label}\\n")
    with mlflow.start_run(experiment_id=made["experiments"][experiment]) as run:
        mlflow.log_artifact(str(note), artifact_path="notes")
        if how == "log_model":
            info = mlflow.pyfunc.log_model(
                name="model", python_model=AddN(10), registered_model_name=model, pip_requirements=pip
            )
            made["models"][label] = info.model_id
        elif how == "runs_uri":
            saved = workdir / label / "model"
            mlflow.pyfunc.save_model(str(saved), python_model=AddN(10), pip_requirements=pip)
            mlflow.log_artifacts(str(saved), artifact_path="model")
    made["runs"][label] = run.info.run_id
    if how == "runs_uri":
        mlflow.register_model(f"runs:/{run.info.run_id}/model", model)


for label, how in [("old", None), ("trained", "log_model"), ("from-run", "runs_uri"), ("young", None), ("live", None)]:
    run_in("gc", label, f"gc-{label}", how)
run_in("gc-lm", "lm", "gc-lm", "log_model")
run_in("gc-exp-kept", "exp-kept", "gc-exp", "log_model")
run_in("gc-exp-gone", "exp-gone")
for label in ("old", "trained", "from-run", "young"):
    client.delete_run(made["runs"][label])
client.delete_logged_model(made["models"]["lm"])
for experiment in ("gc-exp-kept", "gc-exp-gone"):
    client.delete_experiment(made["experiments"][experiment])
made["sources"] = {version.name: version.source for version in client.search_model_versions()}
print(json.dumps(made))
"""
)

EMPTY_EXPERIMENT_SCRIPT = """\
import json, os
import mlflow
from mlflow import MlflowClient

experiment_id = mlflow.create_experiment(json.loads(os.environ["TEST_PARAMS"])["name"])
MlflowClient().delete_experiment(experiment_id)
print(json.dumps({"experiment_id": experiment_id}))
"""

LOAD_SCRIPT = """\
import json, os
import mlflow
import pandas as pd
from mlflow import MlflowClient

loaded = {}
for name in json.loads(os.environ["TEST_PARAMS"])["models"]:
    version = MlflowClient().get_model_version(name, "1")
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    loaded[name] = {"status": version.status, "prediction": model.predict(pd.DataFrame({"x": [1, 2]})).tolist()}
print(json.dumps(loaded))
"""


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


def run_gc(plane: Plane, home: Path, **env_changes: str) -> subprocess.CompletedProcess[str]:
    """The container's command with the image's `python`, the rendered ConfigMap's script written where its
    mount path points, $(VAR) expanded from the env (with env_changes, to break one setting)."""
    cronjob, configmap = get_gc_cronjob(plane.inputs), get_gc_configmap(plane.inputs)
    assert cronjob is not None and configmap is not None
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    mounts_dir = Path(tempfile.mkdtemp(prefix="gc-mounts-", dir=home))
    mounts = rendered.write_configmap_mounts(pod_spec, gc_container(plane), [configmap], mounts_dir)
    env = {**gc_env(plane, home), **env_changes}
    argv = rendered.relocate_mounts(rendered.expand_dependent_vars(gc_container(plane)["command"], env), mounts)
    assert argv[0] == "python" and argv[1].startswith(str(mounts_dir)), argv
    python = str(server_venv() / "bin" / "python")
    # cwd: the image's WORKDIR is /tmp, the emptyDir; the script must need nothing else writable.
    return subprocess.run(
        [python, *argv[1:]], env=env, cwd=home, capture_output=True, text=True, timeout=GC_TIMEOUT, check=False
    )


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


def rows(postgres: Postgres, table: str, column: str) -> set[str]:
    return set(postgres.psql(f"SELECT {column} FROM {table}", dbname=postgres.dbname).split())


def age(postgres: Postgres, table: str, time_column: str, id_column: str, ids: list[str], days: int) -> None:
    """As if the rows `ids` were deleted `days` earlier: the times mlflow gc compares with --older-than."""
    listed = ",".join(f"'{found}'" for found in ids)
    sql = (
        f"UPDATE {table} SET {time_column} = {time_column} - {days}::bigint * {DAY_MS} WHERE {id_column} IN ({listed})"
    )
    postgres.psql(sql, dbname=postgres.dbname)


def deletion_lines(output: str) -> set[str]:
    return {line for line in output.splitlines() if "permanently deleted" in line}


def kept_lines(output: str) -> set[str]:
    return {line for line in output.splitlines() if line.startswith("Kept ")}


def set_up_runs(plane: Plane, experiment: str, labels: list[str], delete: list[str], model_run: str) -> dict[str, Any]:
    params = {"experiment": experiment, "runs": labels, "delete": delete, "model_run": model_run, "model": experiment}
    return run_client(plane, SETUP_SCRIPT, params)


def set_up_registry(plane: Plane, postgres: Postgres) -> dict[str, Any]:
    """REGISTRY_SCRIPT's resources, deleted 40 days ago except gc/young (29 days)."""
    made = run_client(plane, REGISTRY_SCRIPT, {})
    runs, experiments, models = made["runs"], made["experiments"], made["models"]
    # What each version was registered from, as the server stored it: the client resolves runs:/ to the run's
    # artifact directory (the version reads its files from there), a logged model to models:/m-.
    from_run = f"mlflow-artifacts:/{experiments['gc']}/{runs['from-run']}/artifacts/model"
    assert made["sources"]["gc-from-run"] == from_run, made["sources"]
    assert made["sources"]["gc-trained"] == f"models:/{models['trained']}", made["sources"]
    old = [runs[label] for label in ("old", "trained", "from-run", "exp-kept", "exp-gone")]
    age(postgres, "runs", "deleted_time", "run_uuid", old, days=40)
    age(postgres, "runs", "deleted_time", "run_uuid", [runs["young"]], days=29)
    age(postgres, "logged_models", "last_updated_timestamp_ms", "model_id", [models["lm"]], days=40)
    deleted = [experiments["gc-exp-kept"], experiments["gc-exp-gone"]]
    age(postgres, "experiments", "last_update_time", "experiment_id", deleted, days=40)
    return made


# --- tests ----------------------------------------------------------------------------------------------------


def test_rendered_gc_keeps_what_registered_versions_need_and_collects_the_rest(minio: S3Server, tmp_path: Path) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, postgres.password))
        assert inputs.spec.retention is not None and inputs.spec.retention.deleted_runs_older_than == "30d"
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            made = set_up_registry(plane, postgres)
            runs, experiments, models = made["runs"], made["experiments"], made["models"]
            before, runs_before = etags(plane), run_rows(postgres)

            result = run_gc(plane, tmp_path)
            print(result.stdout, result.stderr[-4000:], sep="\n")
            assert result.returncode == 0, result.stderr[-4000:]

            # Only what mlflow gc would collect is listed, each with the version that kept it: the Job's log.
            kept = {
                f"Kept run {runs['trained']}: model version 'gc-trained' version 1 needs it.",
                f"Kept run {runs['from-run']}: model version 'gc-from-run' version 1 needs it.",
                f"Kept run {runs['exp-kept']}: model version 'gc-exp' version 1 needs it.",
                f"Kept logged model {models['lm']}: model version 'gc-lm' version 1 needs it.",
                f"Kept experiment {experiments['gc-exp-kept']}: model version 'gc-exp' version 1 needs it.",
            }
            assert kept_lines(result.stdout) == kept, result.stdout
            # What no version needs goes as `mlflow gc` collects it: rows and artifacts.
            collected = {runs["old"], runs["exp-gone"]}
            assert deletion_lines(result.stdout) == {
                *(f"Run with ID {run_id} has been permanently deleted." for run_id in collected),
                f"Experiment with ID {experiments['gc-exp-gone']} has been permanently deleted.",
            }
            assert run_rows(postgres) == runs_before - collected
            assert experiments["gc-exp-gone"] not in rows(postgres, "experiments", "experiment_id")
            assert experiments["gc-exp-kept"] in rows(postgres, "experiments", "experiment_id")
            assert set(models.values()) <= rows(postgres, "logged_models", "model_id")
            gone = tuple(
                run_prefix(plane, experiments[experiment], runs[label])
                for experiment, label in (("gc", "old"), ("gc-exp-gone", "exp-gone"))
            )
            after = etags(plane)
            assert after == {key: tag for key, tag in before.items() if not key.startswith(gone)}
            assert len(before) - len(after) == 2, sorted(set(before) - set(after))  # the collected runs' notes
            assert run_prefix(plane, experiments["gc"], runs["from-run"]) + "artifacts/model/MLmodel" in after
            names = ["gc-trained", "gc-from-run", "gc-lm", "gc-exp"]
            loaded = run_client(plane, LOAD_SCRIPT, {"models": names})
            assert loaded == {name: {"status": "READY", "prediction": [11, 12]} for name in names}

            # Again: all that is collectable is kept, so nothing is deleted (an empty list is not "all").
            again = run_gc(plane, tmp_path)
            print(again.stdout, again.stderr[-4000:], sep="\n")
            assert again.returncode == 0, again.stderr[-4000:]
            assert "Nothing to collect" in again.stdout and deletion_lines(again.stdout) == set()
            assert kept_lines(again.stdout) == kept
            assert run_rows(postgres) == runs_before - collected
            assert etags(plane) == after

            # Only an empty deleted experiment to collect: the lists of runs and logged models to collect are
            # empty, and mlflow gc's code must read them as "none", not as "every deleted one".
            empty = run_client(plane, EMPTY_EXPERIMENT_SCRIPT, {"name": "gc-empty"})["experiment_id"]
            age(postgres, "experiments", "last_update_time", "experiment_id", [empty], days=40)
            third = run_gc(plane, tmp_path)
            print(third.stdout, third.stderr[-4000:], sep="\n")
            assert third.returncode == 0, third.stderr[-4000:]
            assert deletion_lines(third.stdout) == {f"Experiment with ID {empty} has been permanently deleted."}
            assert kept_lines(third.stdout) == kept
            assert run_rows(postgres) == runs_before - collected
            assert set(models.values()) <= rows(postgres, "logged_models", "model_id")
            assert etags(plane) == after


def test_rendered_gc_fails_visibly_when_the_registry_or_the_bucket_is_unreachable(
    minio: S3Server, tmp_path: Path
) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, postgres.password))
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            made = set_up_runs(plane, "gc-down", ["old", "live"], delete=["old"], model_run="")
            old, experiment_id = made["runs"]["old"], made["experiment_id"]
            deleted_days_ago(postgres, [old], days=40)
            before = etags(plane)
            # A registry the Job cannot read (wrong credentials): it fails before deleting anything, because
            # without the versions it cannot know what they need.
            refused = run_gc(plane, tmp_path, MLFLOW_TRACKING_PASSWORD="not-the-admin-password")
            print(refused.stdout, refused.stderr[-4000:], sep="\n")
            assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr[-4000:]
            assert deletion_lines(refused.stdout) == set()
            assert run_rows(postgres) == set(made["runs"].values())
            assert etags(plane) == before
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
