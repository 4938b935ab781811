"""`make bench`: the tracking stack as the operator renders it, as local processes, under concurrent training jobs.

Three server setups, R replicas each behind a client-side round-robin, against one Postgres (each setup on
its own fresh copy of the migrated database):

  (a) MLflow's defaults, straight on Postgres: `mlflow server --backend-store-uri postgresql+psycopg2://...
      --workers W` (uvicorn, SQLAlchemy's default pool, the job runner on): what users run today. The
      driver is named because the server venv, like the image, ships psycopg2 and not psycopg 3.
  (b) what the operator renders: the argv of `tracking_server_args` and the env of `tracking_server_env`
      (gunicorn sync workers, small pools, ...) through PgBouncer(s) rendered by `get_pgbouncer_config`
      (transaction mode), server replica i on PgBouncer i mod P.
  (c) the same argv and env with the backend URI pointing straight at Postgres.

Only addresses and directories are rewritten: hosts and ports to 127.0.0.1, the S3 artifact destination to
a local file:// directory (artifacts are not exercised), the Prometheus dir and HOME to private temp dirs.
Postgres runs with the rendered `postgres_parameters` (spec overrides included) plus the harness's
durability-off defaults (fsync, synchronous_commit, full_page_writes off) unless --durable.

Two loads per setup (bench/loadgen.py): 50 jobs logging back-to-back (3 rounds of 15 s), and 500 jobs
logging every ~10 s (60 s). This box is shared and its speed drifts by 2x within minutes, so in the
"defaults" scenario all three setups run at once (idle but for the one under load) and the rounds of the
back-to-back load alternate between them in rotating order: the throughput ratios compare like with like.
In "max-connections" the setups cannot coexist (their idle pools would share the small max_connections)
and run one after the other.
Results: bench/results/tracking_stack.json (every figure, the rendered configs, the machine) and a
markdown table on stdout (also written next to the JSON).

    .venv/bin/python -m bench.tracking_stack [--quick] [--scenarios defaults,max-connections] [--setups a,b,c]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.integration import dataplane as dp

from bench import loadgen, stats
from bench.common import interrupts_unwind, machine
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders import trackingserver as ts
from mlflow_operator.builders.config import render_pgbouncer_ini
from mlflow_operator.handlers.registry_events import new_encryption_key

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
NAME, NAMESPACE = "mlflow", "bench"
TEMPLATE_DATABASE = "mlflow_template"
SAMPLE_INTERVAL_S = 0.05
SETTLE_CPU_FRACTION = 0.15  # servers count as started once their processes use less than this of a core
SETTLE_TIMEOUT_S = 120
PAUSE_BETWEEN_ROUNDS_S = 3
LIGHT, HEAVY = "50 jobs back-to-back", "500 jobs every ~10 s"
LOAD_SHAPE_NOTE = (
    "Each round of a load starts all its jobs at once: every job creates its run in one burst. Back-to-back "
    "jobs then log batch after batch; in '500 jobs every ~10 s' each job first 'trains' 10 s x U(0.8, 1.2) "
    "before every batch, the first one included, so the create burst is the load's spike. A job whose create "
    "fails retries after 1 s. Per-kind counts and latencies are in loads.*.by_kind, per-round figures in "
    "loads.*.rounds."
)
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@dataclass(frozen=True)
class Scenario:
    """A TrackingServer spec to render: replicas x workers, pooler settings, Postgres parameter overrides."""

    name: str
    replicas: int
    workers: int
    pooler: Mapping[str, Any] = field(default_factory=dict)
    postgres_parameters: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""
    # Run all setups at once and alternate their rounds (only where they fit in max_connections together).
    interleave: bool = False
    setups: tuple[str, ...] = (stats.SETUP_BASELINE, stats.SETUP_RENDERED, stats.SETUP_DIRECT)
    skipped: str = ""  # why some setups are not in `setups`

    def spec(self) -> TrackingServerSpec:
        managed: dict[str, Any] = {"parameters": dict(self.postgres_parameters)} if self.postgres_parameters else {}
        return TrackingServerSpec.model_validate(
            {
                "replicas": self.replicas,
                "workers": self.workers,
                "database": {"managed": managed, "pooler": dict(self.pooler)},
                "artifacts": {"s3": {"bucket": "mlflow-artifacts"}},
            }
        )


SCENARIOS = {
    "defaults": Scenario(
        "defaults",
        replicas=2,
        workers=2,
        purpose="the spec's defaults (replicas, workers, pooler, Postgres parameters)",
        interleave=True,
    ),
    "max-connections": Scenario(
        "max-connections",
        replicas=4,
        workers=4,
        pooler={"replicas": 2, "defaultPoolSize": 12, "maxDbConnections": 12},
        postgres_parameters={"max_connections": "30"},
        purpose="a small database (max_connections overridden to 30, as on a small managed instance) and more "
        "replicas x workers than it has connections for; PgBouncer's max_db_connections set below it",
        setups=(stats.SETUP_RENDERED, stats.SETUP_DIRECT),
        skipped="(a) is left out by default: at 4 replicas x 4 workers it is 60 processes and ~13 GiB here "
        "(uvicorn workers plus a job runner per replica), and in trial runs it exhausted the connection slots "
        "before the load started (no experiment could be created within 60 s); --setups a,b,c runs it",
    ),
}


def loads(quick: bool) -> list[loadgen.Load]:
    if quick:
        return [
            loadgen.Load(LIGHT, jobs=50, duration_s=10, request_timeout_s=30),  # one round
            loadgen.Load(HEAVY, jobs=500, duration_s=15, interval_s=10, request_timeout_s=30),
        ]
    return [
        loadgen.Load(LIGHT, jobs=50, duration_s=15, rounds=3),
        loadgen.Load(HEAVY, jobs=500, duration_s=60, interval_s=10),
    ]


# --- rendering, rewritten for loopback -------------------------------------------------------------------


def local_uri(uri: str, host: str, port: int, database: str | None = None) -> str:
    """uri with its host and port (and database, when given) replaced, credentials and the rest kept."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    parts = parts._replace(netloc=f"{userinfo}{host}:{port}")
    if database is not None:
        parts = parts._replace(path=f"/{database}")
    return urlunsplit(parts)


def redact_uri(text: str) -> str:
    """text with the password of a URI replaced by ***; anything else unchanged."""
    try:
        password = urlsplit(text).password
    except ValueError:
        return text
    return text if password is None else text.replace(f":{password}@", ":***@", 1)


def resolve_env(env: Sequence[Mapping[str, Any]], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """A rendered container env as the kubelet resolves it: literal values, and secretKeyRefs looked up in the
    rendered Secrets' stringData."""
    resolved = {}
    for item in env:
        if "value" in item:
            resolved[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            resolved[item["name"]] = secrets[ref["name"]][ref["key"]]
    return resolved


def rendered_server(
    inputs: ts.TrackingServerInputs,
    backend_host: str,
    backend_port: int,
    port: int,
    artifacts: Path,
    scratch: Path,
    *,
    database: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The rendered server command and env, pointed at backend_host:backend_port (and database, when given)
    and at 127.0.0.1:port."""
    argv = ts.tracking_server_args(inputs)
    argv = dp.with_option(argv, "--host", dp.HOST)
    argv = dp.with_option(argv, "--port", str(port))
    argv = dp.with_option(argv, "--artifacts-destination", artifacts.as_uri())
    if dp.option_value(argv, "--expose-prometheus") is not None:
        prometheus = scratch / "prometheus"
        prometheus.mkdir(parents=True, exist_ok=True)
        argv = dp.with_option(argv, "--expose-prometheus", str(prometheus))
    backend = ts.get_backend_secret(inputs)
    # The registry-events Secret the handler generates once (MLflow's Fernet key for webhook secrets).
    events = {ts.WEBHOOK_SECRET_KEY: secrets.token_urlsafe(24), ts.ENCRYPTION_KEY: new_encryption_key()}
    rendered = {backend["metadata"]["name"]: backend["stringData"], inputs.names.registry_events_secret: events}
    env = resolve_env(ts.tracking_server_env(inputs), rendered)
    env["MLFLOW_BACKEND_STORE_URI"] = local_uri(env["MLFLOW_BACKEND_STORE_URI"], backend_host, backend_port, database)
    # The pod's HOME is its private /tmp emptyDir; the harness gives each server a private HOME likewise.
    env.pop("HOME", None)
    return argv, env


def baseline_server(uri: str, workers: int, port: int, artifacts: Path) -> tuple[list[str], dict[str, str]]:
    argv = ["mlflow", "server", "--backend-store-uri", uri, "--host", dp.HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--artifacts-destination", artifacts.as_uri()]
    return argv, {}


def rendered_pgbouncer(inputs: ts.TrackingServerInputs) -> tuple[str, str]:
    """pgbouncer.ini and userlist.txt, as the ConfigMap and Secret hold them."""
    userlist = ts.get_pooler_auth_secret(inputs)["stringData"]["userlist.txt"]
    return render_pgbouncer_ini(ts.get_pgbouncer_config(inputs)), userlist


def env_var(env: Sequence[Mapping[str, Any]], name: str) -> str | None:
    return next((str(item["value"]) for item in env if item["name"] == name and "value" in item), None)


# --- process accounting (Linux /proc) ---------------------------------------------------------------------


def _process_cwds() -> Iterator[tuple[Path, str]]:
    """(/proc entry, working directory) of every process we may read. The harness starts each service in
    its own work dir and children inherit it, so the cwd tells which service a process belongs to."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield proc, os.readlink(proc / "cwd")
            except OSError:
                continue


def _cpu_ticks(proc: Path) -> int:
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime: reaped children too


def cpu_seconds_by_part(parts: Mapping[str, Sequence[Path]]) -> dict[str, float]:
    """CPU seconds of the processes under each part's directories."""
    prefixes = [(name, str(root)) for name, roots in parts.items() for root in roots]
    ticks = dict.fromkeys(parts, 0)
    for proc, cwd in _process_cwds():
        name = next((name for name, prefix in prefixes if cwd.startswith(prefix)), None)
        if name is not None:
            ticks[name] += _cpu_ticks(proc)
    return {name: count / os.sysconf("SC_CLK_TCK") for name, count in ticks.items()}


def cpu_seconds_under(root: Path) -> float:
    return cpu_seconds_by_part({"all": [root]})["all"]


def memory_under(roots: Sequence[Path]) -> tuple[int, float]:
    """(process count, total RSS in MiB) of the processes under roots."""
    prefixes = tuple(str(root) for root in roots)
    count, rss_kib = 0, 0
    for proc, cwd in _process_cwds():
        if not cwd.startswith(prefixes):
            continue
        try:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
                    count += 1
        except OSError:
            continue
    return count, rss_kib / 1024


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick


@dataclass
class CpuWindow:
    """Where the machine's CPU went during a load: the stack (everything under the benchmark's root:
    Postgres, PgBouncer, servers, the connection sampler), split by part, the load generator, and everything
    else (other users of the machine: the contention figure)."""

    root: Path
    parts: Mapping[str, Sequence[Path]]
    began: float = 0.0
    busy: float = 0.0
    steal: float = 0.0
    stack: dict[str, float] = field(default_factory=dict)
    own: os.times_result | None = None

    def _stack(self) -> dict[str, float]:
        """CPU seconds per part, `rest` for other processes under root, `stack` for their total."""
        by_part = cpu_seconds_by_part({**self.parts, "rest": [self.root]})
        return {**by_part, "stack": sum(by_part.values())}

    def start(self) -> None:
        self.began = time.monotonic()
        self.busy, self.steal = system_cpu()
        self.stack = self._stack()
        self.own = os.times()

    def stop(self) -> dict[str, float]:
        assert self.own is not None
        busy, steal = system_cpu()
        stack = {name: seconds - self.stack[name] for name, seconds in self._stack().items()}
        total = stack.pop("stack")
        own = os.times()
        loadgen_s = sum(now - before for now, before in zip(own[:4], self.own[:4], strict=True))
        busy -= self.busy
        return {
            "wall_s": time.monotonic() - self.began,
            "cores": os.cpu_count() or 0,
            "busy_s": busy,
            "stack_s": total,
            **{f"{name}_s": seconds for name, seconds in stack.items()},
            "loadgen_s": loadgen_s,
            "other_s": max(0.0, busy - total - loadgen_s),
            "steal_s": steal - self.steal,
        }


def wait_until_quiet(root: Path, *, timeout: float = SETTLE_TIMEOUT_S) -> float:
    """Waits until the processes under root use less than SETTLE_CPU_FRACTION of a core for two seconds in
    a row (every worker has booted: /health answers as soon as one has); returns the seconds waited."""
    began = time.monotonic()
    quiet = 0
    last = cpu_seconds_under(root)
    while time.monotonic() - began < timeout and quiet < 2:
        time.sleep(1)
        now = cpu_seconds_under(root)
        quiet = quiet + 1 if now - last < SETTLE_CPU_FRACTION else 0
        last = now
    return time.monotonic() - began


# --- counting Postgres connections ------------------------------------------------------------------------


class PsqlSession:
    """One long-lived superuser psql over the unix socket. Counting through a new connection per sample
    fails exactly when it matters: a direct setup that exhausts max_connections also fills the superuser's
    reserved slots with backends still starting up."""

    def __init__(self, postgres: dp.Postgres, timeout: float = 10):
        self.argv = [str(postgres.bin_dir / "psql"), "-h", str(postgres.workdir), "-p", str(postgres.port)]
        self.argv += ["-U", "postgres", "-d", "postgres", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]
        self.timeout = timeout
        self.cwd = postgres.workdir
        self.lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> PsqlSession:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            bufsize=1, cwd=self.cwd,  # under the benchmark's root: its CPU counts as the stack's
        )  # fmt: skip

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def query(self, sql: str) -> str:
        """The one-line answer of sql; on any failure the session is restarted and DataplaneError raised."""
        with self.lock:
            if self.process is None:
                self._start()
            assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
            try:
                self.process.stdin.write(sql.rstrip(";") + ";\n")
                self.process.stdin.flush()
                ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
                line = self.process.stdout.readline() if ready else ""
            except OSError as exc:
                line, error = "", str(exc)
            else:
                error = "no answer" if not ready else "psql exited"
            if not line:
                self.close()
                raise dp.DataplaneError(f"psql: {error}")
            return line.strip()

    def app_connections(self, user: str, database: str) -> tuple[int, int]:
        """Server connections of user to database, and to any database."""
        sql = (
            f"SELECT count(*) FILTER (WHERE datname = '{database}'), count(*) FROM pg_stat_activity "
            f"WHERE usename = '{user}' AND backend_type = 'client backend'"
        )
        mine, everyone = self.query(sql).split("|")
        return int(mine), int(everyone)


@dataclass
class Peak:
    peak: int = 0  # connections to the setup's database
    peak_all: int = 0  # the app user's connections to any database (other setups idling meanwhile)
    samples: int = 0
    errors: int = 0
    last_error: str = ""


@contextmanager
def sample_peak(session: PsqlSession, user: str, database: str, interval: float = SAMPLE_INTERVAL_S) -> Iterator[Peak]:
    """Samples the app user's server connections in a thread for the duration of the block."""
    peak = Peak()
    stop = threading.Event()

    def run() -> None:
        while True:
            try:
                mine, everyone = session.app_connections(user, database)
                peak.peak, peak.peak_all = max(peak.peak, mine), max(peak.peak_all, everyone)
                peak.samples += 1
            except (dp.DataplaneError, ValueError) as exc:
                peak.errors += 1
                peak.last_error = str(exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=run, name="connection-sampler", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(30)


# --- running ----------------------------------------------------------------------------------------------


@contextmanager
def stack_root() -> Iterator[Path]:
    """A private temp dir where every work dir the harness makes lands while the block runs (CPU accounting
    tells the stack's processes by it), deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    root.chmod(0o755)  # Postgres and PgBouncer run as `postgres` when we are root
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = None
        subprocess.run(["rm", "-rf", str(root)], check=False)


def workdirs(services: Sequence[dp.MlflowServer | dp.PgBouncer | dp.Postgres]) -> list[Path]:
    return [service.workdir for service in services if service.workdir is not None]


def stop_all(services: Sequence[dp.MlflowServer]) -> None:
    """Stops services in parallel (each waits for its workers to exit); safe to call twice."""
    with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
        list(pool.map(lambda service: service.stop(), services))


def start_all(services: Sequence[dp.MlflowServer], stack: ExitStack) -> None:
    """Starts services in parallel; on any failure (or Ctrl-C) stops them all before raising. The stack
    stops them again on exit, which also catches a process spawned while the first stop ran."""
    stack.callback(stop_all, services)
    pool = ThreadPoolExecutor(max_workers=len(services))
    futures = [pool.submit(service.start) for service in services]
    try:
        for future in futures:
            future.result()
    except BaseException:
        stop_all(services)
        raise
    finally:
        pool.shutdown(wait=True)


def clone_database(postgres: dp.Postgres, database: str) -> None:
    """A fresh copy of the migrated database for one setup, so every setup starts from the same schema."""
    postgres.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    postgres.psql(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DATABASE} OWNER {postgres.user}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    scenario: Scenario
    inputs: ts.TrackingServerInputs
    postgres: dp.Postgres
    psql: PsqlSession
    loads: list[loadgen.Load]
    root: Path
    logs: Path


@dataclass
class SetupRun:
    """One running setup: its database, processes, and what was measured so far."""

    setup: str
    database: str
    servers: list[dp.MlflowServer]
    bouncers: list[dp.PgBouncer]
    described: dict[str, Any]
    experiments: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def parts(self, postgres: dp.Postgres) -> dict[str, list[Path]]:
        return {
            "postgres": workdirs([postgres]),
            "pgbouncer": workdirs(self.bouncers),
            "servers": workdirs(self.servers),
        }


def open_setup(ctx: Context, setup: str, stack: ExitStack) -> SetupRun:
    """Clones the setup's database, starts its PgBouncers (b only) and server replicas (stopped by stack),
    waits until they are idle and warms every worker up."""
    spec, postgres = ctx.inputs.spec, ctx.postgres
    database = f"{postgres.dbname}_{setup}"
    clone_database(postgres, database)
    described: dict[str, Any] = {
        "label": stats.SETUP_LABELS[setup],
        "replicas": spec.replicas,
        "workers": spec.workers,
        "database": database,
    }
    logs = ctx.logs / ctx.scenario.name / setup
    scratch = Path(tempfile.mkdtemp(prefix=f"setup-{setup}-", dir=ctx.root))
    artifacts = scratch / "artifacts"
    artifacts.mkdir()
    backends = [(postgres.host, postgres.port)]
    bouncers: list[dp.PgBouncer] = []
    if setup == stats.SETUP_RENDERED:
        ini, userlist = rendered_pgbouncer(ctx.inputs)
        # The rendered [databases] entry names the Postgres Service and database; here the local Postgres and
        # this setup's copy of the database, under the same alias (the harness sets listen address and files).
        alias = ts.get_pgbouncer_config(ctx.inputs).database
        overrides = {"databases": {alias: f"dbname={database} host={postgres.host} port={postgres.port}"}}
        bouncers = [
            stack.enter_context(dp.PgBouncer(ini, userlist, overrides=overrides, log_dir=logs / f"pgbouncer-{i}"))
            for i in range(spec.database.pooler.replicas)
        ]
        backends = [(bouncer.host, bouncer.port) for bouncer in bouncers]
        described.update(
            pgbouncer_replicas=len(bouncers),
            pgbouncer_ini_rendered=ini,
            pgbouncer_ini_local=bouncers[0].config_path.read_text(),
        )
    servers = []
    for i in range(spec.replicas):
        port = dp.free_port()
        if setup == stats.SETUP_BASELINE:
            uri = local_uri(postgres.uri(), postgres.host, postgres.port, database)
            argv, env = baseline_server(uri, spec.workers, port, artifacts)
        else:
            host, backend_port = backends[i % len(backends)]
            argv, env = rendered_server(ctx.inputs, host, backend_port, port, artifacts, scratch / f"replica-{i}")
            if setup == stats.SETUP_DIRECT:
                env["MLFLOW_BACKEND_STORE_URI"] = local_uri(
                    env["MLFLOW_BACKEND_STORE_URI"], host, backend_port, database
                )
        servers.append(dp.MlflowServer(argv, env=env, log_dir=logs / f"server-{i}", start_timeout=300))
    described["argv"] = [redact_uri(arg) for arg in servers[0].argv]
    # Keys (the registry-events Fernet key) are throwaway but still keys: not written into results.
    described["env"] = {
        key: "***" if key.endswith("_KEY") else redact_uri(value) for key, value in servers[0].env.items()
    }
    log(f"{ctx.scenario.name}/{setup}: starting {spec.replicas} server(s) x {spec.workers} workers")
    began = time.monotonic()
    start_all(servers, stack)
    described["start_s"] = round(time.monotonic() - began, 1)
    described["settle_s"] = round(wait_until_quiet(ctx.root), 1)
    run = SetupRun(setup, database, servers, bouncers, described)
    described["warm_up_failed"] = asyncio.run(loadgen.warm_up(run.urls, requests_per_url=4 * spec.workers))
    described["idle_connections"] = ctx.psql.app_connections(postgres.user, database)[0]
    described["loads"], described["load_errors"] = {}, {}
    return run


def measure_round(ctx: Context, run: SetupRun, index: int, load: loadgen.Load, round_: int) -> None:
    """One round of load on run; a failure (e.g. no experiment could be created) is recorded, not raised."""
    name = f"{ctx.scenario.name}/{run.setup}"
    if load.name in run.described["load_errors"]:
        return
    try:
        if load.name not in run.experiments:
            run.experiments[load.name] = asyncio.run(loadgen.create_experiment(run.urls[0], f"bench-{index}"))
        log(f"{name}: {load.name}, round {round_ + 1}/{load.rounds}, {load.duration_s:g} s")
        cpu = CpuWindow(ctx.root, run.parts(ctx.postgres))
        load_before = os.getloadavg()[0]
        cpu.start()
        with sample_peak(ctx.psql, ctx.postgres.user, run.database) as sampler:
            result = asyncio.run(loadgen.run_load(run.urls, run.experiments[load.name], load))
        window = cpu.stop()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[-4000:]
        log(f"{name}: {load.name} did not run: {error}")
        run.described["load_errors"][load.name] = error
        return
    summary = stats.summarize(result.samples, result.elapsed_s)
    log(
        f"{name}: {summary['ok']} ok, {summary['failed']} failed, {summary['throughput_rps']:.1f} req/s, "
        f"p99 {summary['latency_ok_s']['p99'] or 0:.3f} s, peak {sampler.peak} connections, "
        f"other CPU {window['other_s']:.1f} s"
    )
    run.rounds.setdefault(load.name, []).append(
        {
            "round": round_,
            "samples": result.samples,
            "elapsed_s": result.elapsed_s,
            "runs_created": result.runs_created,
            "peak": sampler,
            "cpu": window,
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        }
    )


def finish_load(run: SetupRun, load: loadgen.Load) -> None:
    """The load's rounds summed up into run.described["loads"]."""
    rounds = run.rounds.get(load.name)
    if not rounds:
        return
    samples = [sample for r in rounds for sample in r["samples"]]
    summary = stats.summarize(samples, sum(r["elapsed_s"] for r in rounds))
    cpu = stats.merge_cpu([r["cpu"] for r in rounds])
    summary.update(
        peak_connections=max(r["peak"].peak for r in rounds),
        peak_connections_all_databases=max(r["peak"].peak_all for r in rounds),
        connection_samples=sum(r["peak"].samples for r in rounds),
        connection_sample_errors=sum(r["peak"].errors for r in rounds),
        runs_created=sum(r["runs_created"] for r in rounds),
        cpu=cpu,
        stack_cpu_ms_per_ok_request=1000 * cpu["stack_s"] / summary["ok"] if summary["ok"] else None,
        rounds=[
            {
                "round": r["round"],
                "ok": sum(s.ok for s in r["samples"]),
                "failed": sum(not s.ok for s in r["samples"]),
                "throughput_rps": sum(s.ok for s in r["samples"]) / r["elapsed_s"] if r["elapsed_s"] else 0.0,
                "peak_connections": r["peak"].peak,
                "other_cpu_pct": stats.cpu_share(r["cpu"]["other_s"], r["cpu"]["wall_s"], r["cpu"]["cores"]),
                "load_average_1m": r["load_average_1m"],
            }
            for r in rounds
        ],
    )
    run.described["loads"][load.name] = summary


def close_setup(ctx: Context, run: SetupRun) -> dict[str, Any]:
    processes, rss = memory_under(run.parts(ctx.postgres)["servers"])
    run.described.update(server_processes=processes, server_rss_mib=round(rss, 1))
    return run.described


def run_setups(ctx: Context, setups: Sequence[str], results: dict[str, Any]) -> None:
    """Runs every load on every setup, into results[setup]. Interleaved scenarios start all setups at once
    and alternate the rounds of each load between them; the others run one setup after the other."""
    interleave = ctx.scenario.interleave
    groups = [list(setups)] if interleave else [[setup] for setup in setups]
    for group in groups:
        with ExitStack() as stack:
            runs: dict[str, SetupRun] = {}
            for setup in group:
                try:
                    runs[setup] = open_setup(ctx, setup, stack)
                except Exception as exc:  # recorded, and the other setups still run
                    error = f"{type(exc).__name__}: {exc}"[-4000:]
                    log(f"{ctx.scenario.name}/{setup} FAILED: {error}")
                    results[setup] = {"label": stats.SETUP_LABELS[setup], "error": error, "loads": {}}
            for index, load in enumerate(ctx.loads):
                for round_, setup in stats.schedule(list(runs), load.rounds, interleave=interleave):
                    measure_round(ctx, runs[setup], index, load, round_)
                    time.sleep(PAUSE_BETWEEN_ROUNDS_S)
                for run in runs.values():
                    finish_load(run, load)
            for setup, run in runs.items():
                results[setup] = close_setup(ctx, run)
    ordered = {setup: results.pop(setup) for setup in setups if setup in results}  # in the order asked for
    results.update(ordered)


@contextmanager
def migrated_stack(
    scenario: Scenario,
    load_list: list[loadgen.Load],
    root: Path,
    logs: Path,
    settings: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> Iterator[Context]:
    """Postgres with `settings` (and `env` added to its own: archive_command sees it), migrated, with the
    template every setup's database is copied from, and the rendered inputs: a Context to open setups in."""
    spec = scenario.spec()
    with (
        dp.Postgres(settings, log_dir=logs / scenario.name / "postgres", env=env) as postgres,
        PsqlSession(postgres) as psql,
    ):
        log(f"{scenario.name}: Postgres {postgres.server_version()} on port {postgres.port}; migrating")
        dp.run_mlflow(["db", "upgrade", postgres.uri()])  # straight on Postgres, as the migration Job does
        postgres.psql(f"CREATE DATABASE {TEMPLATE_DATABASE} TEMPLATE {postgres.dbname} OWNER {postgres.user}")
        inputs = ts.TrackingServerInputs(
            name=NAME,
            namespace=NAMESPACE,
            spec=spec,
            serving_version=spec.version,
            database_credentials=ts.Credentials(postgres.user, postgres.password),
        )
        yield Context(scenario, inputs, postgres, psql, load_list, root, logs)


def run_scenario(
    scenario: Scenario, setups: Sequence[str], load_list: list[loadgen.Load], root: Path, logs: Path, durable: bool
) -> dict[str, Any]:
    spec = scenario.spec()
    settings = ts.postgres_parameters(spec)
    if durable:
        settings = {**settings, **DURABLE_SETTINGS}
    pooler = spec.database.pooler
    with migrated_stack(scenario, load_list, root, logs, settings) as ctx:
        env = ts.tracking_server_env(ctx.inputs)
        pool_size = int(env_var(env, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE") or 5)
        overflow = int(env_var(env, "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW") or 10)
        result: dict[str, Any] = {
            "purpose": scenario.purpose,
            "interleaved": scenario.interleave,
            "not_run": scenario.skipped if set(setups) != set(stats.SETUP_LABELS) else "",
            "replicas": spec.replicas,
            "workers": spec.workers,
            "postgres_settings": settings,
            "max_connections": int(settings["max_connections"]),
            "pooler": {
                "replicas": pooler.replicas,
                "mode": pooler.mode,
                "default_pool_size": pooler.default_pool_size,
                "max_db_connections": pooler.max_db_connections,
                "max_client_conn": pooler.max_client_conn,
            },
            # What PgBouncer lets reach Postgres at most, and what the direct setups' pools could open.
            "connection_bound_b": pooler.replicas * pooler.max_db_connections,
            "potential_connections_c": spec.replicas * spec.workers * (pool_size + overflow),
            "potential_connections_a": spec.replicas * spec.workers * (5 + 10),
            "setups": {},
        }
        run_setups(ctx, setups, result["setups"])
    return result


def versions() -> dict[str, str]:
    found = {"python_bench": platform.python_version()}
    venv = dp.server_venv()
    code = (
        "import importlib.metadata as m\n"
        "for p in ('mlflow','gunicorn','uvicorn','SQLAlchemy','psycopg2-binary','Flask','fastapi'):\n"
        "    print(p, m.version(p))"
    )
    for line in dp.run_server_python(code).splitlines():
        name, _, version = line.partition(" ")
        found[name] = version
    found["server_venv"] = str(venv)
    found["aiohttp"] = metadata.version("aiohttp")
    found["pgbouncer"] = subprocess.run(
        [str(dp.pgbouncer_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    found["postgres"] = subprocess.run(
        [str(dp.postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return found


def flatten(scenarios: Mapping[str, Mapping[str, Any]], load_names: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for scenario, result in scenarios.items():
        for load in load_names:
            for setup, described in result["setups"].items():
                summary = described["loads"].get(load)
                if summary is not None:
                    cpu = summary["cpu"]
                    other = stats.cpu_share(cpu["other_s"], cpu["wall_s"], cpu["cores"])
                    rows.append(stats.row(scenario, setup, load, summary, summary["peak_connections"], other))
    return rows


def report(document: dict[str, Any]) -> str:
    scenarios = document["scenarios"]
    rows = flatten(scenarios, list(document["loads"]))
    targets = stats.evaluate_targets(
        rows,
        main_scenario="defaults",
        max_connections_scenario="max-connections" if "max-connections" in scenarios else None,
        light_load=LIGHT,
        heavy_load=HEAVY,
        connection_bounds={name: s["connection_bound_b"] for name, s in scenarios.items()},
        max_connections={name: s["max_connections"] for name, s in scenarios.items()},
    )
    document["rows"], document["targets"] = rows, targets
    lines = [f"# Tracking stack benchmark ({document['date']}{', quick' if document['quick'] else ''})", ""]
    for name, s in scenarios.items():
        pooler = s["pooler"]
        lines.append(
            f"- **{name}**: {s['purpose']}: {s['replicas']} replicas x {s['workers']} workers; PgBouncer "
            f"{pooler['replicas']} x (default_pool_size {pooler['default_pool_size']}, max_db_connections "
            f"{pooler['max_db_connections']}); Postgres max_connections {s['max_connections']}. (b) may reach "
            f"{s['connection_bound_b']} server connections; the direct pools could open "
            f"{s['potential_connections_c']} in (c) and {s['potential_connections_a']} in (a), plus the CLI "
            "process's and (a)'s job runner's. "
            + (
                "All setups run at once; the rounds of each load alternate between them."
                if s["interleaved"]
                else "Setups run one after the other."
            )
        )
    lines += [f"- **{name}**: {s['not_run']}." for name, s in scenarios.items() if s.get("not_run")]
    lines += ["", stats.markdown_table(rows)]
    for name, s in scenarios.items():
        for setup, described in s["setups"].items():
            if "error" in described:
                lines.append(f"- **{name}/{setup} did not complete**: {described['error'][:600]}")
            for load, error in described.get("load_errors", {}).items():
                lines.append(f"- **{name}/{setup}, {load}, did not run**: {error[:600]}")
    lines += ["", "Targets:", "", stats.markdown_targets(targets)]
    lines += ["Notes:", "", *[f"- {note}" for note in document["notes"]]]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads (10 s and 15 s): a smoke run")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument(
        "--setups", help="comma-separated, of: a, b, c; default: each scenario's own (max-connections: b, c)"
    )
    parser.add_argument("--durable", action="store_true", help="Postgres with fsync and synchronous_commit on")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/tracking_stack[-quick].json)")
    parser.add_argument(
        "--rerender", type=Path, metavar="JSON", help="only rewrite the table, targets and .md of a results file"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.setups = [s for s in args.setups.split(",") if s] if args.setups else []
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    unknown += [s for s in args.setups if s not in stats.SETUP_LABELS]
    if unknown:
        parser.error(f"unknown scenario or setup: {', '.join(unknown)}")
    return args


def rerender(path: Path) -> int:
    document = json.loads(path.read_text())
    text = report(document)
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender is not None:
        return rerender(args.rerender)
    dp.server_venv()  # fails fast with "run `make deps`"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 500 clients, PgBouncer's max_client_conn
    stamp = datetime.datetime.now(datetime.UTC)
    logs = Path(tempfile.gettempdir()) / f"mlflow-bench-logs-{stamp:%Y%m%dT%H%M%S}"
    load_list = loads(args.quick)
    document: dict[str, Any] = {
        "benchmark": "tracking_stack",
        "date": stamp.isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": " ".join(["python -m bench.tracking_stack", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(),
        "loads": {load.name: load.describe() for load in load_list},
        "setups": stats.SETUP_LABELS,
        "logs": str(logs),
        "notes": [
            "Artifacts go to a local file:// directory (--artifacts-destination) instead of S3: artifacts are "
            "not exercised; every other argument and variable is as rendered, with hosts, ports and "
            "directories rewritten to loopback and temp dirs.",
            "(a) names the driver (postgresql+psycopg2://) because the server virtualenv, like the image, has "
            "no psycopg 3; it keeps MLflow's job runner on (the default), (b) and (c) turn it off as rendered.",
            "Postgres runs the rendered parameters"
            + (" with fsync on." if args.durable else " with fsync, synchronous_commit and full_page_writes off."),
            "PgBouncer replicas are separate processes; server replica i connects to PgBouncer i mod P "
            "(a Service would spread connections randomly).",
            "Each setup has its own copy of the migrated database (mlflow_a, _b, _c): (a) and (c) name it in "
            "their URI, (b)'s PgBouncer maps the rendered alias to it. Peak connections count the app user's "
            "server connections to that database (peak_connections_all_databases: to any).",
            "Everything, the load generator included, shares this machine's cores. 'other CPU %' is the share "
            "of the machine's CPU that processes outside the benchmark used during the load (contention: "
            "cpu.other_s in the JSON; cpu.*_s splits the stack's own CPU by part).",
            "Latency percentiles are of successful requests; latency_all_s in the JSON includes failures.",
            LOAD_SHAPE_NOTE,
        ],
        "scenarios": {},
    }
    output = args.output or RESULTS_DIR / ("tracking_stack-quick.json" if args.quick else "tracking_stack.json")
    began = time.monotonic()
    try:
        with interrupts_unwind(), stack_root() as root:
            for name in args.scenarios:
                document["scenarios"][name] = run_scenario(
                    SCENARIOS[name], args.setups or SCENARIOS[name].setups, load_list, root, logs, args.durable
                )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    document["duration_s"] = round(time.monotonic() - began, 1)
    document["machine"]["load_average_at_end"] = os.getloadavg()
    text = report(document)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    output.with_suffix(".md").write_text(text)
    print(text)
    log(f"results: {output} and {output.with_suffix('.md')}; logs: {logs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: every process the benchmark started has been stopped; no results written")
        sys.exit(130)
