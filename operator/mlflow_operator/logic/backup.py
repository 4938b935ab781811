"""Decisions about a TrackingServer's database backups, from what the backup store holds (as pure data).

barman-cloud keeps, per server, `base/<backup id>/backup.info` (key=value lines: status, begin/end time and
WAL) and `wals/<timeline+log>/<segment>[.gz]`. The operator reads those to report status, to decide when to
take a base backup outside the schedule, and to pick the base backup a restore starts from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mlflow_operator.api.common import parse_rfc3339
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339

BACKUPS_HEALTHY = "BackupsHealthy"
# Reasons of BackupsHealthy, and of DatabaseReady while a restore cannot start.
HEALTHY, NO_BASE_BACKUP, BACKUP_FAILED, STORE_UNAVAILABLE = (
    "Healthy",
    "NoBaseBackup",
    "BackupFailed",
    "StoreUnavailable",
)
RESTORE_NOT_POSSIBLE = "RestoreNotPossible"
LOCATION_IN_USE = "BackupLocationInUse"  # DatabaseReady's reason: another database's archive is there
# The object beside base/ and wals/ naming the TrackingServer whose database archives in this location.
OWNER_OBJECT = "mlflow-operator-owner.json"
INITIAL_REQUEST = "initial"  # the request value of the first base backup, taken as soon as the database runs
TARGET_TIME_FIELD = "spec.database.managed.restore.targetTime"
DONE = "DONE"


@dataclass(frozen=True)
class BaseBackup:
    backup_id: str
    status: str
    begin_time: datetime | None
    end_time: datetime | None
    begin_wal: str | None
    end_wal: str | None

    @property
    def done(self) -> bool:
        return self.status == DONE and self.end_time is not None


@dataclass(frozen=True)
class ArchivedWal:
    name: str
    time: datetime


@dataclass(frozen=True)
class StoreContents:
    """One server's backups and its newest archived WAL segment."""

    backups: tuple[BaseBackup, ...]
    last_wal: ArchivedWal | None

    def completed(self) -> list[BaseBackup]:
        """Completed base backups, oldest first."""
        return sorted((b for b in self.backups if b.done), key=lambda b: b.end_time or datetime.min)


@dataclass(frozen=True)
class LocationOwner:
    """The TrackingServer a backup location belongs to: its uid tells a re-created server of the same name
    (a new database) from the one that wrote the archive."""

    uid: str
    namespace: str
    name: str

    def document(self) -> str:
        return json.dumps({"uid": self.uid, "namespace": self.namespace, "name": self.name}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> LocationOwner | None:
        """None for anything unreadable: the location then counts as another's (the safe side)."""
        try:
            fields = json.loads(text)
            return cls(str(fields["uid"]), str(fields["namespace"]), str(fields["name"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Claim:
    """Whether this server's database may archive into the location: `write` the owner object first;
    `problem` (the location is another database's) keeps the database from being created."""

    write: bool
    problem: str | None = None


def retained_volume(volume_created: str | None, server_created: str | None) -> bool:
    """Whether the database's data volume outlived an earlier TrackingServer of this name (deletionPolicy:
    Retain): it exists and is older than this TrackingServer, whose StatefulSet would have made it later."""
    if volume_created is None or server_created is None:
        return False
    return parse_rfc3339(volume_created) < parse_rfc3339(server_created)


def claim_location(
    location: str,
    field: str,
    me: LocationOwner,
    found: LocationOwner | None,
    holds_data: bool,
    volume_retained: bool,
) -> Claim:
    """Two databases archiving into one WAL path corrupt each other's history, and a restore would then mix
    them. A location is this server's when its owner object names this server's uid; an empty one is
    claimed; so is one whose database comes back: a TrackingServer re-created (a new uid) over its retained
    data volume (deletionPolicy: Retain) is the same database. Anything else (another uid, or backups and WAL
    with no readable owner object) is another database's: a TrackingServer deleted with its volume and
    re-created with the same name starts a new one, or two stores point at one place."""
    if found is not None and found.uid == me.uid:
        return Claim(write=False)
    if volume_retained or not holds_data:
        return Claim(write=True)
    whose = f"TrackingServer {found.namespace}/{found.name} (uid {found.uid})" if found else "another database"
    return Claim(
        write=False,
        problem=(
            f"{field}: {location} already holds the backups and WAL of {whose}; archiving a new database there "
            "would corrupt that history. Point the backups at an empty location (another prefix or bucket), "
            "or remove those objects; to bring that database back, restore from it "
            "(spec.database.managed.restore.fromBackup) into a new location."
        ),
    )


def _time(value: str | None) -> datetime | None:
    if not value or value == "None":
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_backup_info(backup_id: str, text: str) -> BaseBackup:
    """A backup.info as barman writes it; what cannot be read leaves the backup unusable, never an error."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    wal = {
        key: (fields.get(key) if fields.get(key) not in (None, "", "None") else None)
        for key in ("begin_wal", "end_wal")
    }
    return BaseBackup(
        backup_id=fields.get("backup_id") or backup_id,
        status=fields.get("status", "UNKNOWN"),
        begin_time=_time(fields.get("begin_time")),
        end_time=_time(fields.get("end_time")),
        begin_wal=wal["begin_wal"],
        end_wal=wal["end_wal"],
    )


def wal_segment(key: str) -> str | None:
    """The segment name of an archived WAL object key (`.../wals/0000000100000000/000000010000000000000003.gz`);
    None for history files, backup labels and partial segments."""
    name = key.rsplit("/", 1)[-1].split(".", 1)[0]
    rest = key.rsplit("/", 1)[-1][len(name) :]
    if len(name) != 24 or any(c not in "0123456789ABCDEF" for c in name) or rest not in ("", ".gz", ".bz2"):
        return None
    return name


def newest_wal(objects: Iterable[tuple[str, datetime]]) -> ArchivedWal | None:
    """The newest segment among (key, last modified) pairs: segment names sort by timeline then position."""
    segments = [ArchivedWal(name, time) for key, time in objects if (name := wal_segment(key)) is not None]
    return max(segments, key=lambda wal: wal.name, default=None)


@dataclass(frozen=True)
class RestoreChoice:
    backup: BaseBackup | None
    problem: str | None = None


def choose_base_backup(contents: StoreContents, source: str, target_time: str | None) -> RestoreChoice:
    """The newest completed base backup that ends before the target (recovery replays WAL from a backup's
    end onwards, so a backup that ends after the target cannot reach it); the newest of all without one."""
    completed = contents.completed()
    if not completed:
        return RestoreChoice(None, f"{source} holds no completed base backup to restore")
    if target_time is None:
        return RestoreChoice(completed[-1])
    target = parse_rfc3339(target_time)
    before = [b for b in completed if b.end_time is not None and b.end_time < target]
    if not before:
        first = completed[0].end_time
        assert first is not None
        return RestoreChoice(
            None,
            f"{TARGET_TIME_FIELD}: {target_time} is before the first recoverability point of {source}"
            f" ({rfc3339(first)}, the end of its oldest base backup)",
        )
    return RestoreChoice(before[-1])


def backup_request(annotation: str | None, last_request: str | None, contents: StoreContents | None) -> str | None:
    """The request a base-backup Job should be made for now, if any: a new value of the request annotation,
    or the first backup of a database that has none (otherwise a fresh server waits for the schedule, up to
    a day, with no restore point at all)."""
    if annotation and annotation != last_request:
        return annotation
    if contents is not None and not contents.completed() and last_request is None:
        return INITIAL_REQUEST
    return None


def status_fields(destination: str, contents: StoreContents, last_request: str | None) -> dict[str, str | None]:
    completed = contents.completed()
    newest, oldest = (completed[-1], completed[0]) if completed else (None, None)
    return {
        "destination": destination,
        "lastBackupId": newest.backup_id if newest else None,
        "lastBackupTime": rfc3339(newest.end_time) if newest and newest.end_time else None,
        "firstRecoverabilityPoint": rfc3339(oldest.end_time) if oldest and oldest.end_time else None,
        "lastArchivedWal": contents.last_wal.name if contents.last_wal else None,
        "lastArchivedTime": rfc3339(contents.last_wal.time) if contents.last_wal else None,
        "lastRequest": last_request,
    }


def health(
    destination: str, contents: StoreContents | None, store_error: str | None, failed_job: str | None
) -> ConditionUpdate:
    """BackupsHealthy: the store must answer, the last backup Job must not have failed, and a base backup
    must exist. It does not gate Ready: a database whose archive is down keeps serving (and keeps its WAL
    until the archive is back)."""
    if store_error is not None or contents is None:
        return ConditionUpdate(BACKUPS_HEALTHY, "False", STORE_UNAVAILABLE, f"{destination}: {store_error}")
    if failed_job is not None:
        return ConditionUpdate(BACKUPS_HEALTHY, "False", BACKUP_FAILED, failed_job)
    completed = contents.completed()
    if not completed:
        return ConditionUpdate(BACKUPS_HEALTHY, "False", NO_BASE_BACKUP, f"{destination} holds no base backup yet")
    newest = completed[-1]
    assert newest.end_time is not None
    message = f"base backup {newest.backup_id} ended {rfc3339(newest.end_time)}"
    if contents.last_wal is not None:
        message += f"; WAL archived up to {contents.last_wal.name} at {rfc3339(contents.last_wal.time)}"
    return ConditionUpdate(BACKUPS_HEALTHY, "True", HEALTHY, message)
