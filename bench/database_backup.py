"""`python -m bench.database_backup`: what database backups with barman-cloud cost, with the scripts, env and
Postgres parameters the operator renders, run as local processes against MinIO the way
tests/integration/backups.py runs them (the scripts as the postgres user, PGHOST on the socket).

1. Backup and restore of a ~1 GiB database: `pgbench -i --scale N` (64: ~1 GiB) on a Postgres archiving its
   WAL as rendered; once the archive has caught up with that load, the rendered CronJob's script
   (barman-cloud-backup, then retention) is timed end to end; pgbench transactions then write WAL after the
   backup, and the rendered restore init container (download, WAL replay to the end of the archive) is timed
   into an empty data directory. The restored database must match the source: row counts and balance sums
   exactly, sizes within 1 %. The backup's size is the sum of the object sizes under the server's prefix.
2. Archiving's cost under tracking load: the tracking stack as rendered (bench.tracking_stack's setup (b),
   the spec's defaults: 2 replicas x 2 workers through PgBouncer) twice, on two Postgres with the rendered
   parameters made durable (fsync, synchronous_commit, full_page_writes on), one archiving into MinIO as
   rendered (archive_timeout 60 s), the other not. Both run at once and the rounds of "50 jobs back-to-back"
   alternate between them in rotating order: only ratios measured side by side mean anything on this box.

Results: bench/results/database_backup.json (--quick: database_backup-quick.json) and its .md.

    .venv/bin/python -m bench.database_backup [--quick] [--scale N] [--rounds N] [--round-seconds S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.integration import backups
from tests.integration import dataplane as dp
from tests.integration.s3_servers import S3Server, minio_server

from bench import loadgen, stats, tracking_stack
from bench.common import Run, loads_text, logger, number, proc_stat_cpu_ticks, report
from bench.harness import Benchmark, run_parser
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.common import Obj

SCALE, QUICK_SCALE = 64, 7  # pgbench scale factors: ~1 GiB and ~110 MiB (16 MiB each)
ROUNDS, QUICK_ROUNDS = 6, 2
ROUND_S, QUICK_ROUND_S = 20.0, 10.0
AFTER_BACKUP_TRANSACTIONS, QUICK_AFTER_BACKUP_TRANSACTIONS = 500, 100  # per pgbench client
PGBENCH_CLIENTS = 4
ARCHIVE_CATCH_UP_S = 1800.0  # the WAL of building 1 GiB goes out segment by segment, one process each
SIZE_TOLERANCE = 0.01
SEGMENT_BYTES = 16 * 1024 * 1024
ON, OFF = "on", "off"
ARCHIVE_KEYS = ["archive_command", "archive_mode", "archive_timeout"]
PARTS = ("backup", "archiving")
SERVER_PREFIX = f"backups/{backups.SOURCE}/"  # where the test harness's spec archives SOURCE

log = logger("database_backup")

FIGURES_SQL = """SELECT
  (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_branches),
  (SELECT count(*) FROM pgbench_tellers), (SELECT count(*) FROM pgbench_history),
  (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts), (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
  pg_database_size(current_database()), (SELECT sum(pg_database_size(oid)) FROM pg_database)"""
FIGURE_NAMES = (
    "accounts_rows",
    "branches_rows",
    "tellers_rows",
    "history_rows",
    "accounts_balance_sum",
    "history_delta_sum",
    "database_bytes",
    "cluster_bytes",
)
ARCHIVER_SQL = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, archived_count, failed_count FROM pg_stat_archiver"
)


# --- pure parts -------------------------------------------------------------------------------------------


def container_parameters(container: Obj) -> dict[str, str]:
    """The Postgres parameters of a rendered container's `-c key=value` args."""
    args = container["args"]
    return dict(arg.split("=", 1) for flag, arg in zip(args[::2], args[1::2], strict=True) if flag == "-c")


def settings_difference(first: Mapping[str, str], second: Mapping[str, str]) -> list[str]:
    """The keys whose values differ, or that only one of the two has, sorted."""
    return sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))


def parse_figures(line: str) -> dict[str, int]:
    """FIGURES_SQL's one row (psql's unaligned `a|b|...`) by name."""
    values = line.strip().split("|")
    if len(values) != len(FIGURE_NAMES):
        raise ValueError(f"expected {len(FIGURE_NAMES)} values, got {line!r}")
    return {name: int(value) for name, value in zip(FIGURE_NAMES, values, strict=True)}


def database_mismatches(
    source: Mapping[str, int], restored: Mapping[str, int], size_tolerance: float = SIZE_TOLERANCE
) -> list[str]:
    """What differs between two databases' figures: counts and sums exactly; sizes (`*_bytes`) beyond the
    relative tolerance, since a restored cluster's files may differ by a page or so."""
    problems = []
    for name, value in source.items():
        other = restored.get(name)
        if other is None:
            problems.append(f"{name}: missing")
        elif differs(value, other, size_tolerance if name.endswith("_bytes") else 0.0):
            problems.append(f"{name}: {value} -> {other}")
    return problems


def differs(value: int, other: int, tolerance: float) -> bool:
    return abs(other - value) > tolerance * abs(value)


def store_sizes(objects: Iterable[tuple[str, int]], prefix: str) -> dict[str, int]:
    """Bytes under one server's prefix, split as barman-cloud lays them out: base/ (base backups), wals/."""
    sizes = {"base_bytes": 0, "wals_bytes": 0, "other_bytes": 0, "base_objects": 0, "wals_objects": 0}
    for key, size in objects:
        if not key.startswith(prefix):
            continue
        part = key[len(prefix) :].split("/", 1)[0]
        kind = part if part in ("base", "wals") else "other"
        sizes[f"{kind}_bytes"] += size
        if kind != "other":
            sizes[f"{kind}_objects"] += 1
    sizes["total_bytes"] = sizes["base_bytes"] + sizes["wals_bytes"] + sizes["other_bytes"]
    return sizes


def parse_archiver(line: str) -> dict[str, int]:
    """ARCHIVER_SQL's row: WAL position in bytes, segments archived and failed attempts so far."""
    position, archived, failed = (int(value) for value in line.strip().split("|"))
    return {"wal_position": position, "archived": archived, "failed": failed}


def archiver_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """WAL written (bytes and 16 MiB segments' worth), segments archived and failed attempts between two
    readings of parse_archiver."""
    written = after["wal_position"] - before["wal_position"]
    return {
        "wal_bytes": written,
        "wal_segments_written": written / SEGMENT_BYTES,
        "archived": after["archived"] - before["archived"],
        "failed": after["failed"] - before["failed"],
    }


def sum_deltas(deltas: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = ("wal_bytes", "wal_segments_written", "archived", "failed")
    return {key: sum(delta[key] for delta in deltas) for key in keys}


def throughput_comparison(on: Mapping[str, Any], off: Mapping[str, Any]) -> dict[str, Any]:
    """Two load summaries (tracking_stack.finish_load's) side by side: requests/s of each over all rounds,
    their ratio, and the ratio of each round pair (round r of both ran back to back)."""
    on_rounds = {r["round"]: r["throughput_rps"] for r in on.get("rounds", [])}
    off_rounds = {r["round"]: r["throughput_rps"] for r in off.get("rounds", [])}
    pairs = [stats.ratio(on_rounds[r], off_rounds[r]) for r in sorted(on_rounds.keys() & off_rounds.keys())]
    found = [p for p in pairs if p is not None]
    return {
        "on_rps": on.get("throughput_rps"),
        "off_rps": off.get("throughput_rps"),
        "ratio": stats.ratio(on.get("throughput_rps"), off.get("throughput_rps")),
        "round_ratios": pairs,
        "round_ratio_median": statistics.median(found) if found else None,
        "round_ratio_min": min(found) if found else None,
        "round_ratio_max": max(found) if found else None,
    }


# --- the rendered database --------------------------------------------------------------------------------


def rendered_postgres(ts_spec: TrackingServerSpec, s3: S3Server) -> tuple[dict[str, str], dict[str, str]]:
    """The rendered StatefulSet's Postgres parameters, made durable, and the AWS env its archive_command
    reads (empty without backups)."""
    container = backups.statefulset(backups.SOURCE, ts_spec)["spec"]["template"]["spec"]["containers"][0]
    settings = {**container_parameters(container), **tracking_stack.DURABLE_SETTINGS}
    env = backups.container_env(container, backups.secrets(s3))
    return settings, {key: value for key, value in env.items() if key.startswith("AWS_")}


def psql_argv(postgres: dp.Postgres, program: str) -> list[str]:
    return [str(postgres.bin_dir / program), "-h", str(postgres.workdir), "-p", str(postgres.port), "-U", "postgres"]


def timed(action: Callable[[], object]) -> float:
    began = time.monotonic()
    action()
    return round(time.monotonic() - began, 1)


def pgbench(postgres: dp.Postgres, *args: str) -> str:
    argv = [*psql_argv(postgres, "pgbench"), *args, postgres.dbname]
    return dp.run_checked(argv, what="pgbench", timeout=3600)


def figures(postgres: dp.Postgres) -> dict[str, int]:
    return parse_figures(postgres.psql(FIGURES_SQL, dbname=postgres.dbname, timeout=600))


def list_objects(s3: S3Server, bucket: str, prefix: str) -> list[tuple[str, int]]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [(obj["Key"], int(obj["Size"])) for page in pages for obj in page.get("Contents", [])]


def run_backup_script(postgres: dp.Postgres, s3: S3Server, ts_spec: TrackingServerSpec) -> None:
    """The rendered CronJob's container, its PGHOST/PGPORT pointed at the local socket."""
    cronjob = build.get_backup_cronjob(backups.SOURCE, backups.NAMESPACE, ts_spec)
    assert cronjob is not None
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    local = {"PGHOST": str(postgres.workdir), "PGPORT": str(postgres.port)}
    backups.run_script(pod, pod["containers"][0], backups.secrets(s3), local)


# --- 1. backup and restore --------------------------------------------------------------------------------


def backup_and_restore(run: Run, s3: S3Server) -> None:
    section: dict[str, Any] = run.result["backup_restore"]
    bucket = s3.create_bucket()
    ts_spec = backups.spec(s3, bucket)
    settings, env = rendered_postgres(ts_spec, s3)
    section["postgres_settings"] = settings
    with dp.Postgres(settings, env=env, log_dir=run.logs / "backup-source") as postgres:
        source = back_up(run, section, postgres, s3, ts_spec)
    log("restoring into an empty data directory (rendered init container)")
    began = time.monotonic()
    data = backups.restore(s3, bucket, None)
    section["restore_s"] = round(time.monotonic() - began, 1)
    log(f"restored in {section['restore_s']} s; comparing")
    with dp.Postgres(data_dir=data, log_dir=run.logs / "backup-restored") as restored:
        section["restored"] = figures(restored)
    section["mismatches"] = database_mismatches(source, section["restored"])
    section["store"] = store_sizes(list_objects(s3, bucket, SERVER_PREFIX), SERVER_PREFIX)


def back_up(
    run: Run, section: dict[str, Any], postgres: dp.Postgres, s3: S3Server, ts_spec: TrackingServerSpec
) -> dict[str, int]:
    """Builds the database, waits for its WAL to be archived, times the backup script, writes WAL after
    it (which the restore must replay) and waits for that too; returns the source's final figures."""
    scale = run.args.scale
    log(f"pgbench -i --scale {scale}")
    section["build_s"] = timed(lambda: pgbench(postgres, "-i", "-q", "--scale", str(scale)))
    section["built"] = figures(postgres)
    log(f"built: {section['built']['database_bytes'] / 2**20:.0f} MiB in {section['build_s']} s; archive catching up")
    section["archive_catch_up_s"] = timed(lambda: backups.archived_through(postgres, ARCHIVE_CATCH_UP_S))
    section["archiver_before_backup"] = parse_archiver(postgres.psql(ARCHIVER_SQL))
    log(f"archive caught up in {section['archive_catch_up_s']} s; backing up (rendered CronJob script)")
    section["backup_s"] = timed(lambda: run_backup_script(postgres, s3, ts_spec))
    log(f"backup took {section['backup_s']} s; writing WAL after it")
    per_client = str(run.args.after_backup_transactions)
    section["after_backup_s"] = timed(
        lambda: pgbench(postgres, "-n", "-c", str(PGBENCH_CLIENTS), "-j", "2", "-t", per_client)
    )
    source = figures(postgres)
    backups.archived_through(postgres, ARCHIVE_CATCH_UP_S)
    section["archiver_at_end"] = parse_archiver(postgres.psql(ARCHIVER_SQL))
    section["source"] = source
    return source


# --- 2. archiving under tracking load ---------------------------------------------------------------------


def minio_cpu_seconds(s3: S3Server) -> float:
    stat = Path(f"/proc/{s3.process.pid}/stat").read_text()
    return proc_stat_cpu_ticks(stat) / os.sysconf("SC_CLK_TCK")


def archiver_reading(ctx: tracking_stack.Context) -> dict[str, int]:
    return parse_archiver(ctx.psql.query(ARCHIVER_SQL))


def alternate(
    contexts: Mapping[str, tracking_stack.Context],
    setups: Mapping[str, tracking_stack.SetupRun],
    load: loadgen.Load,
    s3: S3Server,
) -> list[dict[str, Any]]:
    """The load's rounds, alternating between the two stacks in rotating order; per round, the WAL its
    Postgres wrote and archived, and MinIO's CPU."""
    rounds = []
    for round_, mode in stats.schedule([ON, OFF], load.rounds, interleave=True):
        before, minio_before = archiver_reading(contexts[mode]), minio_cpu_seconds(s3)
        tracking_stack.measure_round(contexts[mode], setups[mode], 0, load, round_)
        delta = archiver_delta(before, archiver_reading(contexts[mode]))
        rounds.append({"mode": mode, "round": round_, **delta, "minio_cpu_s": minio_cpu_seconds(s3) - minio_before})
        time.sleep(tracking_stack.PAUSE_BETWEEN_ROUNDS_S)
    return rounds


def archiving_settings(s3: S3Server, bucket: str, scenario: tracking_stack.Scenario) -> dict[str, Any]:
    """The two databases' settings and env: the scenario's spec as rendered, and the same with backups on."""
    off, _ = rendered_postgres(scenario.spec(), s3)
    on_spec = scenario.spec().model_copy(update={"database": backups.spec(s3, bucket).database})
    on, env = rendered_postgres(on_spec, s3)
    differ = settings_difference(on, off)
    if differ != ARCHIVE_KEYS:
        raise AssertionError(f"the two databases must differ in archiving only, not in {differ}")
    return {"settings": {ON: on, OFF: off}, "env": {ON: env, OFF: {}}, "differ_in": differ}


def migrated(
    run: Run, root: Path, scenario: tracking_stack.Scenario, load: loadgen.Load, rendered: Mapping[str, Any], mode: str
) -> AbstractContextManager[tracking_stack.Context]:
    named = replace(scenario, name=f"archiving-{mode}")  # its logs' directory
    settings, env = rendered["settings"][mode], rendered["env"][mode]
    return tracking_stack.migrated_stack(named, [load], root, run.logs, settings, env)


def archiving_cost(run: Run, s3: S3Server, root: Path) -> None:
    section: dict[str, Any] = run.result["archiving"]
    scenario = tracking_stack.SCENARIOS["defaults"]
    rendered = archiving_settings(s3, s3.create_bucket(), scenario)
    section.update(settings=rendered["settings"], settings_differ_in=rendered["differ_in"])
    load = loadgen.Load(tracking_stack.LIGHT, jobs=50, duration_s=run.args.round_seconds, rounds=run.args.rounds)
    section["load"] = load.describe()
    with ExitStack() as stack:
        contexts = {
            mode: stack.enter_context(migrated(run, root, scenario, load, rendered, mode)) for mode in (ON, OFF)
        }
        setups = {mode: tracking_stack.open_setup(ctx, stats.SETUP_RENDERED, stack) for mode, ctx in contexts.items()}
        first = archiver_reading(contexts[ON])
        section["rounds"] = alternate(contexts, setups, load, s3)
        section["archived_while_loaded"] = archiver_delta(first, archiver_reading(contexts[ON]))
        log("archive catching up after the load")
        section["catch_up_s"] = timed(lambda: backups.archived_through(contexts[ON].postgres, ARCHIVE_CATCH_UP_S))
        section["archived_with_catch_up"] = archiver_delta(first, archiver_reading(contexts[ON]))
        for mode, setup in setups.items():
            tracking_stack.finish_load(setup, load)
            section["setups"][mode] = tracking_stack.close_setup(contexts[mode], setup)
    section["summary"] = archiving_summary(section)


def archiving_summary(section: Mapping[str, Any]) -> dict[str, Any]:
    """Throughput on/off and their ratio, WAL written and archived during the rounds, and CPU per request."""
    loads = {mode: section["setups"][mode]["loads"].get(tracking_stack.LIGHT, {}) for mode in (ON, OFF)}
    return {
        "throughput": throughput_comparison(loads[ON], loads[OFF]),
        "wal": {mode: sum_deltas([r for r in section["rounds"] if r["mode"] == mode]) for mode in (ON, OFF)},
        "cpu": {mode: cpu_per_request(loads[mode]) for mode in (ON, OFF)},
        "minio_cpu_s": sum(r["minio_cpu_s"] for r in section["rounds"]),
    }


def cpu_per_request(load: Mapping[str, Any]) -> dict[str, float | None]:
    """CPU ms per successful request: Postgres' processes (the archiver and the archive_command it runs
    included) and the whole stack's."""
    ok, cpu = load.get("ok"), load.get("cpu") or {}
    postgres_s = cpu.get("postgres_s")
    return {
        "postgres_ms_per_ok": 1000 * postgres_s / ok if postgres_s is not None and ok else None,
        "stack_ms_per_ok": load.get("stack_cpu_ms_per_ok_request"),
    }


# --- the frame --------------------------------------------------------------------------------------------


def barman_version() -> str:
    found = subprocess.run(["barman-cloud-backup", "--version"], capture_output=True, text=True, check=False)
    return (found.stdout + found.stderr).strip()


def benchmark(run: Run) -> None:
    root = run.stack.enter_context(tracking_stack.stack_root())
    minio = root / "minio"
    minio.mkdir()
    s3 = run.stack.enter_context(minio_server(minio))
    run.result["versions"]["barman-cloud"] = barman_version()
    if "backup" in run.args.parts:
        backup_and_restore(run, s3)
    if "archiving" in run.args.parts:
        archiving_cost(run, s3, root)


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """No speed target was set: the checks are that the figures are right (the restore gave back the source)
    and that archiving kept up (no failed attempt, the archive complete after the load)."""
    restore, archiving = result.get("backup_restore") or {}, result.get("archiving") or {}
    mismatches = restore.get("mismatches")
    wal = archiving.get("archived_with_catch_up")
    return [
        {
            "target": "the restored database equals the source (row counts and sums exactly, sizes within 1 %)",
            "met": None if mismatches is None else not mismatches,
            "detail": "not measured" if mismatches is None else "; ".join(mismatches) or "equal",
        },
        {
            "target": "archiving keeps up under 50 jobs: no failed archive attempt, every segment archived after",
            "met": None if wal is None else wal["failed"] == 0,
            "detail": "not measured"
            if wal is None
            else f"{wal['archived']:.0f} segments archived from the first round to the end of the catch-up "
            f"({number(archiving.get('catch_up_s'), 1, ' s')} after the load), {wal['failed']:.0f} failed attempts",
        },
    ]


def mib(value: float | None) -> str:
    return number(None if value is None else value / 2**20, 0, " MiB")


def backup_rows(section: Mapping[str, Any], scale: int) -> list[tuple[str, str]]:
    built, source, store = section.get("built") or {}, section.get("source") or {}, section.get("store") or {}
    return [
        (f"database (pgbench scale {scale}): pg_database_size / whole cluster",
         f"{mib(built.get('database_bytes'))} / {mib(built.get('cluster_bytes'))} "
         f"({built.get('accounts_rows', 'n/a')} accounts)"),
        ("pgbench -i; the archive catching up with its WAL after it",
         f"{number(section.get('build_s'), 1, ' s')}; {number(section.get('archive_catch_up_s'), 1, ' s')}"),
        ("**base backup** (barman_backup.sh: barman-cloud-backup --gzip + retention), end to end",
         number(section.get("backup_s"), 1, " s")),
        ("backup in S3: base backup (gzip) / WAL (objects) / total",
         f"{mib(store.get('base_bytes'))} / {mib(store.get('wals_bytes'))} ({store.get('wals_objects', 'n/a')}) / "
         f"{mib(store.get('total_bytes'))}"),
        ("after the backup: pgbench transactions (WAL the restore replays)",
         f"{source.get('history_rows', 'n/a')} in {number(section.get('after_backup_s'), 1, ' s')}"),
        ("**restore** (barman_restore.sh: download + WAL replay to the end of the archive), end to end",
         number(section.get("restore_s"), 1, " s")),
        ("restored vs source", "; ".join(section.get("mismatches") or []) or (
            "equal" if "mismatches" in section else "n/a")),
    ]  # fmt: skip


def archiving_rows(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    summary = section.get("summary") or {}
    t, wal, cpu = summary.get("throughput") or {}, summary.get("wal") or {}, summary.get("cpu") or {}
    loaded, caught_up = section.get("archived_while_loaded") or {}, section.get("archived_with_catch_up") or {}
    loads = {m: ((section.get("setups") or {}).get(m) or {}).get("loads", {}).get(tracking_stack.LIGHT, {})
             for m in (ON, OFF)}  # fmt: skip

    def latency(mode: str) -> str:
        found = loads[mode].get("latency_ok_s") or {}
        return f"{number(found.get('p50'), 3)} / {number(found.get('p99'), 3)} s"

    def wal_text(mode: str) -> str:
        found = wal.get(mode) or {}
        return f"{mib(found.get('wal_bytes'))} ({number(found.get('wal_segments_written'), 1)} segments)"

    return [
        ("**50 jobs back-to-back: req/s archiving on / off**",
         f"{number(t.get('on_rps'), 1)} / {number(t.get('off_rps'), 1)}"),
        ("**ratio on/off** (all rounds); per round pair: median (min - max)",
         f"{number(t.get('ratio'), 3)}; {number(t.get('round_ratio_median'), 3)} "
         f"({number(t.get('round_ratio_min'), 3)} - {number(t.get('round_ratio_max'), 3)})"),
        ("ok / failed requests on; off",
         f"{loads[ON].get('ok', 'n/a')} / {loads[ON].get('failed', 'n/a')}; "
         f"{loads[OFF].get('ok', 'n/a')} / {loads[OFF].get('failed', 'n/a')}"),
        ("latency p50 / p99 on; off", f"{latency(ON)}; {latency(OFF)}"),
        ("WAL written during the rounds on; off", f"{wal_text(ON)}; {wal_text(OFF)}"),
        ("WAL segments archived: during the on rounds / while the load ran (all rounds and pauses) / with the "
         "catch-up after it (which closes the current segment early); failed attempts",
         f"{number((wal.get(ON) or {}).get('archived'), 0)} / {number(loaded.get('archived'), 0)} / "
         f"{number(caught_up.get('archived'), 0)} in {number(section.get('catch_up_s'), 1, ' s')} more; "
         f"{number(caught_up.get('failed'), 0)}"),
        ("Postgres CPU per ok request (archiver and barman-cloud-wal-archive included) on / off",
         f"{number((cpu.get(ON) or {}).get('postgres_ms_per_ok'), 2, ' ms')} / "
         f"{number((cpu.get(OFF) or {}).get('postgres_ms_per_ok'), 2, ' ms')}"),
        ("whole stack CPU per ok request on / off; MinIO CPU during the rounds",
         f"{number((cpu.get(ON) or {}).get('stack_ms_per_ok'), 2, ' ms')} / "
         f"{number((cpu.get(OFF) or {}).get('stack_ms_per_ok'), 2, ' ms')}; "
         f"{number(summary.get('minio_cpu_s'), 1, ' s')}"),
    ]  # fmt: skip


def markdown(result: Mapping[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    rows = backup_rows(result.get("backup_restore") or {}, p["scale"])
    rows += archiving_rows(result.get("archiving") or {})
    rows += [
        (f"load average at start / end ({m['cores']} cores)",
         f"{loads_text(m.get('load_average_at_start'))} / {loads_text(m.get('load_average_at_end'))}"),
        ("run took", number(result.get("duration_s"), 0, " s")),
    ]  # fmt: skip
    return report("Database backup", result, rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__, "database_backup", "a smoke run: ~100 MiB, 2 rounds of 10 s", resync_seconds=None)
    parser.add_argument("--scale", type=int, help=f"pgbench scale factor (default {SCALE}; {QUICK_SCALE} with --quick)")
    parser.add_argument("--rounds", type=int, help=f"rounds per setup (default {ROUNDS}; {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--round-seconds", type=float, help=f"default {ROUND_S:g}; {QUICK_ROUND_S:g} with --quick")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, of: " + ", ".join(PARTS))
    args = parser.parse_args(argv)
    args.parts = [part for part in args.parts.split(",") if part]
    if any(part not in PARTS for part in args.parts):
        parser.error(f"--parts takes {', '.join(PARTS)}")
    quick = args.quick
    args.scale = args.scale or (QUICK_SCALE if quick else SCALE)
    args.rounds = args.rounds or (QUICK_ROUNDS if quick else ROUNDS)
    args.round_seconds = args.round_seconds or (QUICK_ROUND_S if quick else ROUND_S)
    args.after_backup_transactions = QUICK_AFTER_BACKUP_TRANSACTIONS if quick else AFTER_BACKUP_TRANSACTIONS
    return args


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "parts": args.parts,
        "scale": args.scale,
        "after_backup_transactions": args.after_backup_transactions * PGBENCH_CLIENTS,
        "rounds": args.rounds,
        "round_seconds": args.round_seconds,
        "jobs": 50,
    }


NOTES = [
    "Everything runs on this machine's cores (MinIO, Postgres, the scripts, the stack and the load generator): "
    "times are this box's, not a production node's.",
    "Part 1's Postgres runs the rendered StatefulSet's parameters with fsync, synchronous_commit and "
    "full_page_writes on; its archive_command is the rendered one, with the rendered env's keys.",
    "The backup time is the rendered CronJob container's command end to end (barman-cloud-backup with "
    "--gzip --immediate-checkpoint, then barman-cloud-backup-delete); the restore time is the rendered init "
    "container's command end to end (barman-cloud-restore, then Postgres replaying WAL with "
    "barman-cloud-wal-restore until promoted), plus the operator's choice of the base backup (one listing).",
    "Part 2's two databases have the same rendered parameters, made durable as in part 1; they differ only in "
    "archive_mode, archive_command and archive_timeout (checked). Both stacks run at once, idle but for the "
    "one under load; rounds alternate in rotating order.",
    "Postgres CPU counts its processes and the archive_command they run (the archiver reaps it); MinIO's CPU "
    "is read from its process and is part of 'other' in the stack's CPU accounts.",
]


BENCHMARK = Benchmark(
    "database_backup",
    parse_args,
    parameters,
    benchmark,
    evaluate,
    markdown,
    NOTES,
    log,
    sections={"backup_restore": {}, "archiving": {"setups": {}}},
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
