"""The database pods' backup work as local processes: what tests/integration/test_backup_restore.py and
bench/database_backup.py run.

A TrackingServer's rendered objects give each piece: PostgreSQL runs with the rendered `-c` parameters
(archive_command is barman-cloud-wal-archive into the test's S3 server) and the AWS env of the rendered
StatefulSet; a base backup is the rendered CronJob's container (its script from the rendered ConfigMap, its
env resolved the way the kubelet does, only PGHOST/PGPORT pointed at the local socket); a restore is the
rendered init container on an empty data directory, with the base backup the operator's own decision picks
from what its adapter reads in the bucket. Scripts run as the postgres user, like the pods' UID 999.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_operator.adapters.backup_store import read_store
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.common import Obj
from mlflow_operator.logic import backup
from tests.integration import rendered
from tests.integration.dataplane import Postgres, as_service_user, run_checked, run_server_python, service_dir
from tests.integration.s3_servers import S3Server

NAME, NAMESPACE, SOURCE = "restored", "team", "tracking"
KEYS_SECRET = "backup-keys"
ARCHIVE_WAIT = 120.0

LOG_RUNS = """\
import json, os
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
client = MlflowClient(tracking_uri=params["uri"])
experiment = client.get_experiment_by_name("backups")
experiment_id = experiment.experiment_id if experiment else client.create_experiment("backups")
ids = []
for i in range(params["count"]):
    run = client.create_run(experiment_id, tags={"batch": params["batch"]})
    client.log_metric(run.info.run_id, "i", i)
    client.set_terminated(run.info.run_id)
    ids.append(run.info.run_id)
if params.get("model"):
    client.create_registered_model(params["model"])
    client.create_model_version(params["model"], "mlflow-artifacts:/m", run_id=ids[0])
print(json.dumps(ids))
"""


def spec(s3: S3Server, bucket: str, **managed: Any) -> TrackingServerSpec:
    store = {"bucket": bucket, "endpoint": s3.endpoint_url, "credentialsSecret": {"name": KEYS_SECRET}}
    return TrackingServerSpec.model_validate(
        {
            "database": {"managed": {"backup": {"s3": store}, **managed}},
            "artifacts": {"s3": {"bucket": bucket, "endpoint": s3.endpoint_url}},
        }
    )


def secrets(s3: S3Server) -> rendered.SecretValues:
    """The rendered pods' Secret references, with local values: the harness superuser over the socket."""
    database = build.Names(SOURCE).database_secret
    return {
        (KEYS_SECRET, "AWS_ACCESS_KEY_ID"): s3.access_key_id,
        (KEYS_SECRET, "AWS_SECRET_ACCESS_KEY"): s3.secret_access_key,
        (database, "username"): "postgres",
        (database, "password"): "",
        (build.Names(NAME).database_secret, "username"): "postgres",
    }


def statefulset(ts_name: str, ts_spec: TrackingServerSpec, restore: build.RestorePlan | None = None) -> Obj:
    return build.get_postgres_statefulset(ts_name, NAMESPACE, ts_spec, "password", restore=restore)


def postgres_settings(sts: Obj) -> dict[str, str]:
    """The rendered container's `-c key=value` args: all of them, since a restore must cope with what the
    source ran with (max_connections 120 by default, above an initdb's 100)."""
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    return dict(arg.split("=", 1) for arg in args[1::2])


def container_env(container: Obj, values: rendered.SecretValues) -> dict[str, str]:
    return {
        variable["name"]: variable["value"]
        if "value" in variable
        else values[(variable["valueFrom"]["secretKeyRef"]["name"], variable["valueFrom"]["secretKeyRef"]["key"])]
        for variable in container["env"]
    }


def run_script(pod: Obj, container: Obj, values: rendered.SecretValues, env: Mapping[str, str]) -> str:
    """The container's command with the rendered ConfigMap's script, as the postgres user (the pods' user:
    the scripts live where it may read them)."""
    configmaps = [build.get_backup_configmap(server, NAMESPACE) for server in (SOURCE, NAME)]
    mounts = rendered.write_configmap_mounts(pod, container, configmaps, service_dir("backup-scripts-"))
    argv = rendered.relocate_mounts([*container["command"], *container.get("args", [])], mounts)
    bin_dir = Path(Postgres().bin_dir)
    full_env = {**os.environ, **container_env(container, values), "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    return run_checked(as_service_user(argv), what=container["name"], timeout=600, env=full_env)


def log_runs(postgres: Postgres, batch: str, count: int, model: str | None = None) -> list[str]:
    params = {"uri": postgres.uri(), "batch": batch, "count": count, "model": model}
    out = run_server_python(LOG_RUNS, env={"TEST_PARAMS": json.dumps(params)})
    return list(json.loads(out.strip().splitlines()[-1]))


def archived_through(postgres: Postgres, timeout: float = ARCHIVE_WAIT) -> None:
    """Closes the current WAL segment and waits until the archiver shipped it."""
    segment = postgres.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if postgres.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment:
            return
        time.sleep(0.5)
    raise AssertionError(f"segment {segment} not archived in {timeout:.0f} s:\n{postgres.log_tail()}")


def restore(s3: S3Server, bucket: str, target_time: str | None) -> Path:
    """The rendered init container of a new TrackingServer restoring SOURCE, on an empty data directory."""
    restored_spec = spec(s3, bucket, restore={"fromBackup": {"serverName": SOURCE}, "targetTime": target_time})
    source = build.restore_source(NAMESPACE, restored_spec)
    assert source is not None and str(source) == f"s3://{bucket}/backups/{SOURCE}"
    contents = read_store(s3.endpoint(bucket), source.key_prefix)
    choice = backup.choose_base_backup(contents, str(source), target_time)
    assert choice.backup is not None, choice.problem
    plan = build.RestorePlan(source, choice.backup.backup_id, target_time)
    pod = statefulset(NAME, restored_spec, plan)["spec"]["template"]
    data = service_dir("restored-") / "pgdata"
    run_script(pod["spec"], pod["spec"]["initContainers"][0], secrets(s3), {"PGDATA": str(data)})
    return data


def run_ids(data: Path) -> set[str]:
    with Postgres(data_dir=data) as restored:
        return set(restored.psql("SELECT run_uuid FROM runs", dbname="mlflow").split())


def write_wal(postgres: Postgres, megabytes: int) -> None:
    postgres.psql("CREATE TABLE IF NOT EXISTS filler (payload text)")
    postgres.psql(
        f"INSERT INTO filler SELECT repeat(md5(random()::text), 32) FROM generate_series(1, {megabytes * 1000})"
    )


def archiving_postgres(s3: S3Server, bucket: str, server: str, data_dir: Path | None = None) -> Postgres:
    ts_spec = spec(s3, bucket)
    sts = statefulset(server, ts_spec)
    env = container_env(sts["spec"]["template"]["spec"]["containers"][0], secrets(s3))
    settings = {**postgres_settings(sts), "wal_level": "replica"}
    return Postgres(settings, env={k: v for k, v in env.items() if k.startswith("AWS_")}, data_dir=data_dir)


def store_contents(s3: S3Server, bucket: str, server: str) -> backup.StoreContents:
    return read_store(s3.endpoint(bucket), f"backups/{server}/")
