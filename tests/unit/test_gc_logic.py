"""The GarbageCollected condition and its Events, from a CronJob's status and its Jobs, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic.gc import (
    GARBAGE_COLLECTED,
    REASON_FAILED,
    REASON_NOT_RUN_YET,
    REASON_SUCCEEDED,
    gc_report,
    job_outcome,
    reported_failure,
)

CRONJOB_UID = "cronjob-uid"


def cronjob(last_success: str | None = None, last_schedule: str | None = None) -> dict[str, Any]:
    status = {k: v for k, v in {"lastSuccessfulTime": last_success, "lastScheduleTime": last_schedule}.items() if v}
    return {
        "metadata": {"name": "mlflow-gc", "uid": CRONJOB_UID},
        "spec": {"schedule": "0 3 * * *"},
        "status": status,
    }


def job(name: str, state: str | None, at: str = "", owner: str = CRONJOB_UID, **failure: str) -> dict[str, Any]:
    """A Job owned by `owner`; state Complete or Failed (with reason/message), None while running."""
    status: dict[str, Any] = {"startTime": "2030-01-01T03:00:00Z"}
    if state is not None:
        status["conditions"] = [
            {"type": "SuccessCriteriaMet" if state == "Complete" else "FailureTarget", "status": "True"},
            {"type": state, "status": "True", "lastTransitionTime": at, **failure},
        ]
    if state == "Complete":
        status["completionTime"] = at
    return {"metadata": {"name": name, "ownerReferences": [{"kind": "CronJob", "uid": owner}]}, "status": status}


def failed(name: str, at: str) -> dict[str, Any]:
    return job(name, "Failed", at, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")


def test_no_cronjob_or_no_finished_job_is_not_run_yet() -> None:
    assert gc_report(None, [], None).condition.reason == REASON_NOT_RUN_YET
    running = gc_report(cronjob(last_schedule="2030-01-01T03:00:00Z"), [job("mlflow-gc-1", None)], None)
    assert (running.condition.status, running.condition.reason) == ("Unknown", REASON_NOT_RUN_YET)
    assert "'0 3 * * *'" in running.condition.message
    assert running.warning is None


def test_a_completed_job_is_true_with_its_time() -> None:
    report = gc_report(cronjob(), [job("mlflow-gc-1", "Complete", "2030-01-01T03:01:02Z")], None)
    assert (report.condition.type, report.condition.status) == (GARBAGE_COLLECTED, "True")
    assert report.condition.reason == REASON_SUCCEEDED
    assert report.condition.message == "Job mlflow-gc-1 completed at 2030-01-01T03:01:02Z"
    assert report.warning is None


def test_a_success_whose_job_is_gone_is_remembered_by_the_cronjob() -> None:
    report = gc_report(cronjob(last_success="2030-01-02T03:00:40Z"), [], None)
    assert (report.condition.status, report.condition.message) == (
        "True",
        "the last gc Job completed at 2030-01-02T03:00:40Z",
    )


def test_a_failed_last_job_is_false_naming_the_job_and_kubernetes_reason() -> None:
    jobs = [job("mlflow-gc-1", "Complete", "2030-01-01T03:01:00Z"), failed("mlflow-gc-2", "2030-01-02T03:05:00Z")]
    report = gc_report(cronjob(last_success="2030-01-01T03:01:00Z"), jobs, None)
    assert (report.condition.status, report.condition.reason) == ("False", REASON_FAILED)
    assert report.condition.message.startswith("Job mlflow-gc-2 failed at 2030-01-02T03:05:00Z: BackoffLimitExceeded")
    assert "kubectl logs job/mlflow-gc-2" in report.condition.message
    assert report.warning == cond.EventSpec("Warning", REASON_FAILED, report.condition.message)


def test_a_later_success_clears_an_older_failure() -> None:
    jobs = [failed("mlflow-gc-1", "2030-01-01T03:05:00Z"), job("mlflow-gc-2", "Complete", "2030-01-02T03:01:00Z")]
    report = gc_report(cronjob(last_success="2030-01-02T03:01:00Z"), jobs, None)
    assert (report.condition.status, report.condition.message) == (
        "True",
        "Job mlflow-gc-2 completed at 2030-01-02T03:01:00Z",
    )
    # The successful Job may already be gone (history limit): lastSuccessfulTime still wins over the failure.
    gone = gc_report(cronjob(last_success="2030-01-02T03:01:00Z"), jobs[:1], None)
    assert gone.condition.status == "True"


def test_a_running_job_keeps_reporting_the_last_finished_one() -> None:
    jobs = [failed("mlflow-gc-1", "2030-01-01T03:05:00Z"), job("mlflow-gc-2", None)]
    assert gc_report(cronjob(), jobs, None).condition.message.startswith("Job mlflow-gc-1 failed")


def test_jobs_of_another_owner_are_ignored() -> None:
    stray = failed("mlflow-gc-manual", "2030-01-03T00:00:00Z") | {"metadata": {"name": "x", "ownerReferences": []}}
    report = gc_report(cronjob(last_success="2030-01-02T03:01:00Z"), [stray], None)
    assert report.condition.status == "True"


def test_the_warning_is_posted_once_per_failed_job() -> None:
    first = gc_report(cronjob(), [failed("mlflow-gc-1", "2030-01-01T03:05:00Z")], None)
    assert first.warning is not None
    # The next pass sees the condition it wrote: same Job, no second Event.
    previous = cond.set_condition([], first.condition, None, datetime(2030, 1, 1, 3, 6, tzinfo=UTC))[0]
    assert reported_failure(previous) == "mlflow-gc-1"
    again = gc_report(cronjob(), [failed("mlflow-gc-1", "2030-01-01T03:05:00Z")], previous)
    assert again.warning is None and again.condition == first.condition
    # Another failed Job the next night: a new Event, though the condition stays False with the same reason.
    jobs = [failed("mlflow-gc-1", "2030-01-01T03:05:00Z"), failed("mlflow-gc-2", "2030-01-02T03:05:00Z")]
    next_night = gc_report(cronjob(), jobs, previous)
    assert next_night.warning is not None and "mlflow-gc-2" in next_night.warning.message


def test_a_failure_without_kubernetes_reason_or_time_fields() -> None:
    bare: dict[str, Any] = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert job_outcome(bare) is None  # no time at all: cannot be ordered, ignored
    bare["status"]["startTime"] = "2030-01-01T03:00:00Z"
    outcome = job_outcome(bare)
    assert outcome is not None and (outcome.succeeded, outcome.failure) == (False, "Failed")
