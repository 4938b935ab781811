"""The scale benchmark's pure helpers: specs the operator accepts, jsonpath rows and readiness, resourceVersion
and request deltas, the import RSS steps, the targets and the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.scale import (
    BENCHMARK,
    RV_PATH,
    apiserver_requests,
    by_namespace,
    by_verb,
    condition_ready,
    delta,
    evaluate,
    first_ready,
    import_rss_steps,
    markdown,
    namespaces,
    nodes_for,
    operator_requests,
    parse_args,
    per_minute,
    ratio,
    resource_versions,
    resources,
    rows,
    rv_changes,
    spread,
    workload_ready,
    writes,
)

from mlflow_operator.api import KINDS
from mlflow_operator.logic.validation import Invalid, validate_spec


def test_resources_spread_round_robin_and_validate() -> None:
    where = namespaces("scale-op-x", 3)
    assert where == ["scale-op-x-00", "scale-op-x-01", "scale-op-x-02"]
    assert spread(5, where) == [where[0], where[1], where[2], where[0], where[1]]
    objects = resources(4, 6, where, "http://127.0.0.1:9000", "http://127.0.0.1:5000")
    assert [o["kind"] for o in objects].count("TrackingServer") == 4
    assert [o["kind"] for o in objects].count("ModelDeployment") == 6
    models = {info.kind: info.spec_model for info in KINDS}
    for obj in objects:
        assert not isinstance(validate_spec(models[obj["kind"]], obj["spec"]), Invalid), obj
    prefixes = {o["spec"]["artifacts"]["s3"]["prefix"] for o in objects if o["kind"] == "TrackingServer"}
    assert len(prefixes) == 4  # one prefix of the shared bucket each
    groups = by_namespace(objects)
    assert sorted(groups) == where and sum(len(v) for v in groups.values()) == 10


def test_workload_and_condition_readiness() -> None:
    text = (
        "Deployment|ns|a|2|2|2||\nDeployment|ns|b|2|2|1||\nStatefulSet|ns|db|1|1|||\nStatefulSet|ns|db2|1||||\n"
        "Job|ns|migrate||||1|1\nJob|ns|m2||||1|\nDeployment|ns|zero|0||||\n"
    )
    ready = {f"{r[0]}/{r[2]}": workload_ready(r) for r in rows(text)}
    assert ready == {
        "Deployment/a": True,
        "Deployment/b": False,
        "StatefulSet/db": True,
        "StatefulSet/db2": False,
        "Job/migrate": True,
        "Job/m2": False,
        "Deployment/zero": True,
    }
    assert condition_ready(["TrackingServer", "ns", "ts", "True"])
    assert not condition_ready(["TrackingServer", "ns", "ts", "False"])
    assert not condition_ready(["TrackingServer", "ns", "ts", ""])


def test_resource_versions_and_changes() -> None:
    assert "resourceVersion" in RV_PATH
    before = resource_versions("Deployment|op-1|a|10\nService|op-1|a|11\nDeployment|floor-1|x|12\n", "op-")
    assert before == {"Deployment/op-1/a": "10", "Service/op-1/a": "11"}
    after = {"Deployment/op-1/a": "13", "Service/op-1/a": "11", "Job/op-1/new": "14"}
    found = rv_changes(before, after)
    assert found["objects"] == 2 and found["changed"] == 2
    assert found["by_kind"] == {"Deployment": 1, "Job": 1}
    assert rv_changes(before, dict(before))["changed"] == 0


APISERVER = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{group="apps",resource="deployments",subresource="",verb="APPLY"} 7
apiserver_request_total{code="201",group="apps",resource="deployments",subresource="",verb="APPLY"} 3
apiserver_request_total{group="mlflow.operator.dev",resource="trackingservers",subresource="status",verb="PATCH"} 2
apiserver_request_total{group="",resource="pods",subresource="",verb="WATCH"} 5
"""


def test_apiserver_and_operator_requests() -> None:
    counts = apiserver_requests(APISERVER)
    assert counts == {"APPLY deployments": 10, "PATCH trackingservers/status": 2, "WATCH pods": 5}
    moved = delta({"APPLY deployments": 4, "WATCH pods": 5}, counts)
    assert moved == {"APPLY deployments": 6, "PATCH trackingservers/status": 2}
    assert writes(moved, frozenset({"APPLY", "PATCH"})) == 8
    assert by_verb(counts) == {"APPLY": 10, "PATCH": 2, "WATCH": 5}
    assert per_minute({"APPLY deployments": 30}, 600) == {"APPLY deployments": 3.0}
    assert per_minute({"x": 1}, 0) == {}
    text = (
        'mlflow_operator_kube_requests_total{verb="apply",kind="Deployment"} 4\n'
        'mlflow_operator_kube_requests_total{verb="get",kind="Secret"} 2\n'
    )
    assert operator_requests(text) == {"apply Deployment": 4, "get Secret": 2}


def test_ratio_first_ready_and_import_steps() -> None:
    assert ratio(30, 20) == 1.5 and ratio(None, 20) is None and ratio(30, 0) is None
    found = first_ready({"Deployment/ns/a": 2.0, "Deployment/ns/b": 4.0, "Job/ns/m": 1.0})
    assert found["Deployment"]["count"] == 2 and found["Deployment"]["max"] == 4.0 and found["Job"]["p50"] == 1.0
    steps = import_rss_steps(["python|10240", "kopf|40960", "garbage", "mlflow_operator (cli)|51200"])
    assert [s["step"] for s in steps] == ["python", "kopf", "mlflow_operator (cli)"]
    assert [s["added_mib"] for s in steps] == [0.0, 30.0, 10.0]


def test_parse_args_defaults() -> None:
    full, quick = parse_args([]), parse_args(["--quick"])
    assert (full.tracking_servers, full.model_deployments, full.namespaces, full.idle_window) == (100, 300, 10, 600)
    assert (quick.tracking_servers, quick.model_deployments, quick.idle_window) == (10, 30, 60)
    assert parse_args(["--quick", "--idle-window", "5"]).idle_window == 5
    assert (full.nodes, quick.nodes) == (18, 3) and parse_args(["--nodes", "5"]).nodes == 5
    assert nodes_for(100, 300) == 18 and nodes_for(1, 1) == 3 and nodes_for(0, 1000) == 35
    with pytest.raises(SystemExit):
        parse_args(["--namespaces", "0"])


def result(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cores": 2, "load_average_at_start": [1, 1, 1], "load_average_at_end": [2, 2, 2]},
        "parameters": {"tracking_servers": 100, "model_deployments": 300, "namespaces": 10, "idle_window_s": 600},
        "floor": {"all_ready_s": 40.0, "apply_s": 20.0, "render_s": 2.0, "objects": 3700, "first_ready": {}},
        "operator_ramp": {"all_ready_s": 55.0, "apply_s": 5.0, "first_ready": {}},
        "idle": {
            "window_s": 600,
            "resource_versions": {"objects": 3000, "changed": 0, "by_kind": {}},
            "operator_requests_per_min": 120.0,
            "operator_writes_per_min": 0.0,
            "apiserver_per_min": {"APPLY deployments": 1.0, "GET secrets": 4.0},
        },
        "operator": {"rss_peak_mib": 120.0, "rss_end_mib": 110.0},
        "import_rss": [{"step": "python", "rss_mib": 10.0, "added_mib": 0.0}],
        "kubernetes_imported": False,
        "notes": ["a note"],
    }
    document.update(changes)
    return document


def test_targets() -> None:
    met = evaluate(result())
    assert [t["met"] for t in met] == [True, True, True]
    assert "1.38x" in met[0]["detail"]
    missed = evaluate(
        result(
            operator_ramp={"all_ready_s": 80.0},
            idle={"resource_versions": {"objects": 10, "changed": 3, "by_kind": {"Deployment": 3}}},
            operator={"rss_peak_mib": 200.0},
        )
    )
    assert [t["met"] for t in missed] == [False, False, False]
    empty = evaluate(result(floor={}, operator_ramp={}, idle={}, operator={}))
    assert [t["met"] for t in empty] == [None, None, None]


def test_markdown_and_finish(tmp_path: Path) -> None:
    text = markdown(result())
    assert "| **operator / floor** (target <= 1.5) | 1.38 |" in text
    assert "APPLY deployments 1" in text and "GET secrets" not in text.split("writes per minute by verb")[1][:60]
    assert "Note: a note" in text
    document = result()
    output = tmp_path / "scale.json"
    rendered = BENCHMARK.finish(document, output)
    assert output.with_suffix(".md").read_text() == rendered
    assert json.dumps(document["targets"])  # serialisable
