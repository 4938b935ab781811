"""Backups and point-in-time restore with the real tools, run as the database pods run them
(tests/integration/backups.py).

PostgreSQL runs as a local process with the archive settings the operator renders (archive_command is
barman-cloud-wal-archive into MinIO, with the env of the rendered StatefulSet); the base backup is the
rendered CronJob's container (its script from the rendered ConfigMap, its env resolved the way the kubelet
does, only PGHOST/PGPORT pointed at the local socket); the restore is the rendered init container, on an
empty data directory, with the base backup the operator's own decision picks from what its adapter reads
in the bucket. MLflow's client writes the runs and reads nothing: the restored database is queried directly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from mlflow_operator.adapters.backup_store import read_owner, write_owner
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.common import Obj
from mlflow_operator.handlers import database_backups
from mlflow_operator.handlers.reconcile import SecretProblem
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import backup
from mlflow_operator.logic.conditions import rfc3339
from tests.integration.backups import (
    KEYS_SECRET,
    NAME,
    NAMESPACE,
    SOURCE,
    archived_through,
    archiving_postgres,
    container_env,
    log_runs,
    postgres_settings,
    restore,
    run_ids,
    run_script,
    secrets,
    spec,
    statefulset,
    store_contents,
    write_wal,
)
from tests.integration.dataplane import (
    Postgres,
    wait_for,
)
from tests.integration.s3_servers import S3Server, minio_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with minio_server(tmp_path_factory.mktemp("minio")) as server:
        yield server


def test_point_in_time_restore_brings_back_exactly_the_runs_before_the_target(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    source_spec = spec(s3, bucket)
    source_sts = statefulset(SOURCE, source_spec)
    postgres_env = container_env(source_sts["spec"]["template"]["spec"]["containers"][0], secrets(s3))
    settings = {**postgres_settings(source_sts), "wal_level": "replica"}
    assert settings["archive_command"].startswith("barman-cloud-wal-archive ")
    with Postgres(settings, env={k: v for k, v in postgres_env.items() if k.startswith("AWS_")}) as postgres:
        before_backup = log_runs(postgres, "before-backup", 5, model="kept")
        cronjob = build.get_backup_cronjob(SOURCE, NAMESPACE, source_spec)
        assert cronjob is not None
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
        local = {"PGHOST": str(postgres.workdir), "PGPORT": str(postgres.port)}
        run_script(pod["spec"], pod["spec"]["containers"][0], secrets(s3), local)
        before_target = log_runs(postgres, "before-target", 4)
        time.sleep(1.5)
        target = rfc3339(datetime.now(UTC))
        time.sleep(1.5)
        after_target = log_runs(postgres, "after-target", 3)
        archived_through(postgres)

    data = restore(s3, bucket, target)
    assert run_ids(data) == set(before_backup + before_target)
    with Postgres(data_dir=data) as restored:
        assert restored.psql("SELECT name FROM registered_models", dbname="mlflow") == "kept"
        assert restored.psql("SELECT count(*) FROM model_versions", dbname="mlflow") == "1"

    latest = restore(s3, bucket, None)
    assert run_ids(latest) == set(before_backup + before_target + after_target)


# ------------------------------------------------------------------------------------ archiving under stress


def archived_segments(s3: S3Server, bucket: str, server: str) -> list[str]:
    """The names of the WAL segments in the archive, in order."""
    client = s3.client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"backups/{server}/wals/")
        for obj in page.get("Contents", [])
    ]
    return sorted(name for key in keys if (name := backup.wal_segment(key)) is not None)


def consecutive(segments: list[str]) -> bool:
    """Whether segments of one timeline follow each other without a hole (16 MiB segments: 256 per log)."""
    positions = [int(name[8:16], 16) * 256 + int(name[16:24], 16) for name in segments]
    return positions == list(range(positions[0], positions[0] + len(positions)))


def process_tree(root: int) -> list[int]:
    """root and its descendants (Postgres' children each start a session of their own: no one group)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def kill_all(postgres: Postgres) -> None:
    """SIGKILL to every process of the database at once, as a container's kill does: the postmaster, its
    backends, the archiver and the archive_command it runs. Returns once none is left running (a backend
    still attached to the shared memory keeps a new postmaster from starting)."""
    assert postgres.process is not None and postgres.process.pid is not None
    tree = process_tree(postgres.process.pid)
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    postgres.process.wait(10)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "Z" not in status(pid) for pid in tree)

    assert wait_for(gone, timeout=10), "processes of the killed Postgres remain"


def status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_database_killed_while_archiving_loses_no_segment(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    with archiving_postgres(s3, bucket, SOURCE) as postgres:
        write_wal(postgres, 80)  # five segments or so, queued for the archiver
        time.sleep(1.0)  # the archiver is uploading
        kill_all(postgres)
        data = postgres.data_dir
        with archiving_postgres(s3, bucket, SOURCE, data_dir=data) as restarted:
            write_wal(restarted, 20)
            archived_through(restarted)
    segments = archived_segments(s3, bucket, SOURCE)
    assert len(segments) >= 6 and consecutive(segments), segments


def test_postgres_keeps_serving_while_s3_is_down_and_archives_the_backlog_when_it_returns(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    with archiving_postgres(s3, bucket, SOURCE) as postgres:
        archived_through(postgres)
        s3.stop()
        try:
            write_wal(postgres, 20)
            segment = postgres.psql("SELECT pg_walfile_name(pg_switch_wal())")
            assert wait_for(
                lambda: int(postgres.psql("SELECT failed_count FROM pg_stat_archiver")) > 0, timeout=60, interval=0.5
            )
            postgres.psql("CREATE TABLE still_serving AS SELECT 1 AS answer")  # writes go on
            assert postgres.psql("SELECT answer FROM still_serving") == "1"
            assert segment in postgres.psql("SELECT string_agg(name, ' ') FROM pg_ls_waldir()")  # kept, not lost
        finally:
            s3.restart()
        archived_through(postgres)
    segments = archived_segments(s3, bucket, SOURCE)
    assert segment in segments and consecutive(segments), segments


# ------------------------------------------------------------------------------------ retention


def backdate(s3: S3Server, bucket: str, server: str, backup_id: str, days: int) -> None:
    """Rewrites a base backup's backup.info as if it had ended `days` ago (barman-cloud-backup-delete reads
    the times from there)."""
    client = s3.client()
    key = f"backups/{server}/base/{backup_id}/backup.info"
    text = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    moment = datetime.now(UTC) - timedelta(days=days)
    backdated = {"begin_time": moment.isoformat(sep=" "), "end_time": moment.isoformat(sep=" ")}
    lines = [
        f"{name}={backdated[name]}" if name in backdated else line
        for line in text.splitlines()
        for name in [line.split("=", 1)[0]]
    ]
    client.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())


def test_retention_deletes_only_what_the_recovery_window_does_not_need(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    ts_spec = spec(s3, bucket)
    cronjob = build.get_backup_cronjob(SOURCE, NAMESPACE, ts_spec)
    assert cronjob is not None
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    location = build.backup_location(SOURCE, NAMESPACE, ts_spec)
    assert location is not None
    owner = backup.LocationOwner("uid-1", NAMESPACE, SOURCE)
    write_owner(s3.endpoint(bucket), location.key_prefix, owner)  # the operator's claim, beside barman's objects
    with archiving_postgres(s3, bucket, SOURCE) as postgres:
        local = {"PGHOST": str(postgres.workdir), "PGPORT": str(postgres.port)}
        ids = []
        for age in (50, 40):
            run_script(pod["spec"], pod["spec"]["containers"][0], secrets(s3), local)
            newest = store_contents(s3, bucket, SOURCE).completed()[-1].backup_id
            backdate(s3, bucket, SOURCE, newest, age)
            ids.append(newest)
            write_wal(postgres, 20)
            archived_through(postgres)
        # The third run's retention (30 days) finds backups that ended 50 and 40 days ago, and its own.
        run_script(pod["spec"], pod["spec"]["containers"][0], secrets(s3), local)
    kept = {b.backup_id for b in store_contents(s3, bucket, SOURCE).completed()}
    # 40 days ago is the base of any restore to 30 days ago: kept; 50 days ago is needed by nothing: deleted.
    assert ids[0] not in kept and ids[1] in kept and len(kept) == 2, (ids, kept)
    assert read_owner(s3.endpoint(bucket), location.key_prefix) == (owner, True)  # barman leaves it alone


# ------------------------------------------------------------------------------------ the operator's decisions


class FakeStatus:
    """The Secrets the operator reads: the backup store's keys."""

    def __init__(self, s3: S3Server) -> None:
        self.keys = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        return self.keys if (namespace, name) == (NAMESPACE, KEYS_SECRET) else None


class FakeKube:
    """Records applied objects; lists the backup Jobs applied so far (with the status a test gives them)."""

    def __init__(self) -> None:
        self.applied: list[Obj] = []
        self.volumes: dict[str, Obj] = {}  # PersistentVolumeClaims by name

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> Obj | None:
        return self.volumes.get(name) if kind == "PersistentVolumeClaim" else None

    async def apply(self, obj: Obj, owner: Obj | None = None) -> Obj:
        self.applied.append(obj)
        return obj

    async def list(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[Obj]:
        return [obj for obj in self.applied if obj["kind"] == kind]


def tracking_server(ts_spec: TrackingServerSpec, status: Obj | None = None, request: str | None = None) -> Obj:
    annotations = {build.REQUEST_ANNOTATION: request} if request else {}
    return {
        "metadata": {"name": SOURCE, "namespace": NAMESPACE, "uid": "uid-1", "annotations": annotations},
        "spec": ts_spec.model_dump(by_alias=True, exclude_none=True),
        "status": status or {},
    }


def test_the_operator_takes_the_first_backup_reports_it_and_names_an_unreachable_store(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    ts_spec = spec(s3, bucket)
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(s3)))
    kube = FakeKube()

    def backups(status: Obj | None = None, request: str | None = None) -> tuple[Any, Any]:
        body = tracking_server(ts_spec, status, request)
        return asyncio.run(database_backups.backups(rt, cast(Any, kube), body, ts_spec, database_ready=True))

    health, fields = backups()
    assert (health.status, health.reason) == ("False", backup.NO_BASE_BACKUP)
    assert [job["metadata"]["name"] for job in kube.applied] == [build.backup_job_name(SOURCE, "initial")]
    assert fields["lastRequest"] == "initial" and fields["destination"] == f"s3://{bucket}/backups/{SOURCE}"

    with archiving_postgres(s3, bucket, SOURCE) as postgres:  # what that Job's pod does
        pod = kube.applied[0]["spec"]["template"]
        local = {"PGHOST": str(postgres.workdir), "PGPORT": str(postgres.port)}
        run_script(pod["spec"], pod["spec"]["containers"][0], secrets(s3), local)
        archived_through(postgres)
    kube.applied[0]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    health, fields = backups({"backup": fields})
    assert (health.status, health.reason) == ("True", backup.HEALTHY), health.message
    assert fields["lastBackupId"] and fields["lastBackupTime"] and fields["lastArchivedWal"], fields
    assert len(kube.applied) == 1  # nothing more is due: the schedule takes over

    health, fields = backups({"backup": fields}, request="before-upgrade")
    assert kube.applied[-1]["metadata"]["name"] == build.backup_job_name(SOURCE, "before-upgrade")
    assert fields["lastRequest"] == "before-upgrade"

    s3.stop()
    try:
        health, _ = backups({"backup": fields}, request="before-upgrade")
    finally:
        s3.restart()
    assert (health.status, health.reason) == ("False", backup.STORE_UNAVAILABLE)
    assert s3.endpoint_url in health.message, health.message


def test_a_restore_plan_is_chosen_once_and_an_unreachable_target_creates_no_database(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    with archiving_postgres(s3, bucket, SOURCE) as postgres:
        cronjob = build.get_backup_cronjob(SOURCE, NAMESPACE, spec(s3, bucket))
        assert cronjob is not None
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
        local = {"PGHOST": str(postgres.workdir), "PGPORT": str(postgres.port)}
        run_script(pod["spec"], pod["spec"]["containers"][0], secrets(s3), local)
    first = store_contents(s3, bucket, SOURCE).completed()[0]
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(s3)))

    def plan(target: str | None, status: Obj | None = None) -> build.RestorePlan | None:
        ts_spec = spec(s3, bucket, restore={"fromBackup": {"serverName": SOURCE}, "targetTime": target})
        body = {**tracking_server(ts_spec, status), "metadata": {"name": NAME, "namespace": NAMESPACE}}
        return asyncio.run(database_backups.restore_plan(rt, body, ts_spec))

    chosen = plan(None)
    assert chosen is not None and chosen.backup_id == first.backup_id
    assert database_backups.restore_status(chosen) == {
        "source": f"s3://{bucket}/backups/{SOURCE}",
        "backupId": first.backup_id,
        "targetTime": None,
    }
    kept = plan(None, {"restore": {"backupId": "20200101T000000"}})  # the first choice stays
    assert kept is not None and kept.backup_id == "20200101T000000"
    with pytest.raises(SecretProblem) as refused:
        plan("2020-01-01T00:00:00Z")
    assert refused.value.reason == backup.RESTORE_NOT_POSSIBLE
    assert refused.value.message.startswith("spec.database.managed.restore.targetTime: 2020-01-01T00:00:00Z")


def test_a_re_created_server_of_the_same_name_never_archives_into_the_old_ones_history(s3: S3Server) -> None:
    """The old server's database archived real WAL into backups/team/tracking; its TrackingServer is deleted
    and one of the same name created (a new uid): a new database must not be created there, the old one
    (its volume retained) may come back."""
    bucket = s3.create_bucket()
    ts_spec = spec(s3, bucket)
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(s3)))
    kube = FakeKube()
    location = build.backup_location(SOURCE, NAMESPACE, ts_spec)
    assert location is not None

    def claim(uid: str, status: Obj | None = None) -> None:
        body = tracking_server(ts_spec, status)
        body["metadata"].update(uid=uid, creationTimestamp="2026-12-06T10:00:00Z")
        asyncio.run(database_backups.claim_backup_location(rt, cast(Any, kube), body, ts_spec))

    claim("uid-1")  # the first server: an empty location, claimed
    with archiving_postgres(s3, bucket, SOURCE) as postgres:
        archived_through(postgres)
    claim("uid-1")  # its own archive

    with pytest.raises(SecretProblem) as refused:
        claim("uid-2")
    assert refused.value.reason == backup.LOCATION_IN_USE
    assert refused.value.message.startswith(
        f"spec.database.managed.backup.s3: {location} already holds the backups and WAL of TrackingServer "
        f"{NAMESPACE}/{SOURCE} (uid uid-1)"
    ), refused.value.message

    volume = {"metadata": {"name": build.Names(SOURCE).postgres_data, "creationTimestamp": "2026-12-01T00:00:00Z"}}
    kube.volumes[volume["metadata"]["name"]] = volume  # retained by the first server (deletionPolicy: Retain)
    claim("uid-2")
    kube.volumes.clear()  # then deleted with deletionPolicy: Delete
    with pytest.raises(SecretProblem) as refused:
        claim("uid-3")
    assert "(uid uid-2)" in refused.value.message  # the location was the second server's

    s3.stop()  # a destination already in status is this server's: the store is not asked
    try:
        claim("uid-2", {"backup": {"destination": str(location)}})
    finally:
        s3.restart()


def test_an_archive_written_without_an_owner_is_another_databases(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    with archiving_postgres(s3, bucket, SOURCE) as postgres:  # not through the operator: no owner object
        archived_through(postgres)
    ts_spec = spec(s3, bucket)
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(s3)))
    body = tracking_server(ts_spec)
    with pytest.raises(SecretProblem) as refused:
        asyncio.run(database_backups.claim_backup_location(rt, cast(Any, FakeKube()), body, ts_spec))
    assert refused.value.reason == backup.LOCATION_IN_USE
    assert "already holds the backups and WAL of another database" in refused.value.message
