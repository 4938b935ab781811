"""Pod templates of rendered objects, and what Pod Security "restricted" would refuse in them: one check for
every builder's tests (init containers included: they run under the same policy)."""

from __future__ import annotations

from typing import Any

VOLUME_TYPES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}  # what the operator mounts


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def pod_specs(obj: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod template metadata, pod spec) of a workload (CronJobs through their job template)."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return [(template.get("metadata") or {}, template["spec"])] if template else []


def restricted_problems(obj: dict[str, Any]) -> list[str]:
    """Why Pod Security "restricted" (plus a read-only root, which the operator always sets) would refuse the
    object's pods; [] when it admits them."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    problems = []
    for _, pod in pod_specs(obj):
        context = pod.get("securityContext") or {}
        if context.get("runAsNonRoot") is not True or not context.get("runAsUser"):
            problems.append(f"{where}: not run as a non-root user")
        if (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        problems += [f"{where}: volume {v['name']}" for v in pod.get("volumes", []) if set(v) - {"name"} > VOLUME_TYPES]
        for container in containers(pod):
            own = container.get("securityContext") or {}
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: {container['name']} may escalate privileges")
            if own.get("capabilities") != {"drop": ["ALL"]}:
                problems.append(f"{where}: {container['name']} keeps capabilities")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: {container['name']} has a writable root")
    return problems
