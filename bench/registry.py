"""`python -m bench.registry`: N RegisteredModels against one MLflow server, as users run the operator.

All on 127.0.0.1: a real Kubernetes control plane (hack/localcluster.py, or $KUBECONFIG), the CRDs, a
real `mlflow server` on a local Postgres (the integration harness) with `--expose-prometheus`, and the
operator's console script (`mlflow-operator run --namespace NS --resync-seconds S ...`) as a subprocess.

1. One tiny model is logged with the real MLflow client, as the source of every version.
2. N RegisteredModels (trackingUri = the server, a description, 2 tags, 1 version from that source, the
   alias champion -> 1, and resyncInterval S) go in with one multi-document `kubectl apply -f -`; one
   `kubectl get -o json` per second tells when each reports Synced=True at its generation.
3. Once all are Synced, the benchmark idles for K resync periods of S seconds and reports, from the server's
   own request counters (`mlflow_http_request_total{method,status}` on /metrics, which count what reaches the
   server whoever sends it), the reads (GET) and writes (POST/PUT/PATCH/DELETE) per model per resync (target:
   writes 0), and from the API server how many RegisteredModel resourceVersions moved (target: 0).

RegisteredModels resync on their own spec.resyncInterval (the operator's --resync-seconds drives the other
kinds), so each model's passes run on its own timer, spread over time rather than in one burst per period.
The passes are counted exactly from the server's gunicorn access log (`--access-logfile` added to the
harness's gunicorn options): every pass reads the model once with GetRegisteredModel, whose request line
names it. Per-resync figures divide the window's requests by those passes.
The operator's RSS (VmRSS, and the kernel's high-water mark VmHWM) and CPU come from /proc/<pid>.

Results: bench/results/registry.json (every figure, the machine, the versions; --quick writes
registry-quick.json) and a markdown table on stdout. Every process is stopped on exit, failure, Ctrl-C or
SIGTERM, and the whole run is bounded by --timeout.

    .venv/bin/python -m bench.registry [--quick] [--models N] [--idle-periods K] [--resync-seconds S]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from tests.integration import dataplane as dp
from tests.integration import registry_server as rs
from tests.kube import Kubectl

from bench.common import (
    Operator,
    Run,
    cpu_text,
    latency_summary,
    loads_text,
    logger,
    metric_samples,
    number,
    parse_labels,  # noqa: F401 - re-exported: tests/unit/test_bench_registry.py imports it from here
    proc_stat_cpu_ticks,  # noqa: F401
    proc_status_kib,  # noqa: F401
    report,
    server_session,
    session_cpu_seconds,
    system_busy_seconds,
)
from bench.harness import Benchmark, control_plane, create_namespace, run_parser, start_operator
from bench.stats import percentile

API_VERSION = "mlflow.operator.dev/v1alpha1"
REQUEST_METRIC = "mlflow_http_request_total"
READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUIET_S = 1.5  # no request reached the server for this long: the follow-ups of the sync are over
POLL_INTERVAL_S = 1.0
NAME_PREFIX = "bench-model-"
GET_MODEL_PATH = "/mlflow/registered-models/get"
_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+"')
log = logger("registry-bench")


# --- pure helpers (tests/unit/test_bench_registry.py) -------------------------------------------------------


def requests_by(text: str, *labels: str, metric: str = REQUEST_METRIC) -> dict[tuple[str, ...], int]:
    """The metric's counts summed over every other label, keyed by the values of `labels` (e.g. method)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for sample_labels, value in metric_samples(text, metric):
        counts[tuple(sample_labels.get(label, "") for label in labels)] += round(value)
    return dict(counts)


@dataclass(frozen=True)
class Requests:
    """Requests the server counted, by method and status ("GET 200": n); reads, writes and the rest."""

    by_method_status: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Requests:
        return cls({f"{m} {s}": n for (m, s), n in sorted(requests_by(text, "method", "status").items())})

    def _total(self, methods: frozenset[str] | None) -> int:
        return sum(
            n
            for key, n in self.by_method_status.items()
            if (methods is None and key.split(" ", 1)[0] not in READ_METHODS | WRITE_METHODS)
            or (methods is not None and key.split(" ", 1)[0] in methods)
        )

    @property
    def reads(self) -> int:
        return self._total(READ_METHODS)

    @property
    def writes(self) -> int:
        return self._total(WRITE_METHODS)

    @property
    def other(self) -> int:
        return self._total(None)

    @property
    def errors(self) -> int:
        """Answers with a 5xx status: the server failed (a 404 of a first lookup is expected, not counted)."""
        return sum(n for key, n in self.by_method_status.items() if key.rsplit(" ", 1)[-1].startswith("5"))

    def __sub__(self, earlier: Requests) -> Requests:
        keys = sorted(set(self.by_method_status) | set(earlier.by_method_status))
        delta = {k: self.by_method_status.get(k, 0) - earlier.by_method_status.get(k, 0) for k in keys}
        return Requests({k: n for k, n in delta.items() if n})

    def summary(self) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "writes": self.writes,
            "other": self.other,
            "errors_5xx": self.errors,
            "by_method_status": dict(self.by_method_status),
        }


def per_model_per_period(count: int, models: int, periods: float) -> float | None:
    if models <= 0 or periods <= 0:
        return None
    return count / models / periods


def model_name(index: int) -> str:
    return f"{NAME_PREFIX}{index:03d}"


def duration(seconds: float) -> str:
    """A Kubernetes-style duration for the API (30s, or 2500ms when not whole seconds)."""
    if seconds <= 0:
        raise ValueError(f"not a positive duration: {seconds}")
    return f"{seconds:.0f}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def registered_model(
    index: int, tracking_uri: str, source: str, run_id: str, resync_seconds: float = 300
) -> dict[str, Any]:
    """RegisteredModel number `index`: a description, 2 tags, 1 version from source, alias champion -> 1,
    resynced every resync_seconds."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RegisteredModel",
        "metadata": {"name": model_name(index)},
        "spec": {
            "trackingUri": tracking_uri,
            "description": f"Benchmark model {index}.",
            "tags": {"team": "bench", "index": str(index)},
            "versions": [{"source": source, "runId": run_id}],
            "aliases": {"champion": 1},
            "resyncInterval": duration(resync_seconds),
        },
    }


def manifests(objects: Iterable[Mapping[str, Any]]) -> str:
    """One multi-document YAML stream, for a single `kubectl apply -f -`."""
    return "---\n".join(yaml.safe_dump(dict(obj), sort_keys=False) for obj in objects)


def synced_at_generation(obj: Mapping[str, Any]) -> bool:
    """Synced=True, reported for the object's current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation:
        return False
    for item in status.get("conditions") or []:
        if item.get("type") == "Synced":
            seen = item.get("observedGeneration", generation)
            return bool(item.get("status") == "True" and seen == generation)
    return False


def not_synced_reasons(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many objects are not Synced at their generation, by the Synced condition's status/reason."""
    reasons: Counter[str] = Counter()
    for obj in items:
        if synced_at_generation(obj):
            continue
        found = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Synced"), None)
        reasons["no Synced condition" if found is None else f"{found.get('status')}/{found.get('reason')}"] += 1
    return dict(reasons)


def resource_versions(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {obj["metadata"]["name"]: obj["metadata"]["resourceVersion"] for obj in items}


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names whose value differs, appeared or disappeared between two snapshots, sorted."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def model_lookups(access_log: str, prefix: str = NAME_PREFIX) -> Counter[str]:
    """GetRegisteredModel requests per model name (those starting with prefix) in gunicorn access-log lines,
    whose quoted request line carries the query string: one per observe, so one per reconcile pass."""
    counts: Counter[str] = Counter()
    for line in access_log.splitlines():
        match = _REQUEST_LINE.search(line)
        if match is None or match.group("method") != "GET":
            continue
        target = urlsplit(match.group("target"))
        if not target.path.endswith(GET_MODEL_PATH):
            continue
        for name in parse_qs(target.query).get("name", []):
            if name.startswith(prefix):
                counts[name] += 1
    return counts


def passes_summary(lookups: Mapping[str, int], names: Sequence[str]) -> dict[str, Any]:
    """Reconcile passes per model over a window: total, min / median / max, and models with none."""
    per_model = [lookups.get(name, 0) for name in names]
    return {
        "total": sum(per_model),
        "min": min(per_model, default=None),
        "median": percentile(per_model, 50),
        "max": max(per_model, default=None),
        "models_without_pass": sum(1 for n in per_model if n == 0),
    }


def per_pass(count: int, passes: int) -> float | None:
    return count / passes if passes > 0 else None


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met (True), missed (False) or not measured (None), with the figures."""
    models = result["parameters"]["models"]
    targets = []
    sync = result.get("sync") or {}
    all_synced = sync.get("all_synced_s")
    targets.append(
        {
            "target": f"all {models} RegisteredModels Synced",
            "met": None if not sync else all_synced is not None,
            "detail": (
                "not measured"
                if not sync
                else f"{sync.get('synced', 0)}/{models} in {all_synced:.1f} s"
                if all_synced is not None
                else f"{sync.get('synced', 0)}/{models} after {sync.get('waited_s', 0):.0f} s; "
                f"not synced: {sync.get('not_synced_reasons')}"
            ),
        }
    )
    idle = result.get("idle") or {}
    if not idle:
        targets += [
            {"target": t, "met": None, "detail": "not measured"}
            for t in ("idle resync: reads only, zero writes", "idle: no RegisteredModel resourceVersion changes")
        ]
        return targets
    calls, passes = idle["requests"], idle["passes"]
    targets.append(
        {
            "target": "idle resync: reads only, zero writes",
            "met": calls["writes"] == 0 and calls["reads"] > 0 and passes["total"] > 0,
            "detail": f"{calls['reads']} reads, {calls['writes']} writes over {passes['total']} resync passes "
            f"({passes['min']}..{passes['max']} per model): {number(idle['reads_per_model_per_resync'], 2)} "
            f"reads and {number(idle['writes_per_model_per_resync'], 2)} writes per model per resync",
        }
    )
    moved = idle["resource_versions_changed"]
    targets.append(
        {
            "target": "idle: no RegisteredModel resourceVersion changes",
            "met": moved == 0,
            "detail": f"{moved} of {models} changed" + (f" (e.g. {idle['changed_names'][:5]})" if moved else ""),
        }
    )
    return targets


def markdown(result: Mapping[str, Any]) -> str:
    """The results table and the targets, as markdown."""
    p, machine = result["parameters"], result["machine"]
    sync, idle, op = result.get("sync") or {}, result.get("idle") or {}, result.get("operator") or {}
    models = p["models"]
    per_model = sync.get("per_model_synced_s") or {}
    sync_calls, idle_calls = sync.get("requests") or {}, idle.get("requests") or {}
    firsts = " / ".join(number(per_model.get(k), 0, " s") for k in ("min", "p50", "p90"))
    rss = " / ".join(number(op.get(k), 0, " MiB") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))
    idle_counts = " / ".join(str(idle_calls.get(k, "n/a")) for k in ("reads", "writes", "errors_5xx"))
    idle_passes = idle.get("passes") or {}
    passes = " / ".join(number(idle_passes.get(k), 0) for k in ("min", "median", "max"))
    rows = [
        ("RegisteredModels", str(models)),
        ("`kubectl apply` of all (one multi-document apply)", number(sync.get("apply_s"), 1, " s")),
        ("**time until all Synced** (from the apply)", number(sync.get("all_synced_s"), 1, " s")),
        ("first / p50 / p90 model Synced (1 s polls)", firsts),
        ("Synced at the end of the sync phase", f"{sync.get('synced', 0)}/{models}"),
        (
            "MLflow requests to sync, per model: reads / writes",
            f"{number(sync.get('reads_per_model'), 1)} / {number(sync.get('writes_per_model'), 1)}",
        ),
        ("MLflow 5xx answers during sync", str(sync_calls.get("errors_5xx", "n/a"))),
        (
            "idle window",
            f"{number(idle.get('window_s'), 1, ' s')} = {number(idle.get('clock_periods'), 2)} x "
            f"{p['resync_seconds']:g} s (resyncInterval)",
        ),
        ("idle resync passes per model: min / median / max", passes),
        ("idle effective resync period per model", number(idle.get("effective_resync_s"), 1, " s")),
        ("**idle reads per model per resync**", number(idle.get("reads_per_model_per_resync"), 2)),
        ("**idle writes per model per resync** (target 0)", number(idle.get("writes_per_model_per_resync"), 2)),
        ("idle MLflow requests: reads / writes / 5xx", idle_counts),
        ("**idle resourceVersions changed** (target 0)", str(idle.get("resource_versions_changed", "n/a"))),
        ("idle Events created", str(idle.get("events_created", "n/a"))),
        ("operator RSS: after start / peak (VmHWM) / end", rss),
        ("operator CPU during sync: s (% of one core)", cpu_text(op.get("cpu_sync_s"), op.get("cpu_sync_pct"))),
        ("operator CPU while idle: s (% of one core)", cpu_text(op.get("cpu_idle_s"), op.get("cpu_idle_pct"))),
        (
            "MLflow server CPU during sync: s (% of one core)",
            cpu_text(sync.get("server_cpu_s"), sync.get("server_cpu_pct")),
        ),
        (
            "MLflow server CPU while idle: s (% of one core)",
            cpu_text(idle.get("server_cpu_s"), idle.get("server_cpu_pct")),
        ),
        (
            "machine busy during sync (cores of " + str(machine["cores"]) + ")",
            number(sync.get("machine_busy_cores"), 2),
        ),
        (
            "machine busy while idle (cores of " + str(machine["cores"]) + ")",
            number(idle.get("machine_busy_cores"), 2),
        ),
        (
            "load average at start / end",
            f"{loads_text(machine.get('load_average_at_start'))} / {loads_text(machine.get('load_average_at_end'))}",
        ),
    ]
    return report("RegisteredModel", result, rows)


# --- processes ----------------------------------------------------------------------------------------------


def scrape(url: str) -> Requests:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return Requests.parse(response.read().decode())


def total_requests(requests: Requests) -> int:
    return sum(requests.by_method_status.values())


def wait_quiet(url: str, *, quiet_s: float, timeout: float) -> tuple[Requests, float, bool]:
    """Scrapes until no request reached the server for quiet_s (or timeout); (counters, waited s, quiet)."""
    began = time.monotonic()
    last = scrape(url)
    last_change = time.monotonic()
    while time.monotonic() - began < timeout:
        time.sleep(0.25)
        now = scrape(url)
        if total_requests(now) != total_requests(last):
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return now, time.monotonic() - began, True
    return last, time.monotonic() - began, False


def list_models(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl.run("get", "registeredmodels", "-n", namespace, "-o", "json", timeout=60).stdout
    return list(json.loads(out)["items"])


def count_events(kubectl: Kubectl, namespace: str) -> Counter[str]:
    items = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json", timeout=60).stdout)["items"]
    return Counter(f"{e.get('type')}/{e.get('reason')}" for e in items for _ in range(max(1, e.get("count") or 1)))


# --- the run ------------------------------------------------------------------------------------------------


def start_registry(run: Run) -> tuple[dp.MlflowServer, dict[str, str], Path]:
    """Postgres, a migrated backend, `mlflow server --expose-prometheus`, one logged model."""
    stack, logs = run.stack, run.logs
    postgres = stack.enter_context(dp.Postgres({"max_connections": "50"}, log_dir=logs))
    backend = rs.create_database(postgres, "registry")
    dp.run_mlflow(["db", "upgrade", backend])
    prometheus = Path(tempfile.mkdtemp(prefix="mlflow-bench-registry-prometheus-"))
    stack.callback(subprocess.run, ["rm", "-rf", str(prometheus)], check=False)
    artifacts = Path(tempfile.mkdtemp(prefix="mlflow-bench-registry-artifacts-"))
    stack.callback(subprocess.run, ["rm", "-rf", str(artifacts)], check=False)
    # RegistryServer's argv (tests/integration/registry_server.py), plus the Prometheus exporter and an
    # access log (which counts the passes per model).
    probe = rs.RegistryServer(backend, artifacts, logs)
    access_log = logs / "access.log"
    access_log.touch()
    argv = dp.with_option(probe.server.argv, "--gunicorn-opts", f"{rs.GUNICORN_OPTS} --access-logfile {access_log}")
    argv += ["--expose-prometheus", str(prometheus)]
    server = dp.MlflowServer(argv, env=probe.server.env, log_dir=logs)
    log(f"starting mlflow server on {server.url}")
    stack.enter_context(server)
    run.result["server"] = {
        "url": server.url,
        "argv": [a if a != backend else "postgresql://***@127.0.0.1/registry" for a in argv],
        "env": probe.server.env,
    }
    log("logging one model with the MLflow client")
    logged = rs.run_client(server.url, rs.LOG_MODELS_SCRIPT, {"experiment": "bench-registry", "adds": [1]})
    return server, logged[0], access_log


class PhaseCpu:
    """The CPU a phase took, read when it is made and at stop(): the operator's and the MLflow server's
    (s, and % of one core) and the machine's busy time (s, and cores)."""

    def __init__(self, operator: Operator, server: dp.MlflowServer) -> None:
        self.operator, self.session = operator, server_session(server)
        self.began = self.ended = self._read()

    def _read(self) -> tuple[float | None, float | None, float]:
        server = session_cpu_seconds(self.session) if self.session else None
        return self.operator.cpu_seconds(), server, system_busy_seconds()

    def stop(self) -> None:
        self.ended = self._read()

    def record(self, wall: float, phase: str, into: dict[str, Any], operator_into: dict[str, Any]) -> None:
        """The machine's and the server's figures into `into`, the operator's (cpu_<phase>_s, _pct) into
        `operator_into`; a part whose CPU could not be read is left out."""
        (operator_0, server_0, busy_0), (operator_1, server_1, busy_1) = self.began, self.ended
        into["machine_busy_cpu_s"] = busy_1 - busy_0
        into["machine_busy_cores"] = (busy_1 - busy_0) / wall
        if server_0 is not None and server_1 is not None:
            into["server_cpu_s"] = server_1 - server_0
            into["server_cpu_pct"] = 100 * (server_1 - server_0) / wall
        if operator_0 is not None and operator_1 is not None:
            operator_into[f"cpu_{phase}_s"] = operator_1 - operator_0
            operator_into[f"cpu_{phase}_pct"] = 100 * (operator_1 - operator_0) / wall


def sync_phase(
    run: Run, kubectl: Kubectl, namespace: str, server: dp.MlflowServer, operator: Operator, logged: Mapping[str, str]
) -> bool:
    models = run.args.models
    docs = manifests(
        registered_model(i, server.url, logged["model_uri"], logged["run_id"], run.args.resync_seconds)
        for i in range(models)
    )
    before = scrape(server.url)
    cpu = PhaseCpu(operator, server)
    log(f"applying {models} RegisteredModels")
    began = time.monotonic()
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=docs, timeout=300)
    apply_s = time.monotonic() - began
    sync: dict[str, Any] = {"apply_s": apply_s}
    run.result["sync"] = sync
    first_synced: dict[str, float] = {}
    progress: list[tuple[float, int]] = []
    items: list[dict[str, Any]] = []
    timeout = min(run.args.sync_timeout, run.remaining())
    while True:
        poll_began = time.monotonic()
        operator.check_running()
        items = list_models(kubectl, namespace)
        now = time.monotonic() - began
        for obj in items:
            if synced_at_generation(obj):
                first_synced.setdefault(obj["metadata"]["name"], now)
        progress.append((round(now, 2), len(first_synced)))
        synced_now = sum(1 for obj in items if synced_at_generation(obj))
        if synced_now == models and len(items) == models:
            sync["all_synced_s"] = now
            break
        if now > timeout:
            sync["all_synced_s"] = None
            break
        if len(progress) % 10 == 0:
            log(f"{synced_now}/{models} Synced after {now:.0f} s")
        time.sleep(max(0.0, POLL_INTERVAL_S - (time.monotonic() - poll_began)))
    requests = scrape(server.url) - before
    cpu.stop()
    wall = time.monotonic() - began
    sync.update(
        {
            "waited_s": wall,
            "synced": sum(1 for obj in items if synced_at_generation(obj)),
            "not_synced_reasons": not_synced_reasons(items),
            "per_model_synced_s": {
                "min": min(first_synced.values(), default=None),
                **latency_summary(sorted(first_synced.values())),
            },
            "progress": progress,
            "requests": requests.summary(),
            "reads_per_model": requests.reads / models,
            "writes_per_model": requests.writes / models,
        }
    )
    cpu.record(wall, "sync", sync, run.result["operator"])
    log(
        f"sync: {sync['synced']}/{models} Synced"
        + (f" in {sync['all_synced_s']:.1f} s" if sync["all_synced_s"] is not None else f" after {wall:.0f} s")
        + f"; {requests.reads} reads, {requests.writes} writes"
    )
    return sync["all_synced_s"] is not None


def idle_phase(
    run: Run, kubectl: Kubectl, namespace: str, server: dp.MlflowServer, operator: Operator, access_log: Path
) -> None:
    args = run.args
    period = args.resync_seconds
    names = [model_name(i) for i in range(args.models)]
    synced_at = scrape(server.url)
    # Let the passes that follow the last status writes finish. Bounded: once every model runs on its own
    # timer there may be no quiet moment at all.
    start_counts, settle_s, quiet = wait_quiet(server.url, quiet_s=QUIET_S, timeout=period)
    settle = start_counts - synced_at
    began = time.monotonic()
    log_start = access_log.stat().st_size
    rv_before = resource_versions(list_models(kubectl, namespace))
    events_before = count_events(kubectl, namespace)
    cpu = PhaseCpu(operator, server)
    log(f"idling for {args.idle_periods} resync periods of {period:g} s")
    timeline: list[tuple[float, int]] = [(0.0, total_requests(start_counts))]
    end_at = began + args.idle_periods * period
    while time.monotonic() < end_at:
        operator.check_running()
        time.sleep(min(0.5, max(0.0, end_at - time.monotonic())))
        if time.monotonic() < end_at:
            timeline.append((round(time.monotonic() - began, 2), total_requests(scrape(server.url))))
    end_counts = scrape(server.url)
    log_end = access_log.stat().st_size
    window_s = time.monotonic() - began
    timeline.append((round(window_s, 2), total_requests(end_counts)))
    cpu.stop()
    rv_after = resource_versions(list_models(kubectl, namespace))
    events_after = count_events(kubectl, namespace)
    with access_log.open("rb") as handle:
        handle.seek(log_start)
        lookups = model_lookups(handle.read(log_end - log_start).decode(errors="replace"))
    requests = end_counts - start_counts
    passes = passes_summary(lookups, names)
    clock_periods = window_s / period
    moved = changed(rv_before, rv_after)
    new_events = events_after - events_before
    idle = {
        "settle_s": settle_s,
        "settle_quiet": quiet,
        "settle_requests": settle.summary(),
        "window_s": window_s,
        "clock_periods": clock_periods,
        "requests": requests.summary(),
        "passes": passes,
        "effective_resync_s": window_s / passes["median"] if passes["median"] else None,
        "reads_per_model_per_resync": per_pass(requests.reads, passes["total"]),
        "writes_per_model_per_resync": per_pass(requests.writes, passes["total"]),
        # The same counts divided by the window's length in periods instead of the passes counted.
        "reads_per_model_per_period": per_model_per_period(requests.reads, args.models, clock_periods),
        "writes_per_model_per_period": per_model_per_period(requests.writes, args.models, clock_periods),
        "resource_versions_changed": len(moved),
        "changed_names": moved,
        "events_created": sum(new_events.values()),
        "events_created_by_reason": dict(new_events),
        "timeline": timeline,
    }
    cpu.record(window_s, "idle", idle, run.result["operator"])
    run.result["idle"] = idle
    log(
        f"idle: {requests.reads} reads, {requests.writes} writes in {window_s:.1f} s over {passes['total']} "
        f"passes (per model {passes['min']}..{passes['max']}); {len(moved)} resourceVersions changed"
    )


def benchmark(run: Run) -> None:
    args, result = run.args, run.result
    found, kubectl = control_plane(run, log, "mlflow-bench-registry-cluster-", ["registeredmodels.mlflow.operator.dev"])
    namespace = create_namespace(run, kubectl, "mlflow-bench-")

    server, logged, access_log = start_registry(run)
    result["source"] = {"model_uri": logged["model_uri"], "run_id": logged["run_id"]}

    operator = start_operator(run, log, found.kubeconfig, namespace)

    if not sync_phase(run, kubectl, namespace, server, operator, logged):
        raise RuntimeError(f"not all {args.models} RegisteredModels Synced within the sync timeout")
    idle_phase(run, kubectl, namespace, server, operator, access_log)


# --- entry point --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__, "registry", "a smoke run: 20 models, 2 idle periods", resync_seconds=None)
    parser.add_argument("--models", type=int, help="RegisteredModels to apply (default 200; 20 with --quick)")
    parser.add_argument("--idle-periods", type=int, help="resync periods to idle (default 6; 2 with --quick)")
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=10.0,
        help="every RegisteredModel's spec.resyncInterval, and the operator's --resync-seconds (default 10)",
    )
    parser.add_argument("--sync-timeout", type=float, default=900.0, help="seconds to wait for all Synced")
    args = parser.parse_args(argv)
    args.models = args.models if args.models is not None else (20 if args.quick else 200)
    args.idle_periods = args.idle_periods if args.idle_periods is not None else (2 if args.quick else 6)
    if args.models < 1 or args.models > 999 or args.idle_periods < 1 or args.resync_seconds <= 0:
        parser.error("--models must be 1..999, --idle-periods at least 1, --resync-seconds positive")
    return args


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "models": args.models,
        "idle_periods": args.idle_periods,
        "poll_interval_s": POLL_INTERVAL_S,
        "quiet_s": QUIET_S,
        "model_spec": registered_model(0, "<server url>", "<logged model uri>", "<run id>", args.resync_seconds)[
            "spec"
        ],
    }


NOTES = [
    "Reads are GET and writes POST/PUT/PATCH/DELETE requests as the MLflow server counts them "
    "(mlflow_http_request_total on /metrics, deltas between scrapes; scrapes of /metrics are not counted).",
    "--resync-seconds S is both the operator's --resync-seconds (TrackingServers, ModelDeployments) and "
    "every RegisteredModel's spec.resyncInterval, which is what resyncs RegisteredModels.",
    "Resync passes are counted from the server's access log (one GetRegisteredModel per pass, naming the "
    "model); per-resync figures are the window's requests over those passes. *_per_period divide by "
    "models x window / S instead.",
    f"The idle window starts once no request reached the server for {QUIET_S:g} s after the last model "
    "was Synced (or after S seconds at most).",
    "Synced times come from one `kubectl get` per second: 1 s resolution.",
    "Everything (control plane, Postgres, MLflow with 1 gunicorn sync worker, operator, kubectl) shares "
    "this machine's cores with whatever else runs on it; see machine.load_average_* and "
    "*.machine_busy_cpu_s.",
]
# The markdown goes to stdout only: bench/results/ keeps this benchmark's JSON alone.
BENCHMARK = Benchmark(
    "registry", parse_args, parameters, benchmark, evaluate, markdown, NOTES, log, markdown_file=False
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
