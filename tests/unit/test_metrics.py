"""The operator's metrics: values as /metrics shows them, the controller's hooks, the served endpoint, and a
Grafana dashboard that names only metrics the operator exports."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlflow_operator import __version__, cli, metrics
from mlflow_operator.handlers.controller import Controller
from tests.kube import ROOT

DASHBOARD = ROOT / "charts" / "mlflow-operator" / "dashboards" / "mlflow-operator.json"


def value(metric: str, /, **labels: str) -> float | None:
    return metrics.sample(metric, labels)


def test_rollout_phase_is_one_for_the_current_phase_and_zero_for_the_others() -> None:
    metrics.observe_rollout("ml", "fraud-phase", "Progressing", 20)
    assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-phase", phase="Progressing") == 1
    for other in ("Paused", "Succeeded", "RolledBack", "Degraded"):
        assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-phase", phase=other) == 0
    assert value("mlflow_operator_modeldeployment_canary_weight", namespace="ml", name="fraud-phase") == 20

    metrics.observe_rollout("ml", "fraud-phase", "Succeeded", 0)
    assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-phase", phase="Progressing") == 0
    assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-phase", phase="Succeeded") == 1
    assert value("mlflow_operator_modeldeployment_canary_weight", namespace="ml", name="fraud-phase") == 0


def test_no_phase_yet_is_all_zeros_and_forgetting_removes_every_series() -> None:
    metrics.observe_rollout("ml", "fraud-new", None, 0)
    phases = [
        value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-new", phase=p)
        for p in metrics.PHASES
    ]
    assert phases == [0] * 5
    metrics.observe_rollout("ml", "fraud-new", "SomethingNew", 5)  # a phase a later release adds is shown too
    assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-new", phase="SomethingNew") == 1

    metrics.forget_rollout("ml", "fraud-new")
    metrics.forget_rollout("ml", "fraud-new")  # idempotent
    for phase in (*metrics.PHASES, "SomethingNew"):
        assert value("mlflow_operator_modeldeployment_phase", namespace="ml", name="fraud-new", phase=phase) is None
    assert value("mlflow_operator_modeldeployment_canary_weight", namespace="ml", name="fraud-new") is None


def test_registry_sync_errors_and_lifecycle_corrections_count_and_are_forgotten_with_their_object() -> None:
    for reason in ("RegistryUnavailable", "RegistryUnavailable", "Unauthorized"):
        metrics.count_registry_sync_error("ml", "fraud-rm", reason)
    errors = "mlflow_operator_registry_sync_errors_total"
    assert value(errors, namespace="ml", name="fraud-rm", reason="RegistryUnavailable") == 2
    assert value(errors, namespace="ml", name="fraud-rm", reason="Unauthorized") == 1
    metrics.count_lifecycle_correction("ml", "mlflow-ts")
    assert value("mlflow_operator_lifecycle_corrections_total", namespace="ml", name="mlflow-ts") == 1

    metrics.forget_object("RegisteredModel", "ml", "fraud-rm")
    metrics.forget_object("TrackingServer", "ml", "mlflow-ts")
    assert value(errors, namespace="ml", name="fraud-rm", reason="RegistryUnavailable") is None
    assert value("mlflow_operator_lifecycle_corrections_total", namespace="ml", name="mlflow-ts") is None


def test_the_registry_is_dedicated_and_has_the_process_collector() -> None:
    from prometheus_client import REGISTRY as GLOBAL  # noqa: PLC0415

    assert metrics.REGISTRY is not GLOBAL
    assert GLOBAL.get_sample_value("mlflow_operator_build_info", {"version": __version__}) is None
    names = metrics.exported_names()
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= names
    assert {"mlflow_operator_reconciles_total", "mlflow_operator_reconcile_duration_seconds_bucket"} <= names
    assert not any(name.endswith("_created") for name in names)


def test_the_controller_counts_and_times_passes_and_reports_its_queue() -> None:
    kind = "UnitTestKind"
    calls: list[str] = []

    async def reconcile(body: dict[str, Any]) -> float | None:
        calls.append(body["metadata"]["name"])
        if body["metadata"]["name"] == "broken":
            raise RuntimeError("boom")
        return None

    started = time.time()

    async def scenario() -> None:
        controller = Controller(kind, reconcile, resync_seconds=None, workers=1)
        assert value("mlflow_operator_queue_depth", kind=kind) == 0  # created at zero, before any event
        controller.observe("ADDED", {"metadata": {"namespace": "ml", "name": "good"}})
        controller.start()
        controller.observe("ADDED", {"metadata": {"namespace": "ml", "name": "broken"}})
        assert value("mlflow_operator_queue_depth", kind=kind) == 2
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(calls) >= 2 and value("mlflow_operator_queue_depth", kind=kind) == 0:
                break
        assert value("mlflow_operator_objects", kind=kind) == 2
        assert value("mlflow_operator_objects_retrying", kind=kind) == 1
        for name in ("good", "broken"):  # each object's last pass, failed or not, at the time it finished
            last = value("mlflow_operator_last_reconcile_timestamp_seconds", kind=kind, namespace="ml", name=name)
            assert last is not None and started <= last <= time.time()
        controller.observe("DELETED", {"metadata": {"namespace": "ml", "name": "broken"}})
        assert value("mlflow_operator_objects", kind=kind) == 1
        assert value("mlflow_operator_objects_retrying", kind=kind) == 0
        gone = value("mlflow_operator_last_reconcile_timestamp_seconds", kind=kind, namespace="ml", name="broken")
        assert gone is None
        await controller.stop()

    asyncio.run(scenario())
    assert value("mlflow_operator_reconciles_total", kind=kind, result="success") == 1
    assert value("mlflow_operator_reconciles_total", kind=kind, result="error") == 1
    assert value("mlflow_operator_reconcile_duration_seconds_count", kind=kind) == 2
    assert value("mlflow_operator_queue_depth", kind=kind) == 0
    assert value("mlflow_operator_reconciles_in_progress", kind=kind) == 0


# ---- the endpoint and the flag


def test_metrics_address_flag() -> None:
    assert cli.parse_address("0.0.0.0:9090") == ("0.0.0.0", 9090)
    assert cli.parse_address(":9090") == ("0.0.0.0", 9090)
    assert cli.parse_address("[::1]:9100") == ("::1", 9100)
    for off in ("off", "", "OFF", "0"):
        assert cli.parse_address(off) is None
    for bad in ("9090", "host:", "host:http", "host:70000"):
        with pytest.raises(Exception, match="HOST:PORT"):
            cli.parse_address(bad)
    run = cli.build_parser().parse_args(["run", "-A"])
    assert run.metrics_address == ("0.0.0.0", 9090)
    assert run.prometheus_address is None
    run = cli.build_parser().parse_args(
        ["run", "-A", "--metrics-address", "off", "--prometheus-address", "http://prom.monitoring.svc:9090"]
    )
    assert run.metrics_address is None
    assert run.prometheus_address == "http://prom.monitoring.svc:9090"


def test_metrics_are_served_on_loopback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    stop = cli.serve_metrics(("127.0.0.1", port))
    try:
        metrics.observe_reconcile("ServedKind", "ml", "served", 0.02, ok=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        stop()
    assert 'mlflow_operator_reconciles_total{kind="ServedKind",result="success"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert cli.serve_metrics(None)() is None  # off: nothing served, nothing to stop


# ---- the Grafana dashboard

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: label matchers, ranges, strings, groupings, Grafana
    variables, functions and keywords removed."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function or keyword
        names.add(match.group())
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            assert inner, variable
            queries.append((f"${variable['name']}", inner.group(1)))
    return queries


def test_the_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.95, sum by (kind, le) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval]))) / b'
    assert metric_names(expr) == {"a_bucket", "b"}


def test_dashboard_queries_name_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = metrics.exported_names()
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 15
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported by the operator"


def test_dashboard_covers_every_operator_metric_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for _, expr in dashboard_queries(dashboard) for name in metric_names(expr)}
    families = {family.name for family in metrics.REGISTRY.collect() if family.name.startswith("mlflow_operator_")}
    missing = {family for family in families if not any(name.startswith(family) for name in used)}
    assert missing == set()
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_dashboard_file_is_where_the_chart_expects_it() -> None:
    assert Path(DASHBOARD).is_file()
