"""The running operator serves its metrics: reconciles of each kind are counted, a failing registry sync
is counted by reason. Cheap: one TrackingServer the operator refuses (no stack is built) and one
RegisteredModel whose registry is a closed port on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.kube import Kubectl, condition, eventually, passes, scrape


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_reason(
    kubectl: Kubectl, namespace: str, kind: str, name: str, condition_type: str, reason: str, timeout: float
) -> None:
    """Until the object's condition has this reason."""
    eventually(
        lambda: (condition(kubectl.get(kind.lower(), name, namespace), condition_type) or {}).get("reason") == reason,
        timeout=timeout,
        what=f"{kind} {reason}",
    )


def test_reconciles_and_registry_sync_errors_are_counted(
    kubectl: Kubectl, operator: Path, namespace: str, metrics_url: str
) -> None:
    before = scrape(metrics_url)
    assert ("mlflow_operator_queue_depth", (("kind", "TrackingServer"),)) in before
    assert any(name == "process_resident_memory_bytes" for name, _ in before)

    server = {
        "apiVersion": "mlflow.operator.dev/v1alpha1",
        "kind": "TrackingServer",
        "metadata": {"name": "too-old"},
        # Admitted by the CRD, refused by the operator (below the minimum MLflow version): no stack is built.
        "spec": {
            "version": "2.0.0",
            "database": {"managed": {}},
            "artifacts": {"s3": {"bucket": "artifacts", "endpoint": "http://127.0.0.1:1"}},
        },
    }
    model = {
        "apiVersion": "mlflow.operator.dev/v1alpha1",
        "kind": "RegisteredModel",
        "metadata": {"name": "unreachable"},
        "spec": {"trackingUri": f"http://127.0.0.1:{closed_port()}"},
    }
    kubectl.apply(server, namespace)
    kubectl.apply(model, namespace)
    wait_reason(kubectl, namespace, "TrackingServer", "too-old", "Ready", "InvalidSpec", timeout=60)
    wait_reason(kubectl, namespace, "RegisteredModel", "unreachable", "Synced", "RegistryUnavailable", timeout=90)
    after = scrape(metrics_url)
    assert passes(after, "TrackingServer", ("success",)) > passes(before, "TrackingServer", ("success",))
    assert passes(after, "RegisteredModel", ("success",)) > passes(before, "RegisteredModel", ("success",))
    errors = (
        "mlflow_operator_registry_sync_errors_total",
        (("name", "unreachable"), ("namespace", namespace), ("reason", "RegistryUnavailable")),
    )
    assert after.get(errors, 0) >= 1
    assert after[("mlflow_operator_reconcile_duration_seconds_count", (("kind", "RegisteredModel"),))] >= 1
