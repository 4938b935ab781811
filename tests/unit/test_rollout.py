"""The rollout state machine: one example per rule, then properties over random specs and worlds.

The property tests drive `step` with a fake cluster (Deployments that become ready some passes after they
are created or resized, sometimes never), a fake Prometheus (random values, NaN, no data, errors), random
promote/abort requests and a fake clock that follows `requeue_after` (or wakes early, as child events do).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlflow_operator.api.modeldeployment import (
    MAX_MESSAGE,
    AnalysisResult,
    AnalysisRun,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RolloutRecord,
    canary_steps,
)
from mlflow_operator.api.traffic import TrackPlan, Weights
from mlflow_operator.logic import rollout as r
from mlflow_operator.logic.rollout_analysis import Measurement, Sample, evaluate, measurement_outcome
from mlflow_operator.logic.rollout_report import (
    AVAILABLE,
    PROGRESSING,
    REASON_DEPLOY_FAILED,
    REASON_DEPLOYING,
    REASON_INCONCLUSIVE,
    REASON_NO_READY_REPLICAS,
    REASON_PAUSED,
    REASON_ROLLED_BACK,
    REASON_ROLLOUT_COMPLETE,
    REASON_STABLE_AVAILABLE,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESOURCE = "ml/fraud"

METRIC = {"name": "error-rate", "query": "errors", "thresholdRange": {"max": 0.01}}


def make_spec(
    steps: list[dict[str, Any]] | None = None,
    router: str = "gatewayAPI",
    analysis: dict[str, Any] | None = None,
    set_alias: str | None = "production",
    model: dict[str, Any] | None = None,
) -> ModelDeploymentSpec:
    spec: dict[str, Any] = {
        "trackingUri": "http://mlflow.ml.svc:5000",
        "model": model or {"registeredModel": "fraud", "alias": "champion"},
        "analysis": analysis or {"interval": "30s", "count": 2, "metrics": [METRIC]},
    }
    if steps is not None:
        spec["strategy"] = {"canary": {"steps": steps}}
        spec["trafficRouting"] = (
            {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}} if router == "gatewayAPI" else {"replicaRatio": {}}
        )
    if set_alias:
        spec["promotion"] = {"setAlias": set_alias}
    return ModelDeploymentSpec.model_validate(spec)


def ready(*versions: int, available: int = 2) -> tuple[r.TrackObservation, ...]:
    return tuple(r.TrackObservation(v, ready=True, available_replicas=available) for v in versions)


def obs(
    resolved: int | None,
    tracks: tuple[r.TrackObservation, ...] = (),
    measurement: Measurement | None = None,
    request: r.UserRequest | None = None,
) -> r.Observations:
    return r.Observations(resolved, tracks, measurement, request, RESOURCE)


def passed(value: float = 0.001) -> Measurement:
    return Measurement((Sample("error-rate", value),))


def stable_at(version: int, spec: ModelDeploymentSpec) -> ModelDeploymentStatus:
    """A deployment whose first version is rolled out."""
    state = r.step(spec, r.rollout_state(None), obs(version), T0).state
    state = r.step(spec, state, obs(version, ready(version)), T0).state
    assert (state.phase, state.stable_version) == ("Succeeded", version)
    return state


def history(state: ModelDeploymentStatus) -> list[RolloutRecord]:
    return state.history or []


def results(state: ModelDeploymentStatus) -> list[AnalysisResult]:
    return state.analysis_results or []


def condition(t: r.Transition, type_: str) -> tuple[str, str]:
    found = next(c for c in t.conditions if c.type == type_)
    return found.status, found.reason


def registry_actions(t: r.Transition) -> list[r.Action]:
    return [a for a in t.actions if isinstance(a, (r.TagVersion, r.SetAlias))]


# --- direct rollouts ---------------------------------------------------------------------------------------


def test_first_version_is_deployed_directly_and_promoted_when_ready() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    t = r.step(spec, r.rollout_state(None), obs(3), T0)
    assert t.state.canary_version == 3 and t.state.current_step is None  # no canary steps for a first version
    assert t.tracks == [TrackPlan("canary", 3, 100)]
    assert condition(t, AVAILABLE) == ("Unknown", REASON_DEPLOYING)
    assert registry_actions(t) == []
    t = r.step(spec, t.state, obs(3, ready(3)), T0 + timedelta(seconds=30))
    assert (t.state.phase, t.state.stable_version, t.state.canary_version) == ("Succeeded", 3, None)
    assert t.tracks == [TrackPlan("stable", 3, 100)]
    tag, alias = registry_actions(t)
    assert isinstance(tag, r.TagVersion) and tag.version == 3 and tag.tags[r.TAG_ROLLOUT] == "Deployed"
    assert tag.tags[r.TAG_DEPLOYMENT] == RESOURCE and tag.tags[r.TAG_TIME] == "2026-01-01T00:00:30Z"
    assert alias == r.SetAlias("production", 3)
    assert [h.outcome for h in history(t.state)] == ["Succeeded"]
    assert condition(t, AVAILABLE) == ("True", REASON_STABLE_AVAILABLE)
    assert condition(t, PROGRESSING) == ("True", REASON_ROLLOUT_COMPLETE)


def test_without_strategy_the_new_version_replaces_the_old_once_ready() -> None:
    spec = make_spec(steps=None)
    state = stable_at(1, spec)
    t = r.step(spec, state, obs(2, ready(1)), T0)
    assert t.tracks == [TrackPlan("stable", 1, 100), TrackPlan("canary", 2, 100)]
    assert t.weights == Weights(0, False)
    assert t.state.phase == "Progressing" and t.requeue_after == r.READINESS_POLL_SECONDS
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert t.state.stable_version == 2 and t.tracks == [TrackPlan("stable", 2, 100)]  # version 1 is removed
    assert t.state.phase == "Succeeded" and history(t.state)[-1].outcome == "Succeeded"


def test_a_new_version_whose_pods_fail_is_rolled_back_and_the_old_one_keeps_serving() -> None:
    spec = make_spec(steps=None)
    state = stable_at(1, spec)
    state = r.step(spec, state, obs(2, ready(1)), T0).state
    failing = (*ready(1), r.TrackObservation(2, failed=True, message="Init:CrashLoopBackOff"))
    t = r.step(spec, state, obs(2, failing), T0)
    assert (t.state.phase, t.state.stable_version, t.state.rolled_back_version) == ("RolledBack", 1, 2)
    assert t.tracks == [TrackPlan("stable", 1, 100)]
    (tag,) = registry_actions(t)
    assert isinstance(tag, r.TagVersion) and tag.tags[r.TAG_ROLLOUT] == "RolledBack"
    assert "Init:CrashLoopBackOff" in tag.tags[r.TAG_REASON] and tag.tags[r.TAG_BY] == r.OPERATOR
    # Healthy for GitOps: the stable serves.
    assert condition(t, AVAILABLE) == ("True", REASON_STABLE_AVAILABLE)
    assert condition(t, PROGRESSING) == ("True", REASON_ROLLED_BACK)


def test_a_first_version_that_does_not_start_is_degraded_and_keeps_trying() -> None:
    spec = make_spec(steps=None)
    state = r.step(spec, r.rollout_state(None), obs(1), T0).state
    t = r.step(spec, state, obs(1, (r.TrackObservation(1, failed=True, message="model does not load"),)), T0)
    assert (t.state.phase, t.state.canary_version) == ("Degraded", 1)
    assert condition(t, AVAILABLE) == ("False", REASON_DEPLOY_FAILED)
    assert registry_actions(t) == []
    t = r.step(spec, t.state, obs(1, ready(1)), T0)
    assert (t.state.phase, t.state.stable_version) == ("Succeeded", 1)


def test_a_stable_without_ready_pods_is_degraded() -> None:
    spec = make_spec(steps=None)
    state = stable_at(1, spec)
    t = r.step(spec, state, obs(1, (r.TrackObservation(1, message="0/2 available"),)), T0)
    assert t.state.phase == "Degraded"
    assert condition(t, AVAILABLE) == ("False", REASON_NO_READY_REPLICAS)
    assert r.step(spec, t.state, obs(1, ready(1)), T0).state.phase == "Succeeded"


def test_while_the_registry_does_not_answer_the_rollout_goes_on() -> None:
    spec = make_spec(steps=None)
    state = r.step(spec, stable_at(1, spec), obs(2, ready(1)), T0).state
    t = r.step(spec, state, obs(None, ready(1, 2)), T0)
    assert (t.state.stable_version, t.state.phase) == (2, "Succeeded")
    assert r.step(spec, t.state, obs(None, ready(2)), T0).state == t.state


# --- canary steps ---------------------------------------------------------------------------------------


def canary_at_step_0(spec: ModelDeploymentSpec) -> ModelDeploymentStatus:
    state = r.step(spec, stable_at(1, spec), obs(2, ready(1)), T0).state
    assert (state.canary_version, state.current_step) == (2, 0)
    return state


def test_weight_moves_only_to_a_ready_canary() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"pause": {}}])
    state = canary_at_step_0(spec)
    t = r.step(spec, state, obs(2, (*ready(1), r.TrackObservation(2, available_replicas=1))), T0)
    assert (t.state.current_step, t.state.canary_weight) == (0, 0)
    assert t.requeue_after == r.READINESS_POLL_SECONDS
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert (t.state.current_step, t.state.canary_weight) == (1, 20)
    assert t.weights == Weights(20, True)
    assert t.steps_completed == [0]


def test_lowering_the_weight_needs_no_ready_canary() -> None:
    spec = make_spec(steps=[{"setWeight": 50}, {"pause": {"duration": "1m"}}, {"setWeight": 10}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    assert (state.current_step, state.canary_weight) == (1, 50)
    unready = (*ready(1), r.TrackObservation(2, available_replicas=1))
    t = r.step(spec, state, obs(2, unready), T0 + timedelta(minutes=1))
    assert (t.state.current_step, t.state.canary_weight) == (2, 10)
    assert t.requeue_after == r.READINESS_POLL_SECONDS


def test_traffic_never_goes_to_a_canary_without_ready_pods() -> None:
    spec = make_spec(steps=[{"setWeight": 50}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    t = r.step(spec, state, obs(2, (*ready(1), r.TrackObservation(2, available_replicas=0))), T0)
    assert t.state.canary_weight == 50 and t.weights == Weights(0, False)


def test_replica_ratio_resizes_first_and_reads_readiness_on_a_later_pass() -> None:
    spec = make_spec(steps=[{"setWeight": 25}, {"setWeight": 10}, {"pause": {}}], router="replicaRatio")
    # Entering the step with the rollout: the split aims at 25% at once, and the stable keeps its size.
    t = r.step(spec, stable_at(1, spec), obs(2, ready(1)), T0)
    assert (t.state.current_step, t.state.canary_weight) == (0, 25)
    assert t.tracks == [TrackPlan("stable", 1, 100), TrackPlan("canary", 2, 25)]
    assert t.requeue_after == r.RESIZE_POLL_SECONDS
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert t.steps_completed == [0] and t.state.current_step == 1
    # Entering setWeight 10 from 25: each track keeps its larger size until both are ready.
    assert t.tracks == [TrackPlan("stable", 1, 90), TrackPlan("canary", 2, 25)]
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert t.tracks == [TrackPlan("stable", 1, 90), TrackPlan("canary", 2, 10)]
    assert t.state.current_step == 2


def test_replica_ratio_scales_the_canary_to_full_size_before_promoting() -> None:
    spec = make_spec(steps=[{"setWeight": 30}], router="replicaRatio")
    t = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0)
    assert t.steps_completed == [0] and t.state.current_step == 1  # promoting
    assert t.tracks == [TrackPlan("stable", 1, 70), TrackPlan("canary", 2, 100)]
    assert t.state.phase == "Progressing"
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert (t.state.phase, t.state.stable_version) == ("Succeeded", 2)
    assert t.tracks == [TrackPlan("stable", 2, 100)]


def test_a_timed_pause_requeues_for_what_is_left() -> None:
    spec = make_spec(steps=[{"pause": {"duration": "1m30s"}}, {"pause": {}}])
    state = canary_at_step_0(spec)
    t = r.step(spec, state, obs(2, ready(1, 2)), T0 + timedelta(seconds=20))
    assert t.state.phase == "Progressing" and t.requeue_after == 70
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0 + timedelta(seconds=90))
    assert t.steps_completed == [0] and t.state.phase == "Paused"


def test_an_indefinite_pause_waits_for_one_promote_per_annotation() -> None:
    spec = make_spec(steps=[{"pause": {}}, {"pause": {}}, {"pause": {}}])
    t = r.step(spec, stable_at(1, spec), obs(2, ready(1)), T0)
    assert t.state.phase == "Paused" and t.requeue_after is None
    assert condition(t, PROGRESSING) == ("Unknown", REASON_PAUSED)
    assert [e.reason for e in t.events] == [r.EVENT_ROLLOUT_STARTED, r.EVENT_PAUSED]
    assert r.step(spec, t.state, obs(2, ready(1, 2)), T0).events == []  # no repeated Event
    promote = r.UserRequest("promote", "1", "alice")
    t = r.step(spec, t.state, obs(2, ready(1, 2), request=promote), T0)
    assert t.steps_completed == [0] and t.state.current_step == 1
    # The annotation is still there on the next pass: it is not acted on twice.
    t = r.step(spec, t.state, obs(2, ready(1, 2), request=promote), T0)
    assert t.steps_completed == [] and t.state.current_step == 1
    # Gone, then set again with the same value: a new request.
    t = r.step(spec, t.state, obs(2, ready(1, 2)), T0)
    assert t.state.handled_request is None
    t = r.step(spec, t.state, obs(2, ready(1, 2), request=promote), T0)
    assert t.steps_completed == [1]


def test_a_planned_pause_without_any_analysis_is_not_reported_as_inconclusive() -> None:
    """Found by the e2e suite: a spec without spec.analysis read as an unmeasurable analysis step."""
    with_analysis = make_spec(steps=[{"setWeight": 25}, {"pause": {}}])
    spec = with_analysis.model_copy(update={"analysis": None})
    t = r.step(spec, stable_at(1, spec), obs(2, ready(1, 2)), T0)
    assert t.state.phase == "Paused"
    assert condition(t, PROGRESSING) == ("Unknown", REASON_PAUSED)


def test_a_step_starting_mid_second_never_waits_less_than_its_interval() -> None:
    """Status keeps whole seconds: the start is rounded up, so the first measurement is not early."""
    spec = make_spec(steps=[{"analysis": {}}])
    start = T0 + timedelta(seconds=10, milliseconds=900)
    t = r.step(spec, stable_at(1, spec), obs(2, ready(1, 2)), start)
    assert t.state.step_started_at == "2026-01-01T00:00:11Z"
    due = r.next_measurement_at(spec, t.state)
    assert due is not None and due - start >= timedelta(seconds=30)
    assert not r.measurement_due(spec, t.state, start + timedelta(seconds=29, milliseconds=500))


def test_a_promote_with_nothing_to_promote_is_dropped_with_an_event() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"pause": {}}])
    state = canary_at_step_0(spec)
    t = r.step(spec, state, obs(2, ready(1), request=r.UserRequest("promote", "x", "bob")), T0)
    assert t.state.current_step == 0 and t.events[-1].reason == r.EVENT_REQUEST_IGNORED
    t = r.step(spec, t.state, obs(2, ready(1, 2), request=r.UserRequest("promote", "x", "bob")), T0)
    assert t.state.current_step == 1 and t.state.phase == "Paused"  # the old request did not skip the pause


# --- analysis -------------------------------------------------------------------------------------------


def analysis_spec(**analysis: Any) -> ModelDeploymentSpec:
    settings_ = {"interval": "30s", "count": 2, "failureLimit": 0, "inconclusiveLimit": 1, "metrics": [METRIC]}
    return make_spec(steps=[{"analysis": {}}, {"pause": {}}], analysis={**settings_, **analysis})


def test_analysis_measures_each_interval_and_passes_after_count() -> None:
    spec = analysis_spec()
    state = canary_at_step_0(spec)
    assert not r.measurement_due(spec, state, T0 + timedelta(seconds=29))
    t = r.step(spec, state, obs(2, ready(1, 2), passed()), T0 + timedelta(seconds=10))
    assert (
        t.state.analysis_run == AnalysisRun(last_measured_at="2026-01-01T00:00:00Z") and t.requeue_after == 20
    )  # not due: ignored
    now = T0 + timedelta(seconds=30)
    assert r.measurement_due(spec, t.state, now)
    t = r.step(spec, t.state, obs(2, ready(1, 2), passed()), now)
    assert t.state.analysis_run is not None and t.state.analysis_run.passed == 1 and t.requeue_after == 30
    assert [e.reason for e in t.events] == [r.EVENT_ANALYSIS_PASSED]
    assert results(t.state)[-1].outcome == "Passed" and results(t.state)[-1].value == "0.001"
    t = r.step(spec, t.state, obs(2, ready(1, 2), passed()), now + timedelta(seconds=30))
    assert t.steps_completed == [0] and len(results(t.state)) == 2


def test_failed_analysis_rolls_back_tags_the_version_and_does_not_retry_it() -> None:
    spec = analysis_spec()
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    now = T0 + timedelta(seconds=30)
    t = r.step(spec, state, obs(2, ready(1, 2), passed(0.2)), now)
    assert (t.state.phase, t.state.stable_version, t.state.canary_version) == ("RolledBack", 1, None)
    assert t.state.canary_weight == 0 and t.tracks == [TrackPlan("stable", 1, 100)]
    (tag,) = registry_actions(t)
    assert isinstance(tag, r.TagVersion) and tag.version == 2
    assert tag.tags[r.TAG_ROLLOUT] == "RolledBack" and tag.tags[r.TAG_BY] == r.OPERATOR
    assert "error-rate=0.2" in tag.tags[r.TAG_REASON] and tag.tags[r.TAG_TIME] == "2026-01-01T00:00:30Z"
    assert history(t.state)[-1].outcome == "RolledBack" and history(t.state)[-1].version == 2
    assert [e.type for e in t.events] == ["Warning", "Warning"]  # AnalysisFailed, RolledBack
    assert results(t.state)[-1].outcome == "Failed"  # kept: it says why
    # The alias still names version 2: it is not tried again.
    later = r.step(spec, t.state, obs(2, ready(1)), now + timedelta(hours=1))
    assert later.state == t.state and later.actions == t.actions[:-1]
    # Moved to 3: rolled out; moved back to 2 later: tried again.
    moved = r.step(spec, later.state, obs(3, ready(1)), now)
    assert moved.state.canary_version == 3 and moved.state.rolled_back_version is None


def test_a_registry_outage_does_not_unblock_a_rolled_back_version() -> None:
    spec = analysis_spec()
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    state = r.step(spec, state, obs(2, ready(1, 2), passed(0.2)), T0 + timedelta(seconds=30)).state
    down = r.step(spec, state, obs(None, ready(1)), T0 + timedelta(minutes=1))
    assert down.state.rolled_back_version == 2 and down.state.phase == "RolledBack"
    back = r.step(spec, down.state, obs(2, ready(1)), T0 + timedelta(minutes=2))
    assert back.state.canary_version is None and back.started_version is None


def test_a_retry_request_rolls_a_rolled_back_version_out_again() -> None:
    spec = analysis_spec()
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    state = r.step(spec, state, obs(2, ready(1, 2), passed(0.2)), T0 + timedelta(seconds=30)).state
    retry = r.UserRequest("retry", "now", "carol")
    t = r.step(spec, state, obs(2, ready(1), request=retry), T0 + timedelta(minutes=5))
    assert t.state.canary_version == 2 and t.started_version == 2 and t.state.current_step == 0
    assert [e.reason for e in t.events] == [r.EVENT_RETRY, r.EVENT_ROLLOUT_STARTED]
    assert t.state.analysis_results == []


def test_failures_up_to_the_limit_are_tolerated() -> None:
    spec = analysis_spec(failureLimit=1, count=3)
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    now = T0
    for value in (0.2, 0.001, 0.001):
        now += timedelta(seconds=30)
        state = r.step(spec, state, obs(2, ready(1, 2), passed(value)), now).state
    assert state.current_step == 1 and state.phase == "Paused"


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (Sample("error-rate", None), "no data"),
        (Sample("error-rate", math.nan), "NaN"),
        (Sample("error-rate", None, "connection refused"), "query failed: connection refused"),
        (Sample("other", 0.0), "not measured"),
    ],
)
def test_missing_values_are_inconclusive_and_pause_beyond_the_limit(sample: Sample, message: str) -> None:
    spec = analysis_spec(inconclusiveLimit=1, count=1)
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    now = T0 + timedelta(seconds=30)
    t = r.step(spec, state, obs(2, ready(1, 2), Measurement((sample,))), now)
    assert t.state.phase == "Progressing" and results(t.state)[-1].message == message
    assert t.steps_completed == []  # inconclusive never counts towards count
    t = r.step(spec, t.state, obs(2, ready(1, 2), Measurement((sample,))), now + timedelta(seconds=30))
    assert t.state.phase == "Paused" and t.requeue_after is None
    assert condition(t, PROGRESSING) == ("False", REASON_INCONCLUSIVE)
    assert not r.measurement_due(spec, t.state, now + timedelta(hours=1))
    # Still paused after a restart, and a promote lets it go on.
    state = r.rollout_state(r.rollout_status(t.state))
    t = r.step(spec, state, obs(2, ready(1, 2)), now + timedelta(hours=1))
    assert t.state.phase == "Paused" and t.events == []
    t = r.step(spec, t.state, obs(2, ready(1, 2), request=r.UserRequest("promote", "ok", "dana")), now)
    assert t.steps_completed == [0]


def test_a_sample_size_below_the_minimum_is_inconclusive() -> None:
    spec = analysis_spec(sampleSizeQuery="requests", minSampleSize=100)
    analysis = spec.analysis
    assert analysis is not None
    small = Measurement((Sample("error-rate", 0.0),), Sample("size", 12))
    (result,) = evaluate(analysis, small, T0)
    assert result.outcome == "Inconclusive" and "below minSampleSize 100" in (result.message or "")
    unknown = Measurement((Sample("error-rate", 0.0),), None)
    assert evaluate(analysis, unknown, T0)[0].outcome == "Inconclusive"
    enough = Measurement((Sample("error-rate", 0.0),), Sample("size", 100))
    assert evaluate(analysis, enough, T0)[0].outcome == "Passed"


def test_threshold_ranges_are_inclusive_and_one_failed_metric_fails_the_measurement() -> None:
    spec = analysis_spec(
        metrics=[
            {"name": "latency", "query": "q", "thresholdRange": {"min": 0, "max": 0.5}},
            {"name": "accuracy", "query": "q", "thresholdRange": {"min": 0.9}},
        ]
    )
    analysis = spec.analysis
    assert analysis is not None
    edge = evaluate(analysis, Measurement((Sample("latency", 0.5), Sample("accuracy", 0.9))), T0)
    assert [x.outcome for x in edge] == ["Passed", "Passed"]
    mixed = evaluate(analysis, Measurement((Sample("latency", 0.6), Sample("accuracy", math.nan))), T0)
    assert [x.outcome for x in mixed] == ["Failed", "Inconclusive"]
    assert measurement_outcome(mixed) == "Failed"
    assert measurement_outcome([]) == "Inconclusive"


# --- user requests, supersede -----------------------------------------------------------------------------


def test_an_abort_request_rolls_back_and_names_the_user() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    t = r.step(spec, state, obs(2, ready(1, 2), request=r.UserRequest("abort", "1", "erin")), T0)
    assert (t.state.phase, t.state.canary_weight, t.state.rolled_back_version) == ("RolledBack", 0, 2)
    (tag,) = registry_actions(t)
    assert isinstance(tag, r.TagVersion) and tag.tags[r.TAG_BY] == "erin"
    assert t.weights == Weights(0, False) and t.tracks == [TrackPlan("stable", 1, 100)]


def test_an_alias_move_mid_rollout_supersedes_the_canary() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"analysis": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    state = r.step(spec, state, obs(2, ready(1, 2), passed()), T0 + timedelta(seconds=30)).state
    assert state.canary_weight == 20 and results(state)
    t = r.step(spec, state, obs(3, ready(1, 2)), T0 + timedelta(seconds=40))
    assert [(h.version, h.outcome) for h in history(t.state)][-1] == (2, "Superseded")
    assert (t.state.canary_version, t.state.current_step, t.state.canary_weight) == (3, 0, 0)
    assert t.state.analysis_run is None and t.state.analysis_results == []
    assert t.tracks == [TrackPlan("stable", 1, 100), TrackPlan("canary", 3, 100)]  # version 2 removed
    assert [e.reason for e in t.events] == [r.EVENT_SUPERSEDED, r.EVENT_ROLLOUT_STARTED]
    assert registry_actions(t) == []


def test_a_spec_change_mid_rollout_restarts_the_same_version_at_step_0() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    changed = make_spec(steps=[{"pause": {"duration": "1m"}}, {"setWeight": 50}])
    t = r.step(changed, state, obs(2, ready(1, 2)), T0)
    assert history(t.state)[-1].outcome == "Superseded" and t.started_version == 2
    assert (t.state.current_step, t.state.canary_weight) == (0, 0)
    assert t.state.rollout_hash == r.rollout_fingerprint(changed)


def test_moving_the_alias_back_to_the_stable_version_ends_the_rollout() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    t = r.step(spec, state, obs(1, ready(1, 2)), T0)
    assert (t.state.phase, t.state.stable_version, t.state.canary_version) == ("Succeeded", 1, None)
    assert history(t.state)[-1].outcome == "Superseded"


def test_runtime_changes_do_not_restart_a_rollout() -> None:
    spec = make_spec(steps=[{"setWeight": 20}, {"pause": {}}])
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    bigger = spec.model_copy(update={"replicas": 5})
    assert r.step(bigger, state, obs(2, ready(1, 2)), T0).state.current_step == 1


# --- status round trip, helpers ---------------------------------------------------------------------------


def test_long_request_tokens_and_errors_stay_within_status_bounds() -> None:
    key = r.UserRequest("promote", "x" * 5000).key
    assert len(key) <= 136 and key != r.UserRequest("promote", "y" * 5000).key
    spec = analysis_spec()
    assert spec.analysis is not None
    (result,) = evaluate(spec.analysis, Measurement((Sample("error-rate", None, "e" * 5000),)), T0)
    assert len(result.message or "") == MAX_MESSAGE


def test_state_round_trips_through_status_and_matches_the_api_model() -> None:
    spec = analysis_spec()
    state = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2)), T0).state
    state = r.step(spec, state, obs(2, ready(1, 2), passed()), T0 + timedelta(seconds=30)).state
    status = json.loads(json.dumps(r.rollout_status(state)))
    assert r.rollout_state(status) == state
    assert_status_fits_api(status)
    assert r.rollout_state(None) == ModelDeploymentStatus(canary_weight=0, analysis_results=[], history=[])


# What the rollout writes to status, byte for byte (key order included): the API server and every tool that
# reads status see exactly this.
NO_MODEL_STATUS = (
    '{"phase": null, "stableVersion": null, "canaryVersion": null, "canaryWeight": 0, "currentStep": null, '
    '"stepStartedAt": null, "analysisRun": null, "analysisResults": [], "history": [], "rolledBackVersion": null, '
    '"rolloutHash": null, "handledRequest": null, "message": "no model version resolved yet"}'
)
SUCCEEDED_V1 = (
    '{"version": 1, "outcome": "Succeeded", "message": "version 1 is stable: all its pods are ready; '
    'alias \\"production\\" moved to it", "time": "2026-01-01T00:00:00Z"}'
)
NO_DATA = '{"metric": "error-rate", "outcome": "Inconclusive", "message": "no data", "time": "2026-01-01T00:00:30Z"}'
ANALYSING_STATUS = (
    '{"phase": "Progressing", "stableVersion": 1, "canaryVersion": 2, "canaryWeight": 0, "currentStep": 0, '
    '"stepStartedAt": "2026-01-01T00:00:00Z", "analysisRun": {"passed": 0, "failed": 0, "inconclusive": 1, '
    f'"lastMeasuredAt": "2026-01-01T00:00:30Z"}}, "analysisResults": [{NO_DATA}], "history": [{SUCCEEDED_V1}], '
    '"rolledBackVersion": null, "rolloutHash": "27bad83ceb631757", "handledRequest": null, '
    '"message": "version 2, step 1/2, weight 0%: analysis: 0/2 measurements"}'
)
ROLLED_BACK_WHY = (
    "version 2 rolled back: analysis failed 1 time(s) (failureLimit 0): error-rate=0.5 (outside <= 0.01); "
    "version 1 serves"
)
ROLLED_BACK_STATUS = (
    '{"phase": "RolledBack", "stableVersion": 1, "canaryVersion": null, "canaryWeight": 0, "currentStep": null, '
    f'"stepStartedAt": null, "analysisRun": null, "analysisResults": [{NO_DATA}, {{"metric": "error-rate", '
    '"value": "0.5", "outcome": "Failed", "message": "outside <= 0.01", "time": "2026-01-01T00:01:01Z"}], '
    f'"history": [{SUCCEEDED_V1}, {{"version": 2, "outcome": "RolledBack", "message": "{ROLLED_BACK_WHY}", '
    f'"time": "2026-01-01T00:01:01Z"}}], "rolledBackVersion": 2, "rolloutHash": null, "handledRequest": null, '
    f'"message": "{ROLLED_BACK_WHY}"}}'
)


def test_status_written_is_exactly_what_it_always_was() -> None:
    spec = analysis_spec(inconclusiveLimit=3, failureLimit=0)
    t = r.step(spec, r.rollout_state(None), obs(None), T0)
    assert json.dumps(r.rollout_status(t.state)) == NO_MODEL_STATUS
    no_data = Measurement((Sample("error-rate", None),))
    t = r.step(spec, canary_at_step_0(spec), obs(2, ready(1, 2), no_data), T0 + timedelta(seconds=30))
    assert json.dumps(r.rollout_status(t.state)) == ANALYSING_STATUS
    failing = Measurement((Sample("error-rate", 0.5),))
    t = r.step(spec, t.state, obs(2, ready(1, 2), failing), T0 + timedelta(seconds=61))
    assert json.dumps(r.rollout_status(t.state)) == ROLLED_BACK_STATUS
    for written in (NO_MODEL_STATUS, ANALYSING_STATUS, ROLLED_BACK_STATUS):  # and it reads back the same
        assert json.dumps(r.rollout_status(r.rollout_state(json.loads(written)))) == written


def assert_status_fits_api(status: dict[str, Any]) -> None:
    """The fields the API model already has validate against it (the rest are listed for api/)."""
    known = {name: info.alias or name for name, info in ModelDeploymentStatus.model_fields.items()}
    ModelDeploymentStatus.model_validate({k: v for k, v in status.items() if k in known.values() and v is not None})


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("0s", 0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert r.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "1x", "m5", "5m "])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        r.parse_duration(text)


# --- properties -------------------------------------------------------------------------------------------

DURATIONS = st.sampled_from(["0s", "10s", "45s", "2m"])
STEP = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.builds(lambda d: {"pause": {"duration": d} if d else {}}, st.one_of(st.none(), DURATIONS)),
    st.builds(lambda c: {"analysis": {"count": c} if c else {}}, st.one_of(st.none(), st.integers(1, 3))),
)
STEPS = st.lists(STEP, min_size=1, max_size=6)
ANALYSIS = st.fixed_dictionaries(
    {
        "interval": st.sampled_from(["10s", "30s"]),
        "count": st.integers(1, 3),
        "failureLimit": st.integers(0, 2),
        "inconclusiveLimit": st.integers(0, 2),
        "metrics": st.sampled_from(
            [[METRIC], [METRIC, {"name": "latency", "query": "q", "thresholdRange": {"min": 0, "max": 1}}]]
        ),
    }
)


@st.composite
def specs(draw: st.DrawFn) -> ModelDeploymentSpec:
    # Mostly canaries (they have the interesting rules), sometimes no strategy at all.
    steps = None if draw(st.integers(0, 5)) == 0 else draw(STEPS)
    return make_spec(
        steps=steps,
        router=draw(st.sampled_from(["gatewayAPI", "replicaRatio"])),
        analysis=draw(ANALYSIS),
        set_alias=draw(st.sampled_from([None, "production"])),
    )


@dataclass
class FakeDeployment:
    size: int
    ready_at: int  # pass from which its pods are ready
    fails: bool
    ever_ready: bool = False


@dataclass
class World:
    """A fake cluster, Prometheus, clock and users, driven by a seeded random generator."""

    rng: random.Random
    failing_versions: frozenset[int] = frozenset()
    user_requests: bool = True
    deployments: dict[int, FakeDeployment] = field(default_factory=dict)
    now: datetime = T0
    passes: int = 0
    request: r.UserRequest | None = None

    def observe(
        self, resolved: int | None, spec: ModelDeploymentSpec, state: ModelDeploymentStatus, outages: bool = True
    ) -> r.Observations:
        tracks = []
        for version, d in sorted(self.deployments.items()):
            is_ready = not d.fails and self.passes >= d.ready_at
            d.ever_ready = d.ever_ready or is_ready
            tracks.append(
                r.TrackObservation(
                    version,
                    ready=is_ready,
                    available_replicas=1 if d.ever_ready else 0,
                    failed=d.fails and self.passes >= d.ready_at,
                )
            )
        measurement = self.measure(spec) if r.measurement_due(spec, state, self.now) else None
        if outages and self.rng.random() < 0.1:
            resolved = None  # the registry did not answer
        return r.Observations(resolved, tuple(tracks), measurement, self.next_request(), RESOURCE)

    def measure(self, spec: ModelDeploymentSpec) -> Measurement:
        assert spec.analysis is not None
        values = [0.001, 0.001, 0.001, 0.5, None, math.nan]
        samples = []
        for metric in spec.analysis.metrics:
            error = "timeout" if self.rng.random() < 0.05 else None
            samples.append(Sample(metric.name, None if error else self.rng.choice(values), error))
        return Measurement(tuple(samples))

    def next_request(self) -> r.UserRequest | None:
        if not self.user_requests:
            return None
        if self.request is not None and self.rng.random() < 0.5:
            self.request = None  # the handler removed the annotation
        elif self.request is None and self.rng.random() < 0.08:
            kind = self.rng.choice(["promote", "promote", "promote", "abort", "retry"])
            self.request = r.UserRequest(kind, str(self.passes), "tester")  # type: ignore[arg-type]
        return self.request

    def apply(self, transition: r.Transition) -> None:
        wanted = {a.version: a for a in transition.tracks}
        for version in list(self.deployments):
            if version not in wanted:
                del self.deployments[version]
        for version, action in wanted.items():
            current = self.deployments.get(version)
            if current is None or current.size != action.size_percent:
                # A new or resized Deployment is ready a few passes later (never on the pass that applied it).
                ready_at = self.passes + 1 + self.rng.randrange(3)
                fails = version in self.failing_versions
                ever_ready = current.ever_ready if current else False
                self.deployments[version] = FakeDeployment(action.size_percent, ready_at, fails, ever_ready)

    def advance(self, requeue: float | None) -> None:
        self.passes += 1
        wait = requeue if requeue is not None else 60.0
        if self.rng.random() < 0.2:
            wait = self.rng.uniform(0, wait)  # a child event woke the owner early
        self.now += timedelta(seconds=wait)


@dataclass
class Checker:
    """Invariants over every transition of a run."""

    spec: ModelDeploymentSpec
    expected_step: int = 0
    canary_rollout: bool = False

    def check(
        self, before: ModelDeploymentStatus, t: r.Transition, observations: r.Observations, now: datetime
    ) -> None:
        state = t.state
        # Restarting between any two passes changes nothing.
        restored = r.rollout_state(json.loads(json.dumps(r.rollout_status(before))))
        assert restored == before
        assert r.step(self.spec, restored, observations, now) == t
        assert_status_fits_api(r.rollout_status(state))
        # The rollout always writes its weight, history and results, so no pass reads them as missing.
        assert state.canary_weight is not None and before.canary_weight is not None
        assert state.history is not None and before.history is not None and state.analysis_results is not None
        # Weight within the current step's setWeight, and never routed to a canary without ready pods.
        assert 0 <= state.canary_weight <= r.weight_bound(self.spec, state)
        assert t.weights.canary <= state.canary_weight
        canary = observations.track(state.canary_version)
        if t.weights.canary > 0:
            assert canary is not None and canary.available_replicas > 0
        raised = state.canary_version == before.canary_version and state.canary_weight > before.canary_weight
        if raised and not r.uses_replica_ratio(self.spec):  # replicaRatio: readiness follows the resize
            assert canary is not None and canary.ready
        # No mixed versions: without a canary nothing of a rollout is left; with one, it follows this spec.
        if state.canary_version is None:
            assert (state.canary_weight, state.current_step, state.analysis_run, state.rollout_hash) == (
                0,
                None,
                None,
                None,
            )
        else:
            assert state.canary_version != state.stable_version
            assert state.rollout_hash == r.rollout_fingerprint(self.spec)
        # Steps are completed in order, from 0, none skipped.
        if t.started_version is not None:
            self.expected_step = 0
            self.canary_rollout = before.stable_version is not None and bool(canary_steps(self.spec))
        for index in t.steps_completed:
            assert index == self.expected_step
            self.expected_step += 1
        new_records = state.history[len(before.history) :] if len(state.history) > len(before.history) else ()
        for record in new_records:
            if record.outcome == "Succeeded" and self.canary_rollout and record.version == before.canary_version:
                assert self.expected_step == len(canary_steps(self.spec))


def run_until_settled(
    spec: ModelDeploymentSpec,
    world: World,
    resolved: int,
    state: ModelDeploymentStatus,
    checker: Checker,
    limit: int = 600,
) -> tuple[ModelDeploymentStatus, r.Transition]:
    for _ in range(limit):
        observations = world.observe(resolved, spec, state)
        t = r.step(spec, state, observations, world.now)
        checker.check(state, t, observations, world.now)
        world.apply(t)
        state = t.state
        # Settled: nothing to wait for, no request pending, and the registry answered (else the handler
        # polls the alias again).
        if t.requeue_after is None and observations.request is None and observations.resolved_version is not None:
            return state, t
        world.advance(t.requeue_after)
    raise AssertionError(f"not settled after {limit} passes: {state}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), seed=st.integers(0, 2**32 - 1), canary_fails=st.booleans())
def test_every_rollout_ends_succeeded_rolled_back_or_paused(
    spec: ModelDeploymentSpec, seed: int, canary_fails: bool
) -> None:
    world = World(random.Random(seed), frozenset({2}) if canary_fails else frozenset())
    checker = Checker(spec)
    state, _ = run_until_settled(spec, world, 1, r.rollout_state(None), checker)
    assert (state.phase, state.stable_version) == ("Succeeded", 1)
    state, t = run_until_settled(spec, world, 2, state, checker)
    event(f"ended {state.phase}")
    assert state.phase in ("Succeeded", "RolledBack", "Paused")
    if state.phase == "Succeeded":
        assert state.stable_version == 2 and not canary_fails
        assert [a.version for a in t.tracks] == [2]
    if state.phase == "RolledBack":
        assert state.stable_version == 1 and state.rolled_back_version == 2
        assert [a.version for a in t.tracks] == [1]
    if state.phase == "Paused":
        assert state.canary_version == 2


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(),
    new_steps=st.one_of(st.none(), STEPS),
    seed=st.integers(0, 2**32 - 1),
    passes=st.integers(0, 30),
)
def test_a_change_mid_rollout_supersedes_the_canary_cleanly(
    spec: ModelDeploymentSpec, new_steps: list[dict[str, Any]] | None, seed: int, passes: int
) -> None:
    world = World(random.Random(seed), user_requests=False)
    checker = Checker(spec)
    state, _ = run_until_settled(spec, world, 1, r.rollout_state(None), checker)
    for _ in range(passes):  # part of the way into the rollout of version 2
        observations = world.observe(2, spec, state)
        t = r.step(spec, state, observations, world.now)
        checker.check(state, t, observations, world.now)
        world.apply(t)
        state = t.state
        world.advance(t.requeue_after)
    if state.canary_version is None:
        event("over before the change")
        return
    # Either the alias moves to version 3, or the steps change (the same version starts over).
    changed = spec if new_steps is None else spec.model_copy(update={"strategy": make_spec(steps=new_steps).strategy})
    target = 3 if new_steps is None or changed == spec else 2
    event("alias moved" if target == 3 else "steps changed")
    checker.spec = changed
    observations = world.observe(target, changed, state, outages=False)
    t = r.step(changed, state, observations, world.now)
    checker.check(state, t, observations, world.now)
    superseded = [h for h in history(t.state)[len(history(state)) :] if h.outcome == "Superseded"]
    assert [h.version for h in superseded] == [2]
    assert t.started_version == target
    assert t.steps_completed[:1] in ([], [0])
    if t.state.canary_version == target:
        assert t.state.analysis_results == [] and t.state.rollout_hash == r.rollout_fingerprint(changed)
        assert {a.version for a in t.tracks} == {1, target}
    world.apply(t)
    world.advance(t.requeue_after)
    final, _ = run_until_settled(changed, world, target, t.state, checker)
    assert final.phase in ("Succeeded", "RolledBack", "Paused")
    assert 2 not in {final.stable_version, final.canary_version} or target == 2
