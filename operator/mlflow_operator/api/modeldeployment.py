"""ModelDeployment: ship a registered model version to an inference Deployment with a canary rollout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from mlflow_operator.api.common import (
    DNS_LABEL_PATTERN,
    REGISTRY_CONNECTION_RULES,
    ApiModel,
    Condition,
    DateTime,
    Duration,
    EnvVar,
    Image,
    ObjectName,
    RegistryConnection,
    ResourceRequirements,
    Rule,
    Url,
    conditions_field,
)
from mlflow_operator.api.pod import PodOptions
from mlflow_operator.api.registeredmodel import AliasName, ModelName, TagKey

MAX_MESSAGE = 1024
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE)]


class ModelRef(ApiModel):
    """Which registered version to serve: an alias to follow, or a pinned version."""

    exactly_one_of = (("alias", "version"),)

    registered_model: ModelName = Field(description="Registered model name in the MLflow registry.")
    alias: AliasName | None = Field(default=None, description="Follow this alias; a move starts a new rollout.")
    version: int | None = Field(default=None, ge=1, description="Serve exactly this version.")


class Runtime(ApiModel):
    """The model server container."""

    image: Image | None = Field(default=None, description="Model server image; the documented default when unset.")
    resources: ResourceRequirements | None = Field(default=None, description="Container resources.")
    env: list[EnvVar] | None = Field(default=None, max_length=64, description="Extra environment variables.")


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler for each track."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lower bound.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound.")
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage", description="Average CPU target."
    )

    admission_rules = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not exceed maxReplicas",
            lambda a: a.min_replicas <= a.max_replicas,
            field_path=".minReplicas",
        ),
    )


class Pause(ApiModel):
    """Wait a duration, or until promoted when no duration is given."""

    duration: Duration | None = Field(default=None, description="How long to wait; indefinitely when unset.")


class AnalysisStep(ApiModel):
    """Run spec.analysis for a number of intervals before going on."""

    count: int | None = Field(default=None, ge=1, le=1000, description="Intervals to run; analysis.count when unset.")


class CanaryStep(ApiModel):
    """One step: exactly one of setWeight, pause or analysis."""

    exactly_one_of = (("set_weight", "pause", "analysis"),)

    set_weight: int | None = Field(default=None, ge=0, le=100, description="Percent of traffic to the canary.")
    pause: Pause | None = Field(default=None, description="Wait before the next step.")
    analysis: AnalysisStep | None = Field(default=None, description="Check metrics before the next step.")


class Canary(ApiModel):
    """A canary rollout."""

    steps: list[CanaryStep] = Field(min_length=1, max_length=32, description="Steps, in order.")


class Strategy(ApiModel):
    """How a new version replaces the old; a plain rolling update when unset."""

    canary: Canary | None = Field(default=None, description="Canary steps.")


class ParentRef(ApiModel):
    """A Gateway (or other parent) the HTTPRoute attaches to."""

    name: ObjectName = Field(description="Gateway name.")
    namespace: Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL_PATTERN)] | None = Field(
        default=None, description="Gateway namespace; the ModelDeployment's when unset."
    )
    section_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Listener name."
    )


class HeaderMatch(ApiModel):
    """Requests with this header go to the canary (A/B testing)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")] = (
        Field(description="Header name.")
    )
    value: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(description="Exact value.")


class GatewayAPIRouting(ApiModel):
    """Weights on an HTTPRoute (gateway.networking.k8s.io/v1) owned by the operator."""

    parent_refs: list[ParentRef] = Field(min_length=1, max_length=16, description="Gateways to attach to.")
    hostnames: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        default=None, max_length=16, description="Host names the route serves."
    )
    header_match: HeaderMatch | None = Field(default=None, description="Header-based routing to the canary.")
    mirror_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Mirror this percent of stable traffic to the canary (shadow).",
    )


class ReplicaRatioRouting(ApiModel):
    """No router: the split is approximated by replica counts behind one Service."""


class TrafficRouting(ApiModel):
    """Exactly one traffic router."""

    exactly_one_of = (("gateway_api", "replica_ratio"),)

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI", description="Gateway API.")
    replica_ratio: ReplicaRatioRouting | None = Field(default=None, description="Replica-count approximation.")


class ThresholdRange(ApiModel):
    """Inclusive bounds a metric must stay within."""

    min: float | None = Field(default=None, description="Lowest passing value.")
    max: float | None = Field(default=None, description="Highest passing value.")

    admission_rules = (
        Rule(
            "has(self.min) || has(self.max)",
            "thresholdRange needs min or max",
            lambda t: t.min is not None or t.max is not None,
        ),
        Rule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "thresholdRange.min must not exceed max",
            lambda t: t.min is None or t.max is None or t.min <= t.max,
        ),
    )


AnalysisTemplate = Literal["successRate", "latencyP99"]


class AnalysisMetric(ApiModel):
    """A Prometheus instant query, written out or built in, and its passing range. No data or NaN never
    passes."""

    exactly_one_of = (("query", "template"),)

    name: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] = Field(
        description="Metric name, shown in status."
    )
    template: AnalysisTemplate | None = Field(
        default=None,
        description="A built-in query over the canary pods' request metrics (the default model server's): "
        "successRate is the share of /invocations requests answered without a 5xx or a model error (0-1), "
        "latencyP99 the 99th percentile of their latency in seconds; both over the last analysis.interval "
        "(at least 30s).",
    )
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="PromQL returning one sample; {{canary}} and {{stable}} (the track Services), "
        "{{canaryVersion}}, {{stableVersion}} and {{namespace}} are substituted.",
    )
    threshold_range: ThresholdRange = Field(description="Passing range.")


class Analysis(ApiModel):
    """Metric analysis of the canary."""

    prometheus_address: Url | None = Field(
        default=None, description="Prometheus base URL; the operator's --prometheus-address when unset."
    )
    interval: Duration = Field(default="30s", description="Time between measurements.")
    count: int = Field(default=5, ge=1, le=1000, description="Measurements per analysis step.")
    failure_limit: int = Field(default=1, ge=0, le=100, description="Failed measurements tolerated.")
    inconclusive_limit: int = Field(default=1, ge=0, le=100, description="Inconclusive measurements before pausing.")
    sample_size_query: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None,
        description="PromQL giving the number of requests measured; below minSampleSize is inconclusive.",
    )
    min_sample_size: int | None = Field(default=None, ge=1, description="Minimum value of sampleSizeQuery.")
    metrics: list[AnalysisMetric] = Field(
        min_length=1,
        max_length=16,
        description="Metrics that must all pass.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class Promotion(ApiModel):
    """What to write back to the registry on success."""

    set_alias: AliasName | None = Field(default=None, description="Move this alias to the promoted version.")


def canary_steps(spec: ModelDeploymentSpec) -> list[CanaryStep]:
    return spec.strategy.canary.steps if spec.strategy is not None and spec.strategy.canary is not None else []


class ModelDeploymentSpec(RegistryConnection):
    """Desired state of a model deployment."""

    model: ModelRef = Field(description="The registered version to serve.")
    runtime: Runtime | None = Field(default=None, description="Model server container.")
    pod: PodOptions | None = Field(
        default=None, description="Scheduling, pull secrets, metadata, env and volumes for the model server pods."
    )
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Pods per track (1 when unset).")
    autoscaling: Autoscaling | None = Field(default=None, description="HPA instead of fixed replicas.")
    strategy: Strategy | None = Field(default=None, description="Rollout strategy.")
    traffic_routing: TrafficRouting | None = Field(default=None, description="Traffic router for canary weights.")
    analysis: Analysis | None = Field(default=None, description="Canary metric analysis.")
    promotion: Promotion | None = Field(default=None, description="Registry write-back on success.")
    poll_interval: Duration = Field(default="1m", description="How often the model alias is resolved.")
    progress_deadline: Duration = Field(
        default="10m",
        description="How long a version's pods may take to become ready (the model downloads and loads) "
        "before the version counts as failed and a canary is rolled back.",
    )

    admission_rules = (
        *REGISTRY_CONNECTION_RULES,
        Rule(
            "!(has(self.replicas) && has(self.autoscaling))",
            "set replicas or autoscaling, not both",
            lambda spec: spec.replicas is None or spec.autoscaling is None,
            field_path=".autoscaling",
        ),
        Rule(
            "!has(self.strategy) || !has(self.strategy.canary) || "
            "!self.strategy.canary.steps.exists(s, has(s.analysis)) || has(self.analysis)",
            "strategy.canary.steps[].analysis requires spec.analysis",
            lambda spec: not any(step.analysis is not None for step in canary_steps(spec)) or spec.analysis is not None,
            field_path=".analysis",
        ),
        Rule(
            "!has(self.strategy) || !has(self.strategy.canary) || has(self.trafficRouting)",
            "strategy.canary requires trafficRouting (gatewayAPI or replicaRatio)",
            lambda spec: spec.strategy is None or spec.strategy.canary is None or spec.traffic_routing is not None,
            field_path=".trafficRouting",
        ),
    )


RolloutPhase = Literal["Progressing", "Paused", "Succeeded", "RolledBack", "Degraded"]
MeasurementOutcome = Literal["Passed", "Failed", "Inconclusive"]
RolloutOutcome = Literal["Succeeded", "RolledBack", "Superseded"]
# The rollout's status is also the state of its state machine (logic.rollout), which is pure: it never
# changes a state it was given, and frozen models make sure of that.
ROLLOUT_STATE = ConfigDict(frozen=True)


class ResolvedModel(ApiModel):
    """The registry's answer for spec.model."""

    version: int | None = Field(default=None, description="Version number.")
    source: Annotated[str, StringConstraints(max_length=1024)] | None = Field(default=None, description="Source URI.")
    run_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="Source run.")


class AnalysisResult(ApiModel):
    """One measurement of one metric."""

    model_config = ROLLOUT_STATE

    metric: Annotated[str, StringConstraints(max_length=63)] = Field(description="Metric name.")
    value: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="Value measured.")
    outcome: MeasurementOutcome = Field(description="Verdict.")
    message: Message | None = Field(default=None, description="Why.")
    time: DateTime = Field(description="When (RFC 3339).")


class RolloutRecord(ApiModel):
    """One finished rollout."""

    model_config = ROLLOUT_STATE

    version: int = Field(description="Version rolled out.")
    outcome: RolloutOutcome = Field(description="How it ended.")
    message: Message | None = Field(default=None, description="Why.")
    time: DateTime = Field(description="When it ended (RFC 3339).")


class AnalysisRun(ApiModel):
    """Counts of the analysis step in progress."""

    model_config = ROLLOUT_STATE

    passed: int = Field(default=0, ge=0, description="Passed measurements.")
    failed: int = Field(default=0, ge=0, description="Failed measurements.")
    inconclusive: int = Field(default=0, ge=0, description="Inconclusive measurements (no data, NaN, errors).")
    last_measured_at: DateTime | None = Field(default=None, description="When the last measurement was taken.")


class RegistryWrite(ApiModel):
    """A write to the registry a rollout decided and the registry has not confirmed yet."""

    version: int = Field(description="Model version.")
    alias: AliasName | None = Field(default=None, description="Alias to point at the version.")
    tags: dict[TagKey, Annotated[str, StringConstraints(max_length=1024)]] | None = Field(
        default=None, max_length=8, description="Tags to set on the version."
    )


class ModelDeploymentStatus(ApiModel):
    """Observed state of a model deployment."""

    model_config = ROLLOUT_STATE

    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted on.")
    phase: RolloutPhase | None = Field(default=None, description="Rollout phase.")
    resolved: ResolvedModel | None = Field(default=None, description="What spec.model resolves to now.")
    stable_version: int | None = Field(default=None, description="Version serving stable traffic.")
    canary_version: int | None = Field(default=None, description="Version being rolled out.")
    canary_weight: int | None = Field(default=None, ge=0, le=100, description="Percent of traffic on the canary.")
    weight_approximate: bool | None = Field(default=None, description="True when replicaRatio approximates weight.")
    current_step: int | None = Field(default=None, ge=0, description="Index of the current canary step.")
    step_started_at: DateTime | None = Field(default=None, description="When the current step began.")
    analysis_results: list[AnalysisResult] | None = Field(
        default=None, max_length=50, description="Latest analysis measurements."
    )
    history: list[RolloutRecord] | None = Field(default=None, max_length=10, description="Recent rollouts.")
    effective_canary_weight: int | None = Field(
        default=None, ge=0, le=100, description="The split the router really achieves (replicaRatio rounds)."
    )
    analysis_run: AnalysisRun | None = Field(default=None, description="The analysis step in progress.")
    rolled_back_version: int | None = Field(
        default=None, description="Not retried until the registry resolves another version or a user asks."
    )
    rollout_hash: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Fingerprint of model, strategy and analysis: a change supersedes the rollout."
    )
    handled_request: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="The last promote/abort/retry annotation acted on."
    )
    pending_registry_writes: list[RegistryWrite] | None = Field(
        default=None,
        max_length=16,
        description="Registry tags and aliases decided by a rollout, retried until the registry accepts them.",
    )
    message: Message | None = Field(default=None, description="Human-readable summary.")
    conditions: list[Condition] = conditions_field()


__all__ = ["ModelDeploymentSpec", "ModelDeploymentStatus", "Url"]
