"""The platform `make run` builds, seen from the host, and the rollouts the real-pod tests and the real-node
benchmark drive on it: versions registered by a Job, ModelDeployments routed by the local cluster's Gateway,
real traffic through it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from mlflow_operator.api.kinds import API_VERSION
from mlflow_operator.builders.trackingserver import COMPONENT_POSTGRES, DATABASE_NAME, Names
from tests.e2e import traffic
from tests.kube import ROOT, Kubectl, condition, eventually, md_status, wait_phase
from tests.scripts import load_script, run_hack

NAMESPACE = "default"  # where make run applies the examples
PREDICTIONS_TAG = "sample_predictions"
MODEL_SERVER_IMAGE = "ghcr.io/mlflow-operator/mlflow-model-server:3.17.2"
PROMETHEUS = "http://prometheus.monitoring.svc:9090"


@dataclass
class Platform:
    """The cluster make run built, seen from the host."""

    workdir: Path
    kubectl: Kubectl

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl.run(*args, "-n", NAMESPACE, "-o", "json").stdout)

    def cluster_ip(self, service: str) -> str:
        return str(self.json("get", "service", service)["spec"]["clusterIP"])

    def secret(self, name: str) -> dict[str, str]:
        data = self.json("get", "secret", name)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items = self.json("get", "pods", "-l", selector)["items"]
        return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]

    def pod_ips(self, selector: str) -> list[str]:
        return [pod["status"]["podIP"] for pod in self.pods(selector) if pod["status"].get("podIP")]

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.cluster_ip('mlflow')}:5000"

    @property
    def gateway(self) -> str:
        """The Gateway's address as `localcluster.py env` prints it (a line gateway=http://127.0.0.1:PORT)."""
        printed = run_hack("localcluster.py", "env", "--dir", str(self.workdir), timeout=60)
        (line,) = [line for line in printed.splitlines() if line.startswith("gateway=")]
        return line.removeprefix("gateway=")

    def annotate(self, name: str, key: str, value: str | None) -> None:
        """Sets (or, with None, removes) an annotation of a ModelDeployment."""
        change = f"{key}-" if value is None else f"{key}={value}"
        self.kubectl.run("annotate", "--overwrite", "-n", NAMESPACE, "modeldeployment", name, change)

    def psql(self, host: str, port: int, database: str, sql: str, secret: str = "mlflow-db") -> list[dict[str, str]]:
        """Rows of one statement run by the host's psql, as the user of a TrackingServer's database Secret."""
        user = self.secret(secret)
        dsn = f"host={host} port={port} dbname={database} user={user['username']} connect_timeout=10"
        result = subprocess.run(
            ["psql", dsn, "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={**os.environ, "PGPASSWORD": user["password"]},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"psql {host}:{port}/{database}: {result.stderr}"
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def sql(self, query: str, server: str = "mlflow") -> list[dict[str, str]]:
        """A query on a TrackingServer's managed Postgres (its pod IP: the Service is headless), as its user."""
        selector = f"app.kubernetes.io/instance={server},app.kubernetes.io/component={COMPONENT_POSTGRES}"
        (postgres,) = self.pod_ips(selector)
        return self.psql(postgres, 5432, DATABASE_NAME, query, secret=Names(server).database_secret)


def small_resources() -> dict[str, Any]:
    """Requests and limits small enough for the real node, for the database and its pooler."""
    return {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def small_tracking_server(name: str, database: dict[str, Any]) -> dict[str, Any]:
    """A small TrackingServer without auth in NAMESPACE, its artifacts under its name in the platform's
    MinIO bucket; `database` is its spec.database."""
    return {
        "apiVersion": API_VERSION,
        "kind": "TrackingServer",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "workers": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "database": database,
            "artifacts": {
                "s3": {
                    "bucket": "mlflow-artifacts",
                    "prefix": name,
                    "endpoint": "http://minio.storage.svc:9000",
                    "credentialsSecret": {"name": "mlflow-artifacts-s3"},
                }
            },
            "deletionPolicy": "Delete",
        },
    }


def mlflow_environment(platform: Platform) -> dict[str, str]:
    """The MLflow client's environment: the tracking Service and the generated admin credentials."""
    admin = platform.secret("mlflow-admin")
    return {
        "MLFLOW_TRACKING_URI": platform.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": admin["username"],
        "MLFLOW_TRACKING_PASSWORD": admin["password"],
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # a failure shows at once, not after minutes
        # MLflow >= 3.17 clients download S3-backed artifacts straight from S3 by presigned URLs naming the
        # server's endpoint (minio.storage.svc), which only resolves inside the cluster: from the host,
        # download through the server as any client outside the cluster must.
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    }


def own_predictions(client: MlflowClient, version: int | str) -> list[Any]:
    """What the model itself predicted for SAMPLE when it was logged (the seed's tag)."""
    return list(json.loads(client.get_model_version("fraud", str(version)).tags[PREDICTIONS_TAG]))


def seed_version(client: MlflowClient) -> int:
    """The seed's version: the first of `fraud` (make run seeds only a registry without `champion`)."""
    return min(int(v.version) for v in client.search_model_versions("name='fraud'"))


def routed(platform: Platform, name: str) -> dict[str, Any] | None:
    return condition(platform.kubectl.get("modeldeployment", name, NAMESPACE), "TrafficRouted")


@dataclass(frozen=True)
class RolloutVersions:
    inverted: int  # healthy, with other predictions than the seed's
    unloadable: int  # its load_context raises
    night_blind: int  # raises on night-time rows


def register_rollout_versions(platform: Platform) -> RolloutVersions:
    """tests/e2e/rollout_models.py as a Job in the model-server image."""
    name = f"rollout-models-{uuid.uuid4().hex[:6]}"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {
            "seed_model.py": (ROOT / "hack" / "seed_model.py").read_text(),
            "rollout_models.py": (ROOT / "tests" / "e2e" / "rollout_models.py").read_text(),
        },
    }
    volume = {"name": "models", "configMap": {"name": name}}
    argv = ["/opt/venv/bin/python", "/models/rollout_models.py"]
    hack_run = load_script("hack_run", ROOT / "hack" / "run.py")
    job = hack_run.job(name, NAMESPACE, MODEL_SERVER_IMAGE, argv, hack_run.registry_client_env(), [volume])
    platform.kubectl.apply(config_map)
    platform.kubectl.apply(job)
    complete = ("wait", "-n", NAMESPACE, "--for=condition=Complete", f"job/{name}", "--timeout=300s")
    platform.kubectl.run(*complete, timeout=320)
    log = platform.kubectl.run("logs", "-n", NAMESPACE, f"job/{name}").stdout
    (line,) = [line for line in log.splitlines() if line.startswith("VERSIONS ")]
    inverted, unloadable, night_blind = (int(word) for word in line.split()[1:])
    return RolloutVersions(inverted, unloadable, night_blind)


def gateway_canary(name: str, steps: list[dict[str, Any]], **routing: Any) -> dict[str, Any]:
    """A ModelDeployment on `candidate` routed by mlflow-gateway under its own host name (the example's route
    takes every other host), 50m CPU per pod so both tracks fit beside the examples."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "trackingServerRef": {"name": "mlflow"},
            "model": {"registeredModel": "fraud", "alias": "candidate"},
            "replicas": 1,
            "pollInterval": "3s",
            "runtime": {"resources": {"requests": {"cpu": "50m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}},
            "strategy": {"canary": {"steps": steps}},
            "trafficRouting": {
                "gatewayAPI": {
                    "parentRefs": [{"name": "mlflow-gateway", "namespace": "gateway-system"}],
                    "hostnames": [f"{name}.example"],
                    **routing,
                }
            },
        },
    }


def delete_model_deployment(platform: Platform, name: str) -> None:
    platform.kubectl.run("delete", "modeldeployment", "-n", NAMESPACE, name, "--ignore-not-found", timeout=180)
    eventually(lambda: not platform.pods(f"app.kubernetes.io/instance={name}"), timeout=120, what=f"no {name} pods")


# What the night-blind canary answers a night-time request with: MLflow turns a model's own exception into
# HTTP 400. Only these count as the canary's failures: a refused connection or a proxy's 5xx while routes
# change would start the clock before the canary ever failed.
MODEL_ERROR_STATUS = 400


@dataclass(frozen=True)
class Rollback:
    seconds: float  # from the canary's first failed request to its weight 0
    interval_s: int
    status: dict[str, Any]  # the ModelDeployment's status once RolledBack
    # Answers neither 200 nor the model's error, by status ("None": no answer). None on a quiet machine;
    # one run on a loaded one saw 58, not reproduced since: reported beside the time, not timed.
    other_failures: dict[str, int]

    def timeline(self) -> list[tuple[str, str, str]]:
        """(time, metric, outcome) of each measurement: what to read when the rollback was slow."""
        results = self.status.get("analysisResults") or []
        return [(r["time"], r["metric"], r["outcome"]) for r in results]


def failing_canary_rollback(platform: Platform, client: MlflowClient, failing: int, interval_s: int) -> Rollback:
    """A ModelDeployment `scorer` on the seed's version, then `failing` as its canary at 50 % under steady
    load through the Gateway (night- and day-time requests alternating), analysed by the successRate template
    every interval_s with no failure tolerated; timed from the first failed request to weight 0."""
    stable = seed_version(client)
    host = {"Host": "scorer.example"}
    client.set_registered_model_alias("fraud", "candidate", str(stable))
    md = gateway_canary("scorer", [{"setWeight": 50}, {"analysis": {"count": 5}}])
    md["spec"]["analysis"] = {
        "prometheusAddress": PROMETHEUS,
        "interval": f"{interval_s}s",
        "failureLimit": 0,
        "metrics": [{"name": "success-rate", "template": "successRate", "thresholdRange": {"min": 0.99}}],
    }
    platform.kubectl.apply(md)
    try:
        wait_phase(platform.kubectl, NAMESPACE, "scorer", "Succeeded", timeout=300, stableVersion=stable)
        bodies = (traffic.SAMPLE, traffic.DAY_SAMPLE)
        with traffic.SteadyLoad(f"{platform.gateway}/invocations", bodies=bodies, headers=host) as load:
            client.set_registered_model_alias("fraud", "candidate", str(failing))
            wait_phase(platform.kubectl, NAMESPACE, "scorer", "Progressing", timeout=300, canaryWeight=50)
            eventually(
                lambda: md_status(platform.kubectl, NAMESPACE, "scorer").get("canaryWeight") == 0,
                timeout=300,
                interval=0.5,
                what="scorer's canary weight back to 0",
            )
            weight_zero_at = time.monotonic()
        answers = load.snapshot()
        failures = [a.at for a in answers if a.status == MODEL_ERROR_STATUS]
        if not failures:
            raise AssertionError("the failing canary never failed a request")
        others = Counter(str(a.status) for a in answers if a.status not in (200, MODEL_ERROR_STATUS))
        status = wait_phase(platform.kubectl, NAMESPACE, "scorer", "RolledBack", timeout=60)
        return Rollback(round(weight_zero_at - min(failures), 1), interval_s, status, dict(others))
    finally:
        delete_model_deployment(platform, "scorer")
