"""Pure helpers of the benchmarks: percentiles, error grouping, per-load summaries, targets, the table.

No I/O here, so tests/unit/test_bench_stats.py checks every figure the benchmark reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The three server setups compared side by side.
SETUP_BASELINE = "a"  # MLflow's default server (uvicorn, default SQLAlchemy pool) straight on Postgres
SETUP_RENDERED = "b"  # the operator's rendered server and PgBouncer
SETUP_DIRECT = "c"  # the rendered server, its backend URI pointing straight at Postgres
SETUP_LABELS = {
    SETUP_BASELINE: "a: mlflow defaults, direct",
    SETUP_RENDERED: "b: rendered, PgBouncer",
    SETUP_DIRECT: "c: rendered, direct",
}

_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
_SQLALCHEMY_BACKGROUND = re.compile(r"\(Background on this error at: [^)]*\)")
_SQL_PARAMETERS = re.compile(r"\[(SQL|parameters): .*?\](?=\s*(\[|\(|$))", re.DOTALL)
ERROR_KEY_LENGTH = 200


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it: what it was, whether it succeeded, how long it took, and why not."""

    kind: str
    ok: bool
    latency_s: float
    error: str | None = None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default);
    None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def error_key(status: int | None, message: str) -> str:
    """A failure, normalised so equal causes group together: run ids, SQLAlchemy's SQL, parameters and
    'background' links removed, whitespace collapsed, cut to ERROR_KEY_LENGTH characters."""
    text = _SQLALCHEMY_BACKGROUND.sub("", message)
    text = _SQL_PARAMETERS.sub("", text)
    text = _RUN_ID.sub("<id>", text)
    text = " ".join(text.split())
    prefix = f"HTTP {status}" if status is not None else "no response"
    key = f"{prefix}: {text}" if text else prefix
    return key if len(key) <= ERROR_KEY_LENGTH else key[: ERROR_KEY_LENGTH - 3] + "..."


def _latency(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def summarize(samples: Iterable[Sample], elapsed_s: float, *, top: int = 5) -> dict[str, Any]:
    """Counts, throughput (successful requests per second of elapsed time), latency percentiles of the
    successful requests and of all of them, counts and percentiles per kind, and the most frequent errors."""
    samples = list(samples)
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error or "unknown" for s in samples if not s.ok)
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({s.kind for s in samples}):
        of_kind = [s for s in samples if s.kind == kind]
        latencies = [s.latency_s for s in of_kind if s.ok]
        kinds[kind] = {
            "ok": len(latencies),
            "failed": len(of_kind) - len(latencies),
            "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99),
        }
    return {
        "requests": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "elapsed_s": elapsed_s,
        "throughput_rps": len(ok) / elapsed_s if elapsed_s > 0 else 0.0,
        "latency_ok_s": _latency([s.latency_s for s in ok]),
        "latency_all_s": _latency([s.latency_s for s in samples]),
        "by_kind": kinds,
        "top_errors": [{"error": error, "count": count} for error, count in errors.most_common(top)],
    }


def schedule(setups: Sequence[str], rounds: int, *, interleave: bool) -> list[tuple[int, str]]:
    """(round, setup) in the order to run them. Interleaved, every round runs each setup once, the order
    rotating by one each round, so a slow or busy phase of the machine hits all setups alike; otherwise each
    setup runs all its rounds before the next starts."""
    if not interleave:
        return [(r, setup) for setup in setups for r in range(rounds)]
    n = len(setups)
    return [(r, setups[(r + i) % n]) for r in range(rounds) for i in range(n)]


def merge_cpu(windows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """CPU accounts of several windows added up; `cores` is kept, not added."""
    merged: dict[str, float] = {}
    for window in windows:
        for key, value in window.items():
            merged[key] = value if key == "cores" else merged.get(key, 0.0) + value
    return merged


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# --- rows, targets, table ------------------------------------------------------------------------------------


def row(
    scenario: str,
    setup: str,
    load: str,
    summary: Mapping[str, Any],
    peak_connections: int | None,
    other_cpu_pct: float | None = None,
) -> dict[str, Any]:
    """One line of the results table from a summary; other_cpu_pct is the share of the machine's CPU that
    processes outside the benchmark used meanwhile (contention)."""
    top_errors = summary["top_errors"]
    return {
        "scenario": scenario,
        "setup": setup,
        "load": load,
        "ok": summary["ok"],
        "failed": summary["failed"],
        "throughput_rps": summary["throughput_rps"],
        "p50_s": summary["latency_ok_s"]["p50"],
        "p99_s": summary["latency_ok_s"]["p99"],
        "peak_connections": peak_connections,
        "other_cpu_pct": other_cpu_pct,
        "top_error": f"{top_errors[0]['count']}x {top_errors[0]['error']}" if top_errors else "",
    }


def _find(rows: Sequence[Mapping[str, Any]], scenario: str, setup: str, load: str) -> Mapping[str, Any] | None:
    for candidate in rows:
        if (candidate["scenario"], candidate["setup"], candidate["load"]) == (scenario, setup, load):
            return candidate
    return None


def _target(text: str, met: bool | None, detail: str) -> dict[str, Any]:
    return {"target": text, "met": met, "detail": detail}


def evaluate_targets(
    rows: Sequence[Mapping[str, Any]],
    *,
    main_scenario: str,
    max_connections_scenario: str | None,
    light_load: str,
    heavy_load: str,
    connection_bounds: Mapping[str, int],
    max_connections: Mapping[str, int],
    p99_limit_s: float = 5.0,
    min_speedup: float = 1.5,
) -> list[dict[str, Any]]:
    """The issue's four targets, each met (True), missed (False) or not measured (None), with the figures.

    connection_bounds: per scenario, the server connections the rendered pool settings allow (PgBouncer
    replicas x max_db_connections); max_connections: Postgres' setting per scenario.
    """
    targets = []

    heavy = _find(rows, main_scenario, SETUP_RENDERED, heavy_load)
    text = f"(b) 0 failed requests at {heavy_load}, p99 under {p99_limit_s:g} s"
    if heavy is None:
        targets.append(_target(text, None, "not measured"))
    else:
        p99 = heavy["p99_s"]
        met = heavy["failed"] == 0 and p99 is not None and p99 < p99_limit_s
        p99_text = f"{p99:.3f} s" if p99 is not None else "n/a"
        detail = f"{heavy['failed']} failed of {heavy['ok'] + heavy['failed']}, p99 {p99_text}"
        targets.append(_target(text, met, detail))

    rendered = _find(rows, main_scenario, SETUP_RENDERED, light_load)
    baseline = _find(rows, main_scenario, SETUP_BASELINE, light_load)
    text = f"(b) at least {min_speedup:g}x the throughput of (a) at {light_load}"
    if rendered is None or baseline is None:
        targets.append(_target(text, None, "not measured"))
    else:
        speedup = ratio(rendered["throughput_rps"], baseline["throughput_rps"])
        detail = (
            f"{rendered['throughput_rps']:.1f} vs {baseline['throughput_rps']:.1f} req/s"
            + (f" = {speedup:.2f}x" if speedup is not None else "")
            + f"; failed {rendered['failed']} vs {baseline['failed']}"
        )
        targets.append(_target(text, speedup is not None and speedup >= min_speedup, detail))

    text = "(b) Postgres server connections bounded by the pool settings, whatever replicas x workers"
    measured = [r for r in rows if r["setup"] == SETUP_RENDERED and r["peak_connections"] is not None]
    if not measured:
        targets.append(_target(text, None, "not measured"))
    else:
        parts, met = [], True
        for r in measured:
            bound = connection_bounds[r["scenario"]]
            met = met and r["peak_connections"] <= bound
            parts.append(f"{r['scenario']}/{r['load']}: peak {r['peak_connections']} <= {bound}")
        targets.append(_target(text, met, "; ".join(parts)))

    text = "replicas x workers beyond Postgres max_connections: (c) fails, (b) does not"
    if max_connections_scenario is None:
        targets.append(_target(text, None, "not measured"))
    else:
        scenario_rows = [r for r in rows if r["scenario"] == max_connections_scenario]
        direct = [r for r in scenario_rows if r["setup"] == SETUP_DIRECT]
        pooled = [r for r in scenario_rows if r["setup"] == SETUP_RENDERED]
        if not direct or not pooled:
            targets.append(_target(text, None, "not measured"))
        else:
            limit = max_connections.get(max_connections_scenario)
            met = any(r["failed"] > 0 for r in direct) and all(r["failed"] == 0 for r in pooled)
            detail = "; ".join(
                f"{r['setup']}/{r['load']}: {r['failed']} failed, peak {r['peak_connections']}"
                for r in [*pooled, *direct]
            )
            targets.append(_target(text, met, f"max_connections {limit}; {detail}"))
    return targets


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cpu_share(other_s: float, wall_s: float, cores: int) -> float | None:
    """other_s CPU seconds as a percentage of what cores could give in wall_s."""
    capacity = wall_s * cores
    return 100 * other_s / capacity if capacity > 0 else None


def markdown_table(rows: Sequence[Mapping[str, Any]], *, error_width: int = 90) -> str:
    """The results as a GitHub markdown table, one row per scenario, load and setup."""
    header = [
        "scenario", "load", "setup", "ok", "failed", "throughput (req/s)", "p50 (s)", "p99 (s)",
        "peak PG conns", "other CPU %", "top error",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 7 + ["---"]) + "|"]
    for r in rows:
        error = r["top_error"]
        if len(error) > error_width:
            error = error[: error_width - 3] + "..."
        cells = [
            r["scenario"],
            r["load"],
            SETUP_LABELS.get(r["setup"], r["setup"]),
            str(r["ok"]),
            str(r["failed"]),
            _number(r["throughput_rps"], 1),
            _number(r["p50_s"], 3),
            _number(r["p99_s"], 3),
            "n/a" if r["peak_connections"] is None else str(r["peak_connections"]),
            _number(r.get("other_cpu_pct"), 0),
            error,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_targets(targets: Sequence[Mapping[str, Any]]) -> str:
    marks = {True: "met", False: "MISSED", None: "not measured"}
    return "".join(f"- **{marks[t['met']]}**: {t['target']} ({t['detail']})\n" for t in targets)
