"""The pure parts of bench.real_node: hack/run.py's progress lines and the kubepods cgroup's memory.stat."""

from __future__ import annotations

from bench.real_node import memory_stat, run_steps


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
