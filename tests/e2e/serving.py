"""ModelDeployments on a real API server: the registry and metrics the e2e tests serve them from, the
resource they apply, and what they read back (routes, Deployments, Events). The fixtures that start the
registry, Prometheus and the Gateway API CRDs are tests/e2e/conftest.py's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dataplane import Postgres
from tests.integration.prometheus_server import MetricsExporter, PrometheusServer
from tests.integration.registry_server import (
    LOG_MODELS_SCRIPT,
    READ_MODEL_SCRIPT,
    TAMPER_SCRIPT,
    RegistryServer,
    migrated_server,
    run_client,
)
from tests.kube import ROOT, Kubectl

API = "mlflow.operator.dev/v1alpha1"
METRIC = "model_error_rate"
INTERVAL_SECONDS = 3
# Registers one version per logged model and points aliases at them.
REGISTER_SCRIPT = """\
import json, os
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
client = MlflowClient()
client.create_registered_model(params["name"])
versions = [
    int(client.create_model_version(params["name"], s["source"], run_id=s["run_id"], model_id=s["model_id"]).version)
    for s in params["sources"]
]
for alias, version in params["aliases"].items():
    client.set_registered_model_alias(params["name"], alias, version)
print(json.dumps(versions))
"""


@dataclass
class Registry:
    server: RegistryServer
    logged: list[dict[str, str]]

    @property
    def url(self) -> str:
        return self.server.url

    def register(self, name: str, champion: int) -> None:
        sources = [
            {"source": item["model_uri"], "run_id": item["run_id"], "model_id": item["model_id"]}
            for item in self.logged
        ]
        run_client(self.url, REGISTER_SCRIPT, {"name": name, "sources": sources, "aliases": {"champion": champion}})

    def move_alias(self, name: str, alias: str, version: int) -> None:
        self.tamper(name, set_aliases={alias: version})

    def tamper(self, name: str, **changes: Any) -> None:
        """Changes made in the registry behind the operator's back (TAMPER_SCRIPT's parameters)."""
        run_client(self.url, TAMPER_SCRIPT, {"name": name, **changes})

    def read(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = run_client(self.url, READ_MODEL_SCRIPT, {"name": name})
        return result


@contextmanager
def logged_registry(tmp_path_factory: pytest.TempPathFactory, experiment: str, adds: list[int]) -> Iterator[Registry]:
    """A Postgres-backed `mlflow server` with one logged model per entry of `adds` in `experiment`, stopped
    (with its Postgres) on exit."""
    logs = tmp_path_factory.mktemp("registry-logs")
    with ExitStack() as stack:
        postgres = stack.enter_context(Postgres({"max_connections": "50"}, log_dir=logs))
        server = migrated_server(postgres, "registry", tmp_path_factory.mktemp("artifacts"), logs)
        stack.callback(server.stop)
        logged = run_client(server.url, LOG_MODELS_SCRIPT, {"experiment": experiment, "adds": adds})
        yield Registry(server, logged)


@dataclass
class Metrics:
    exporter: MetricsExporter
    prometheus: PrometheusServer

    def set_error_rate(self, namespace: str, name: str, value: float) -> None:
        labels = {"namespace": namespace, "service": f"{name}-canary"}
        self.exporter.set(METRIC, value, labels)
        query = f'{METRIC}{{namespace="{namespace}",service="{name}-canary"}}'
        self.prometheus.wait_for(query, lambda seen: seen == value)


def gateway_api_crds_dir() -> Path:
    versions = dict(
        line.split("=", 1) for line in (ROOT / "hack" / "versions.env").read_text().splitlines() if "=" in line
    )
    cache = Path.home() / ".cache" / "mlflow-operator" / "bin"
    return cache / f"gateway-api-{versions['GATEWAY_API_VERSION'].strip()}"


def model_deployment(name: str, registry: Registry, prometheus: str, model: str, **spec: Any) -> dict[str, Any]:
    analysis = {
        "prometheusAddress": prometheus,
        "interval": f"{INTERVAL_SECONDS}s",
        "count": 2,
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "metrics": [
            {
                "name": "error-rate",
                "query": f'max({METRIC}{{namespace="{{{{namespace}}}}",service="{{{{canary}}}}"}})',
                "thresholdRange": {"max": 0.05},
            }
        ],
    }
    body = {
        "trackingUri": registry.url,
        "model": {"registeredModel": model, "alias": "champion"},
        "pollInterval": "2s",
        "replicas": 2,
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 25},
                    {"analysis": {}},
                    {"setWeight": 50},
                    {"pause": {"duration": "2s"}},
                ]
            }
        },
        "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
        "analysis": analysis,
        "promotion": {"setAlias": "production"},
        **spec,
    }
    return {"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}


def route_weights(kubectl: Kubectl, namespace: str, name: str) -> tuple[int, int] | None:
    route = kubectl.get("httproute", name, namespace)
    if route is None:
        return None
    refs = route["spec"]["rules"][-1]["backendRefs"]
    weights = {ref["name"]: ref["weight"] for ref in refs}
    return weights[f"{name}-stable"], weights[f"{name}-canary"]


def deployments(kubectl: Kubectl, namespace: str) -> list[str]:
    names = kubectl.run("get", "deployments", "-n", namespace, "-o", "name").stdout.split()
    return sorted(n.split("/", 1)[1] for n in names)


def events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the ModelDeployment's Events in creation order (resourceVersion: timestamps
    have one-second resolution)."""
    items = [e for e in kubectl.events(namespace) if e["involvedObject"]["name"] == name]
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e["message"]) for e in items]
