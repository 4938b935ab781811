"""A resource's `spec.pod` (api.pod.PodOptions) applied to a pod template the builders made: scheduling and
pull secrets on the pod; extra labels and annotations beside the operator's (which win: they select the
pods and roll them); extra env, envFrom and volume mounts in every container, init containers included,
with the operator's own variables after the user's (the later definition of a name is the one a container
sees); extra volumes after the operator's."""

from __future__ import annotations

import copy
from typing import Any, Literal

from mlflow_operator.api.pod import PodOptions
from mlflow_operator.builders.common import Obj


def _wire(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def with_pod_options(template: Obj, options: PodOptions | None, match: dict[str, str]) -> Obj:
    """The template with `options` applied; `match` selects the component's own pods (the default label
    selector of a topology spread constraint)."""
    if options is None:
        return template
    result = copy.deepcopy(template)
    meta, pod = result.setdefault("metadata", {}), result["spec"]
    if options.labels:
        meta["labels"] = {**options.labels, **meta.get("labels", {})}
    if options.annotations:
        meta["annotations"] = {**options.annotations, **meta.get("annotations", {})}
    pod.update(_scheduling(options, match))
    if options.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in options.image_pull_secrets]
    if options.volumes:
        pod["volumes"] = [*pod.get("volumes", []), *(_wire(volume) for volume in options.volumes)]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        _add_to_container(container, options)
    return result


def _scheduling(options: PodOptions, match: dict[str, str]) -> Obj:
    fields: Obj = {}
    if options.node_selector:
        fields["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        fields["tolerations"] = [_wire(toleration) for toleration in options.tolerations]
    if options.affinity is not None:
        fields["affinity"] = _wire(options.affinity)
    if options.topology_spread_constraints:
        fields["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": dict(match)}, **_wire(constraint)}
            for constraint in options.topology_spread_constraints
        ]
    if options.priority_class_name:
        fields["priorityClassName"] = options.priority_class_name
    return fields


def _add_to_container(container: Obj, options: PodOptions) -> None:
    if options.env:
        container["env"] = [*(_wire(env) for env in options.env), *container.get("env", [])]
    if options.env_from:
        container["envFrom"] = [*container.get("envFrom", []), *(_wire(source) for source in options.env_from)]
    if options.volume_mounts:
        container["volumeMounts"] = [*container.get("volumeMounts", []), *(_wire(m) for m in options.volume_mounts)]


def service_account_annotations(options: PodOptions | None) -> dict[str, str]:
    return dict((options.service_account_annotations or {}) if options is not None else {})


WorkloadKind = Literal["Deployment", "StatefulSet", "Job", "CronJob"]
API_VERSIONS: dict[WorkloadKind, str] = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


def workload(kind: WorkloadKind, meta: Obj, spec: Obj, options: PodOptions | None) -> Obj:
    """A workload of `kind` with `options`, its resource's spec.pod, applied to its pod template."""
    return customized({"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": meta, "spec": spec}, options)


def customized(workload: Obj, options: PodOptions | None) -> Obj:
    """A Deployment, StatefulSet, Job or CronJob with `options` applied to its pod template."""
    if options is None:
        return workload
    result = copy.deepcopy(workload)
    holder = result["spec"]["jobTemplate"]["spec"] if result["kind"] == "CronJob" else result["spec"]
    template = holder["template"]
    match = (holder.get("selector") or {}).get("matchLabels") or template["metadata"]["labels"]
    holder["template"] = with_pod_options(template, options, match)
    return result
