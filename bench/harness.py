"""The frame the operator benchmarks (bench.registry, bench.modeldeployment, bench.registry_events,
bench.scale) put around their scenarios: the flags they share (parsed, and recorded in the JSON's
parameters), main() (the JSON's header, the run bounded by --timeout, the targets, the markdown,
--rerender), the control plane with the CRDs and a namespace, the operator started and stopped with its
figures, its CPU and RSS sampled in a thread, and CPU windows that split the machine's busy time between
the benchmark's parts and everything else.

The pure parts (results_path, shared_parameters, distribution, usage_summary, queue_summary, Benchmark.finish)
are tested in tests/unit/test_bench_harness.py.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import resource
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tests.integration import dataplane as dp
from tests.kube import ROOT, Kubectl, find_kubectl

from bench.common import (
    RESULTS_DIR,
    Cluster,
    Operator,
    Run,
    cluster,
    execute,
    logs_dir,
    machine_cpu_fields,
    rerender,
    result_header,
    server_session,
    session_cpu_seconds,
    system_busy_seconds,
)
from bench.stats import percentile

# --- the flags and main() -----------------------------------------------------------------------------------


def results_path(name: str, quick: bool) -> Path:
    """Where a run's JSON goes by default: bench/results/<name>.json, <name>-quick.json for --quick."""
    return RESULTS_DIR / (f"{name}-quick.json" if quick else f"{name}.json")


def run_parser(
    description: str | None,
    name: str,
    quick: str,
    *,
    timeout: float = 2400.0,
    resync_seconds: float | None = 60.0,
) -> argparse.ArgumentParser:
    """A parser with the flags every operator benchmark takes besides its scenario's: --quick (`quick` says
    what it shortens), --timeout, --output, --rerender, and --resync-seconds unless the benchmark gives it a
    meaning of its own (resync_seconds None)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    if resync_seconds is not None:
        parser.add_argument(
            "--resync-seconds", type=float, default=resync_seconds, help="the operator's --resync-seconds"
        )
    parser.add_argument("--timeout", type=float, default=timeout, help="bound on the whole run, in seconds")
    parser.add_argument("--output", type=Path, help=f"JSON path (default bench/results/{name}[-quick].json)")
    parser.add_argument(
        "--rerender", type=Path, metavar="JSON", help="only re-evaluate the targets and re-render a results file"
    )
    return parser


def shared_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """What the run's JSON records of the flags run_parser adds that the figures depend on: --quick, and
    --resync-seconds where the benchmark takes it (run_parser's, or one with a meaning of its own)."""
    found: dict[str, Any] = {"quick": args.quick}
    if "resync_seconds" in vars(args):
        found["resync_seconds"] = args.resync_seconds
    return found


@dataclass(frozen=True)
class Benchmark:
    """What a scenario file hands the harness. `name` is the JSON's "benchmark" and the results file's stem;
    `sections` are result keys every run starts with (after "operator"), so a report of a run that stopped
    early still finds them."""

    name: str
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace]
    parameters: Callable[[argparse.Namespace], dict[str, Any]]  # the scenario's own: see run_parameters
    run: Callable[[Run], None]
    evaluate: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    markdown: Callable[[Mapping[str, Any]], str]
    notes: Sequence[str]
    log: Callable[[str], None]
    sections: Mapping[str, Any] = field(default_factory=dict)
    logs_name: str = ""  # the logs directory's name, when not `name`
    markdown_file: bool = True  # <output>.md next to the JSON; without it the markdown goes to stdout only

    def run_parameters(self, args: argparse.Namespace) -> dict[str, Any]:
        """The JSON's "parameters": the shared flags' (shared_parameters), then the scenario's."""
        return {**shared_parameters(args), **self.parameters(args)}

    def finish(self, result: dict[str, Any], output: Path) -> str:
        """The targets evaluated into the result, and its markdown (written next to the JSON)."""
        result["targets"] = self.evaluate(result)
        text = self.markdown(result)
        if self.markdown_file:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.with_suffix(".md").write_text(text)
        return text

    def main(self, argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
        """`python -m bench.<name>`: the run, its JSON and its markdown; or --rerender of a results file."""
        args = self.parse_args(argv)
        if args.rerender is not None:
            return rerender(args.rerender, self.finish, out)
        dp.server_venv()  # fails fast with "run `make deps`"
        stamp, logs = logs_dir(self.logs_name or self.name)
        result = {
            **result_header(self.name, stamp, argv, self.run_parameters(args)),
            "operator": {},
            **copy.deepcopy(dict(self.sections)),
            "logs": str(logs),
            "notes": list(self.notes),
        }
        output = args.output or results_path(self.name, args.quick)
        finish = functools.partial(self.finish, output=output)
        return execute(args, logs, result, self.run, finish, output, self.log, out)


# --- the control plane and the operator ---------------------------------------------------------------------


def control_plane(
    run: Run, log: Callable[[str], None], prefix: str, crds: Sequence[str], nodes: int | None = None
) -> tuple[Cluster, Kubectl]:
    """The cluster (common.cluster, stopped when the run unwinds) with the operator's CRDs applied and
    `crds` (plural.group names) Established; where it came from and its versions go into the result."""
    found = run.stack.enter_context(cluster(run.logs, log, prefix, nodes))
    kubectl = Kubectl(kubeconfig=found.kubeconfig, binary=find_kubectl())
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    run.result["cluster"] = {
        "from": found.source,
        "kube_apiserver": version["serverVersion"]["gitVersion"],
        "kubectl": version["clientVersion"]["gitVersion"],
    }
    kubectl.run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{crd}" for crd in crds))
    return found, kubectl


def create_namespace(run: Run, kubectl: Kubectl, prefix: str) -> str:
    """A fresh namespace `<prefix><random>`, deleted (without waiting) when the run unwinds; its name goes into
    the parameters."""
    namespace = f"{prefix}{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", namespace)
    run.stack.callback(kubectl.run, "delete", "namespace", namespace, "--wait=false", check=False)
    run.result["parameters"]["namespace"] = namespace
    return namespace


def start_operator(
    run: Run,
    log: Callable[[str], None],
    kubeconfig: str,
    namespace: str,
    *,
    extra_args: Sequence[str] = (),
    at_end: Callable[[Operator, dict[str, Any]], None] | None = None,
) -> Operator:
    """`mlflow-operator run` on `namespace` (a name or a glob) with the run's --resync-seconds, healthy, and
    stopped when the run unwinds. result["operator"] gets its argv and RSS after the start; at the stop,
    what `at_end` reads while it still runs (its /metrics: a failed scrape is recorded as metrics_error),
    then its RSS, exit code and log's problems."""
    resync = run.args.resync_seconds
    log(f"starting the operator (namespace {namespace}, resync {resync:g} s)")
    operator = Operator.start(kubeconfig, namespace, resync, run.logs / "operator.log", extra_args)
    record: dict[str, Any] = run.result["operator"]

    def stop() -> None:
        if at_end is not None:
            try:
                at_end(operator, record)
            except (OSError, KeyError) as error:
                record["metrics_error"] = str(error)
        operator.stop_and_report(record)

    run.stack.callback(stop)
    operator.wait_healthy()
    record["argv"] = [Path(operator.argv[0]).name, *operator.argv[1:]]
    record["rss_start_mib"] = operator.memory_mib()
    return operator


# --- sampling and CPU windows -------------------------------------------------------------------------------


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    found = sorted(v for v in values if v is not None)
    return {
        "count": len(found),
        "min": found[0] if found else None,
        "p50": percentile(found, 50),
        "p90": percentile(found, 90),
        "max": found[-1] if found else None,
        "mean": sum(found) / len(found) if found else None,
    }


def usage_summary(samples: Sequence[tuple[float, float | None, float | None]]) -> dict[str, float | None]:
    """(seconds, cpu seconds, RSS MiB) samples -> mean and peak CPU in cores (between consecutive samples),
    and RSS at the start, the peak and the end."""
    cpu = [(t, c) for t, c, _ in samples if c is not None]
    rates = [(c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in itertools.pairwise(cpu) if t2 > t1]
    rss = [r for _, _, r in samples if r is not None]
    span = cpu[-1][0] - cpu[0][0] if len(cpu) > 1 else 0.0
    return {
        "cpu_s": cpu[-1][1] - cpu[0][1] if len(cpu) > 1 else None,
        "cpu_mean_cores": (cpu[-1][1] - cpu[0][1]) / span if span > 0 else None,
        "cpu_peak_cores": max(rates) if rates else None,
        "cpu_p90_cores": percentile(rates, 90),
        "rss_start_mib": rss[0] if rss else None,
        "rss_peak_mib": max(rss) if rss else None,
        "rss_end_mib": rss[-1] if rss else None,
    }


def queue_summary(samples: Sequence[tuple[float, int, int, int]]) -> dict[str, float | None]:
    """(seconds, queue depth, passes running, reconciles so far) samples -> the queue's mean, peak and last
    depth, the mean passes running, and reconciles per second over the samples."""
    if not samples:
        return {"depth_mean": None, "depth_max": None, "depth_end": None, "running_mean": None, "per_s": None}
    span = samples[-1][0] - samples[0][0]
    return {
        "depth_mean": sum(s[1] for s in samples) / len(samples),
        "depth_max": max(s[1] for s in samples),
        "depth_end": samples[-1][1],
        "running_mean": sum(s[2] for s in samples) / len(samples),
        "per_s": (samples[-1][3] - samples[0][3]) / span if span > 0 else None,
    }


class Sampler:
    """The operator's CPU and RSS from /proc every `interval_s`, in a thread; with `queue_of`, also its queue
    (depth, passes running, reconciles so far) from its /metrics at the same moments (a failed scrape skips
    one)."""

    def __init__(
        self,
        operator: Operator,
        interval_s: float,
        queue_of: Callable[[Operator], tuple[int, int, int]] | None = None,
    ) -> None:
        self.operator, self.interval_s, self.queue_of = operator, interval_s, queue_of
        self.samples: list[tuple[float, float | None, float | None]] = []
        self.queue: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="operator-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            now = time.monotonic() - self._began
            self.samples.append((now, self.operator.cpu_seconds(), self.operator.memory_mib()))
            if self.queue_of is not None:
                with suppress(OSError):
                    self.queue.append((now, *self.queue_of(self.operator)))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        return {"usage": usage_summary(self.samples), "queue": queue_summary(self.queue)}


class CpuWindow:
    """Busy CPU of the machine and of the benchmark's own parts over a window (for the "other" share)."""

    def __init__(self, parts: Mapping[str, Callable[[], float | None]]) -> None:
        self.parts = parts

    def _read(self) -> dict[str, float | None]:
        return {name: read() for name, read in self.parts.items()}

    def __enter__(self) -> CpuWindow:
        self.began, self.busy, self.before = time.monotonic(), system_busy_seconds(), self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        after, wall = self._read(), time.monotonic() - self.began
        own = {k: _spent(b, after[k]) for k, b in self.before.items()}
        self.fields = machine_cpu_fields(system_busy_seconds() - self.busy, wall, own)


def _spent(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


def driver_cpu_seconds() -> float:
    """This process and the children it waited for (kubectl calls, client scripts)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_parts(
    found: Cluster, operator: Operator | None, server: dp.MlflowServer, sessions: Mapping[str, int | None]
) -> dict[str, Callable[[], float | None]]:
    """What a CpuWindow reads: the operator (when running), this process with its kubectl calls, the MLflow
    server, the processes of `sessions` (name -> session id: each started in a session of its own) and the
    local control plane's."""
    parts: dict[str, Callable[[], float | None]] = {}
    if operator is not None:
        parts["operator"] = operator.cpu_seconds
    parts["benchmark driver and kubectl"] = driver_cpu_seconds
    for name, session in {"mlflow server": server_session(server), **sessions}.items():
        if session is not None:
            parts[name] = functools.partial(session_cpu_seconds, session)
    control_plane = found.session_ids()
    if control_plane:
        parts["control plane"] = lambda: sum(session_cpu_seconds(s) for s in control_plane.values())
    return parts
