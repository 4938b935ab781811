"""Pod customization shared by every workload the operator writes (`spec.pod` of a TrackingServer, applied to
its server, PgBouncer, managed database, migration Job and gc CronJob; `spec.pod` of a ModelDeployment):
scheduling, pull secrets, extra metadata, environment and read-only volumes (a CA bundle, a config file).

The Kubernetes types here are bounded subsets (every list and map has a maximum, as the CRD generator
requires) of the core/v1 ones, with the same field names, so `kubectl explain` reads like a Pod's. Volumes
are limited to Secret, ConfigMap and emptyDir: what keeps every pod within Pod Security "restricted".
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mlflow_operator.api.common import (
    DNS_LABEL_PATTERN,
    ApiModel,
    LocalObjectReference,
    ObjectName,
    QualifiedName,
    Rule,
    SecretKey,
)

LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
AnnotationValue = Annotated[str, StringConstraints(max_length=4096)]
TopologyKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
VolumeName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
MountPath = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/[^:]*$")]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
Values = Annotated[list[Annotated[str, StringConstraints(max_length=253)]], Field(max_length=32)]

# Volumes the operator mounts itself: a user's volume of the same name would replace one of them.
RESERVED_VOLUMES = ("tmp", "auth", "config", "script", "models", "data", "run")
# Labels that select the operator's pods: a user's value would detach pods from their Services and budgets.
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"


class Toleration(ApiModel):
    """Lets pods run on nodes with a matching taint."""

    key: QualifiedName | None = Field(default=None, description="Taint key; empty with Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: LabelValue | None = Field(default=None, description="Taint value, for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all effects when unset."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=31536000, description="For NoExecute: how long the pod stays bound after the taint."
    )


class NodeSelectorRequirement(ApiModel):
    key: QualifiedName = Field(description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(description="How to match.")
    values: Values | None = Field(default=None, description="Values for In, NotIn, Gt, Lt.")


class NodeSelectorTerm(ApiModel):
    match_expressions: list[NodeSelectorRequirement] = Field(max_length=16, description="All must match.")


class NodeSelector(ApiModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=8, description="Any may match.")


class PreferredSchedulingTerm(ApiModel):
    weight: int = Field(ge=1, le=100, description="Preference weight.")
    preference: NodeSelectorTerm = Field(description="The nodes preferred.")


class NodeAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        default=None, max_length=8, description="Nodes the pods prefer."
    )


class LabelSelectorRequirement(ApiModel):
    key: QualifiedName = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How to match.")
    values: Values | None = Field(default=None, description="Values for In and NotIn.")


class LabelSelector(ApiModel):
    match_labels: dict[QualifiedName, LabelValue] | None = Field(default=None, max_length=16, description="Labels.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=16, description="Expressions."
    )


class PodAffinityTerm(ApiModel):
    label_selector: LabelSelector | None = Field(default=None, description="The pods to be near or away from.")
    topology_key: TopologyKey = Field(description="Node label that defines 'near', e.g. kubernetes.io/hostname.")
    namespaces: list[ObjectName] | None = Field(default=None, max_length=16, description="Namespaces of those pods.")


class WeightedPodAffinityTerm(ApiModel):
    weight: int = Field(ge=1, le=100, description="Preference weight.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=8, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        default=None, max_length=8, description="Terms preferred."
    )


class Affinity(ApiModel):
    """Scheduling constraints, as in a Pod spec."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Run near these pods.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Run away from these pods.")


class TopologySpreadConstraint(ApiModel):
    """How to spread the pods; the label selector defaults to the component's own pods."""

    max_skew: int = Field(default=1, ge=1, le=100, description="Largest allowed difference between domains.")
    topology_key: TopologyKey = Field(description="Node label that defines a domain, e.g. topology.kubernetes.io/zone.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        default="ScheduleAnyway", description="What to do when the skew cannot be met."
    )
    label_selector: LabelSelector | None = Field(default=None, description="The pods counted; the component's own.")


class KeyReference(ApiModel):
    name: ObjectName = Field(description="Secret or ConfigMap name, in the same namespace.")
    key: SecretKey = Field(description="Key in it.")
    optional: bool | None = Field(default=None, description="Start without it when missing.")


class EnvVarSource(ApiModel):
    exactly_one_of = (("secret_key_ref", "config_map_key_ref"),)

    secret_key_ref: KeyReference | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyReference | None = Field(default=None, description="A key of a ConfigMap.")


class PodEnvVar(ApiModel):
    """An environment variable: a literal value or a key of a Secret or ConfigMap."""

    name: EnvName = Field(description="Variable name.")
    value: Annotated[str, StringConstraints(max_length=4096)] | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Where the value comes from.")

    admission_rules = (
        Rule(
            "!(has(self.value) && has(self.valueFrom))",
            "env: value and valueFrom are mutually exclusive",
            lambda env: env.value is None or env.value_from is None,
        ),
    )


class ObjectReference(ApiModel):
    name: ObjectName = Field(description="Secret or ConfigMap name, in the same namespace.")
    optional: bool | None = Field(default=None, description="Start without it when missing.")


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as environment variables."""

    exactly_one_of = (("secret_ref", "config_map_ref"),)

    prefix: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="Name prefix.")
    secret_ref: ObjectReference | None = Field(default=None, description="A Secret.")
    config_map_ref: ObjectReference | None = Field(default=None, description="A ConfigMap.")


class SecretVolume(ApiModel):
    secret_name: ObjectName = Field(description="The Secret.")
    optional: bool | None = Field(default=None, description="Start without it when missing.")


class ConfigMapVolume(ApiModel):
    name: ObjectName = Field(description="The ConfigMap.")
    optional: bool | None = Field(default=None, description="Start without it when missing.")


class EmptyDirVolume(ApiModel):
    size_limit: Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]+(Ki|Mi|Gi)?$")] | None = Field(
        default=None, description="Size limit, e.g. 1Gi."
    )


class Volume(ApiModel):
    """A Secret, ConfigMap or emptyDir volume (the kinds Pod Security "restricted" allows and that need no
    node access)."""

    exactly_one_of = (("secret", "config_map", "empty_dir"),)

    name: VolumeName = Field(description="Volume name; not one the operator uses itself.")
    secret: SecretVolume | None = Field(default=None, description="From a Secret.")
    config_map: ConfigMapVolume | None = Field(default=None, description="From a ConfigMap.")
    empty_dir: EmptyDirVolume | None = Field(default=None, description="Scratch space.")

    admission_rules = (
        Rule(
            "!(self.name in [" + ", ".join(f"'{name}'" for name in RESERVED_VOLUMES) + "])",
            f"volume name is used by the operator ({', '.join(RESERVED_VOLUMES)})",
            lambda volume: volume.name not in RESERVED_VOLUMES,
            field_path=".name",
        ),
    )


class VolumeMount(ApiModel):
    """Where a volume of `pod.volumes` appears in every container of the pod."""

    name: VolumeName = Field(description="A volume of pod.volumes.")
    mount_path: MountPath = Field(description="Absolute path in the containers.")
    read_only: bool = Field(default=True, description="Mounted read-only (the default).")
    sub_path: Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^/].*$|^$")] | None = Field(
        default=None, description="A path within the volume."
    )


class PodOptions(ApiModel):
    """What a platform team sets on every pod of a resource."""

    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=8, description="Secrets for pulling the images (a private registry or mirror)."
    )
    node_selector: dict[QualifiedName, LabelValue] | None = Field(
        default=None, max_length=16, description="Node labels the pods must run on."
    )
    tolerations: list[Toleration] | None = Field(default=None, max_length=16, description="Taints the pods tolerate.")
    affinity: Affinity | None = Field(default=None, description="Node and pod (anti-)affinity.")
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None, max_length=8, description="Replace the operator's default spread (across nodes, best effort)."
    )
    priority_class_name: ObjectName | None = Field(default=None, description="The pods' PriorityClass.")
    labels: dict[QualifiedName, LabelValue] | None = Field(
        default=None, max_length=32, description="Extra pod labels (not app.kubernetes.io/*: those select the pods)."
    )
    annotations: dict[QualifiedName, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        default=None, max_length=32, description="Extra pod annotations."
    )
    service_account_annotations: dict[QualifiedName, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        default=None,
        max_length=16,
        description="Annotations of the tracking server's or model servers' ServiceAccount, e.g. "
        "eks.amazonaws.com/role-arn (IRSA) or "
        "iam.gke.io/gcp-service-account (Workload Identity).",
    )
    env: list[PodEnvVar] | None = Field(default=None, max_length=32, description="Extra env for every container.")
    env_from: list[EnvFromSource] | None = Field(
        default=None, max_length=8, description="Extra env from Secrets or ConfigMaps, for every container."
    )
    volumes: list[Volume] | None = Field(default=None, max_length=8, description="Extra volumes.")
    volume_mounts: list[VolumeMount] | None = Field(
        default=None, max_length=8, description="Where the extra volumes appear, in every container."
    )

    admission_rules = (
        Rule(
            "!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/'))",
            "pod.labels: app.kubernetes.io/* labels select the operator's pods and cannot be set",
            lambda pod: not any(key.startswith(RESERVED_LABEL_PREFIX) for key in pod.labels or {}),
            field_path=".labels",
        ),
        Rule(
            "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
            "self.volumes.exists(v, v.name == m.name))",
            "pod.volumeMounts: every mount names a volume of pod.volumes",
            lambda pod: {m.name for m in pod.volume_mounts or []} <= {v.name for v in pod.volumes or []},
            field_path=".volumeMounts",
        ),
    )
