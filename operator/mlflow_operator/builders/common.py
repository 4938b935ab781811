"""Pieces every builder shares: labels, metadata, Pod Security "restricted" settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow_operator.api.common import EnvVar, ResourceRequirements

Obj = dict[str, Any]
MANAGED_BY = "mlflow-operator"
CONFIG_HASH_ANNOTATION = "mlflow.operator.dev/config-hash"


def labels(instance: str, component: str, name: str = "mlflow") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(instance: str, component: str, name: str = "mlflow") -> dict[str, str]:
    """The immutable subset of labels used in selectors."""
    return {
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/name": name,
    }


def metadata(name: str, namespace: str, object_labels: dict[str, str], **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": dict(object_labels)}
    meta.update({key: value for key, value in extra.items() if value})
    return meta


def pod_security_context(uid: int) -> Obj:
    """Pod-level part of Pod Security "restricted"."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    """Container-level part of Pod Security "restricted", plus a read-only root filesystem."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def resources(spec: ResourceRequirements | None, default: Obj) -> Obj:
    if spec is None:
        return default
    return spec.model_dump(by_alias=True, exclude_none=True) or default


def secret_env(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def literal_env(values: dict[str, str]) -> list[Obj]:
    return [{"name": key, "value": value} for key, value in values.items()]


def user_env(env: list[EnvVar] | None) -> list[Obj]:
    return [{"name": item.name, "value": item.value} for item in env or []]


def http_probe(path: str, period: int, *, timeout: int | None = None, failure_threshold: int | None = None) -> Obj:
    """A probe that GETs `path` on the container's port named http every `period` seconds; Kubernetes'
    defaults (1 s timeout, 3 failures) where not given."""
    probe: Obj = {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period}
    if timeout is not None:
        probe["timeoutSeconds"] = timeout
    if failure_threshold is not None:
        probe["failureThreshold"] = failure_threshold
    return probe


def tmp_volume() -> tuple[Obj, Obj]:
    """An emptyDir for /tmp: the root filesystem is read-only."""
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}


def job_pod(uid: int, container: Obj, mounts: Sequence[Obj] = (), volumes: Sequence[Obj] = ()) -> Obj:
    """The pod of a Job with one container: not restarted in place (the Job retries), no API token (no pod of
    the operator's Jobs talks to the Kubernetes API), Pod Security "restricted" as uid, and the /tmp emptyDir
    the read-only root filesystem needs, mounted before `mounts`, its volume before `volumes`."""
    tmp, tmp_mount = tmp_volume()
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(uid),
        "containers": [
            {**container, "securityContext": container_security_context(), "volumeMounts": [tmp_mount, *mounts]}
        ],
        "volumes": [tmp, *volumes],
    }


def pod_disruption_budget(name: str, namespace: str, object_labels: dict[str, str], match: dict[str, str]) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, namespace, object_labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": match}},
    }


def topology_spread(match: dict[str, str]) -> list[Obj]:
    """Spread replicas over zones and nodes when possible, without blocking scheduling."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": match},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def network_policy(
    name: str, namespace: str, instance: str, component: str, port: int, allowed_components: list[str]
) -> Obj:
    """Ingress to one component's pods on one port, only from the pods of the listed components."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, namespace, labels(instance, component)),
        "spec": {
            "podSelector": {"matchLabels": selector(instance, component)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector(instance, allowed)}} for allowed in allowed_components
                    ],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def service(meta: Obj, pod_selector: dict[str, str], port_name: str, port: int, headless: bool = False) -> Obj:
    """A Service with one TCP port, sent to the pods' container port of the same name."""
    spec: Obj = {"selector": pod_selector, "ports": [{"name": port_name, "port": port, "targetPort": port_name}]}
    if headless:
        spec = {"clusterIP": "None", **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
