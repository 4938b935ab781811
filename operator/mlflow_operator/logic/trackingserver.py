"""Decisions of the TrackingServer reconciler: migrations, serving version, phase. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from mlflow_operator.logic.backoff import RetrySchedule, after_failure
from mlflow_operator.logic.conditions import ConditionUpdate, parse_time
from mlflow_operator.logic.readiness import JobState

MIGRATED = "Migrated"


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


MigrationAction = Literal["none", "run"]


@dataclass(frozen=True)
class MigrationDecision:
    """What to do about the schema, which version serves meanwhile, and the Migrated condition."""

    action: MigrationAction
    serving_version: str | None
    migrated_version: str | None
    condition: ConditionUpdate


def _schema_at(desired: str, message: str) -> MigrationDecision:
    """The database schema is at the desired version, so that version serves."""
    return MigrationDecision("none", desired, desired, ConditionUpdate(MIGRATED, "True", "Migrated", message))


def decide_migration(
    desired: str,
    migrated: str | None,
    serving: str | None,
    database_ready: bool,
    job: JobState | None,
    job_message: str = "",
) -> MigrationDecision:
    """One migration Job per version, before any pod runs that version.

    - downgrades are refused: MLflow has no down-migrations, and an older server on a newer schema breaks;
    - while a migration runs or after it failed, the previous version keeps serving;
    - nothing is deployed before the first migration succeeded.
    """
    if migrated is not None and parse_version(desired) < parse_version(migrated):
        return MigrationDecision(
            "none",
            serving or migrated,
            migrated,
            ConditionUpdate(
                MIGRATED,
                "False",
                "DowngradeRefused",
                f"spec.version {desired} is older than the migrated schema {migrated}; MLflow cannot downgrade "
                f"a database: set spec.version back to {migrated} or newer",
            ),
        )
    if migrated == desired:
        return _schema_at(desired, f"database schema is at MLflow {desired}")
    if job == "Succeeded":
        return _schema_at(desired, f"database schema migrated to MLflow {desired}")
    if job == "Failed":
        return MigrationDecision(
            "none",
            serving,
            migrated,
            ConditionUpdate(
                MIGRATED,
                "False",
                "MigrationFailed",
                f"migration to {desired} failed ({job_message}); "
                + (f"{serving} keeps serving" if serving else "nothing is serving yet"),
            ),
        )
    if not database_ready:
        return MigrationDecision(
            "none",
            serving,
            migrated,
            ConditionUpdate(
                MIGRATED, "Unknown", "WaitingForDatabase", f"migration to {desired} waits for the database"
            ),
        )
    return MigrationDecision(
        "run",
        serving,
        migrated,
        ConditionUpdate(MIGRATED, "False", "Migrating", f"migrating the database schema to MLflow {desired}"),
    )


# Reasons of a False condition that say "not yet", not "broken": the phase stays Provisioning/Pending (Argo
# CD: Progressing) rather than Failed (Degraded). RolloutPending is every new Deployment's first pass.
CONVERGING_REASONS = frozenset(
    {"Migrating", "PodsNotReady", "RollingOut", "RolloutPending", "NotCreated", "WaitingForDatabase"}
)


def conditions_failed(conditions: Iterable[Mapping[str, Any]], required: Collection[str]) -> bool:
    """Whether a condition Ready requires is False for a reason other than convergence."""
    return any(
        c["status"] == "False" and c["reason"] not in CONVERGING_REASONS for c in conditions if c["type"] in required
    )


def phase(ready: bool, conditions_failed: bool, migrating: bool, serving: str | None) -> str:
    if ready:
        return "Ready"
    if conditions_failed:
        return "Failed"
    if migrating:
        return "Migrating"
    return "Provisioning" if serving is None else "Pending"


# After Kubernetes' own retries (the Job's backoffLimit) are exhausted, a failed migration is tried again
# this long after it failed: a database that was down recovers without anyone touching the resource.
MIGRATION_RETRY_AFTER = timedelta(minutes=5)


def job_failed_at(job: dict[str, Any]) -> datetime | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            stamp = condition.get("lastTransitionTime")
            return parse_time(stamp) if stamp else None
    return None


def retry_failed_migration(job: dict[str, Any], now: datetime) -> bool:
    failed_at = job_failed_at(job)
    return failed_at is not None and now - failed_at >= MIGRATION_RETRY_AFTER


# While converging (pods starting, a Job running): how soon to look again; also the backoff's first step.
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class NextPass:
    """When to reconcile a TrackingServer again (None: at the resync), and the retry schedule to keep."""

    after_seconds: float | None
    retry: RetrySchedule | None


def next_pass(ready: bool, failed: bool, previous: RetrySchedule | None, now: datetime) -> NextPass:
    """Soon while converging, with exponential backoff while something is broken (an unreachable bucket, a
    missing Secret), and only at the resync once Ready. A pass woken early during an outage keeps the
    scheduled retry (logic.backoff.after_failure)."""
    if ready:
        return NextPass(None, None)
    if not failed:
        return NextPass(WAIT_SECONDS, None)
    schedule = after_failure(previous, now, base=WAIT_SECONDS)
    return NextPass(schedule.delay(now), schedule)
