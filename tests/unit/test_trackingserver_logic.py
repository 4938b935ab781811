"""Decisions of the TrackingServer reconciler, without a cluster."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sized
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from mlflow_operator.handlers import (
    credential_rotation,
    memo,
    modeldeployment,
    registeredmodel,
    registry_reader,
    trackingserver,
)
from mlflow_operator.handlers.controller import Controller, backoff_seconds
from mlflow_operator.logic.backoff import RetrySchedule
from mlflow_operator.logic.readiness import deployment_readiness, job_state, statefulset_readiness
from mlflow_operator.logic.trackingserver import (
    WAIT_SECONDS,
    conditions_failed,
    decide_migration,
    next_pass,
    parse_version,
    retry_failed_migration,
)


def test_first_migration_runs_once_the_database_is_ready() -> None:
    waiting = decide_migration("3.17.2", None, None, database_ready=False, job=None)
    assert (waiting.action, waiting.serving_version, waiting.condition.reason) == ("none", None, "WaitingForDatabase")
    run = decide_migration("3.17.2", None, None, database_ready=True, job=None)
    assert (run.action, run.serving_version, run.condition.reason) == ("run", None, "Migrating")
    done = decide_migration("3.17.2", None, None, database_ready=True, job="Succeeded")
    assert (done.action, done.serving_version, done.migrated_version) == ("none", "3.17.2", "3.17.2")


def test_upgrade_keeps_the_old_version_serving_until_the_job_succeeds() -> None:
    running = decide_migration("3.18.0", "3.17.2", "3.17.2", database_ready=True, job="Running")
    assert running.action == "run" and running.serving_version == "3.17.2"
    failed = decide_migration(
        "3.18.0", "3.17.2", "3.17.2", database_ready=True, job="Failed", job_message="BackoffLimitExceeded"
    )
    assert failed.action == "none" and failed.serving_version == "3.17.2"
    assert (failed.condition.status, failed.condition.reason) == ("False", "MigrationFailed")
    assert "BackoffLimitExceeded" in failed.condition.message and "3.17.2 keeps serving" in failed.condition.message
    succeeded = decide_migration("3.18.0", "3.17.2", "3.17.2", database_ready=True, job="Succeeded")
    assert (succeeded.serving_version, succeeded.migrated_version) == ("3.18.0", "3.18.0")


def test_downgrade_is_refused_and_the_migrated_version_serves() -> None:
    refused = decide_migration("3.9.0", "3.17.2", "3.17.2", database_ready=True, job=None)
    assert refused.action == "none" and refused.serving_version == "3.17.2"
    assert (refused.condition.status, refused.condition.reason) == ("False", "DowngradeRefused")
    assert parse_version("3.10.0") > parse_version("3.9.9")  # numeric, not lexical


def deployment(replicas: int, available: int, updated: int | None = None, stale: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1 if stale else 2,
            "availableReplicas": available,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


@pytest.mark.parametrize(
    ("obj", "ready", "reason"),
    [
        (None, False, "NotCreated"),
        (deployment(2, 2, stale=True), False, "RolloutPending"),
        (deployment(3, 3, updated=1), False, "RollingOut"),
        (deployment(2, 1), False, "PodsNotReady"),
        (deployment(2, 2), True, "Available"),
    ],
)
def test_deployment_readiness(obj: dict[str, Any] | None, ready: bool, reason: str) -> None:
    result = deployment_readiness(obj)
    assert (result.ready, result.reason) == (ready, reason)


def test_statefulset_and_job_states() -> None:
    sts = {
        "metadata": {"name": "s", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    assert statefulset_readiness(sts).ready
    assert not statefulset_readiness({**sts, "status": {"observedGeneration": 1}}).ready
    assert job_state({"status": {}}) == ("Running", "running")
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "Succeeded"
    failed = job_state(
        {
            "status": {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the limit",
                    }
                ]
            }
        }
    )
    assert failed == ("Failed", "BackoffLimitExceeded: Job has reached the limit")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(50) == 300.0


def body(name: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "generation": generation}}


def test_controller_coalesces_events_and_reconciles_the_latest_object() -> None:
    seen: list[int] = []

    async def reconcile(obj: dict[str, Any]) -> float | None:
        seen.append(obj["metadata"]["generation"])
        await asyncio.sleep(0.05)
        return None

    async def scenario() -> None:
        controller = Controller("Test", reconcile, resync_seconds=3600, workers=2)
        controller.start()
        controller.observe("ADDED", body("a", 1))
        await asyncio.sleep(0.01)  # the first pass is running
        for generation in (2, 3, 4):
            controller.observe("MODIFIED", body("a", generation))
        await asyncio.sleep(0.3)
        await controller.stop()

    asyncio.run(scenario())
    # Events during a running pass collapse into one more pass, which sees the newest object.
    assert seen == [1, 4]


def test_controller_retries_failures_with_backoff_and_forgets_deleted_objects() -> None:
    attempts: list[float] = []
    delays: list[int] = []

    async def reconcile(obj: dict[str, Any]) -> float | None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RuntimeError("registry down")
        return None

    def backoff(failures: int) -> float:  # backoff_seconds' shape, in hundredths of a second
        delays.append(failures)
        return backoff_seconds(failures) / 100

    async def scenario() -> Controller:
        controller = Controller("Test", reconcile, resync_seconds=3600, workers=1, backoff=backoff)
        controller.start()
        controller.observe("ADDED", body("b"))
        for _ in range(500):  # at most 5 s; normally 0.03 s
            if len(attempts) == 3:
                break
            await asyncio.sleep(0.01)
        controller.observe("DELETED", body("b"))
        await controller.stop()
        return controller

    controller = asyncio.run(scenario())
    assert len(attempts) == 3 and delays == [1, 2]  # the counter grows per consecutive failure
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02  # each retry waited at least its backoff
    assert controller.objects == {} and controller._failures == {}


def test_a_deleted_object_is_forgotten_by_its_handlers_too() -> None:
    forgotten: list[str] = []

    async def reconcile(obj: dict[str, Any]) -> float | None:
        return None

    async def scenario() -> Controller:
        controller = Controller(
            "Test", reconcile, resync_seconds=3600, workers=1, forget=lambda b: forgotten.append(b["metadata"]["uid"])
        )
        controller.start()
        controller.observe("ADDED", {**body("c"), "metadata": {**body("c")["metadata"], "uid": "u-1"}})
        remembered.set("u-1", "something")
        controller.observe("DELETED", {**body("c"), "metadata": {**body("c")["metadata"], "uid": "u-1"}})
        await controller.stop()
        return controller

    remembered: memo.Memo[str] = memo.Memo("Test")  # what a handler of the kind remembers per object
    controller = asyncio.run(scenario())
    assert forgotten == ["u-1"] and controller.objects == {} and len(remembered) == 0


def test_a_deleted_object_leaves_nothing_in_any_handlers_memo() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    trackingserver._retries.set("u-2", RetrySchedule(1, now))
    trackingserver._gc_warned.set("u-2", "gc failed")
    trackingserver._applied.remember("u-2/server", [], now)
    credential_rotation._refused.set("u-2", "r1", "mlflow.operator.dev/rotate-admin-password")
    registry_reader._swept.set("u-2", now)
    registeredmodel._failures.set("u-2", 3)
    modeldeployment._retries.set("u-2", RetrySchedule(1, now), "apply")
    modeldeployment._resolutions.set("u-2", cast(Any, "resolution"))
    modeldeployment._applied.remember("u-2", [], now)
    registry_reader._grants.set("u-2", cast(Any, "grant"))
    for kind in ("TrackingServer", "RegisteredModel", "ModelDeployment"):
        memo.forget_object(kind, "u-2")
    memos: list[Sized] = [
        trackingserver._retries,
        trackingserver._gc_warned,
        trackingserver._applied,
        credential_rotation._refused,
        registry_reader._swept,
        registeredmodel._failures,
        modeldeployment._retries,
        modeldeployment._resolutions,
        modeldeployment._applied,
        registry_reader._grants,
    ]
    assert [len(m) for m in memos] == [0] * len(memos)


def test_a_failed_migration_is_retried_after_a_while() -> None:
    job = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }
    assert not retry_failed_migration(job, datetime(2026, 1, 1, 0, 4, tzinfo=UTC))
    assert retry_failed_migration(job, datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert not retry_failed_migration({"status": {}}, datetime(2026, 1, 2, tzinfo=UTC))


def test_next_pass_waits_while_converging_backs_off_while_broken_and_rests_when_ready() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_pass(ready=True, failed=False, previous=None, now=now).after_seconds is None  # the resync
    assert next_pass(ready=False, failed=False, previous=None, now=now).after_seconds == WAIT_SECONDS
    first = next_pass(ready=False, failed=True, previous=None, now=now)
    assert first.after_seconds == WAIT_SECONDS and first.retry is not None
    # Woken early (its own status write): the same failure, the same retry time.
    early = next_pass(ready=False, failed=True, previous=first.retry, now=now + timedelta(seconds=3))
    assert early.retry == first.retry and early.after_seconds == WAIT_SECONDS - 3
    # Failing again when the retry was due: twice the wait.
    due = now + timedelta(seconds=WAIT_SECONDS)
    second = next_pass(ready=False, failed=True, previous=first.retry, now=due)
    assert second.after_seconds == 2 * WAIT_SECONDS and second.retry is not None and second.retry.failures == 2
    # Recovered: the schedule is dropped, so the next outage starts from the first step again.
    assert next_pass(ready=True, failed=False, previous=second.retry, now=due).retry is None


def test_a_rollout_not_yet_observed_is_converging_not_failed() -> None:
    pending = [{"type": "PoolerReady", "status": "False", "reason": "RolloutPending"}]
    broken = [{"type": "PoolerReady", "status": "False", "reason": "InvalidSecretValue"}]
    assert not conditions_failed(pending, ("PoolerReady",))
    assert conditions_failed(broken, ("PoolerReady",))
    assert not conditions_failed(broken, ("DatabaseReady",))  # not one Ready requires
