"""The pure parts of bench/database_backup.py: rendered parameters, the restored-vs-source comparison, the
store's sizes, the archiver's readings and the on/off throughput comparison."""

from __future__ import annotations

from typing import Any

import pytest
from bench import database_backup as db

MIB = 2**20


def test_container_parameters_reads_the_rendered_dash_c_pairs() -> None:
    container = {"args": ["-c", "archive_mode=on", "-c", "archive_command=barman-cloud-wal-archive a=b %p"]}
    assert db.container_parameters(container) == {
        "archive_mode": "on",
        "archive_command": "barman-cloud-wal-archive a=b %p",
    }


def test_settings_difference_names_changed_and_one_sided_keys() -> None:
    on = {"archive_mode": "on", "fsync": "on", "work_mem": "8MB"}
    off = {"fsync": "on", "work_mem": "4MB"}
    assert db.settings_difference(on, off) == ["archive_mode", "work_mem"]
    assert db.settings_difference(off, dict(off)) == []


def test_parse_figures_names_each_value() -> None:
    line = "700000|7|70|400|-1234|-1234|118000000|125000000\n"
    found = db.parse_figures(line)
    assert found["accounts_rows"] == 700000 and found["accounts_balance_sum"] == -1234
    assert found["cluster_bytes"] == 125000000
    with pytest.raises(ValueError, match="expected 8 values"):
        db.parse_figures("1|2")


def figures(**changed: int) -> dict[str, int]:
    base = dict.fromkeys(db.FIGURE_NAMES, 100) | {"database_bytes": 1000 * MIB, "cluster_bytes": 1030 * MIB}
    return base | changed


def test_database_mismatches_counts_exactly_and_sizes_within_the_tolerance() -> None:
    assert db.database_mismatches(figures(), figures(database_bytes=1000 * MIB + 8192)) == []
    assert db.database_mismatches(figures(), figures(history_rows=99)) == ["history_rows: 100 -> 99"]
    assert db.database_mismatches(figures(), figures(database_bytes=900 * MIB)) == [
        f"database_bytes: {1000 * MIB} -> {900 * MIB}"
    ]
    missing = figures()
    del missing["tellers_rows"]
    assert db.database_mismatches(figures(), missing) == ["tellers_rows: missing"]


def test_store_sizes_split_base_backups_and_wal_under_the_prefix_only() -> None:
    objects = [
        ("backups/tracking/base/20260101T000000/data.tar.gz", 50 * MIB),
        ("backups/tracking/base/20260101T000000/backup.info", 1000),
        ("backups/tracking/wals/0000000100000000/000000010000000000000001.gz", 2 * MIB),
        ("backups/tracking/wals/0000000100000000/000000010000000000000002.gz", 3 * MIB),
        ("backups/other/base/x/data.tar.gz", 999 * MIB),
    ]
    assert db.store_sizes(objects, "backups/tracking/") == {
        "base_bytes": 50 * MIB + 1000,
        "wals_bytes": 5 * MIB,
        "other_bytes": 0,
        "base_objects": 2,
        "wals_objects": 2,
        "total_bytes": 55 * MIB + 1000,
    }


def test_archiver_delta_between_two_readings() -> None:
    before = db.parse_archiver("100|3|0")
    after = db.parse_archiver(f"{100 + 32 * MIB}|5|1\n")
    assert db.archiver_delta(before, after) == {
        "wal_bytes": 32 * MIB,
        "wal_segments_written": 2.0,
        "archived": 2,
        "failed": 1,
    }
    assert db.sum_deltas([db.archiver_delta(before, after)] * 2)["archived"] == 4


def load(rps: float, rounds: list[tuple[int, float]]) -> dict[str, Any]:
    return {"throughput_rps": rps, "rounds": [{"round": r, "throughput_rps": v} for r, v in rounds]}


def test_throughput_comparison_pairs_rounds_run_back_to_back() -> None:
    found = db.throughput_comparison(load(90.0, [(0, 80.0), (1, 100.0)]), load(100.0, [(0, 100.0), (1, 100.0)]))
    assert found["ratio"] == pytest.approx(0.9)
    assert found["round_ratios"] == [pytest.approx(0.8), pytest.approx(1.0)]
    assert found["round_ratio_median"] == pytest.approx(0.9)
    assert (found["round_ratio_min"], found["round_ratio_max"]) == (pytest.approx(0.8), pytest.approx(1.0))


def test_throughput_comparison_without_a_measured_side() -> None:
    found = db.throughput_comparison(load(90.0, [(0, 90.0)]), {})
    assert found["ratio"] is None and found["round_ratios"] == [] and found["round_ratio_median"] is None


def test_cpu_per_request() -> None:
    found = db.cpu_per_request({"ok": 2000, "cpu": {"postgres_s": 3.0}, "stack_cpu_ms_per_ok_request": 9.5})
    assert found == {"postgres_ms_per_ok": 1.5, "stack_ms_per_ok": 9.5}
    assert db.cpu_per_request({})["postgres_ms_per_ok"] is None


def test_parse_args_quick_and_explicit_values() -> None:
    quick = db.parse_args(["--quick"])
    assert (quick.scale, quick.rounds, quick.round_seconds) == (db.QUICK_SCALE, db.QUICK_ROUNDS, db.QUICK_ROUND_S)
    full = db.parse_args(["--scale", "10", "--parts", "backup"])
    assert (full.scale, full.rounds, full.parts) == (10, db.ROUNDS, ["backup"])
    with pytest.raises(SystemExit):
        db.parse_args(["--parts", "nope"])


def test_evaluate_and_markdown_of_an_empty_result() -> None:
    result: dict[str, Any] = {
        "date": "2026-01-01T00:00:00+00:00",
        "parameters": db.BENCHMARK.run_parameters(db.parse_args(["--quick"])),
        "machine": {"cores": 2},
        "backup_restore": {},
        "archiving": {"setups": {}},
    }
    assert [t["met"] for t in db.evaluate(result)] == [None, None]
    result["targets"] = db.evaluate(result)
    text = db.markdown(result)
    assert "Database backup benchmark" in text and "not measured" in text
