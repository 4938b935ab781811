"""The ModelDeployment benchmark's pure helpers: specs the operator accepts, the step floor, status and
HTTPRoute predicates, the operator's /metrics, targets and the table; and bench.common's
CPU split and control-plane sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.common import Cluster, machine_cpu_fields
from bench.modeldeployment import (
    BENCHMARK,
    BOUND_EXTRA_S,
    analysis_step_index,
    canary_route_weight,
    evaluate,
    fail_steps,
    in_analysis,
    markdown,
    model_deployment,
    operator_metrics,
    reconciles_between,
    rolled_back,
    scale_steps,
    seconds,
    step_floor_s,
    succeeded_on,
)

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec

# What the operator serves on --metrics-address (mlflow_operator.metrics), trimmed.
OPERATOR_METRICS = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+08
mlflow_operator_reconciles_total{kind="ModelDeployment",result="success"} 420.0
mlflow_operator_reconciles_total{kind="ModelDeployment",result="error"} 2.0
mlflow_operator_reconciles_total{kind="RegisteredModel",result="success"} 0.0
mlflow_operator_reconcile_duration_seconds_bucket{kind="ModelDeployment",le="0.005"} 1.0
mlflow_operator_reconcile_duration_seconds_count{kind="ModelDeployment"} 422.0
mlflow_operator_reconcile_duration_seconds_sum{kind="ModelDeployment"} 42.2
mlflow_operator_queue_depth{kind="ModelDeployment"} 3.0
mlflow_operator_reconciles_in_progress{kind="ModelDeployment"} 4.0
mlflow_operator_objects{kind="ModelDeployment"} 55.0
mlflow_operator_objects_retrying{kind="ModelDeployment"} 0.0
mlflow_operator_modeldeployment_canary_weight{namespace="ns",name="scale-000"} 50.0
"""


def test_seconds() -> None:
    assert seconds("5s") == 5 and seconds("500ms") == 0.5 and seconds("2m") == 120 and seconds("1h") == 3600
    assert seconds("1.5s") == 1.5
    with pytest.raises(ValueError, match="not a duration"):
        seconds("5")


def test_steps_floor_and_analysis_index() -> None:
    assert analysis_step_index(fail_steps()) == 1 and analysis_step_index(scale_steps()) == 1
    assert step_floor_s(scale_steps(), 5.0, 2) == 15.0  # 2 measurements x 5 s + pause 5 s
    assert step_floor_s(fail_steps(), 5.0, 2) == 12.0
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"analysis": {"count": 3}},
        {"pause": {}},
        {"pause": {"duration": "500ms"}},
    ]
    assert step_floor_s(steps, 2.0, 1) == 6.5  # the step's own count; an untimed pause waits for a person


@pytest.mark.parametrize("steps", [fail_steps(), scale_steps()])
def test_model_deployment_is_a_spec_the_operator_accepts(steps: list[dict[str, Any]]) -> None:
    obj = model_deployment(
        "scale-001", "bench-md-scale-001", tracking_uri="http://127.0.0.1:5000", prometheus="http://127.0.0.1:9090",
        steps=steps, interval_s=5, poll_interval_s=2.5, inconclusive_limit=2, prefix="scale-",
    )  # fmt: skip
    assert obj["kind"] == "ModelDeployment" and obj["metadata"] == {"name": "scale-001", "labels": {"bench": "scale"}}
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    assert spec.model.registered_model == "bench-md-scale-001" and spec.model.alias == "champion"
    assert spec.poll_interval == "2500ms" and spec.replicas == 1
    assert spec.analysis is not None and spec.analysis.interval == "5s" and spec.analysis.failure_limit == 0
    assert spec.analysis.inconclusive_limit == 2 and spec.analysis.count == 2
    assert "{{canary}}" in (spec.analysis.metrics[0].query or "")
    assert json.loads(json.dumps(obj)) == obj  # plain JSON for kubectl


def test_canary_route_weight() -> None:
    route = {
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "x-canary", "weight": 100}]},  # e.g. a header match: not the split
                {"backendRefs": [{"name": "x-stable", "weight": 75}, {"name": "x-canary", "weight": 25}]},
            ]
        }
    }
    assert canary_route_weight(route, "x") == 25
    assert canary_route_weight({"spec": {"rules": [{"backendRefs": [{"name": "x-stable"}]}]}}, "x") is None
    assert canary_route_weight(None, "x") is None and canary_route_weight({"spec": {}}, "x") is None


def test_status_predicates() -> None:
    analysing = {"phase": "Progressing", "canaryVersion": 2, "currentStep": 1, "canaryWeight": 25}
    assert in_analysis(analysing, 1, 2) and in_analysis({**analysing, "currentStep": 2}, 1, 2)
    assert not in_analysis({**analysing, "currentStep": 0}, 1, 2) and not in_analysis(analysing, 1, 3)
    assert not in_analysis({"phase": "RolledBack", "currentStep": None}, 1, 2)
    back = {"phase": "RolledBack", "canaryWeight": 0, "rolledBackVersion": 2, "stableVersion": 1}
    assert rolled_back(back, 2) and not rolled_back({**back, "canaryWeight": 25}, 2) and not rolled_back(back, 3)
    assert rolled_back({k: v for k, v in back.items() if k != "canaryWeight"}, 2)  # 0 is omitted
    assert succeeded_on({"phase": "Succeeded", "stableVersion": 2}, 2)
    assert not succeeded_on({"phase": "Succeeded", "stableVersion": 1}, 2)
    assert not succeeded_on({"phase": "Progressing", "stableVersion": 2}, 2)


def test_operator_metrics_and_deltas() -> None:
    found = operator_metrics(OPERATOR_METRICS)
    md = found["kinds"]["ModelDeployment"]
    assert md["reconciles"] == {"success": 420, "error": 2}
    assert md["duration_count"] == 422 and md["duration_mean_s"] == pytest.approx(0.1)
    assert (md["queue_depth"], md["in_progress"], md["objects"], md["retrying"]) == (3, 4, 55, 0)
    assert found["kinds"]["RegisteredModel"]["duration_mean_s"] is None
    assert found["process"] == {"process_cpu_seconds_total": 12.5, "process_resident_memory_bytes": 104857600.0}
    earlier = operator_metrics(
        OPERATOR_METRICS.replace("420.0", "20.0").replace("42.2", "2.2").replace("422.0", "22.0")
    )
    delta = reconciles_between(earlier, found)
    assert delta == {"reconciles": {"error": 0, "success": 400}, "duration_count": 400, "duration_sum_s": 40.0,
                     "mean_s": 0.1}  # fmt: skip
    assert reconciles_between({}, {})["mean_s"] is None


def result(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "date": "2026-11-23T17:00:00+00:00",
        "machine": {"cores": 2, "load_average_at_start": [1.0, 1.0, 1.0], "load_average_at_end": [2.0, 2.0, 2.0]},
        "parameters": {"deployments": 50, "repeats": 2, "interval_s": 5.0, "quick": False},
        "failing": {
            "repeats": [{}, {}],
            "summary": {
                "analysis_to_status_zero_s": {"count": 2, "p50": 5.5, "max": 6.1},
                "analysis_to_route_zero_s": {"count": 2, "p50": 5.8, "max": 16.0},
            },
        },
        "scale": {
            "floor_s": 15.0,
            "poll_interval_s": 5.0,
            "rollout": {"succeeded": 50, "all_succeeded_s": 41.2, "reconciles": {"reconciles": {"success": 9}}},
        },
        "operator": {"reconciles_during_run": {"reconciles": {"success": 900, "error": 0}}},
    }
    document.update(overrides)
    return document


def test_evaluate_targets() -> None:
    targets = evaluate(result())
    assert [t["met"] for t in targets] == [True, False, True, True]
    assert f"({5 + BOUND_EXTRA_S:g} s)" in targets[0]["target"] and "max 16.0 s" in targets[1]["detail"]
    assert "50/50 in 41.2 s; floor 15 s" in targets[2]["detail"]
    missing = evaluate(result(failing={}, scale={}, operator={}))
    assert [t["met"] for t in missing] == [None, None, None, None]
    partial = result()
    partial["failing"]["summary"]["analysis_to_status_zero_s"]["count"] = 1  # a repeat never rolled back
    assert evaluate(partial)[0]["met"] is False


def test_markdown_table() -> None:
    document = result(notes=["a note"])
    document["targets"] = evaluate(document)
    text = markdown(document)
    assert text.startswith("# ModelDeployment benchmark (2026-11-23T17:00:00+00:00)")
    assert "| **all Succeeded on v2** (from the first alias move) | 41.2 s |" in text
    assert "5.5 s / 6.1 s" in text and "- **MISSED**" in text and "Note: a note" in text
    assert "**The run did not complete**" in markdown({**document, "error": "RuntimeError: x"})
    assert markdown(result(failing={}, scale={}, operator={}))  # nothing measured still renders


def test_machine_cpu_fields() -> None:
    found = machine_cpu_fields(10.0, 5.0, {"operator": 2.0, "prometheus": None, "control plane": 3.0})
    assert found["machine_busy_cores"] == 2.0 and found["other_cpu_s"] == 5.0 and found["other_cores"] == 1.0
    assert machine_cpu_fields(0.0, 0.0, {})["other_cores"] is None


def test_cluster_session_ids(tmp_path: Path) -> None:
    assert Cluster("k", "$KUBECONFIG").session_ids() == {}
    (tmp_path / "state.json").write_text(json.dumps({"pids": {"etcd": 10, "kwok": "11"}, "ready": True}))
    assert Cluster("k", "hack/localcluster.py", tmp_path).session_ids() == {"etcd": 10, "kwok": 11}
    assert Cluster("k", "hack/localcluster.py", tmp_path / "missing").session_ids() == {}


def test_finish_writes_the_targets_and_the_markdown(tmp_path: Path) -> None:
    document = result()
    output = tmp_path / "new" / "modeldeployment.json"
    text = BENCHMARK.finish(document, output)
    assert [t["met"] for t in document["targets"]] == [True, False, True, True]
    assert output.with_suffix(".md").read_text() == text
