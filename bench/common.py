"""What the operator benchmarks (bench.registry, bench.modeldeployment) share: the local control plane, the
operator as a subprocess with its /proc figures, CPU accounting, Prometheus text parsing, the machine and
versions, and the run's frame (signals, --timeout, results written whatever happens).

Pure helpers (Prometheus text, /proc lines, number formatting) are tested in tests/unit/test_bench_registry.py
and tests/unit/test_bench_modeldeployment.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tests.integration import dataplane as dp
from tests.kube import ROOT

from bench.stats import percentile

RESULTS_DIR = ROOT / "bench" / "results"
CLUSTER_TIMEOUT_S = 900  # the control plane's binaries are cached; a cold build is `make cluster`'s business
OPERATOR_STOP_TIMEOUT_S = 30


# --- pure helpers -------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    """`a="1",b="x\\"y"` -> {"a": "1", "b": 'x"y'} (Prometheus text format escapes: \\\\, \\", \\n)."""
    labels, position = {}, 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"malformed labels at {position}: {text!r}")
        labels[match.group(1)] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match.group(2))
        position = match.end()
    return labels


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of the metric `name` (exactly: not `name_created`) in a Prometheus text exposition."""
    samples = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group("name") != name:
            continue
        samples.append((parse_labels(match.group("labels") or ""), float(match.group("value"))))
    return samples


def proc_stat_cpu_ticks(stat_text: str) -> int:
    """utime + stime of one /proc/<pid>/stat line (fields after the parenthesised command name)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_status_kib(status_text: str, key: str) -> int | None:
    """A `Key:   1234 kB` value of /proc/<pid>/status, in KiB."""
    for line in status_text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def number(value: float | None, digits: int, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def cpu_text(seconds: float | None, pct: float | None) -> str:
    return f"{number(seconds, 1)} ({number(pct, 1)} %)"


def loads_text(values: Sequence[float] | None) -> str:
    return "n/a" if not values else ", ".join(f"{v:.2f}" for v in values)


def report(title: str, result: Mapping[str, Any], rows: Sequence[tuple[str, str]]) -> str:
    """The markdown of a results document: its table, the targets (met / MISSED / not measured), the error
    that stopped the run if any, and the notes."""
    quick = ", quick" if result["parameters"].get("quick") else ""
    lines = [
        f"# {title} benchmark ({result['date']}{quick})",
        "",
        "| figure | value |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Targets:",
        "",
    ]
    marks = {True: "met", False: "MISSED", None: "not measured"}
    lines += [f"- **{marks[t['met']]}**: {t['target']} ({t['detail']})" for t in result.get("targets") or []]
    if result.get("error"):
        lines += ["", f"**The run did not complete**: {result['error']}"]
    lines += ["", *(f"Note: {note}" for note in result.get("notes") or [])]
    return "\n".join(lines) + "\n"


# --- processes ----------------------------------------------------------------------------------------------


def logger(prefix: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    source: str  # "$KUBECONFIG" or "hack/localcluster.py"
    workdir: Path | None = None  # the local control plane's state (state.json names its processes)

    def session_ids(self) -> dict[str, int]:
        """The local control plane's processes (each leads its own session) by name; {} for $KUBECONFIG."""
        if self.workdir is None:
            return {}
        with suppress(OSError, ValueError):
            return {k: int(v) for k, v in json.loads((self.workdir / "state.json").read_text())["pids"].items()}
        return {}


@contextmanager
def cluster(logs: Path, log: Callable[[str], None], prefix: str, nodes: int | None = None) -> Iterator[Cluster]:
    """$KUBECONFIG, else a local control plane started here and stopped after (with `nodes` kwok nodes of 110
    pods each, else localcluster.py's default)."""
    if os.environ.get("KUBECONFIG"):
        yield Cluster(os.environ["KUBECONFIG"], "$KUBECONFIG")
        return
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    script = str(ROOT / "hack" / "localcluster.py")
    try:
        log(f"starting the local control plane in {workdir}")
        with (logs / "localcluster.log").open("w") as out:
            result = subprocess.run(
                ["python3", script, "up", "--dir", str(workdir), "--no-real-node",
                 *(["--fake-nodes", str(nodes)] if nodes else [])],
                stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, text=True,
                timeout=CLUSTER_TIMEOUT_S, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"local control plane did not start; see {logs / 'localcluster.log'}")
        yield Cluster(result.stdout.strip().splitlines()[-1], "hack/localcluster.py", workdir)
    finally:
        log("stopping the local control plane")
        subprocess.run(
            ["python3", script, "down", "--dir", str(workdir)], capture_output=True, timeout=120, check=False
        )


@dataclass
class Operator:
    """`mlflow-operator run` as users run it, with its own log; /proc figures of its process; its /metrics
    on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    argv: list[str]
    metrics_port: int = 0

    @classmethod
    def start(
        cls, kubeconfig: str, namespace: str, resync_seconds: float, log_path: Path, extra_args: Sequence[str] = ()
    ) -> Operator:
        """`extra_args` go after the common flags (e.g. the registry-events receiver's)."""
        port, metrics_port = dp.free_port(), dp.free_port()
        binary = Path(sys.executable).parent / "mlflow-operator"
        argv = [
            str(binary), "run", "--namespace", namespace, "--liveness", f"http://127.0.0.1:{port}/healthz",
            "--log-format", "text", "--resync-seconds", f"{resync_seconds:g}",
            "--metrics-address", f"127.0.0.1:{metrics_port}", *extra_args,
        ]  # fmt: skip
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                argv, env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return cls(process, log_path, port, argv, metrics_port)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape_metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}; log {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"operator not healthy within {timeout:.0f} s; log {self.log_path}")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"operator exited with {self.process.returncode}; log {self.log_path}")

    def stop(self) -> int | None:
        return dp.stop_process(self.process, OPERATOR_STOP_TIMEOUT_S)

    def stop_and_report(self, into: dict[str, Any]) -> None:
        """Stops the operator; its RSS at the end and peak, exit code and log's problems go into `into`."""
        into["rss_end_mib"] = self.memory_mib()
        into["rss_peak_mib"] = self.memory_mib("VmHWM")
        into["exit_code"] = self.stop()
        into["log"] = operator_log_problems(self.log_path)

    def cpu_seconds(self) -> float | None:
        try:
            return proc_stat_cpu_ticks(Path(f"/proc/{self.process.pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return None

    def memory_mib(self, key: str = "VmRSS") -> float | None:
        try:
            kib = proc_status_kib(Path(f"/proc/{self.process.pid}/status").read_text(), key)
        except OSError:
            return None
        return None if kib is None else kib / 1024


def session_cpu_seconds(session_id: int) -> float:
    """utime + stime of every live process of a session (the MLflow server: its arbiter and workers)."""
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "stat").read_text()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[3]) == session_id:
            ticks += proc_stat_cpu_ticks(text)
    return ticks / os.sysconf("SC_CLK_TCK")


def server_session(server: dp.MlflowServer) -> int | None:
    process = server.process
    popen = getattr(process, "_popen", None) if process is not None else None
    return None if popen is None else int(popen.pid)  # started with start_new_session: pid == session id


def system_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def operator_log_problems(path: Path, limit: int = 10) -> dict[str, Any]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    bad = [line for line in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)]
    warnings = [line for line in lines if re.search(r"\bWARNING\b", line)]
    return {"lines": len(lines), "errors": len(bad), "warnings": len(warnings), "first_errors": bad[:limit]}


# --- the run ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    logs: Path
    result: dict[str, Any]
    stack: ExitStack
    deadline: float = 0.0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every `with` and callback stops its processes."""
    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, _raise_interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("mlflow-operator", "kopf", "lightkube", "requests"):
        with suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    code = "import importlib.metadata as m\nfor p in ('mlflow','gunicorn','SQLAlchemy'):\n    print(p, m.version(p))"
    for line in dp.run_server_python(code).splitlines():
        name, _, version = line.partition(" ")
        found[f"server {name}"] = version
    found["postgres"] = subprocess.run(
        [str(dp.postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return found


def result_header(
    benchmark: str, stamp: datetime.datetime, argv: Sequence[str] | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The first keys of every benchmark's JSON: what ran, when, where, with which versions and parameters."""
    command = " ".join([f"python -m bench.{benchmark}", *(argv if argv is not None else sys.argv[1:])])
    return {
        "benchmark": benchmark,
        "date": stamp.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
        "parameters": parameters,
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "load_average_at_start": os.getloadavg(),
        "uptime_at_start": uptime,
    }


def logs_dir(name: str) -> tuple[datetime.datetime, Path]:
    stamp = datetime.datetime.now(datetime.UTC)
    logs = Path(tempfile.gettempdir()) / f"mlflow-bench-{name}-logs-{stamp:%Y%m%dT%H%M%S}"
    logs.mkdir(parents=True, exist_ok=True)
    return stamp, logs


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("the benchmark exceeded --timeout")


def execute(
    args: argparse.Namespace,
    logs: Path,
    result: dict[str, Any],
    benchmark: Callable[[Run], None],
    finish: Callable[[dict[str, Any]], str],
    output: Path,
    log: Callable[[str], None],
    out: TextIO = sys.stdout,
) -> int:
    """Runs `benchmark` bounded by args.timeout, unwinding every process on failure, Ctrl-C or SIGTERM; then
    records the duration and the machine's load, writes the JSON and prints what `finish` renders."""
    began = time.monotonic()
    status = 0
    previous_handlers = {
        signum: signal.getsignal(signum) for signum in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.timeout))
    try:
        with interrupts_unwind(), ExitStack() as stack:
            run = Run(args, logs, result, stack, deadline=began + args.timeout)
            try:
                benchmark(run)
            except (Exception, KeyboardInterrupt) as exc:
                signal.alarm(0)
                result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                status = 130 if isinstance(exc, KeyboardInterrupt) else 1
                log(f"failed: {result['error']}; cleaning up")
            finally:
                # Cleaning up (the ExitStack unwinding) must not be cut short by the alarm or a second Ctrl-C.
                signal.alarm(0)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_IGN)
    finally:
        signal.alarm(0)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        result["duration_s"] = round(time.monotonic() - began, 1)
        result["machine"]["load_average_at_end"] = os.getloadavg()
        result["machine"]["uptime_at_end"] = subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
        text = finish(result)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(text, file=out)
        log(f"results: {output}; logs: {logs}")
    return status


def machine_cpu_fields(busy_s: float, wall_s: float, own: Mapping[str, float | None]) -> dict[str, Any]:
    """The machine's busy CPU over a window, the benchmark's own parts, and the rest ("other": whatever else
    runs on this machine, kubectl calls and the benchmark's own Python included), in s and in cores."""
    known = sum(v for v in own.values() if v is not None)
    return {
        "machine_busy_cpu_s": busy_s,
        "machine_busy_cores": busy_s / wall_s if wall_s > 0 else None,
        "cpu_s": dict(own),
        "other_cpu_s": busy_s - known,
        "other_cores": (busy_s - known) / wall_s if wall_s > 0 else None,
    }


def rerender(path: Path, finish: Callable[[dict[str, Any], Path], str], out: TextIO = sys.stdout) -> int:
    """`--rerender JSON`: a results file's targets and report rewritten by the current code, no run."""
    document = json.loads(path.read_text())
    text = finish(document, path)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(text, file=out)
    return 0
