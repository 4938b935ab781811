"""The running operator serves its metrics: reconciles of each kind are counted, a failing registry sync
is counted by reason. Cheap: one TrackingServer the operator refuses (no stack is built) and one
RegisteredModel whose registry is a closed port on loopback."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.kube import Kubectl, condition, eventually


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def reconciles(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], kind: str) -> float:
    return samples.get(("mlflow_operator_reconciles_total", (("kind", kind), ("result", "success"))), 0.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    eventually(
        lambda: (
            (condition(kubectl.get("trackingserver", "too-old", namespace), "Ready") or {}).get("reason")
            == "InvalidSpec"
        ),
        timeout=60,
        what="TrackingServer InvalidSpec",
    )
    eventually(
        lambda: (
            (condition(kubectl.get("registeredmodel", "unreachable", namespace), "Synced") or {}).get("reason")
            == "RegistryUnavailable"
        ),
        timeout=90,
        what="RegisteredModel RegistryUnavailable",
    )
    after = scrape(metrics_url)
    assert reconciles(after, "TrackingServer") > reconciles(before, "TrackingServer")
    assert reconciles(after, "RegisteredModel") > reconciles(before, "RegisteredModel")
    errors = (
        "mlflow_operator_registry_sync_errors_total",
        (("name", "unreachable"), ("namespace", namespace), ("reason", "RegistryUnavailable")),
    )
    assert after.get(errors, 0) >= 1
    assert after[("mlflow_operator_reconcile_duration_seconds_count", (("kind", "RegisteredModel"),))] >= 1
