"""What the e2e tests apply: the example TrackingServer stack pointed at a test's S3 server and registry, and
minimal resources of each kind for the admission and apply tests."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from mlflow_operator.builders.trackingserver import REGISTRY_URL_ANNOTATION
from tests.integration.registry_server import RegistryServer
from tests.integration.s3_servers import S3Server
from tests.kube import ROOT, Kubectl

API = "mlflow.operator.dev/v1alpha1"
TS_SPEC: dict[str, Any] = {"database": {"managed": {}}, "artifacts": {"s3": {"bucket": "mlflow-bucket"}}}
RM_SPEC: dict[str, Any] = {"trackingServerRef": {"name": "mlflow"}}
MD_SPEC: dict[str, Any] = {
    "trackingServerRef": {"name": "mlflow"},
    "model": {"registeredModel": "fraud", "alias": "champion"},
}
BASE = {"TrackingServer": TS_SPEC, "RegisteredModel": RM_SPEC, "ModelDeployment": MD_SPEC}


def resource(kind: str, changes: dict[str, Any], name: str = "bad") -> dict[str, Any]:
    spec = copy.deepcopy(BASE[kind])
    spec.update(changes)
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


# --- the example TrackingServer -----------------------------------------------------------------------------


def example_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "examples" / "tracking-server.yaml").read_text()) if d]


def stack(s3: S3Server, bucket: str, registry: RegistryServer | None, **spec_changes: Any) -> list[dict[str, Any]]:
    """The example, pointed at the test's S3 server and bucket, and at a registry that stands in for its own."""
    docs = copy.deepcopy(example_docs())
    for doc in docs:
        if doc["kind"] == "Secret":
            doc["stringData"] = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}
        if doc["kind"] == "TrackingServer":
            doc["spec"]["artifacts"]["s3"].update(endpoint=s3.endpoint_url, bucket=bucket)
            doc["spec"].update(spec_changes)
    return with_registry(docs, registry.url) if registry is not None else docs


def apply_all(kubectl: Kubectl, docs: list[dict[str, Any]], namespace: str) -> None:
    for doc in docs:
        kubectl.apply(doc, namespace)


def ts_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "TrackingServer")


def with_registry(docs: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """The TrackingServers among docs, annotated to use the registry at url (the operator runs outside the
    cluster and cannot reach their Services)."""
    for doc in docs:
        if doc["kind"] == "TrackingServer":
            doc.setdefault("metadata", {}).setdefault("annotations", {})[REGISTRY_URL_ANNOTATION] = url
    return docs
