"""What the gc CronJob's last run says: the TrackingServer's GarbageCollected condition and its Events. Pure.

The CronJob keeps few Jobs (successfulJobsHistoryLimit 1, failedJobsHistoryLimit 3) and its own
status.lastSuccessfulTime, so the last outcome is the newest of: each finished Job it owns, and
lastSuccessfulTime (a success whose Job is already gone). A running Job changes nothing: the condition
reports the last finished run. GarbageCollected is informational: it never makes the server unready, a
failed gc does not stop MLflow from serving.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlflow_operator.logic.conditions import ConditionDict, ConditionUpdate, EventSpec, parse_time, rfc3339

GARBAGE_COLLECTED = "GarbageCollected"
REASON_SUCCEEDED = "GarbageCollectionSucceeded"
REASON_FAILED = "GarbageCollectionFailed"
REASON_NOT_RUN_YET = "NotRunYet"
REASON_RETENTION_UNSET = "RetentionUnset"
# The failure message starts with the Job's name: the next pass reads it back to post one Event per Job.
_FAILED_JOB = re.compile(r"^Job (\S+) failed")


@dataclass(frozen=True)
class Outcome:
    """A finished gc run: its Job (None when only the CronJob's lastSuccessfulTime remembers it)."""

    job: str | None
    succeeded: bool
    finished_at: datetime
    failure: str = ""


@dataclass(frozen=True)
class GcReport:
    """The GarbageCollected condition, and the Warning Event to post (once per failed Job) or None."""

    condition: ConditionUpdate
    warning: EventSpec | None


def time_or_none(stamp: str | None) -> datetime | None:
    return parse_time(stamp) if stamp else None


def owned_by(job: dict[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid for ref in job["metadata"].get("ownerReferences") or [])


def job_outcome(job: dict[str, Any]) -> Outcome | None:
    """A finished Job's outcome; None while it runs. The finish time is the Complete/Failed condition's
    transition (completionTime is set for successes only), startTime when Kubernetes left both out."""
    status = job.get("status") or {}
    name = job["metadata"]["name"]
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True" or condition.get("type") not in ("Complete", "Failed"):
            continue
        at = time_or_none(
            condition.get("lastTransitionTime") or status.get("completionTime") or status.get("startTime")
        )
        if at is None:
            continue
        if condition["type"] == "Complete":
            return Outcome(name, True, at)
        failure = f"{condition.get('reason') or 'Failed'}: {condition.get('message') or ''}".rstrip(": ")
        return Outcome(name, False, at, failure)
    return None


def last_outcome(cronjob: dict[str, Any], jobs: Sequence[dict[str, Any]]) -> Outcome | None:
    """The newest finished run among the CronJob's own Jobs and its lastSuccessfulTime."""
    uid = cronjob["metadata"].get("uid", "")
    outcomes = [o for o in (job_outcome(j) for j in jobs if owned_by(j, uid)) if o is not None]
    last_success = time_or_none((cronjob.get("status") or {}).get("lastSuccessfulTime"))
    if last_success is not None:
        outcomes.append(Outcome(None, True, last_success))
    # On equal times a Job beats the anonymous lastSuccessfulTime (same run, but it has a name).
    return max(outcomes, key=lambda o: (o.finished_at, o.job is not None), default=None)


def reported_failure(previous: ConditionDict | None) -> str | None:
    """The Job the previous GarbageCollected=False condition named: its Warning was posted already."""
    if previous is None or previous.get("reason") != REASON_FAILED:
        return None
    match = _FAILED_JOB.match(previous.get("message") or "")
    return match.group(1) if match else None


def gc_report(
    cronjob: dict[str, Any] | None, jobs: Sequence[dict[str, Any]], previous: ConditionDict | None
) -> GcReport:
    """GarbageCollected from the CronJob (None: not created yet) and the Jobs listed with its labels.

    Status False names the failed Job and Kubernetes' reason (BackoffLimitExceeded, DeadlineExceeded) so
    `kubectl logs job/NAME` is the next step; a Warning Event is posted the first time a Job is seen failed,
    never again for the same Job however many passes see it."""
    outcome = last_outcome(cronjob, jobs) if cronjob is not None else None
    if outcome is None:
        schedule = ((cronjob or {}).get("spec") or {}).get("schedule", "")
        message = f"no gc Job has finished yet (schedule {schedule!r})" if schedule else "no gc CronJob yet"
        return GcReport(ConditionUpdate(GARBAGE_COLLECTED, "Unknown", REASON_NOT_RUN_YET, message), None)
    at = rfc3339(outcome.finished_at)
    if outcome.succeeded:
        which = f"Job {outcome.job}" if outcome.job else "the last gc Job"
        message = f"{which} completed at {at}"
        return GcReport(ConditionUpdate(GARBAGE_COLLECTED, "True", REASON_SUCCEEDED, message), None)
    message = f"Job {outcome.job} failed at {at}: {outcome.failure}; see kubectl logs job/{outcome.job}"
    condition = ConditionUpdate(GARBAGE_COLLECTED, "False", REASON_FAILED, message)
    already = reported_failure(previous) == outcome.job
    return GcReport(condition, None if already else EventSpec("Warning", REASON_FAILED, message))


def retention_unset() -> ConditionUpdate:
    """For a TrackingServer that had retention: GarbageCollected stays, saying why nothing runs now."""
    return ConditionUpdate(
        GARBAGE_COLLECTED, "Unknown", REASON_RETENTION_UNSET, "spec.retention is unset: deleted runs are kept"
    )
