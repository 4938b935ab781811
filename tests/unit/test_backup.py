"""Backups: the decisions over what a backup store holds (logic.backup) and what the builders render."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlflow_operator.api.trackingserver import LifecycleRule, TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.trackingserver.backup import archive_command, retention_policy
from mlflow_operator.logic import backup
from mlflow_operator.logic.backup import ArchivedWal, BaseBackup, StoreContents
from mlflow_operator.logic.conditions import rfc3339
from mlflow_operator.logic.lifecycle_safety import layout_refusals

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
BACKUP_INFO = """\
backup_id=20261201T020000
backup_name=None
begin_time=2026-12-01 02:00:00.123456+00:00
begin_wal=000000010000000000000003
end_time=2026-12-01 02:00:09.654321+00:00
end_wal=000000010000000000000004
status=DONE
timeline=1
"""


def done(backup_id: str, end: datetime) -> BaseBackup:
    return BaseBackup(backup_id, "DONE", end - timedelta(seconds=10), end, None, None)


def spec(**managed: Any) -> TrackingServerSpec:
    return TrackingServerSpec.model_validate(
        {
            "database": {"managed": managed},
            "artifacts": {
                "s3": {"bucket": "art", "endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3"}}
            },
        }
    )


def test_backup_info_as_barman_writes_it() -> None:
    info = backup.parse_backup_info("x", BACKUP_INFO)
    assert info.backup_id == "20261201T020000" and info.done
    assert info.end_time == datetime(2026, 12, 1, 2, 0, 9, 654321, tzinfo=UTC)
    assert (info.begin_wal, info.end_wal) == ("000000010000000000000003", "000000010000000000000004")


def test_an_unfinished_or_unreadable_backup_is_never_chosen() -> None:
    started = backup.parse_backup_info("b1", "status=STARTED\nbegin_time=2026-12-01 02:00:00+00:00\nend_time=None\n")
    garbled = backup.parse_backup_info("b2", "status=DONE\nend_time=yesterday\n")
    assert not started.done and not garbled.done and garbled.backup_id == "b2"
    choice = backup.choose_base_backup(StoreContents((started, garbled), None), "s3://b/p/ts", None)
    assert choice.backup is None and "no completed base backup" in (choice.problem or "")


def test_newest_wal_skips_history_files_and_partial_segments() -> None:
    objects = [
        ("p/ts/wals/0000000100000000/000000010000000000000003.gz", T0),
        ("p/ts/wals/0000000100000000/000000010000000000000004.gz", T0 + timedelta(minutes=1)),
        ("p/ts/wals/0000000100000000/000000010000000000000005.partial.gz", T0 + timedelta(minutes=2)),
        ("p/ts/wals/0000000200000000/00000002.history.gz", T0 + timedelta(minutes=3)),
    ]
    assert backup.newest_wal(objects) == ArchivedWal("000000010000000000000004", T0 + timedelta(minutes=1))
    assert backup.newest_wal([]) is None


def test_restore_picks_the_newest_backup_that_ends_before_the_target() -> None:
    contents = StoreContents(
        (done("b2", T0 + timedelta(days=1)), done("b1", T0), done("b3", T0 + timedelta(days=2))), None
    )
    target = rfc3339(T0 + timedelta(days=1, hours=3))
    assert backup.choose_base_backup(contents, "s3://b/p/ts", target).backup == contents.backups[0]
    assert backup.choose_base_backup(contents, "s3://b/p/ts", None).backup == contents.backups[2]
    # A target inside the day of b2 but before b2 ended: b1 and its WAL reach it.
    inside = rfc3339(T0 + timedelta(days=1) - timedelta(seconds=1))
    assert backup.choose_base_backup(contents, "s3://b/p/ts", inside).backup == contents.backups[1]


def test_a_target_before_the_first_recoverability_point_is_refused_naming_the_field() -> None:
    contents = StoreContents((done("b1", T0),), None)
    choice = backup.choose_base_backup(contents, "s3://b/p/ts", "2026-11-30T00:00:00Z")
    assert choice.backup is None
    assert choice.problem is not None and choice.problem.startswith("spec.database.managed.restore.targetTime")
    assert "2026-12-01T02:00:00Z" in choice.problem


@pytest.mark.parametrize(
    ("annotation", "last", "contents", "expected"),
    [
        ("now-1", None, StoreContents((), None), "now-1"),  # a new request wins
        ("now-1", "now-1", StoreContents((done("b", T0),), None), None),  # acted on already
        (None, None, StoreContents((), None), backup.INITIAL_REQUEST),  # a fresh database gets one at once
        (None, backup.INITIAL_REQUEST, StoreContents((), None), None),  # ... once (its Job reports failures)
        (None, None, StoreContents((done("b", T0),), None), None),  # the schedule takes it from there
        (None, None, None, None),  # the store could not be read: no guess
    ],
)
def test_backup_request(
    annotation: str | None, last: str | None, contents: StoreContents | None, expected: str | None
) -> None:
    assert backup.backup_request(annotation, last, contents) == expected


def test_health_names_the_store_and_the_newest_backup() -> None:
    down = backup.health("s3://b/p/ts", None, 'S3 endpoint for bucket "b" unreachable', None)
    assert (down.status, down.reason) == ("False", backup.STORE_UNAVAILABLE) and "s3://b/p/ts" in down.message
    failed = backup.health(
        "s3://b/p/ts", StoreContents((done("b", T0),), None), None, "Job x failed: BackoffLimitExceeded"
    )
    assert (failed.status, failed.reason) == ("False", backup.BACKUP_FAILED)
    empty = backup.health("s3://b/p/ts", StoreContents((), None), None, None)
    assert (empty.status, empty.reason) == ("False", backup.NO_BASE_BACKUP)
    wal = ArchivedWal("000000010000000000000009", T0 + timedelta(hours=1))
    healthy = backup.health("s3://b/p/ts", StoreContents((done("b", T0),), wal), None, None)
    assert healthy.status == "True" and "000000010000000000000009" in healthy.message


def test_status_fields() -> None:
    contents = StoreContents(
        (done("b2", T0 + timedelta(days=1)), done("b1", T0)), ArchivedWal("0000000100000000000000AA", T0)
    )
    fields = backup.status_fields("s3://b/p/ts", contents, "now-1")
    assert fields["lastBackupId"] == "b2" and fields["firstRecoverabilityPoint"] == "2026-12-01T02:00:00Z"
    assert fields["lastArchivedWal"] == "0000000100000000000000AA" and fields["lastRequest"] == "now-1"


def test_recovery_window() -> None:
    assert retention_policy("30d") == "RECOVERY WINDOW OF 30 DAYS"
    assert retention_policy("4w") == "RECOVERY WINDOW OF 4 WEEKS"
    assert retention_policy("6m") == "RECOVERY WINDOW OF 6 MONTHS"


def test_backups_default_to_the_artifact_bucket_per_namespace() -> None:
    location = build.backup_location("ts", "team", spec(backup={}))
    assert location is not None and str(location) == "s3://art/backups/team/ts"
    assert location.key_prefix == "backups/team/ts/"
    assert archive_command(location) == (
        "barman-cloud-wal-archive --cloud-provider aws-s3 --endpoint-url http://minio:9000 --gzip"
        " s3://art/backups/team ts %p"
    )
    assert build.backup_location("ts", "team", spec()) is None


def test_the_database_pod_archives_with_the_stores_keys() -> None:
    sts = build.get_postgres_statefulset("ts", "team", spec(backup={}), "pw")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = dict(arg.split("=", 1) for arg in container["args"][1::2])
    assert args["archive_mode"] == "on" and args["archive_timeout"] == "60s"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}
    # Without backups, nothing of it.
    plain = build.get_postgres_statefulset("ts", "team", spec(), "pw")["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("archive_") for a in plain["args"]) and "AWS_DEFAULT_REGION" not in str(plain["env"])


def test_a_user_parameter_overrides_the_archive_timeout() -> None:
    sts = build.get_postgres_statefulset("ts", "team", spec(backup={}, parameters={"archive_timeout": "5min"}), "pw")
    assert "archive_timeout=5min" in sts["spec"]["template"]["spec"]["containers"][0]["args"]


def test_backup_cronjob_runs_beside_the_database_with_its_volume_read_only() -> None:
    cronjob = build.get_backup_cronjob("ts", "team", spec(backup={"schedule": "15 1 * * *", "retention": "4w"}))
    assert cronjob is not None and cronjob["spec"]["schedule"] == "15 1 * * *"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert affinity["topologyKey"] == "kubernetes.io/hostname"
    assert affinity["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "postgres"
    assert pod["volumes"][0] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "data-ts-postgres-0", "readOnly": True},
    }
    assert "fsGroup" not in pod["securityContext"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["BACKUP_RETENTION_POLICY"] == "RECOVERY WINDOW OF 4 WEEKS" and env["PGHOST"] == "ts-postgres-rw"
    assert build.get_backup_cronjob("ts", "team", spec()) is None


def test_on_demand_jobs_are_named_by_their_request() -> None:
    job = build.get_backup_job("ts", "team", spec(backup={}), "2026-12-05T10:00")
    assert job is not None and job["metadata"]["name"] == build.backup_job_name("ts", "2026-12-05T10:00")
    assert job["metadata"]["annotations"][build.REQUEST_ANNOTATION] == "2026-12-05T10:00"
    assert build.backup_job_name("ts", "a") != build.backup_job_name("ts", "b")


def test_the_restore_init_container_runs_the_chosen_backup() -> None:
    ts_spec = spec(restore={"fromBackup": {"serverName": "old"}, "targetTime": "2026-12-05T10:00:00Z"})
    source = build.restore_source("team", ts_spec)
    assert source is not None and str(source) == "s3://art/backups/team/old"
    plan = build.RestorePlan(source, "20261201T020000", "2026-12-05T10:00:00Z")
    pod = build.get_postgres_statefulset("new", "team", ts_spec, "pw", restore=plan)["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["RESTORE_BACKUP_ID"] == "20261201T020000" and env["RESTORE_SERVER_NAME"] == "old"
    assert env["RESTORE_SOURCE"] == "s3://art/backups/team"
    assert env["RESTORE_TARGET_TIME"] == "2026-12-05 10:00:00+00:00"  # Postgres' syntax: it refuses T and Z
    assert init["image"] == pod["containers"][0]["image"]
    # Recovery refuses max_connections & co. below the source's: it runs with the server's parameters.
    assert init["args"] == pod["containers"][0]["args"] and "-c" in init["args"]
    objects = build.desired_database("new", "team", ts_spec, "pw", restore=plan)
    assert objects[0]["kind"] == "ConfigMap" and "barman_restore.sh" in objects[0]["data"]


def test_location_problems_name_the_field() -> None:
    no_keys = TrackingServerSpec.model_validate(
        {"database": {"managed": {"backup": {}}}, "artifacts": {"s3": {"bucket": "art"}}}
    )
    assert build.location_problems("ts", "team", no_keys)[0].startswith("barman-cloud needs S3 access keys")
    assert "spec.database.managed.backup" in build.location_problems("ts", "team", no_keys)[0]
    into_itself = spec(backup={}, restore={"fromBackup": {"serverName": "ts"}})
    assert build.location_problems("ts", "team", into_itself)[0].startswith(
        "spec.database.managed.restore.fromBackup.serverName"
    )
    assert build.location_problems("new", "team", spec(backup={}, restore={"fromBackup": {"serverName": "ts"}})) == []


def test_lifecycle_rules_that_expire_the_backups_in_the_artifact_bucket_are_refused() -> None:
    backups = build.artifact_bucket_backups("ts", "team", spec(backup={}))
    assert backups == "backups/team/ts/"
    everything = LifecycleRule.model_validate({"id": "all", "expiration": {"days": 7}})
    old_backups = LifecycleRule.model_validate(
        {"id": "b", "filter": {"prefix": "backups/"}, "expiration": {"days": 90}}
    )
    scratch = LifecycleRule.model_validate(
        {"id": "s", "filter": {"prefix": "mlflow/scratch/"}, "expiration": {"days": 7}}
    )
    multipart = LifecycleRule.model_validate(
        {"id": "m", "filter": {"prefix": "backups/"}, "abortIncompleteMultipartUpload": {"daysAfterInitiation": 1}}
    )
    refused = layout_refusals([everything, old_backups, scratch, multipart], "mlflow", backups)
    assert [r.rule_id for r in refused] == ["all", "b"]
    assert "database backups" in refused[1].message and "retention" in refused[1].message
    # Backups in a bucket of their own leave the artifact bucket's rules alone.
    own_bucket = spec(backup={"s3": {"bucket": "db-backups", "credentialsSecret": {"name": "k"}}})
    assert build.artifact_bucket_backups("ts", "team", own_bucket) is None


ME = backup.LocationOwner("uid-2", "team", "ts")
FIELD = "spec.database.managed.backup.s3"
WHERE = "s3://b/backups/team/ts"
EARLIER = backup.LocationOwner("uid-1", "team", "ts")


def test_an_empty_location_is_claimed_and_an_own_one_is_used_as_it_is() -> None:
    assert backup.claim_location(WHERE, FIELD, ME, None, holds_data=False, volume_retained=False).write
    assert backup.claim_location(WHERE, FIELD, ME, ME, holds_data=True, volume_retained=False) == backup.Claim(False)


@pytest.mark.parametrize(
    ("found", "whose"),
    [
        (EARLIER, "TrackingServer team/ts (uid uid-1)"),  # deleted with its volume, re-created
        (None, "another database"),  # backups and WAL written without an owner object
    ],
)
def test_another_databases_archive_is_refused_naming_the_field(found: backup.LocationOwner | None, whose: str) -> None:
    claim = backup.claim_location(WHERE, FIELD, ME, found, holds_data=True, volume_retained=False)
    assert not claim.write and claim.problem is not None
    assert claim.problem.startswith(f"{FIELD}: {WHERE} already holds the backups and WAL of {whose}")


@pytest.mark.parametrize("found", [EARLIER, None])
def test_a_server_re_created_over_its_retained_volume_takes_its_archive_back(
    found: backup.LocationOwner | None,
) -> None:
    assert backup.claim_location(WHERE, FIELD, ME, found, holds_data=True, volume_retained=True) == backup.Claim(True)


def test_a_volume_is_retained_only_when_older_than_its_server() -> None:
    assert backup.retained_volume("2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z")
    assert not backup.retained_volume("2026-12-02T10:00:00Z", "2026-12-02T10:00:00Z")  # this server's own
    assert not backup.retained_volume("2026-12-03T10:00:00Z", "2026-12-02T10:00:00Z")  # backups enabled later
    assert not backup.retained_volume(None, "2026-12-02T10:00:00Z")


def test_an_owner_object_round_trips_and_an_unreadable_one_is_nobody() -> None:
    assert backup.LocationOwner.parse(ME.document()) == ME
    assert backup.LocationOwner.parse("not json") is None
    assert backup.LocationOwner.parse('{"uid": "x"}') is None
