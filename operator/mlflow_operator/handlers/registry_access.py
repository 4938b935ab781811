"""Where a RegisteredModel's or ModelDeployment's registry is, and with which credentials: spec.trackingUri
(+ credentialsSecret), or the referenced TrackingServer's URL and admin Secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.api.common import RegistryConnection, RegistryCredentials
from mlflow_operator.api.kinds import API_VERSION, TRACKING_SERVER
from mlflow_operator.builders.trackingserver import REGISTRY_URL_ANNOTATION, Names
from mlflow_operator.handlers.reconcile import SecretProblem, read_secret_keys
from mlflow_operator.handlers.runtime import Runtime


@dataclass(frozen=True)
class RegistryAccess:
    """The operator's endpoint (credentials read from their Secret), and the same credentials as a Secret
    reference for pods (model servers fetch models with them; values never go into a pod spec)."""

    endpoint: RegistryEndpoint
    secret: RegistryCredentials | None = None
    # The credentials are a TrackingServer's admin's: pods get a reader of their own instead
    # (handlers.registry_reader), never these.
    admin: bool = False


async def registry_access(rt: Runtime, body: dict[str, Any], spec: RegistryConnection) -> RegistryAccess:
    namespace = body["metadata"]["namespace"]
    if spec.tracking_uri is not None:
        ref = spec.credentials_secret
        if ref is None:
            return RegistryAccess(RegistryEndpoint(spec.tracking_uri))
        if ref.token_key:
            token = await read_secret_keys(
                rt, namespace, ref.name, "spec.credentialsSecret", {ref.token_key: "tokenKey"}
            )
            return RegistryAccess(RegistryEndpoint(spec.tracking_uri, token=token[ref.token_key]), ref)
        user_key, password_key = ref.username_key or "username", ref.password_key or "password"
        data = await read_secret_keys(
            rt, namespace, ref.name, "spec.credentialsSecret", {user_key: "usernameKey", password_key: "passwordKey"}
        )
        endpoint = RegistryEndpoint(spec.tracking_uri, username=data[user_key], password=data[password_key])
        return RegistryAccess(endpoint, ref)
    assert spec.tracking_server_ref is not None  # the API refuses neither/both
    server_name = spec.tracking_server_ref.name
    server = await rt.kube("registry").get(API_VERSION, TRACKING_SERVER.kind, server_name, namespace)
    return await tracking_server_registry(rt, server or {"metadata": {"name": server_name, "namespace": namespace}})


def wake_tracking_server(rt: Runtime, spec: RegistryConnection, namespace: str) -> None:
    """A version the referenced TrackingServer has not checked its lifecycle rules against may exist: have it
    look now rather than at its next resync (a rule that expires that version's artifacts must come off)."""
    if spec.tracking_server_ref is not None:
        rt.wake(TRACKING_SERVER.kind, namespace, spec.tracking_server_ref.name)


def tracking_server_url(server: dict[str, Any]) -> str | None:
    """Where the operator reaches a TrackingServer: the REGISTRY_URL_ANNOTATION (an operator outside the
    cluster), else status.url."""
    annotations = server["metadata"].get("annotations") or {}
    return annotations.get(REGISTRY_URL_ANNOTATION) or (server.get("status") or {}).get("url")


async def tracking_server_registry(rt: Runtime, server: dict[str, Any]) -> RegistryAccess:
    """The registry of a TrackingServer: its URL (status.url, or the REGISTRY_URL_ANNOTATION) and, with auth
    enabled, its admin credentials."""
    metadata = server["metadata"]
    server_name, namespace = metadata["name"], metadata["namespace"]
    url = tracking_server_url(server)
    if not url:
        raise SecretProblem(
            "TrackingServerNotReady", f"TrackingServer {server_name} (spec.trackingServerRef.name) has no URL yet"
        )
    auth = (server.get("spec") or {}).get("auth") or {}
    if not auth.get("enabled"):
        return RegistryAccess(RegistryEndpoint(url))
    admin = (auth.get("adminSecret") or {}).get("name") or Names(server_name).admin_secret
    data = await read_secret_keys(
        rt, namespace, admin, "TrackingServer spec.auth.adminSecret", {"username": "username", "password": "password"}
    )
    endpoint = RegistryEndpoint(url, username=data["username"], password=data["password"])
    credentials = RegistryCredentials(name=admin, username_key="username", password_key="password")
    return RegistryAccess(endpoint, credentials, admin=True)
