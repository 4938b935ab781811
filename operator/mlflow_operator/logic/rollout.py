"""A ModelDeployment's rollout as a pure state machine: (spec, state, observations, now) -> Transition.

The state is the rollout's part of the ModelDeploymentStatus API model. The handler reads it from status
(`rollout_state`), gathers `Observations` (the version the registry resolves, the Deployments of each
version, one analysis measurement when `measurement_due` says so, a user's request annotation), calls
`step`, executes `Transition.actions`, and only then writes `rollout_status(Transition.state)` with the
conditions. If an action fails, status is not written: the next pass computes the same transition from
the same state and tries again. Every action is idempotent, and everything the state machine knows lives
in status, so an operator restart mid-rollout resumes exactly where it was (a property test serializes
the state between any two steps).

Measurements are judged in logic.rollout_analysis; the conditions and status.message a pass reports are
logic.rollout_report's.

Tracks. Each model version runs in its own Deployment; "stable" and "canary" are roles, held by the
Services that select a version. Promotion is therefore a switch of roles: the canary's pods, already
loaded and verified, become the stable ones, and the model is never loaded twice.

Rules:
- No stable version yet, or no `strategy.canary`: the new version starts at full size next to the old one
  and takes all traffic once every pod is ready (the old one is removed). A version whose pods never become
  ready (e.g. the model does not load) never replaces the old one: it is rolled back.
- `setWeight`: weight moves to the canary only when the canary is ready (Gateway API); lowering the weight
  is always safe and immediate. With `replicaRatio` the canary is resized for the weight while the stable
  keeps its replicas until the canary's are ready (a surge, as Argo Rollouts' basic canary does): Services
  only send traffic to ready pods, so the split follows readiness by itself.
- `pause`: a duration, or indefinitely (phase Paused) until a promote request or a spec change.
- `analysis`: one measurement per `analysis.interval`, the first one interval after the step starts. A
  measurement fails when a metric is outside its range, and is inconclusive when a value is missing, NaN, an
  error, or the sample size is below `minSampleSize`: inconclusive never passes and never counts towards
  `count`. More than `failureLimit` failures abort; more than `inconclusiveLimit` inconclusive measurements
  pause the rollout (reason Inconclusive) until a user promotes or aborts.
- Abort (failed analysis, a canary whose pods fail, or a user's abort/rollback request): weight 0, canary
  removed, phase RolledBack, a history entry, the version tagged in the registry (who, when, why). The
  version is not rolled out again until spec.model resolves to another version or a user asks (retry).
  A rolled-back deployment whose stable serves is healthy: only a stable without ready pods is Degraded.
- Success: the canary becomes stable, the old stable is removed, `promotion.setAlias` is moved to the
  version and the version is tagged as deployed; phase Succeeded.
- A new resolved version or a change of the rollout's spec (model, strategy, analysis) mid-rollout
  supersedes the running canary (history outcome Superseded); the new rollout starts at step 0.

Requests come from annotations and are acted on once per annotation: `handled_request` remembers the one
acted on while it is present, and is cleared once the annotation is gone, so the same value can be used
again later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mlflow_operator.api.common import duration_seconds
from mlflow_operator.api.modeldeployment import (
    MAX_MESSAGE,
    Analysis,
    AnalysisRun,
    CanaryStep,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RolloutOutcome,
    RolloutRecord,
    canary_steps,
)
from mlflow_operator.api.traffic import TrackPlan, Weights
from mlflow_operator.logic import rollout_report as report
from mlflow_operator.logic.conditions import ConditionUpdate, EventSpec, parse_time, rfc3339
from mlflow_operator.logic.rollout_analysis import (
    Measurement,
    analysis_count,
    conclusive,
    current_analysis_step,
    describe_results,
    evaluate,
    measurement_outcome,
)

RequestKind = Literal["promote", "abort", "retry"]

# Event reasons.
EVENT_ROLLOUT_STARTED = "RolloutStarted"
EVENT_STEP_COMPLETED = "StepCompleted"
EVENT_TRAFFIC_SHIFTED = "TrafficShifted"
EVENT_ANALYSIS_PASSED = "AnalysisPassed"
EVENT_ANALYSIS_FAILED = "AnalysisFailed"
EVENT_ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
EVENT_PAUSED = "Paused"
EVENT_PROMOTED = "Promoted"
EVENT_ROLLED_BACK = "RolledBack"
EVENT_SUPERSEDED = "Superseded"
EVENT_SUCCEEDED = "RolloutSucceeded"
EVENT_RETRY = "RetryRequested"
EVENT_REQUEST_IGNORED = "RequestIgnored"

# Registry tags on versions (values are plain strings; MLflow allows 5000 characters).
TAG_ROLLOUT = "mlflow.operator.dev/rollout"  # "Deployed" or "RolledBack": what the last rollout concluded
TAG_TIME = "mlflow.operator.dev/rollout-time"
TAG_BY = "mlflow.operator.dev/rollout-by"
TAG_REASON = "mlflow.operator.dev/rollout-reason"
TAG_DEPLOYMENT = "mlflow.operator.dev/deployment"
OPERATOR = "mlflow-operator"
MAX_TAG_REASON = 500

# Status bounds (api.modeldeployment.ModelDeploymentStatus).
MAX_HISTORY = 10
MAX_RESULTS = 50
MAX_REQUEST_TOKEN = 128  # status.handledRequest is "<kind>:<token>", at most 136 characters

# How soon to look again while waiting for pods: child Deployment events wake the owner too, this is the
# fallback. After resizing replicaRatio tracks, readiness is read on a later pass (see _SetWeight).
READINESS_POLL_SECONDS = 5.0
RESIZE_POLL_SECONDS = 2.0

FULL_SIZE = 100


# --- durations ------------------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    return timedelta(seconds=duration_seconds(text))


# --- state ---------------------------------------------------------------------------------------------

# The status fields the rollout owns, in the order it writes them; the handler writes the others (resolved,
# weights achieved, pending registry writes, conditions).
ROLLOUT_FIELDS = (
    "phase",
    "stable_version",
    "canary_version",  # the version being rolled out (canary or direct)
    "canary_weight",  # percent the rollout gives the canary (replicaRatio: what the split aims at)
    "current_step",  # index into strategy.canary.steps; len(steps) = promoting; None = direct
    "step_started_at",
    "analysis_run",
    "analysis_results",
    "history",
    "rolled_back_version",  # not rolled out again until the target moves or a retry
    "rollout_hash",  # fingerprint of the spec the running rollout follows
    "handled_request",  # "kind:token" of the request annotation already acted on
    "message",
)
_ROLLOUT_KEYS = {name: ModelDeploymentStatus.model_fields[name].alias or name for name in ROLLOUT_FIELDS}
# What the rollout reads where status has nothing yet (a new ModelDeployment): it always writes these.
_NOTHING_YET: dict[str, Any] = {"canary_weight": 0, "analysis_results": [], "history": []}


def rollout_state(status: Mapping[str, Any] | None) -> ModelDeploymentStatus:
    """The rollout's part of status: everything it remembers between passes. Only its own fields are read,
    so a problem in the handler's fields never stops a rollout."""
    status = status or {}
    owned = {name: status[key] for name, key in _ROLLOUT_KEYS.items() if status.get(key) is not None}
    return ModelDeploymentStatus.model_validate({**_NOTHING_YET, **owned})


def rollout_status(state: ModelDeploymentStatus) -> dict[str, Any]:
    """The status fields the rollout owns, camelCase and JSON-safe; None removes a field. Reads back
    unchanged through rollout_state."""
    written = state.model_dump(mode="json", by_alias=True, exclude_none=True, include=set(ROLLOUT_FIELDS))
    return {key: written.get(key) for key in _ROLLOUT_KEYS.values()}


# --- observations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackObservation:
    """The Deployment of one version, as the I/O layer read it (see logic.readiness.deployment_readiness).

    `ready`: every desired replica of the current pod template is available and the Deployment has observed
    its latest spec (so a resize just applied reads as not ready until it is done). `available_replicas`:
    ready pods of any template, i.e. what the Services send traffic to. `failed`: the Deployment's
    Progressing condition is False (ProgressDeadlineExceeded): its pods do not start, e.g. the model does
    not load in the init container."""

    version: int
    ready: bool = False
    available_replicas: int = 0
    failed: bool = False
    message: str = ""


@dataclass(frozen=True)
class UserRequest:
    """A request annotation: promote (end a pause or an analysis), abort (or rollback), retry a version.

    `token` is the annotation's value; `requested_by` who set it (e.g. from managedFields), for the registry
    tag and the Events."""

    kind: RequestKind
    token: str = ""
    requested_by: str = "a user"

    @property
    def key(self) -> str:
        """What status.handledRequest stores: bounded, since annotation values can be long."""
        token = self.token
        if len(token) > MAX_REQUEST_TOKEN:
            token = "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        return f"{self.kind}:{token}"


@dataclass(frozen=True)
class Observations:
    """What the I/O layer saw before this pass."""

    resolved_version: int | None = None  # None: the registry did not answer; the current target is kept
    tracks: tuple[TrackObservation, ...] = ()  # the Deployment of each version that has one
    measurement: Measurement | None = None  # only when measurement_due() said so
    request: UserRequest | None = None
    resource: str = ""  # "namespace/name" of the ModelDeployment, for registry tags

    def track(self, version: int | None) -> TrackObservation | None:
        return next((t for t in self.tracks if t.version == version), None) if version is not None else None


# --- actions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagVersion:
    """Set these tags on a registry version. Emitted once, on the transition that decided it."""

    version: int
    tags: Mapping[str, str]


@dataclass(frozen=True)
class SetAlias:
    """Point a registry alias at a version (promotion.setAlias). Emitted once, on success."""

    alias: str
    version: int


Action = TrackPlan | Weights | TagVersion | SetAlias


@dataclass(frozen=True)
class Transition:
    """The outcome of one pass. Execute `actions` in order, then write `rollout_status(state)` and the
    conditions, emit the events, and look again after `requeue_after` seconds (None: on the next child
    event or resync; the handler still polls the alias at spec.pollInterval)."""

    state: ModelDeploymentStatus
    actions: list[Action]
    events: list[EventSpec]
    conditions: list[ConditionUpdate]
    requeue_after: float | None = None
    steps_completed: list[int] = field(default_factory=list)  # step indices completed in this pass, in order
    started_version: int | None = None  # a rollout of this version started in this pass

    @property
    def tracks(self) -> list[TrackPlan]:
        return [action for action in self.actions if isinstance(action, TrackPlan)]

    @property
    def weights(self) -> Weights:
        return next(action for action in self.actions if isinstance(action, Weights))


# --- the spec, as the state machine reads it ------------------------------------------------------------


def uses_replica_ratio(spec: ModelDeploymentSpec) -> bool:
    return spec.traffic_routing is not None and spec.traffic_routing.replica_ratio is not None


def rollout_fingerprint(spec: ModelDeploymentSpec) -> str:
    """What a running rollout follows: the model, the steps and the analysis. A change supersedes it;
    other fields (runtime, replicas, routing) apply to the running tracks without restarting the rollout."""
    relevant = {
        name: getattr(spec, name).model_dump(mode="json", by_alias=True, exclude_none=True)
        if getattr(spec, name) is not None
        else None
        for name in ("model", "strategy", "analysis")
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def describe_step(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause until promoted"
    count = step.analysis.count if step.analysis and step.analysis.count else None
    return f"analysis ({count} measurements)" if count else "analysis"


def weight_before(steps: Sequence[CanaryStep], index: int) -> int:
    """The weight the steps before `index` set: the last setWeight before it, or 0."""
    for step in reversed(steps[:index]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def weight_bound(spec: ModelDeploymentSpec, state: ModelDeploymentStatus) -> int:
    """The most the rollout may give the canary now: the current setWeight step's weight, or the weight the
    steps before the current one set (100 while promoting, 0 without a canary rollout)."""
    steps = canary_steps(spec)
    index = state.current_step
    if state.canary_version is None or index is None:
        return 0
    if index >= len(steps):
        return 100
    current = steps[index].set_weight
    return current if current is not None else weight_before(steps, index)


def next_measurement_at(spec: ModelDeploymentSpec, state: ModelDeploymentStatus) -> datetime | None:
    """When the current analysis step takes its next measurement; None when no measurement is pending
    (not in an analysis step, or paused as inconclusive)."""
    if current_analysis_step(spec, state) is None or spec.analysis is None:
        return None
    if state.rollout_hash != rollout_fingerprint(spec):
        return None  # this pass supersedes the rollout
    run = state.analysis_run or AnalysisRun(last_measured_at=state.step_started_at)
    if run.inconclusive > spec.analysis.inconclusive_limit or not run.last_measured_at:
        return None
    return parse_time(run.last_measured_at) + parse_duration(spec.analysis.interval)


def measurement_due(spec: ModelDeploymentSpec, state: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether the handler must query Prometheus before this pass (then pass Observations.measurement).
    A measurement given when none is due is ignored."""
    due = next_measurement_at(spec, state)
    return due is not None and now >= due


# --- one pass -------------------------------------------------------------------------------------------


@dataclass
class _Pass:
    """The working state of one `step` call: the state so far, and what the pass decided."""

    spec: ModelDeploymentSpec
    obs: Observations
    now: datetime
    state: ModelDeploymentStatus
    request: UserRequest | None  # a request not acted on before
    events: list[EventSpec] = field(default_factory=list)
    registry: list[Action] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    started: int | None = None
    waiting: str = ""  # what the running rollout waits for, for status and conditions

    @property
    def stamp(self) -> str:
        """Now in status's one-second resolution, rounded up: a step recorded as starting at a truncated
        second would have its pause end, and its first measurement fall due, up to a second early (the
        ModelDeployment benchmark measured rollbacks 4.3 s into a 5 s interval). Rounded up, every wait
        is at least as long as the spec says."""
        whole = self.now.replace(microsecond=0)
        return rfc3339(whole if whole == self.now else whole + timedelta(seconds=1))

    def update(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(EventSpec(type_, reason, message))

    def requeue_in(self, seconds: float) -> None:
        self.requeue.append(max(0.0, seconds))

    def consume_request(self, kind: RequestKind) -> UserRequest | None:
        """The pending request if it is of this kind; it is then acted on and not offered again."""
        if self.request is not None and self.request.kind == kind:
            request, self.request = self.request, None
            return request
        return None

    def record(self, version: int, outcome: RolloutOutcome, message: str) -> None:
        record = RolloutRecord(version=version, outcome=outcome, message=message[:MAX_MESSAGE], time=self.stamp)
        history = [*(self.state.history or ()), record]
        self.update(history=history[-MAX_HISTORY:])


def step(
    spec: ModelDeploymentSpec, state: ModelDeploymentStatus, observations: Observations, now: datetime
) -> Transition:
    """One pass of the rollout. Pure: the same inputs give the same transition."""
    request = observations.request
    fresh_request = request if request is not None and request.key != state.handled_request else None
    run = _Pass(spec, observations, now, state, fresh_request)
    run.update(handled_request=request.key if request is not None else None)
    target = _target(run)
    _follow_target(run, target)
    if run.state.canary_version is not None:
        _progress(run)
    _ignore_leftover_request(run)
    _settle(run)
    return _finish(run)


def _target(run: _Pass) -> int | None:
    """The version spec.model resolves to; while the registry does not answer, the current one."""
    if run.obs.resolved_version is not None:
        return run.obs.resolved_version
    return run.state.canary_version if run.state.canary_version is not None else run.state.stable_version


def _follow_target(run: _Pass, target: int | None) -> None:
    _unblock(run)
    if run.state.canary_version is not None:
        _supersede_if_stale(run, target)
    if run.state.canary_version is not None:
        abort = run.consume_request("abort")
        if abort is not None:
            _user_abort(run, abort)
    if run.state.canary_version is None and target is not None and _should_start(run.state, target):
        _start(run, target)


def _unblock(run: _Pass) -> None:
    """A rolled-back version may be rolled out again once the registry names another version (the alias
    moved on; a later move back is a new decision), or when a user asks. A registry that does not answer
    moves nothing."""
    blocked = run.state.rolled_back_version
    resolved = run.obs.resolved_version
    if blocked is None:
        return
    if resolved is not None and resolved != blocked:
        run.update(rolled_back_version=None)
        return
    retry = run.consume_request("retry")
    if retry is not None:
        run.update(rolled_back_version=None)
        run.event("Normal", EVENT_RETRY, f"{retry.requested_by} asked to retry version {blocked}")


def _should_start(state: ModelDeploymentStatus, target: int) -> bool:
    return target not in (state.stable_version, state.rolled_back_version)


def _supersede_if_stale(run: _Pass, target: int | None) -> None:
    state = run.state
    version = state.canary_version
    assert version is not None
    if target != version:
        why = f"spec.model now resolves to version {target}"
    elif state.rollout_hash != rollout_fingerprint(run.spec):
        why = "the rollout's spec changed (model, strategy or analysis)"
    else:
        return
    message = f"rollout of version {version} superseded: {why}"
    run.record(version, "Superseded", message)
    run.event("Normal", EVENT_SUPERSEDED, message)
    _end_rollout(run)


def _end_rollout(run: _Pass, **changes: Any) -> None:
    """Back to a steady state: no canary, no weight, no step. Analysis results stay visible (they explain
    the outcome) until the next rollout starts."""
    run.update(
        canary_version=None,
        canary_weight=0,
        current_step=None,
        step_started_at=None,
        analysis_run=None,
        rollout_hash=None,
        **changes,
    )


def _start(run: _Pass, version: int) -> None:
    steps = canary_steps(run.spec)
    stable = run.state.stable_version
    canary = bool(steps) and stable is not None
    run.update(
        canary_version=version,
        canary_weight=0,
        current_step=0 if canary else None,
        step_started_at=run.stamp,
        analysis_run=None,
        analysis_results=[],
        rollout_hash=rollout_fingerprint(run.spec),
        phase="Progressing",
    )
    run.started = version
    if stable is None:
        how = "first version: deployed without canary steps"
    elif canary:
        how = f"canary with {len(steps)} step(s) next to stable version {stable}"
    else:
        how = f"replacing version {stable} once its pods are ready (no canary strategy)"
    run.event("Normal", EVENT_ROLLOUT_STARTED, f"rolling out version {version}: {how}")


# --- ending a rollout -----------------------------------------------------------------------------------


def _tags(run: _Pass, outcome: str, by: str, reason: str) -> dict[str, str]:
    tags = {TAG_ROLLOUT: outcome, TAG_TIME: run.stamp, TAG_BY: by, TAG_REASON: reason[:MAX_TAG_REASON]}
    if run.obs.resource:
        tags[TAG_DEPLOYMENT] = run.obs.resource
    return tags


def _abort(run: _Pass, by: str, why: str) -> None:
    version = run.state.canary_version
    assert version is not None
    stable = run.state.stable_version
    message = f"version {version} rolled back: {why}; version {stable} serves"
    run.record(version, "RolledBack", message)
    run.registry.append(TagVersion(version, _tags(run, "RolledBack", by, why)))
    run.event("Warning", EVENT_ROLLED_BACK, message)
    _end_rollout(run, rolled_back_version=version, phase="RolledBack")


def _user_abort(run: _Pass, request: UserRequest) -> None:
    if run.state.stable_version is None:
        run.event(
            "Warning",
            EVENT_REQUEST_IGNORED,
            f"{request.kind} requested by {request.requested_by} ignored: no stable version to roll back to",
        )
        return
    _abort(run, request.requested_by, f"{request.kind} requested by {request.requested_by}")


def _succeed(run: _Pass, how: str) -> None:
    version = run.state.canary_version
    assert version is not None
    previous = run.state.stable_version
    replaced = f", replacing version {previous}" if previous is not None else ""
    message = f"version {version} is stable{replaced}: {how}"
    run.registry.append(TagVersion(version, _tags(run, "Deployed", OPERATOR, how)))
    alias = run.spec.promotion.set_alias if run.spec.promotion else None
    if alias:
        run.registry.append(SetAlias(alias, version))
        message += f'; alias "{alias}" moved to it'
    run.record(version, "Succeeded", message)
    run.event("Normal", EVENT_SUCCEEDED, message)
    _end_rollout(run, stable_version=version, phase="Succeeded")


# --- progressing ----------------------------------------------------------------------------------------


def _progress(run: _Pass) -> None:
    canary = run.obs.track(run.state.canary_version)
    if canary is not None and canary.failed and not canary.ready:
        _canary_failed(run, canary)
    elif run.state.current_step is None:
        _progress_direct(run, canary)
    else:
        _progress_canary(run)


def _canary_failed(run: _Pass, canary: TrackObservation) -> None:
    why = f"its pods do not become ready ({canary.message or 'progress deadline exceeded'})"
    if run.state.stable_version is not None:
        _abort(run, OPERATOR, why)
        return
    # Nothing else to serve: keep trying this version (the registry or the cluster may recover).
    run.update(phase="Degraded")
    run.waiting = f"version {canary.version}: {why}"
    run.requeue_in(READINESS_POLL_SECONDS)


def _progress_direct(run: _Pass, canary: TrackObservation | None) -> None:
    version = run.state.canary_version
    if canary is not None and canary.ready:
        _succeed(run, "all its pods are ready")
        return
    run.update(phase="Progressing")
    run.waiting = f"waiting for the pods of version {version} to be ready"
    run.requeue_in(READINESS_POLL_SECONDS)


def _progress_canary(run: _Pass) -> None:
    """Run steps in order until one has to wait; several may complete in one pass."""
    steps = canary_steps(run.spec)
    # Whether this pass entered the current step: then the tracks' new sizes are not applied yet, and what
    # the observations say about readiness is about the old ones.
    entered = run.started is not None
    while run.state.canary_version is not None:
        index = run.state.current_step
        assert index is not None
        if index >= len(steps):
            _promote_canary(run, entered)
            return
        if not _run_step(run, steps[index], entered):
            return
        _complete_step(run, steps, index)
        entered = True


def _complete_step(run: _Pass, steps: Sequence[CanaryStep], index: int) -> None:
    run.completed.append(index)
    run.event("Normal", EVENT_STEP_COMPLETED, f"step {index + 1}/{len(steps)} ({describe_step(steps[index])}) done")
    run.update(current_step=index + 1, step_started_at=run.stamp, analysis_run=None, phase="Progressing")


def _run_step(run: _Pass, step_: CanaryStep, entered: bool) -> bool:
    """Whether the step is done; otherwise it recorded what it waits for."""
    if step_.set_weight is not None:
        return _set_weight(run, step_.set_weight, entered)
    if step_.pause is not None:
        return _pause(run, step_.pause.duration)
    return _analysis(run, step_)


def _canary_ready(run: _Pass) -> bool:
    canary = run.obs.track(run.state.canary_version)
    return canary is not None and canary.ready


def _stable_ready(run: _Pass) -> bool:
    stable = run.obs.track(run.state.stable_version)
    return stable is not None and stable.ready


def _set_weight(run: _Pass, weight: int, entered: bool) -> bool:
    if uses_replica_ratio(run.spec):
        return _set_replica_ratio(run, weight, entered)
    return _set_routed_weight(run, weight)


def _set_routed_weight(run: _Pass, weight: int) -> bool:
    """A router's weight moves to the canary only once it is ready (KServe's canary sent traffic to
    backends without endpoints and got 503s); less traffic on the canary is always safe, at once."""
    version, previous = run.state.canary_version, run.state.canary_weight or 0
    if weight < previous:
        run.update(canary_weight=weight)
    if not _canary_ready(run):
        run.waiting = f"waiting for the pods of version {version} to be ready before shifting {weight}% to it"
        run.requeue_in(READINESS_POLL_SECONDS)
        return False
    run.update(canary_weight=weight)
    if weight != previous:
        run.event("Normal", EVENT_TRAFFIC_SHIFTED, f"{weight}% of traffic to version {version}")
    return True


def _set_replica_ratio(run: _Pass, weight: int, entered: bool) -> bool:
    """The tracks are resized for the weight in the pass that enters the step, and their readiness is read
    on a later pass (before the resize is applied, the observations describe the old sizes). Services send
    traffic only to ready pods, so the split follows readiness by itself."""
    version = run.state.canary_version
    if entered or run.state.canary_weight != weight:
        run.update(canary_weight=weight)
        run.waiting = f"resizing the tracks for {weight}% on version {version}"
        run.requeue_in(RESIZE_POLL_SECONDS)
        return False
    if not (_canary_ready(run) and _stable_ready(run)):
        run.waiting = f"waiting for the resized tracks to be ready ({weight}% on version {version})"
        run.requeue_in(READINESS_POLL_SECONDS)
        return False
    run.event("Normal", EVENT_TRAFFIC_SHIFTED, f"about {weight}% of replicas serve version {version}")
    return True


def _pause(run: _Pass, duration: str | None) -> bool:
    promote = run.consume_request("promote")
    if promote is not None:
        run.event("Normal", EVENT_PROMOTED, f"pause ended by {promote.requested_by}")
        return True
    if duration is None:
        if run.state.phase != "Paused":
            run.event("Normal", EVENT_PAUSED, "paused until promoted (annotate mlflow.operator.dev/promote)")
        run.update(phase="Paused")
        run.waiting = "paused until promoted"
        return False
    started = parse_time(run.state.step_started_at or run.stamp)
    remaining = (started + parse_duration(duration) - run.now).total_seconds()
    if remaining <= 0:
        return True
    run.waiting = f"pausing {duration}"
    run.requeue_in(remaining)
    return False


def _analysis(run: _Pass, step_: CanaryStep) -> bool:
    promote = run.consume_request("promote")
    if promote is not None:
        run.event("Normal", EVENT_PROMOTED, f"analysis step skipped by {promote.requested_by}")
        return True
    analysis = run.spec.analysis
    if analysis is None:  # the CRD refuses this; never count it as a pass
        _pause_inconclusive(run, "strategy.canary.steps[].analysis needs spec.analysis")
        return False
    # Until the first measurement, the intervals count from the step's start.
    started = run.state.step_started_at or run.stamp
    analysis_run = run.state.analysis_run or AnalysisRun(last_measured_at=started)
    if analysis_run.inconclusive > analysis.inconclusive_limit:
        _pause_inconclusive(run, _inconclusive_why(analysis, analysis_run, _last_results(run, analysis)))
        return False
    due = parse_time(analysis_run.last_measured_at or started) + parse_duration(analysis.interval)
    if run.now < due or run.obs.measurement is None:
        run.update(analysis_run=analysis_run)
        run.waiting = f"analysis: {conclusive(analysis_run)}/{analysis_count(run.spec, step_)} measurements"
        run.requeue_in((due - run.now).total_seconds() if run.now < due else READINESS_POLL_SECONDS)
        return False
    return _measure(run, step_, analysis, analysis_run, run.obs.measurement)


def _measure(
    run: _Pass, step_: CanaryStep, analysis: Analysis, analysis_run: AnalysisRun, measurement: Measurement
) -> bool:
    results = evaluate(analysis, measurement, run.now)
    outcome = measurement_outcome(results)
    analysis_run = AnalysisRun(
        passed=analysis_run.passed + (outcome == "Passed"),
        failed=analysis_run.failed + (outcome == "Failed"),
        inconclusive=analysis_run.inconclusive + (outcome == "Inconclusive"),
        last_measured_at=run.stamp,
    )
    results_so_far = [*(run.state.analysis_results or ()), *results]
    run.update(analysis_run=analysis_run, analysis_results=results_so_far[-MAX_RESULTS:])
    summary = describe_results(results)
    count = analysis_count(run.spec, step_)
    progress = f"{conclusive(analysis_run)}/{count}"
    if outcome == "Passed":
        run.event("Normal", EVENT_ANALYSIS_PASSED, f"measurement {progress} passed: {summary}")
    elif outcome == "Failed":
        run.event("Warning", EVENT_ANALYSIS_FAILED, f"measurement {progress} failed: {summary}")
    else:
        run.event("Warning", EVENT_ANALYSIS_INCONCLUSIVE, f"measurement inconclusive: {summary}")
    if analysis_run.failed > analysis.failure_limit:
        _abort(
            run,
            OPERATOR,
            f"analysis failed {analysis_run.failed} time(s) (failureLimit {analysis.failure_limit}): {summary}",
        )
        return False
    if analysis_run.inconclusive > analysis.inconclusive_limit:
        _pause_inconclusive(run, _inconclusive_why(analysis, analysis_run, summary))
        return False
    if conclusive(analysis_run) >= count:
        return True
    run.waiting = f"analysis: {progress} measurements"
    run.requeue_in(parse_duration(analysis.interval).total_seconds())
    return False


def _last_results(run: _Pass, analysis: Analysis) -> str:
    """The latest measurement's results (one per metric), for messages after a restart."""
    return describe_results((run.state.analysis_results or [])[-len(analysis.metrics) :])


def _inconclusive_why(analysis: Analysis, analysis_run: AnalysisRun, summary: str) -> str:
    count = f"{analysis_run.inconclusive} inconclusive measurement(s) (inconclusiveLimit {analysis.inconclusive_limit})"
    return f"{count}, last: {summary}" if summary else count


def _pause_inconclusive(run: _Pass, why: str) -> None:
    message = f"analysis inconclusive, paused until promoted or aborted: {why}"[:MAX_MESSAGE]
    if run.state.phase != "Paused":
        run.event("Warning", EVENT_PAUSED, message)
    run.update(phase="Paused")
    run.waiting = message


def _promote_canary(run: _Pass, entered: bool) -> None:
    """After the last step the canary takes over. With replicaRatio it is first scaled to full size (next
    to the stable, which keeps its replicas), and the roles switch once its pods are ready."""
    version = run.state.canary_version
    if entered and uses_replica_ratio(run.spec):
        run.waiting = f"scaling version {version} to full size"
        run.requeue_in(RESIZE_POLL_SECONDS)
        return
    if not _canary_ready(run):
        run.waiting = f"waiting for version {version} at full size"
        run.requeue_in(READINESS_POLL_SECONDS)
        return
    _succeed(run, f"{len(canary_steps(run.spec))} canary step(s) passed")


def _ignore_leftover_request(run: _Pass) -> None:
    """A request that found nothing to act on is dropped with an Event, so it does not fire later."""
    request = run.request
    if request is None:
        return
    run.request = None
    run.event(
        "Normal",
        EVENT_REQUEST_IGNORED,
        f"{request.kind} requested by {request.requested_by}: nothing to {request.kind}",
    )


# --- steady state, actions, conditions ------------------------------------------------------------------


def _settle(run: _Pass) -> None:
    state = run.state
    if state.canary_version is not None:
        return
    stable = run.obs.track(state.stable_version)
    if state.stable_version is None:
        run.update(phase=None)
    elif stable is None or stable.available_replicas == 0:
        run.update(phase="Degraded")
        run.requeue_in(READINESS_POLL_SECONDS)
    elif state.rolled_back_version is not None:
        run.update(phase="RolledBack")
    else:
        run.update(phase="Succeeded")


def _size_percents(spec: ModelDeploymentSpec, state: ModelDeploymentStatus) -> tuple[int, int]:
    """(stable, canary) share of the spec's replicas each track is sized for. Only replicaRatio splits: while
    a weight change is in flight both tracks keep their larger size (a surge), so capacity never dips."""
    if not uses_replica_ratio(spec) or state.current_step is None:
        return FULL_SIZE, FULL_SIZE
    steps = canary_steps(spec)
    index = state.current_step
    weight = state.canary_weight or 0
    if index >= len(steps):
        return 100 - weight, FULL_SIZE
    if steps[index].set_weight is not None:
        before = weight_before(steps, index)
        return 100 - min(before, weight), max(before, weight)
    return 100 - weight, weight


def level_actions(spec: ModelDeploymentSpec, state: ModelDeploymentStatus, observations: Observations) -> list[Action]:
    """The tracks and weights the state asks for, on every pass (idempotent)."""
    stable_size, canary_size = _size_percents(spec, state)
    actions: list[Action] = []
    if state.stable_version is not None:
        actions.append(TrackPlan("stable", state.stable_version, stable_size))
    if state.canary_version is not None:
        actions.append(TrackPlan("canary", state.canary_version, canary_size))
    canary = observations.track(state.canary_version)
    available = canary is not None and canary.available_replicas > 0 and not canary.failed
    actions.append(Weights((state.canary_weight or 0) if available else 0, available))
    return actions


def _finish(run: _Pass) -> Transition:
    stable = run.obs.track(run.state.stable_version)
    stable_pods, stable_problem = (stable.available_replicas, stable.message) if stable is not None else (0, "")
    available = report.available_condition(run.state, stable_pods, stable_problem, run.waiting)
    progressing = report.progressing_condition(run.spec, run.state, run.waiting)
    run.update(message=report.status_message(run.state, available, progressing) or None)
    return Transition(
        state=run.state,
        actions=[*level_actions(run.spec, run.state, run.obs), *run.registry],
        events=run.events,
        conditions=[available, progressing],
        requeue_after=min(run.requeue) if run.requeue else None,
        steps_completed=run.completed,
        started_version=run.started,
    )
