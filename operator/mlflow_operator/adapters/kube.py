"""Kubernetes API access for child objects: server-side apply with one field manager per controller.

kopf watches our own kinds and writes their status; everything the operator creates goes through this
adapter. lightkube is used because it is small: kopf's docs measure that imported modules dominate an
operator's memory and the official client is the largest share.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from mlflow_operator import metrics
from mlflow_operator.api import GROUP, KINDS, VERSION

FIELD_MANAGER_PREFIX = "mlflow-operator"

# Our own kinds, so that lightkube can address them like built-in resources.
for _info in KINDS:
    create_namespaced_resource(GROUP, VERSION, _info.kind, _info.plural)

# Kinds lightkube-models does not ship (CRDs of other projects) that the operator writes.
EXTRA_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("httproutes", True),
    ("gateway.networking.k8s.io/v1", "Gateway"): ("gateways", True),
    ("gateway.networking.k8s.io/v1", "GatewayClass"): ("gatewayclasses", False),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("servicemonitors", True),
}


def resource_class(api_version: str, kind: str) -> Any:
    """The lightkube resource class for apiVersion/kind (built-in, ours, or a known CRD)."""
    if (api_version, kind) in EXTRA_KINDS:
        plural, namespaced = EXTRA_KINDS[(api_version, kind)]
        group, version = api_version.split("/")
        factory = create_namespaced_resource if namespaced else create_global_resource
        return factory(group, version, kind, plural)
    return resource_registry.load(api_version, kind)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference: the garbage collector deletes the child with its owner."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_owner(obj: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of obj owned by owner (None leaves it unowned: retained on delete)."""
    result = copy.deepcopy(obj)
    if owner is not None:
        result.setdefault("metadata", {})["ownerReferences"] = [owner_reference(owner)]
    return result


class Kube:
    """Server-side apply and reads of child objects, with one stable field manager per controller."""

    def __init__(self, client: AsyncClient, controller: str) -> None:
        self._client = client
        self.field_manager = f"{FIELD_MANAGER_PREFIX}/{controller}"

    async def apply(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply obj with force: the operator owns every field it sets, so children never flap."""
        desired = with_owner(obj, owner)
        res = resource_class(desired["apiVersion"], desired["kind"])
        metadata = desired["metadata"]
        metrics.count_kube_request("apply", desired["kind"])
        applied = await self._client.patch(
            res,
            metadata["name"],
            desired,
            namespace=metadata.get("namespace"),
            patch_type=PatchType.APPLY,
            field_manager=self.field_manager,
            force=True,
        )
        return _as_dict(applied)

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        metrics.count_kube_request("get", kind)
        try:
            found = await self._client.get(resource_class(api_version, kind), name, namespace=namespace)
        except Exception as error:
            if _not_found(error):
                return None
            raise
        return _as_dict(found)

    async def list(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace whose labels include `labels`."""
        metrics.count_kube_request("list", kind)  # one per page: lightkube follows `continue` on its own
        client: Any = self._client  # lightkube's overloads do not resolve for classes looked up at run time
        return [
            _as_dict(obj)
            async for obj in client.list(resource_class(api_version, kind), namespace=namespace, labels=labels)
        ]

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        """Delete if present; True when something was deleted."""
        metrics.count_kube_request("delete", kind)
        try:
            await self._client.delete(resource_class(api_version, kind), name, namespace=namespace)
        except Exception as error:
            if _not_found(error):
                return False
            raise
        return True


def _not_found(error: Exception) -> bool:
    """A 404: the object does not exist, or its kind's API is not installed (e.g. Gateway API), which answers
    a plain-text 404 that lightkube raises as the HTTP client's error rather than as an ApiError."""
    if isinstance(error, ApiError):
        return error.status.code == 404
    return getattr(getattr(error, "response", None), "status_code", None) == 404


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())


def _kind_resource(kind: str) -> Any:
    info = next(i for i in KINDS if i.kind == kind)
    return create_namespaced_resource(GROUP, VERSION, info.kind, info.plural)


class KubeStatus:
    """Status, Events and Secrets: the reads and writes every reconciler shares."""

    def __init__(self, client: AsyncClient, component: str = "mlflow-operator") -> None:
        # Typed as Any: lightkube's overloads do not resolve for resource classes looked up at run time.
        self._client: Any = client
        self._component = component

    async def patch_status(self, kind: str, name: str, namespace: str, changes: dict[str, Any]) -> None:
        """A merge patch of only the changed status fields, through the status subresource."""
        metrics.count_kube_request("patch", f"{kind}/status")
        await self._client.patch(
            _kind_resource(kind).Status,
            name,
            {"status": changes},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def patch_metadata(self, kind: str, name: str, namespace: str, metadata: dict[str, Any]) -> None:
        metrics.count_kube_request("patch", kind)
        await self._client.patch(
            _kind_resource(kind), name, {"metadata": metadata}, namespace=namespace, patch_type=PatchType.MERGE
        )

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        meta = body["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._component,
        }
        event_class: Any = resource_registry.load("v1", "Event")
        metrics.count_kube_request("create", "Event")
        await self._client.create(event_class.from_dict(event), namespace=meta["namespace"])

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        """A Secret's data decoded, or None when it does not exist."""
        metrics.count_kube_request("get", "Secret")
        try:
            secret_class: Any = resource_registry.load("v1", "Secret")
            secret: Any = await self._client.get(secret_class, name, namespace=namespace)
        except Exception as error:
            if _not_found(error):
                return None
            raise
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    async def patch_secret(self, name: str, namespace: str, changes: dict[str, str | None]) -> None:
        """A merge patch of a Secret's data: each value set, or the key removed where it is None."""
        metrics.count_kube_request("patch", "Secret")
        data = {
            key: None if value is None else base64.b64encode(value.encode()).decode() for key, value in changes.items()
        }
        secret_class: Any = resource_registry.load("v1", "Secret")
        await self._client.patch(secret_class, name, {"data": data}, namespace=namespace, patch_type=PatchType.MERGE)

    async def create_if_absent(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> bool:
        """Create obj unless an object of that name exists; never overwrite (generated passwords)."""
        desired = with_owner(obj, owner)
        res: Any = resource_class(desired["apiVersion"], desired["kind"])
        metrics.count_kube_request("create", desired["kind"])
        try:
            await self._client.create(res.from_dict(desired), namespace=desired["metadata"].get("namespace"))
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True
