"""The server-side apply helper against a real API server: owner references, stable field manager, no churn."""

from __future__ import annotations

import asyncio
from typing import Any

from lightkube import AsyncClient, KubeConfig

from mlflow_operator.adapters.kube import Kube
from tests.e2e.stacks import resource
from tests.kube import Kubectl, eventually


def configmap(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": namespace},
        "data": data,
    }


async def _apply_twice(kubeconfig: str, namespace: str, owner: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
    try:
        kube = Kube(client, "test")
        first = await kube.apply(configmap(namespace, {"a": "1"}), owner=owner)
        second = await kube.apply(configmap(namespace, {"a": "1"}), owner=owner)
        return first, second
    finally:
        await client.close()


def test_apply_sets_owner_and_field_manager_and_is_idempotent(kubectl: Kubectl, crds: None, namespace: str) -> None:
    kubectl.apply(resource("TrackingServer", {}, name="owner"), namespace)
    owner = kubectl.get("trackingserver", "owner", namespace)
    assert owner is not None
    first, second = asyncio.run(_apply_twice(kubectl.kubeconfig, namespace, owner))
    assert first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"], "re-apply churned"
    (reference,) = second["metadata"]["ownerReferences"]
    assert reference["uid"] == owner["metadata"]["uid"] and reference["controller"] is True
    managers = {entry["manager"] for entry in second["metadata"]["managedFields"]}
    assert managers == {"mlflow-operator/test"}

    # The garbage collector (kube-controller-manager) deletes the child with its owner.
    kubectl.run("delete", "trackingserver", "owner", "-n", namespace)
    eventually(lambda: kubectl.get("configmap", "child", namespace) is None, timeout=60, what="child collected")
