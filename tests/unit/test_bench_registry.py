"""The RegisteredModel benchmark's pure helpers: Prometheus text into request counts, access-log lines into
passes per model, sync detection, resourceVersion diffs, /proc parsing, targets and the table."""

from __future__ import annotations

import argparse
from typing import Any, cast

import pytest
import yaml
from bench.common import Operator, latency_summary, metric_samples, parse_labels, proc_stat_cpu_ticks, proc_status_kib
from bench.registry import (
    PhaseCpu,
    Requests,
    changed,
    duration,
    evaluate,
    manifests,
    markdown,
    model_lookups,
    not_synced_reasons,
    passes_summary,
    per_model_per_period,
    per_pass,
    registered_model,
    requests_by,
    resource_versions,
    synced_at_generation,
)

from tests.integration import dataplane as dp

# What `mlflow server --expose-prometheus` serves (prometheus_flask_exporter in multiprocess mode), trimmed.
METRICS = """\
# HELP mlflow_http_request_duration_seconds Flask HTTP request duration in seconds
# TYPE mlflow_http_request_duration_seconds histogram
mlflow_http_request_duration_seconds_count{method="GET",mlflow_version="3.17.2",status="404"} 2.0
mlflow_http_request_duration_seconds_bucket{le="+Inf",method="GET",mlflow_version="3.17.2",status="404"} 2.0
# HELP mlflow_http_request_total Total number of HTTP requests
# TYPE mlflow_http_request_total counter
mlflow_http_request_total{method="GET",status="200"} 97.0
mlflow_http_request_total{method="GET",status="404"} 20.0
mlflow_http_request_total{method="POST",status="200"} 60.0
mlflow_http_request_total{method="PATCH",status="200"} 4.0
mlflow_http_request_total{method="DELETE",status="500"} 1.0
mlflow_http_request_total{method="OPTIONS",status="200"} 3.0
mlflow_http_request_created{method="GET",status="200"} 1.7e9
mlflow_http_request_total_other{method="GET",status="200"} 1000.0
"""


def test_parse_labels_unescapes() -> None:
    assert parse_labels('a="1",b="x\\"y",c="back\\\\slash",d="two\\nlines"') == {
        "a": "1",
        "b": 'x"y',
        "c": "back\\slash",
        "d": "two\nlines",
    }
    assert parse_labels("") == {}
    assert parse_labels('a="1",') == {"a": "1"}
    with pytest.raises(ValueError, match="malformed"):
        parse_labels("a=1")


def test_metric_samples_takes_the_exact_name_only() -> None:
    samples = metric_samples(METRICS, "mlflow_http_request_total")
    assert len(samples) == 6
    assert samples[0] == ({"method": "GET", "status": "200"}, 97.0)
    assert metric_samples('up 1\nup{job="x"} 0 1700000000000\n', "up") == [({}, 1.0), ({"job": "x"}, 0.0)]


def test_requests_by_method_sums_other_labels() -> None:
    assert requests_by(METRICS, "method") == {
        ("GET",): 117,
        ("POST",): 60,
        ("PATCH",): 4,
        ("DELETE",): 1,
        ("OPTIONS",): 3,
    }
    assert requests_by(METRICS, "status") == {("200",): 164, ("404",): 20, ("500",): 1}


def test_requests_reads_writes_other_and_5xx() -> None:
    requests = Requests.parse(METRICS)
    assert requests.by_method_status == {
        "DELETE 500": 1,
        "GET 200": 97,
        "GET 404": 20,
        "OPTIONS 200": 3,
        "PATCH 200": 4,
        "POST 200": 60,
    }
    assert (requests.reads, requests.writes, requests.other, requests.errors) == (117, 65, 3, 1)
    assert Requests.parse("").summary() == {
        "reads": 0,
        "writes": 0,
        "other": 0,
        "errors_5xx": 0,
        "by_method_status": {},
    }


def test_requests_delta_between_scrapes() -> None:
    before = Requests({"GET 200": 10, "POST 200": 5})
    after = Requests({"GET 200": 50, "POST 200": 5, "GET 404": 2})
    delta = after - before
    assert delta.by_method_status == {"GET 200": 40, "GET 404": 2}
    assert (delta.reads, delta.writes) == (42, 0)


def test_per_model_per_period() -> None:
    assert per_model_per_period(800, 200, 2) == 2.0
    assert per_model_per_period(0, 200, 6) == 0.0
    assert per_model_per_period(5, 0, 6) is None
    assert per_model_per_period(5, 10, 0) is None


def test_registered_model_manifest_and_stream() -> None:
    obj = registered_model(7, "http://127.0.0.1:5000", "models:/m-1", "abc123")
    assert obj == {
        "apiVersion": "mlflow.operator.dev/v1alpha1",
        "kind": "RegisteredModel",
        "metadata": {"name": "bench-model-007"},
        "spec": {
            "trackingUri": "http://127.0.0.1:5000",
            "description": "Benchmark model 7.",
            "tags": {"team": "bench", "index": "7"},
            "versions": [{"source": "models:/m-1", "runId": "abc123"}],
            "aliases": {"champion": 1},
            "resyncInterval": "300s",
        },
    }
    assert registered_model(1, "http://x", "s", "r", 10)["spec"]["resyncInterval"] == "10s"
    stream = manifests(registered_model(i, "http://x", "s", "r") for i in range(3))
    docs = list(yaml.safe_load_all(stream))
    assert [d["metadata"]["name"] for d in docs] == ["bench-model-000", "bench-model-001", "bench-model-002"]


def _obj(
    name: str, generation: int, observed: int | None, status: str | None, reason: str = "Synced"
) -> dict[str, Any]:
    conditions = [] if status is None else [{"type": "Synced", "status": status, "reason": reason}]
    body: dict[str, Any] = {"metadata": {"name": name, "generation": generation, "resourceVersion": f"{generation}0"}}
    body["status"] = {"conditions": conditions, **({"observedGeneration": observed} if observed else {})}
    return body


def test_synced_at_generation() -> None:
    assert synced_at_generation(_obj("a", 1, 1, "True"))
    assert not synced_at_generation(_obj("a", 2, 1, "True"))  # an older generation's verdict
    assert not synced_at_generation(_obj("a", 1, 1, "False", "RegistryUnavailable"))
    assert not synced_at_generation(_obj("a", 1, None, None))
    assert not synced_at_generation({"metadata": {"name": "a", "generation": 1}})
    stale_condition = _obj("a", 2, 2, "True")
    stale_condition["status"]["conditions"][0]["observedGeneration"] = 1
    assert not synced_at_generation(stale_condition)


def test_not_synced_reasons() -> None:
    items = [
        _obj("a", 1, 1, "True"),
        _obj("b", 1, 1, "False", "RegistryUnavailable"),
        _obj("c", 1, 1, "False", "RegistryUnavailable"),
        _obj("d", 1, None, None),
        _obj("e", 1, 1, "Unknown", "Syncing"),
    ]
    assert not_synced_reasons(items) == {
        "False/RegistryUnavailable": 2,
        "no Synced condition": 1,
        "Unknown/Syncing": 1,
    }


def test_resource_versions_changed() -> None:
    before = resource_versions([_obj("a", 1, 1, "True"), _obj("b", 1, 1, "True"), _obj("c", 1, 1, "True")])
    assert before == {"a": "10", "b": "10", "c": "10"}
    after = {"a": "10", "b": "11", "d": "10"}
    assert changed(before, after) == ["b", "c", "d"]
    assert changed(before, dict(before)) == []


def test_latency_summary() -> None:
    summary = latency_summary([1.0, 2.0, 3.0, 4.0, 10.0])
    assert summary["count"] == 5
    assert summary["p50"] == 3.0
    assert summary["p90"] == pytest.approx(7.6)
    assert summary["max"] == 10.0
    assert latency_summary([]) == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}


# gunicorn's default access-log format: h l u t "r" s b "f" "a".
ACCESS_LOG = """\
127.0.0.1 - - [23/Nov/2026:15:32:01 +0000] "GET /api/2.0/mlflow/registered-models/get?name=bench-model-001 HTTP/1.1" 200 812 "-" "mlflow-python-client/3.17.2"
127.0.0.1 - - [23/Nov/2026:15:32:01 +0000] "GET /api/2.0/mlflow/model-versions/search?filter=name+%3D+%27bench-model-001%27&max_results=1000 HTTP/1.1" 200 990 "-" "mlflow-python-client/3.17.2"
127.0.0.1 - - [23/Nov/2026:15:32:02 +0000] "GET /api/2.0/mlflow/registered-models/get?name=bench-model-002 HTTP/1.1" 200 812 "-" "mlflow-python-client/3.17.2"
127.0.0.1 - - [23/Nov/2026:15:32:11 +0000] "GET /api/2.0/mlflow/registered-models/get?name=bench-model-001 HTTP/1.1" 200 812 "-" "mlflow-python-client/3.17.2"
127.0.0.1 - - [23/Nov/2026:15:32:11 +0000] "POST /api/2.0/mlflow/registered-models/get?name=bench-model-001 HTTP/1.1" 405 0 "-" "curl/8"
127.0.0.1 - - [23/Nov/2026:15:32:12 +0000] "GET /api/2.0/mlflow/registered-models/get?name=other-model HTTP/1.1" 200 812 "-" "curl/8"
127.0.0.1 - - [23/Nov/2026:15:32:12 +0000] "GET /metrics HTTP/1.1" 200 4000 "-" "Python-urllib/3.11"
127.0.0.1 - - [23/Nov/2026:15:32:13 +0000] "GET /ajax-api/2.0/mlflow/registered-models/get?name=bench%2Dmodel%2D003 HTTP/1.1" 200 1 "-" "x"
"""  # noqa: E501


def test_model_lookups_counts_get_registered_model_per_model() -> None:
    assert model_lookups(ACCESS_LOG) == {"bench-model-001": 2, "bench-model-002": 1, "bench-model-003": 1}
    assert model_lookups(ACCESS_LOG, prefix="other-") == {"other-model": 1}
    assert model_lookups("") == {}
    assert model_lookups("not an access log line\n") == {}


def test_passes_summary() -> None:
    names = ["bench-model-000", "bench-model-001", "bench-model-002", "bench-model-003"]
    lookups = {"bench-model-001": 6, "bench-model-002": 5, "bench-model-003": 6, "unrelated": 99}
    assert passes_summary(lookups, names) == {
        "total": 17,
        "min": 0,
        "median": 5.5,
        "max": 6,
        "models_without_pass": 1,
    }
    assert passes_summary({}, []) == {"total": 0, "min": None, "median": None, "max": None, "models_without_pass": 0}


def test_per_pass() -> None:
    assert per_pass(2400, 1200) == 2.0
    assert per_pass(0, 1200) == 0.0
    assert per_pass(10, 0) is None


def test_duration() -> None:
    assert duration(10) == "10s"
    assert duration(10.0) == "10s"
    assert duration(2.5) == "2500ms"
    with pytest.raises(ValueError, match="positive"):
        duration(0)


def test_proc_parsing() -> None:
    # The command name may hold spaces and parentheses; utime and stime are fields 14 and 15.
    stat = "1234 (mlflow (op) x) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 3 4 20 0 8 0 500 0 0"
    assert proc_stat_cpu_ticks(stat) == 325
    status = "Name:\tmlflow-operator\nVmHWM:\t  111424 kB\nVmRSS:\t   68412 kB\n"
    assert proc_status_kib(status, "VmRSS") == 68412
    assert proc_status_kib(status, "VmHWM") == 111424
    assert proc_status_kib(status, "VmSwap") is None


def _result(writes: int, moved: int, all_synced: float | None = 40.5) -> dict[str, Any]:
    return {
        "date": "2026-01-01T00:00:00+00:00",
        "parameters": {"models": 200, "resync_seconds": 10.0, "quick": False},
        "machine": {"cores": 2, "load_average_at_start": [1.0, 1.0, 1.0], "load_average_at_end": [2.0, 1.5, 1.0]},
        "operator": {"rss_start_mib": 67.0, "rss_peak_mib": 140.2, "rss_end_mib": 139.0},
        "sync": {
            "apply_s": 1.2,
            "all_synced_s": all_synced,
            "synced": 200 if all_synced is not None else 150,
            "waited_s": 900.0,
            "not_synced_reasons": {} if all_synced is not None else {"False/RegistryUnavailable": 50},
        },
        "idle": {
            "requests": {"reads": 2400, "writes": writes, "errors_5xx": 0},
            "passes": {"total": 1200, "min": 5, "median": 6, "max": 6, "models_without_pass": 0},
            "clock_periods": 6.0,
            "window_s": 60.0,
            "effective_resync_s": 10.0,
            "reads_per_model_per_resync": 2.0,
            "writes_per_model_per_resync": writes / 1200,
            "resource_versions_changed": moved,
            "changed_names": ["bench-model-001"] if moved else [],
        },
        "targets": [],
    }


def test_evaluate_targets() -> None:
    met = evaluate(_result(0, 0))
    assert [t["met"] for t in met] == [True, True, True]
    assert met[0]["detail"] == "200/200 in 40.5 s"
    assert met[1]["detail"] == (
        "2400 reads, 0 writes over 1200 resync passes (5..6 per model): 2.00 reads and 0.00 writes per model per resync"
    )
    missed = evaluate(_result(12, 1, all_synced=None))
    assert [t["met"] for t in missed] == [False, False, False]
    assert "150/200 after 900 s" in missed[0]["detail"]
    assert "bench-model-001" in missed[2]["detail"]
    no_idle = _result(0, 0)
    no_idle["idle"] = {}
    assert [t["met"] for t in evaluate(no_idle)] == [True, None, None]


def test_markdown_table() -> None:
    result = _result(0, 0)
    result["targets"] = evaluate(result)
    text = markdown(result)
    assert "| **time until all Synced** (from the apply) | 40.5 s |" in text
    assert "| **idle writes per model per resync** (target 0) | 0.00 |" in text
    assert "| idle resync passes per model: min / median / max | 5 / 6 / 6 |" in text
    assert "| idle window | 60.0 s = 6.00 x 10 s (resyncInterval) |" in text
    assert "| operator RSS: after start / peak (VmHWM) / end | 67 MiB / 140 MiB / 139 MiB |" in text
    assert "- **met**: idle: no RegisteredModel resourceVersion changes (0 of 200 changed)" in text
    assert "n/a" in text  # figures not measured are shown as such, not as zeros


def test_phase_cpu_records_what_it_could_read() -> None:
    operator = cast(Operator, argparse.Namespace(cpu_seconds=lambda: 2.0))
    cpu = PhaseCpu(operator, cast(dp.MlflowServer, argparse.Namespace(process=None)))
    cpu.began, cpu.ended = (2.0, 10.0, 100.0), (4.0, 15.0, 110.0)
    phase: dict[str, Any] = {"requests": 1}
    own: dict[str, Any] = {}
    cpu.record(4.0, "idle", phase, own)
    assert phase == {"requests": 1, "machine_busy_cpu_s": 10.0, "machine_busy_cores": 2.5, "server_cpu_s": 5.0,
                     "server_cpu_pct": 125.0}  # fmt: skip
    assert own == {"cpu_idle_s": 2.0, "cpu_idle_pct": 50.0}
    cpu.began, cpu.ended = (None, None, 100.0), (None, None, 101.0)
    phase, own = {}, {}
    cpu.record(2.0, "sync", phase, own)
    assert phase == {"machine_busy_cpu_s": 1.0, "machine_busy_cores": 0.5} and own == {}
