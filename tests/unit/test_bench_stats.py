"""The benchmark's figures: percentiles, error grouping, summaries, targets and the results table."""

from __future__ import annotations

from typing import Any

import pytest
from bench.stats import (
    ERROR_KEY_LENGTH,
    SETUP_BASELINE,
    SETUP_DIRECT,
    SETUP_RENDERED,
    Sample,
    cpu_share,
    error_key,
    evaluate_targets,
    markdown_table,
    markdown_targets,
    merge_cpu,
    percentile,
    ratio,
    row,
    schedule,
    summarize,
)

LIGHT, HEAVY = "50 jobs", "500 jobs"


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([3, 1, 2], 50, 2),  # order of the input does not matter
        (list(range(1, 101)), 99, 99.01),  # rank 98.01: 99 + 0.01 x (100 - 99), as numpy.percentile
        (list(range(1, 101)), 50, 50.5),
        ([5.0], 99, 5.0),
        ([2, 9, 4], 0, 2),
        ([2, 9, 4], 100, 9),
    ],
)
def test_percentile_interpolates_linearly_between_closest_ranks(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none_and_q_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_error_key_groups_equal_causes() -> None:
    one = (
        'INTERNAL_ERROR (psycopg2.OperationalError) connection to server at "127.0.0.1", port 5432 failed: '
        "FATAL:  sorry, too many clients already\n\n(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )
    assert error_key(500, one) == (
        'HTTP 500: INTERNAL_ERROR (psycopg2.OperationalError) connection to server at "127.0.0.1", port 5432 '
        "failed: FATAL: sorry, too many clients already"
    )
    with_sql = (
        "(psycopg2.errors.UniqueViolation) duplicate key for run 0123456789abcdef0123456789abcdef\n"
        "[SQL: INSERT INTO metrics (key, value) VALUES (%(key)s, %(value)s)]\n"
        "[parameters: {'key': 'm', 'value': [1, 2]}]\n(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    assert error_key(400, with_sql) == "HTTP 400: (psycopg2.errors.UniqueViolation) duplicate key for run <id>"
    assert error_key(None, "timeout after 60 s") == "no response: timeout after 60 s"
    assert error_key(503, "") == "HTTP 503"
    long = error_key(500, "x" * 500)
    assert len(long) == ERROR_KEY_LENGTH
    assert long.endswith("xxx...")


def samples() -> list[Sample]:
    return [
        Sample("create", True, 0.1),
        Sample("log-batch", True, 0.2),
        Sample("log-batch", True, 0.3),
        Sample("log-batch", False, 1.0, "HTTP 500: pool exhausted"),
        Sample("create", False, 1.0, "HTTP 500: pool exhausted"),
        Sample("log-batch", False, 60.0, "no response: timeout after 60 s"),
    ]


def test_summarize_counts_throughput_latency_and_errors() -> None:
    summary = summarize(samples(), elapsed_s=2.0)

    assert (summary["requests"], summary["ok"], summary["failed"]) == (6, 3, 3)
    assert summary["throughput_rps"] == pytest.approx(1.5)  # successful requests per second
    assert summary["latency_ok_s"]["p50"] == pytest.approx(0.2)
    assert summary["latency_ok_s"]["p99"] == pytest.approx(0.298)
    assert summary["latency_ok_s"]["max"] == pytest.approx(0.3)
    assert summary["latency_all_s"]["p50"] == pytest.approx(0.65)
    assert summary["latency_all_s"]["max"] == pytest.approx(60.0)
    assert summary["by_kind"] == {
        "create": {"ok": 1, "failed": 1, "p50_s": pytest.approx(0.1), "p99_s": pytest.approx(0.1)},
        "log-batch": {"ok": 2, "failed": 2, "p50_s": pytest.approx(0.25), "p99_s": pytest.approx(0.299)},
    }
    assert summary["top_errors"] == [
        {"error": "HTTP 500: pool exhausted", "count": 2},
        {"error": "no response: timeout after 60 s", "count": 1},
    ]


def test_summarize_of_nothing() -> None:
    summary = summarize([], elapsed_s=0)
    assert (summary["ok"], summary["failed"], summary["throughput_rps"]) == (0, 0, 0.0)
    assert summary["latency_ok_s"] == {"p50": None, "p99": None, "max": None}
    assert summary["top_errors"] == []


def test_schedule_interleaves_rounds_in_rotating_order() -> None:
    assert schedule(["a", "b", "c"], 3, interleave=True) == [
        (0, "a"), (0, "b"), (0, "c"),
        (1, "b"), (1, "c"), (1, "a"),
        (2, "c"), (2, "a"), (2, "b"),
    ]  # fmt: skip
    assert schedule(["a", "b"], 2, interleave=False) == [(0, "a"), (1, "a"), (0, "b"), (1, "b")]
    assert schedule(["b"], 1, interleave=True) == [(0, "b")]


def test_merge_cpu_adds_windows_but_not_cores() -> None:
    merged = merge_cpu([{"cores": 2, "wall_s": 10.0, "other_s": 1.5}, {"cores": 2, "wall_s": 12.0, "other_s": 0.5}])
    assert merged == {"cores": 2, "wall_s": 22.0, "other_s": 2.0}
    assert merge_cpu([]) == {}


def test_cpu_share() -> None:
    assert cpu_share(30.0, wall_s=60.0, cores=2) == pytest.approx(25.0)
    assert cpu_share(1.0, wall_s=0.0, cores=2) is None


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == pytest.approx(1.5)
    assert ratio(3.0, 0.0) is None
    assert ratio(None, 2.0) is None


def test_row_takes_the_table_figures_from_a_summary() -> None:
    line = row("defaults", SETUP_RENDERED, HEAVY, summarize(samples(), elapsed_s=2.0), 7, 12.5)
    assert line == {
        "scenario": "defaults",
        "setup": "b",
        "load": HEAVY,
        "ok": 3,
        "failed": 3,
        "throughput_rps": pytest.approx(1.5),
        "p50_s": pytest.approx(0.2),
        "p99_s": pytest.approx(0.298),
        "peak_connections": 7,
        "other_cpu_pct": 12.5,
        "top_error": "2x HTTP 500: pool exhausted",
    }


def fake_row(
    scenario: str, setup: str, load: str, *, ok: int = 100, failed: int = 0, rps: float = 10.0, p99: float = 1.0,
    peak: int = 5,
) -> dict[str, Any]:  # fmt: skip
    return {
        "scenario": scenario, "setup": setup, "load": load, "ok": ok, "failed": failed, "throughput_rps": rps,
        "p50_s": p99 / 2, "p99_s": p99, "peak_connections": peak, "other_cpu_pct": 4.4, "top_error": "",
    }  # fmt: skip


def targets_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return evaluate_targets(
        rows,
        main_scenario="defaults",
        max_connections_scenario="small-db",
        light_load=LIGHT,
        heavy_load=HEAVY,
        connection_bounds={"defaults": 100, "small-db": 24},
        max_connections={"defaults": 120, "small-db": 30},
    )


def passing_rows() -> list[dict[str, Any]]:
    return [
        fake_row("defaults", SETUP_BASELINE, LIGHT, rps=100.0),
        fake_row("defaults", SETUP_RENDERED, LIGHT, rps=160.0, peak=8),
        fake_row("defaults", SETUP_RENDERED, HEAVY, p99=4.9, peak=9),
        fake_row("small-db", SETUP_RENDERED, LIGHT, peak=24),
        fake_row("small-db", SETUP_DIRECT, LIGHT, failed=0, peak=27),
        fake_row("small-db", SETUP_DIRECT, HEAVY, failed=12, peak=27),
    ]


def test_targets_met() -> None:
    targets = targets_of(passing_rows())
    assert [t["met"] for t in targets] == [True, True, True, True]
    assert targets[0]["detail"] == "0 failed of 100, p99 4.900 s"
    assert targets[1]["detail"] == "160.0 vs 100.0 req/s = 1.60x; failed 0 vs 0"
    assert targets[2]["detail"] == (
        f"defaults/{LIGHT}: peak 8 <= 100; defaults/{HEAVY}: peak 9 <= 100; small-db/{LIGHT}: peak 24 <= 24"
    )
    assert targets[3]["detail"] == (
        f"max_connections 30; b/{LIGHT}: 0 failed, peak 24; c/{LIGHT}: 0 failed, peak 27; c/{HEAVY}: 12 failed, peak 27"
    )


def test_targets_missed() -> None:
    rows = passing_rows()
    rows[0]["throughput_rps"] = 120.0  # b is only 1.33x a
    rows[2].update(failed=1)  # one failure at 500 jobs
    rows[3].update(peak_connections=25, failed=3)  # above PgBouncer's cap, and failing where c fails
    targets = targets_of(rows)
    assert [t["met"] for t in targets] == [False, False, False, False]
    assert targets[0]["detail"] == "1 failed of 101, p99 4.900 s"
    assert targets[1]["detail"].startswith("160.0 vs 120.0 req/s = 1.33x")


def test_p99_at_the_limit_misses_and_unmeasured_targets_say_so() -> None:
    rows = passing_rows()
    rows[2]["p99_s"] = 5.0
    assert targets_of(rows)[0]["met"] is False
    targets = targets_of([])
    assert [t["met"] for t in targets] == [None, None, None, None]
    assert "not measured" in markdown_targets(targets)


def test_markdown_table() -> None:
    rows = [fake_row("defaults", SETUP_RENDERED, HEAVY, rps=12.345, p99=1.5, peak=9)]
    rows[0]["top_error"] = "3x HTTP 500: a | b"
    assert markdown_table(rows).splitlines() == [
        "| scenario | load | setup | ok | failed | throughput (req/s) | p50 (s) | p99 (s) | peak PG conns "
        "| other CPU % | top error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        "| defaults | 500 jobs | b: rendered, PgBouncer | 100 | 0 | 12.3 | 0.750 | 1.500 | 9 | 4 "
        "| 3x HTTP 500: a \\| b |",
    ]
