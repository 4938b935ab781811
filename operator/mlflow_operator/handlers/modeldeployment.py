"""ModelDeployment reconciler: resolve the model, run one step of the rollout, execute its actions.

Each pass:
1. resolves spec.model in the registry (an alias every spec.pollInterval, a failure with backoff);
2. reads the Deployment of each model version, the request annotations and, when the analysis step is
   due, one Prometheus measurement;
3. calls the pure state machine (logic.rollout.step) and executes its level actions: the tracks'
   Deployments, the Services and the router's objects, applied in that order, then the removal of versions
   no longer listed (traffic leaves a version before its pods do);
4. writes status (the rollout state, the registry writes it decided, conditions) and the Events;
5. writes the decided tags and alias moves to the registry, which may be down: they stay in
   status.pendingRegistryWrites until it accepts them, so a rollback never waits for the registry and
   no tag is lost to an outage or a restart.
If applying the children fails, status is not written: the next pass computes the same transition from
the same status and applies it again (every action is idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightkube.core.exceptions import ApiError

from mlflow_operator import metrics
from mlflow_operator.adapters import prometheus
from mlflow_operator.adapters.kube import Kube
from mlflow_operator.adapters.registry import ModelRegistry, RegistryError
from mlflow_operator.api.common import duration_seconds
from mlflow_operator.api.kinds import MODEL_DEPLOYMENT, REGISTERED_MODEL
from mlflow_operator.api.modeldeployment import GatewayAPIRouting, ModelDeploymentSpec, ModelDeploymentStatus
from mlflow_operator.builders import analysis as queries
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.builders.common import selector
from mlflow_operator.handlers import memo, registry_events
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import (
    AppliedChildren,
    ResourcePass,
    SecretProblem,
    first_sight,
    validated,
    write_status,
)
from mlflow_operator.handlers.registry_access import RegistryAccess, registry_access, wake_tracking_server
from mlflow_operator.handlers.registry_reader import reader_access
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import alias_ownership, gateway_route, rollout
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import modeldeployment as decide
from mlflow_operator.logic.backoff import RetrySchedule, after_failure, exponential_backoff
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339
from mlflow_operator.logic.rollout_analysis import Measurement
from mlflow_operator.logic.rollout_report import AVAILABLE, PROGRESSING

CONTROLLER = "modeldeployment"
CONDITIONS = (
    decide.MODEL_RESOLVED,
    AVAILABLE,
    PROGRESSING,
    alias_ownership.ALIAS_CONFLICT,
    registry_events.REGISTRY_EVENTS,
    cond.READY,
)
EVENT_READER_FAILED = "RegistryReaderFailed"
RETRY_SECONDS = 5.0  # the first retry after a registry or API failure; doubled up to 5 minutes
PROMETHEUS_TIMEOUT_SECONDS = 10.0
GATEWAY_API = "gateway.networking.k8s.io/v1"


@dataclass
class OperatorDefaults:
    """Operator-wide settings from the command line (handlers.configure)."""

    prometheus_address: str | None = None


DEFAULTS = OperatorDefaults()

# Per ModelDeployment (uid): the last answer of the registry, and consecutive failures of applying the
# children ("apply") or of writing back to the registry ("registry"), for their backoff. In memory on
# purpose: after a restart the model is resolved again at once, which is what a restart needs.
_resolutions: Memo[decide.Resolution] = Memo(MODEL_DEPLOYMENT.kind)
# The children the last pass applied: the same children are applied again only after REAPPLY_SECONDS, so
# someone's edit of a child is put back within that time (at once after a restart).
_applied = AppliedChildren(MODEL_DEPLOYMENT.kind)
_retries: Memo[RetrySchedule] = Memo(MODEL_DEPLOYMENT.kind)  # under "apply", "registry", "reader"


@dataclass
class Pass(ResourcePass):
    """One reconcile pass of one ModelDeployment."""

    rt: Runtime
    kube: Kube
    body: dict[str, Any]
    spec: ModelDeploymentSpec
    now: datetime
    access: RegistryAccess | None = None
    # How long a good answer of the registry stands (pollInterval, longer while registry events arrive), and
    # the RegistryEvents condition saying which.
    poll_seconds: float = 60.0
    events_condition: ConditionUpdate | None = None
    credentials_revision: str | None = None  # of the pods' own reader (handlers.registry_reader)
    requeue: list[float] = field(default_factory=list)
    aliases: alias_ownership.AliasReport = alias_ownership.NO_OWNERS

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    async def event(self, type_: str, reason: str, message: str) -> None:
        await self.rt.status.post_event(self.body, type_, reason, message, rfc3339(self.now))


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        # Children go with their owner references; the registry keeps its versions and tags.
        forget(body)
        return None
    spec, invalid = validated(MODEL_DEPLOYMENT, body)
    if spec is None:
        await write_status(rt, MODEL_DEPLOYMENT, body, invalid)
        return None
    md = Pass(rt, rt.kube(CONTROLLER), body, spec, rt.now())
    md.events_condition, md.poll_seconds = registry_events.follower_events(
        rt, body, duration_seconds(spec.poll_interval)
    )
    md.aliases = alias_ownership.alias_report(spec, alias_owners(md))
    resolution = await resolve_model(md)
    await use_own_reader(md, resolution)
    observations = await observe(md, resolution)
    state = rollout.rollout_state(md.status)
    # An alias a RegisteredModel owns is not moved on promotion: the state machine never sees it.
    transition = rollout.step(md.aliases.rollout_spec(spec), state, observations, md.now)
    inputs = await apply_children(md, transition, observations)
    if inputs is None:
        return min(md.requeue)
    await report(md, resolution, transition, inputs)
    await flush_registry_writes(md)
    metrics.observe_rollout(md.namespace, md.name, transition.state.phase, transition.state.canary_weight or 0)
    if transition.requeue_after is not None:
        md.requeue.append(transition.requeue_after)
    md.requeue.append(seconds_until_resolution(md, resolution))
    return max(0.5, min(md.requeue))


def forget(body: dict[str, Any]) -> None:
    """A deleted ModelDeployment: what the handlers remembered of it (handlers.memo) and its rollout series."""
    meta = body["metadata"]
    memo.forget_object(MODEL_DEPLOYMENT.kind, meta["uid"])
    metrics.forget_rollout(meta["namespace"], meta["name"])


# --------------------------------------------------------------------------------------------- the model


async def resolve_model(md: Pass) -> decide.Resolution:
    """spec.model in the registry, at most every pollInterval (failures: with backoff)."""
    previous = _resolutions.get(md.uid)
    retry = exponential_backoff(previous.failures if previous else 1, base=RETRY_SECONDS)
    try:
        md.access = await registry_access(md.rt, md.body, md.spec)
    except SecretProblem as problem:
        return remember(md, decide.unresolved(md.spec, md.now, problem.reason, problem.message, failures(previous)))
    event_at = registry_events.last_event(MODEL_DEPLOYMENT.kind, md.uid)
    if previous is not None and not decide.resolution_due(md.spec, previous, md.now, retry, md.poll_seconds, event_at):
        return previous
    model = md.spec.model
    try:
        registry = ModelRegistry(md.access.endpoint)
        found = await registry.resolve_async(model.registered_model, alias=model.alias, version=model.version)
    except RegistryError as problem:
        return remember(md, decide.unresolved(md.spec, md.now, problem.reason, problem.message, failures(previous)))
    if previous is None or previous.version != found.version:
        wake_tracking_server(md.rt, md.spec, md.namespace)
    return remember(md, decide.resolved(md.spec, md.now, found.version, found.status, found.source, found.run_id))


async def use_own_reader(md: Pass, resolution: decide.Resolution) -> None:
    """Model servers never get a TrackingServer's admin credentials: they read the registry as this
    ModelDeployment's own MLflow user (handlers.registry_reader); the operator keeps the admin's."""
    access = md.access
    if access is None or not access.admin:
        return
    served = frozenset({(resolution.source, resolution.run_id or "")}) if resolution.source else frozenset()
    try:
        reader = await reader_access(md.rt, md.body, access, md.spec.model.registered_model, served)
    except SecretProblem as problem:
        md.access = None  # nothing new starts: never with the admin's credentials
        await md.event("Warning", EVENT_READER_FAILED, problem.message)
        md.requeue.append(retry_after_failure(md, "reader").delay(md.now))
        return
    md.access, md.credentials_revision = reader.access, reader.revision
    if reader.problem is None:
        _retries.pop(md.uid, "reader")
        return
    await md.event("Warning", EVENT_READER_FAILED, f"setting up the model servers' MLflow user: {reader.problem}")
    md.requeue.append(retry_after_failure(md, "reader").delay(md.now))


def failures(previous: decide.Resolution | None) -> int:
    return (previous.failures if previous is not None else 0) + 1


def remember(md: Pass, resolution: decide.Resolution) -> decide.Resolution:
    return _resolutions.set(md.uid, resolution)


def seconds_until_resolution(md: Pass, resolution: decide.Resolution) -> float:
    retry = exponential_backoff(max(1, resolution.failures), base=RETRY_SECONDS)
    due = decide.next_resolution_at(md.spec, resolution, retry, md.poll_seconds)
    return max(0.0, (due - md.now).total_seconds())


# ---------------------------------------------------------------------------------------------- observing


def instance_selector(name: str) -> dict[str, str]:
    return selector(name, build.COMPONENT, build.APP_NAME)


async def observe(md: Pass, resolution: decide.Resolution) -> rollout.Observations:
    deployments = await md.kube.list("apps/v1", "Deployment", md.namespace, instance_selector(md.name))
    tracks = []
    for deployment in deployments:
        label = deployment["metadata"].get("labels", {}).get(build.VERSION_LABEL, "")
        if label.isdigit():
            tracks.append(decide.track_observation(int(label), deployment))
    state = rollout.rollout_state(md.status)
    measurement = await measure(md, state) if rollout.measurement_due(md.spec, state, md.now) else None
    return rollout.Observations(
        resolved_version=resolution.version,
        tracks=tuple(tracks),
        measurement=measurement,
        request=decide.user_request(md.body["metadata"]),
        resource=f"{md.namespace}/{md.name}",
    )


async def measure(md: Pass, state: ModelDeploymentStatus) -> Measurement:
    analysis = md.spec.analysis
    assert analysis is not None  # measurement_due is False without spec.analysis
    context = queries.query_context(md.name, md.namespace, analysis, state.canary_version, state.stable_version)
    size = analysis.sample_size_query
    return await prometheus.measure(
        analysis.prometheus_address or DEFAULTS.prometheus_address,
        [(metric.name, queries.metric_query(metric, context)) for metric in analysis.metrics],
        queries.substitute(size, context) if size else None,
        timeout=PROMETHEUS_TIMEOUT_SECONDS,
    )


# ---------------------------------------------------------------------------------------------- executing


def model_inputs(md: Pass, transition: rollout.Transition, mirror_supported: bool) -> build.ModelDeploymentInputs:
    access = md.access
    return build.ModelDeploymentInputs(
        name=md.name,
        namespace=md.namespace,
        spec=md.spec,
        tracking_uri=access.endpoint.tracking_uri if access is not None else "",
        credentials=access.secret if access is not None else None,
        tracks=tuple(transition.tracks),
        weights=transition.weights,
        mirror_supported=mirror_supported,
        images=md.rt.images,
        credentials_revision=md.credentials_revision,
    )


def gateway_routing(spec: ModelDeploymentSpec) -> GatewayAPIRouting | None:
    return spec.traffic_routing.gateway_api if spec.traffic_routing is not None else None


async def gateways_can_mirror(md: Pass, canary_available: bool) -> bool:
    """Whether the classes of the parent Gateways support mirroring; only asked while a mirror would be written
    (the spec mirrors and the canary has ready pods), so other passes cost no API call. A Gateway or class that
    cannot be read (absent, or no Gateway API) is trusted: the route's own status then says what is wrong."""
    routing = gateway_routing(md.spec)
    if routing is None or routing.mirror_percent is None or not canary_available:
        return True
    classes = []
    for parent in routing.parent_refs:
        gateway = await md.kube.get(GATEWAY_API, "Gateway", parent.name, parent.namespace or md.namespace)
        class_name = (gateway or {}).get("spec", {}).get("gatewayClassName")
        gateway_class = await md.kube.get(GATEWAY_API, "GatewayClass", class_name, None) if class_name else None
        classes.append(gateway_route.supported_features(gateway_class))
    return gateway_route.mirror_supported(classes)


async def route_status(md: Pass, inputs: build.ModelDeploymentInputs) -> ConditionUpdate | None:
    """TrafficRouted from the HTTPRoute's status, for gatewayAPI routing once a route exists."""
    routing = gateway_routing(md.spec)
    if routing is None or not inputs.tracks:
        return None
    route = await md.kube.get(GATEWAY_API, "HTTPRoute", inputs.names.route, md.namespace)
    mirror_wanted = routing.mirror_percent is not None and inputs.weights.canary_available
    return gateway_route.route_condition(route, mirror_wanted, inputs.mirror_supported)


async def apply_children(
    md: Pass, transition: rollout.Transition, observations: rollout.Observations
) -> build.ModelDeploymentInputs | None:
    """Apply the tracks, Services and router, then remove the versions no longer listed. None when the
    cluster refused something: reported, and the same transition is computed again on the next pass."""
    if transition.tracks and md.access is None:
        # Pods need the registry's address; without it (a missing Secret) nothing new is started.
        md.requeue.append(RETRY_SECONDS)
        return None
    try:
        inputs = model_inputs(md, transition, await gateways_can_mirror(md, transition.weights.canary_available))
    except ApiError as error:
        await report_apply_failure(md, error)
        return None
    objects = build.all_objects(inputs)
    wanted = {plan.version for plan in inputs.tracks}
    if unchanged_since_applied(md, objects, wanted, {track.version for track in observations.tracks}):
        return inputs
    try:
        for obj in objects:
            await md.kube.apply(obj, owner=md.body)
        await prune_versions(md, wanted)
    except ApiError as error:
        _applied.forget(md.uid)
        await report_apply_failure(md, error)
        return None
    _applied.remember(md.uid, objects, md.now)
    return inputs


def unchanged_since_applied(md: Pass, objects: list[dict[str, Any]], wanted: set[int], running: set[int]) -> bool:
    """Whether this pass would apply exactly what the last one did, less than REAPPLY_SECONDS ago, with a
    Deployment for each version wanted and none other: then applying again changes nothing but costs ~10
    API calls, and passes that only poll the alias or wait for a step would queue behind each other (the
    ModelDeployment benchmark measured 50 deployments waiting ~10 s for a worker)."""
    return running == wanted and _applied.unchanged(md.uid, objects, md.now)


async def prune_versions(md: Pass, wanted: set[int]) -> None:
    """Per-version objects (Deployment, budget, autoscaler) of versions the rollout no longer runs."""
    for api_version, kind in build.pruned_kinds():
        for obj in await md.kube.list(api_version, kind, md.namespace, instance_selector(md.name)):
            label = obj["metadata"].get("labels", {}).get(build.VERSION_LABEL, "")
            if label.isdigit() and int(label) not in wanted:
                await md.kube.delete(api_version, kind, obj["metadata"]["name"], md.namespace)


async def report_apply_failure(md: Pass, error: ApiError) -> None:
    """E.g. the Gateway API CRDs are not installed (404 on HTTPRoute), or a quota refuses a Deployment."""
    code = error.status.code if error.status else None
    message = f"applying the children failed ({code}): {error.status.message if error.status else error}"
    if code == 404:
        message += " (is the router's API installed? gatewayAPI needs the Gateway API CRDs)"
    failure = ConditionUpdate(cond.READY, "False", decide.REASON_ROUTER_UNAVAILABLE, message[:1024])
    await write_status(md.rt, MODEL_DEPLOYMENT, md.body, [*first_sight(md.body, CONDITIONS), failure])
    md.requeue.append(retry_after_failure(md, "apply").delay(md.now))


def alias_owners(md: Pass) -> list[alias_ownership.AliasOwner]:
    """The RegisteredModels of this namespace, from the controllers' cache (no API call per pass)."""
    owners = []
    for body in md.rt.objects(REGISTERED_MODEL.kind):
        if body["metadata"]["namespace"] == md.namespace and not body["metadata"].get("deletionTimestamp"):
            spec, _ = validated(REGISTERED_MODEL, body)
            if spec is not None:
                owners.append(alias_ownership.alias_owner(body["metadata"]["name"], spec))
    return owners


def retry_after_failure(md: Pass, what: str) -> RetrySchedule:
    """The backoff after a failure to apply the children or to write to the registry (logic.backoff: a pass
    woken before the retry is due sees the same failure and does not count it again)."""
    return _retries.set(md.uid, after_failure(_retries.get(md.uid, what), md.now, base=RETRY_SECONDS), what)


# ---------------------------------------------------------------------------------------------- reporting


async def report(
    md: Pass, resolution: decide.Resolution, transition: rollout.Transition, inputs: build.ModelDeploymentInputs
) -> None:
    _retries.pop(md.uid, "apply")
    pending = [*(md.status.get("pendingRegistryWrites") or []), *decide.registry_writes(transition.actions)]
    effective = build.effective_weights(inputs)
    fields = {
        **rollout.rollout_status(transition.state),
        "resolved": resolution.status_fields() or md.status.get("resolved"),
        "weightApproximate": inputs.router.approximate or None,
        "effectiveCanaryWeight": effective.canary,
        "pendingRegistryWrites": pending or None,
    }
    routed = await route_status(md, inputs)
    updates = [*first_sight(md.body, CONDITIONS), resolution.condition, *transition.conditions]
    updates.append(md.aliases.condition)
    if md.events_condition is not None:
        updates.append(md.events_condition)
    if routed is not None:
        updates.append(routed)
    updates.append(decide.ready_condition([resolution.condition, *transition.conditions], routed))
    await write_status(md.rt, MODEL_DEPLOYMENT, md.body, updates, fields)
    md.body = {**md.body, "status": {**md.status, **fields}}
    for event in transition.events:
        await md.event(event.type, event.reason, event.message)


async def flush_registry_writes(md: Pass) -> None:
    """Tags and alias moves the rollout decided, oldest first; status keeps what the registry refused."""
    pending: list[dict[str, Any]] = list(md.status.get("pendingRegistryWrites") or [])
    if not pending or md.access is None:
        return
    done = 0
    try:
        registry = ModelRegistry(md.access.endpoint)
        for write in pending:
            await write_to_registry(registry, md.spec.model.registered_model, write)
            done += 1
    except RegistryError as problem:
        first = (md.uid, "registry") not in _retries
        if first:  # one Warning per outage, not one per retry
            await md.event("Warning", problem.reason, f"registry write-back pending (retried): {problem.message}")
        md.requeue.append(retry_after_failure(md, "registry").delay(md.now))
    if done:
        if done == len(pending):
            _retries.pop(md.uid, "registry")
        remaining = pending[done:] or None
        await md.rt.status.patch_status(
            MODEL_DEPLOYMENT.kind, md.name, md.namespace, {"pendingRegistryWrites": remaining}
        )


async def write_to_registry(registry: ModelRegistry, model: str, write: dict[str, Any]) -> None:
    version = int(write["version"])
    if write.get("alias"):
        await registry.set_alias_async(model, write["alias"], version)
    if write.get("tags"):
        await registry.set_version_tags_async(model, version, write["tags"])


__all__: Sequence[str] = ["DEFAULTS", "forget", "reconcile"]
