"""The pure parts of bench.real_node: hack/run.py's progress lines and the kubepods cgroup's memory.stat."""

from __future__ import annotations

from bench.real_node import gateway_rows, memory_stat, run_steps


def test_run_steps_are_read_from_run_py_progress_lines() -> None:
    log = (
        "[localcluster] importing images\n"
        "[run    0.5 s] images built or cached in 0.5 s\n"
        "[run  107.9 s] trackingserver/mlflow: condition=Ready after 42.8 s\n"
        "Every example is Ready (213 s).\n"
    )
    assert run_steps(log) == [
        {"at_s": 0.5, "step": "images built or cached in 0.5 s"},
        {"at_s": 107.9, "step": "trackingserver/mlflow: condition=Ready after 42.8 s"},
    ]


def test_memory_stat_lines_become_numbers() -> None:
    assert memory_stat("total_rss 1048576\ntotal_cache 2097152\n\n") == {"total_rss": 1048576, "total_cache": 2097152}


def test_gateway_rows_show_both_paths_and_the_ratios() -> None:
    path = {"p50": 0.1, "p99": 0.4, "failed": 0}
    overhead = {"service": path, "gateway": {**path, "p50": 0.12, "failed": 1}, "ratio_p50": 1.2, "ratio_p99": 1.0}
    rows = gateway_rows({**overhead, "clients": 50})
    assert rows == [
        ("/invocations via the service, 50 clients", "p50 100.0 ms, p99 400.0 ms, 0 failed"),
        ("/invocations via the gateway, 50 clients", "p50 120.0 ms, p99 400.0 ms, 1 failed"),
        ("Gateway / Service latency", "p50 x1.20, p99 x1.00"),
    ]
