"""`python -m bench.registry_events`: how soon an alias moved in MLflow starts a canary, with registry events
(MLflow's signed webhooks to the operator's receiver) and with polling only, side by side in one run.

All on 127.0.0.1: a real Kubernetes control plane (hack/localcluster.py, or $KUBECONFIG) whose kwok nodes make
the model-server pods Ready without running them, the CRDs, a real `mlflow server` (sqlite backend, the
integration harness's argv) with MLflow's webhook settings (a Fernet key for stored webhook secrets, plain HTTP
and private addresses allowed, the webhook list re-read every second), and the operator's console script as a
subprocess watching one namespace, its receiver on 127.0.0.1 (`--registry-events-address`,
`--registry-events-url`, plain HTTP).

One registered model with 3 versions (the alias champion on 1). In the namespace: a Secret `hook` holding the
webhook's signing secret (key `secret`), and one ModelDeployment with trackingUri = that MLflow, following the
alias, spec.registryEvents {secret: {name: hook}, pollInterval: P}, spec.pollInterval P (`--poll-interval`,
default 30 s: the same both ways, so the phases differ only by the webhook), trafficRouting replicaRatio and
the steps setWeight 50, pause (indefinite). It first rolls out version 1 (Succeeded). Then a webhook is
registered in MLflow over REST (POST /api/2.0/mlflow/webhooks: the operator's five events, the receiver URL
<receiver>/registry-events/<namespace>/secrets/hook, the same secret) and tested once (POST .../test).

1. "webhooks": `--moves` N alias moves (default 20; 5 with --quick), one REST call each
   (POST /api/2.0/mlflow/registered-models/alias). The targets alternate between versions 2 and 3: a move
   during the paused canary supersedes it (logic.rollout: the old canary's Deployment is pruned and the new
   version's canary starts in the same pass), and each move waits until the previous canary's Deployment is
   gone, so every move's version has no Deployment yet. Measured per move: seconds from just before the REST
   call to the first moment the canary Deployment `<md>-v<N>` exists, as `kubectl get deployments --watch`
   (one watch for the whole run, in a thread) reports its ADDED event. After each move the benchmark waits for
   status canaryVersion N, phase Paused and the previous canary's Deployment gone, then 1 s.
2. "polling only": the webhook is disabled in MLflow (PATCH .../webhooks/<id> {"status": "DISABLED"}) and
   N more moves are measured the same way. The operator reads the registry once per pollInterval from its last
   read, which happened when the previous canary started, just before the next move: without a wait each move
   would land at the same point of the poll cycle (~P s). So each move here waits a random time, uniform in
   [0, P) (`--seed`), before its REST call: the moves land at random points of the cycle, as real ones do. The
   webhooks phase has no such wait: its moves land 1-3 s after a read, when no poll is due, so its figures are
   the events' alone.
3. The operator's registry-events counters (/metrics: mlflow_operator_registry_events_total,
   _rejected_total, _registry_event_wakeups_total) per move, per phase and at the end; its CPU per phase.

Target: the median seconds from alias move to canary Deployment with webhooks under 3 s.

Results: bench/results/registry_events.json (every move's timing and counters, the machine, the versions) and
bench/results/registry_events.md; --quick writes registry_events-quick.*; --rerender JSON rewrites the targets
and the .md of a results file.

    .venv/bin/python -m bench.registry_events [--quick] [--moves N] [--poll-interval S] [--seed K]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.integration import dataplane as dp
from tests.integration import registry_server as rs
from tests.kube import Kubectl

from bench import registry
from bench.common import Cluster, Operator, Run, loads_text, logger, metric_samples, number, report
from bench.harness import Benchmark, control_plane, create_namespace, distribution, run_parser, start_operator
from bench.stats import percentile
from mlflow_operator.handlers.registry_events import new_encryption_key
from mlflow_operator.logic import registry_events as events

API_VERSION = "mlflow.operator.dev/v1alpha1"
KIND = "ModelDeployment"
MD_NAME = "bench-events"
MODEL = "bench-events"
ALIAS = "champion"
SECRET_NAME, SECRET_KEY = "hook", "secret"
WEBHOOK_NAME = "bench-registry-events"
VERSIONS = (1, 2, 3)
STABLE = 1
TARGET_S = 3.0  # the target: median alias move -> canary Deployment with webhooks
SETTLE_PAUSE_S = 1.0  # after each move has settled, before the next one
STATUS_POLL_S = 0.5  # `kubectl get modeldeployment` while waiting for a move to settle
CACHE_TTL_S = 1  # MLFLOW_WEBHOOK_CACHE_TTL: MLflow re-reads its webhook list this often
WEBHOOKS = "/api/2.0/mlflow/webhooks"
METRICS = {
    "events": ("mlflow_operator_registry_events_total", "type"),
    "rejected": ("mlflow_operator_registry_events_rejected_total", "reason"),
    "wakeups": ("mlflow_operator_registry_event_wakeups_total", "kind"),
}
PHASES = ("webhooks", "polling")
PHASE_TITLES = {"webhooks": "webhooks", "polling": "polling only"}
log = logger("registry-events-bench")


# --- pure helpers (tests/unit/test_bench_registry_events.py) ------------------------------------------------


def webhook_env(encryption_key: str) -> dict[str, str]:
    """MLflow's webhook settings (docs/operations.md, "Registry events"): the Fernet key that encrypts stored
    webhook secrets, plain HTTP and private addresses allowed for the loopback receiver, the webhook list
    re-read every CACHE_TTL_S."""
    return {
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": encryption_key,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": str(CACHE_TTL_S),
    }


def webhook_body(url: str, secret: str, name: str = WEBHOOK_NAME) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "secret": secret,
        "events": [{"entity": entity, "action": action} for entity, action in events.WEBHOOK_EVENTS],
    }


def deployment_name(md: str, version: int) -> str:
    """The Deployment of one version (builders.modeldeployment.Names.deployment)."""
    return f"{md}-v{version}"


def canary_steps() -> list[dict[str, Any]]:
    return [{"setWeight": 50}, {"pause": {}}]


def model_deployment(name: str, model: str, tracking_uri: str, poll_s: float, events_poll_s: float) -> dict[str, Any]:
    """The ModelDeployment: the alias of `model` in the MLflow at tracking_uri, events through the Secret
    SECRET_NAME, a canary that pauses indefinitely at weight 50."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "trackingUri": tracking_uri,
            "model": {"registeredModel": model, "alias": ALIAS},
            "pollInterval": registry.duration(poll_s),
            "registryEvents": {"secret": {"name": SECRET_NAME}, "pollInterval": registry.duration(events_poll_s)},
            "replicas": 1,
            "strategy": {"canary": {"steps": canary_steps()}},
            "trafficRouting": {"replicaRatio": {}},
        },
    }


def move_targets(count: int, versions: Sequence[int], stable: int, current: int | None) -> list[int]:
    """The versions `count` alias moves go to: round the versions other than the stable one, starting after
    `current` (the running canary's version, or None), never the same version twice in a row, so each move's
    version has no Deployment (the previous canary's is pruned when the next one starts)."""
    candidates = [v for v in versions if v != stable]
    if len(candidates) < 2:
        raise ValueError(f"need two versions besides the stable {stable}: {list(versions)}")
    start = candidates.index(current) + 1 if current in candidates else 0
    return [candidates[(start + i) % len(candidates)] for i in range(count)]


def random_waits(count: int, poll_s: float, seed: int) -> list[float]:
    """Waits before each polling-only move, uniform in [0, poll_s): the moves land at random points of the
    operator's poll cycle."""
    rng = random.Random(seed)
    return [round(rng.uniform(0, poll_s), 3) for _ in range(count)]


class WatchStream:
    """`kubectl get --watch --output-watch-events -o json` output, line by line -> (type, name) per event.
    kubectl prints one event per line; an indented object (a line "{", ..., a line "}") is read too."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line.startswith("{"):
            self._lines = []  # an object starts: whatever was left unread is dropped
        self._lines.append(line)
        if not line.rstrip().endswith("}"):
            return None
        try:
            document = json.loads("".join(self._lines))
        except ValueError:
            return None  # a nested object's end, or a broken line: read on
        self._lines = []
        return watch_event(document)


def watch_event(document: Any) -> tuple[str, str] | None:
    """A watch event {"type": ..., "object": {...}} -> (type, name); None for BOOKMARK, ERROR or anything else."""
    if not isinstance(document, dict) or document.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    name = ((document.get("object") or {}).get("metadata") or {}).get("name")
    return (str(document["type"]), str(name)) if name else None


def apply_watch_event(present: dict[str, float], event: tuple[str, str], now: float) -> None:
    """Which Deployments exist and since when (the first event seen for each, as a monotonic time)."""
    kind, name = event
    if kind == "DELETED":
        present.pop(name, None)
    else:
        present.setdefault(name, now)


def event_counters(text: str) -> dict[str, dict[str, float]]:
    """The operator's registry-events counters from its /metrics: events by type, rejected by reason,
    wake-ups by kind."""
    found: dict[str, dict[str, float]] = {}
    for key, (metric, label) in METRICS.items():
        found[key] = {labels.get(label, ""): value for labels, value in metric_samples(text, metric)}
    return found


def counters_delta(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """What each counter gained between two event_counters() snapshots (labels that gained nothing left out),
    and each family's total."""
    delta: dict[str, Any] = {}
    for key in METRICS:
        old, new = before.get(key) or {}, after.get(key) or {}
        gained = {label: new[label] - old.get(label, 0.0) for label in sorted(new)}
        delta[key] = {label: value for label, value in gained.items() if value}
        delta[f"{key}_total"] = sum(gained.values())
    return delta


def summary(moves: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One phase's figures: seconds from the alias move to the canary Deployment (min, median, p90, max,
    mean) over the moves measured, how many were, and how many a verified delivery woke."""
    latencies = distribution(m.get("latency_s") for m in moves)
    return {
        "moves": len(moves),
        "measured": latencies.pop("count"),
        **latencies,
        "woken_by_event": sum(1 for m in moves if ((m.get("counters") or {}).get("wakeups_total") or 0) > 0),
        "rest_call_p50_s": percentile([m["rest_s"] for m in moves if m.get("rest_s") is not None], 50),
    }


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The target, met (True), missed (False) or not measured (None), with the figures."""
    found = ((result.get("phases") or {}).get("webhooks") or {}).get("summary") or {}
    wanted = result["parameters"]["moves"]
    measured, median = found.get("measured", 0), found.get("p50")
    complete = measured == wanted and median is not None
    return [
        {
            "target": f"alias moved -> canary Deployment exists, median under {TARGET_S:g} s with webhooks",
            "met": None if not found else complete and median is not None and median < TARGET_S,
            "detail": "not measured"
            if not found
            else f"median {number(median, 2)} s (p90 {number(found.get('p90'), 2)} s, max "
            f"{number(found.get('max'), 2)} s) over {measured}/{wanted} moves; polling only: median "
            f"{number((((result.get('phases') or {}).get('polling') or {}).get('summary') or {}).get('p50'), 1)} s",
        }
    ]


def events_condition(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The RegistryEvents condition of a ModelDeployment's status: status, reason, message."""
    for found in status.get("conditions") or []:
        if found.get("type") == "RegistryEvents":
            return {k: found.get(k) for k in ("status", "reason", "message")}
    return None


def condition_text(found: Mapping[str, Any] | None) -> str:
    if not found:
        return "n/a"
    return f"{found.get('status')} {found.get('reason')}: {found.get('message')}"


def counter_text(values: Mapping[str, float] | None) -> str:
    if not values:
        return "none"
    return ", ".join(f"{label or '-'} {value:g}" for label, value in sorted(values.items()))


def markdown(result: Mapping[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    phases = result.get("phases") or {}
    op = result.get("operator") or {}
    at_end = op.get("registry_events_at_end") or {}
    test = result.get("webhook_test") or {}

    def spread(phase: str) -> str:
        found = (phases.get(phase) or {}).get("summary") or {}
        return " / ".join(number(found.get(k), 2, " s") for k in ("p50", "p90", "max"))

    rows: list[tuple[str, str]] = [
        ("poll: spec.pollInterval / spec.registryEvents.pollInterval",
         f"{p['poll_interval_s']:g} s / {p['events_poll_interval_s']:g} s"),
        ("moves per phase; versions cycled (stable stays on 1)", f"{p['moves']}; {p['targets_text']}"),
    ]  # fmt: skip
    for phase in PHASES:
        section = phases.get(phase) or {}
        found = section.get("summary") or {}
        counters = section.get("counters") or {}
        title = PHASE_TITLES[phase]
        rows += [
            (f"**{title}: alias moved -> canary Deployment exists**: median / p90 / max", spread(phase)),
            (f"{title}: min / mean", " / ".join(number(found.get(k), 2, " s") for k in ("min", "mean"))),
            (f"{title}: moves measured; woken by a verified delivery",
             f"{found.get('measured', 0)}/{found.get('moves', 0)}; {found.get('woken_by_event', 0)}"),
            (f"{title}: deliveries verified (by type) / refused (by reason) / wake-ups",
             f"{counter_text(counters.get('events'))} / {counter_text(counters.get('rejected'))} / "
             f"{counter_text(counters.get('wakeups'))}"),
            (f"{title}: alias REST call, median", number(found.get("rest_call_p50_s"), 3, " s")),
            (f"{title}: operator CPU over the phase", f"{number(section.get('operator_cpu_s'), 1, ' s')} in "
             f"{number(section.get('duration_s'), 0, ' s')}"),
            (f"{title}: the ModelDeployment's RegistryEvents condition after the phase",
             condition_text(section.get("condition_at_end"))),
        ]  # fmt: skip
    rows += [
        ("polling only: wait before each move (uniform in [0, poll))", f"seed {p['seed']}"),
        ("webhook test delivery (POST .../test)", str(test.get("result", "n/a"))),
        ("**operator /metrics at the end**: registry_events_total", counter_text(at_end.get("events"))),
        ("registry_events_rejected_total", counter_text(at_end.get("rejected"))),
        ("registry_event_wakeups_total", counter_text(at_end.get("wakeups"))),
        ("deployment watch restarts", str(result.get("watch_restarts", "n/a"))),
        ("operator RSS after start / peak / end", " / ".join(
            number(op.get(k), 0, " MiB") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))),
        ("operator log: errors / warnings", f"{(op.get('log') or {}).get('errors', 'n/a')} / "
         f"{(op.get('log') or {}).get('warnings', 'n/a')}"),
        (f"load average at start / end ({m['cores']} cores)",
         f"{loads_text(m.get('load_average_at_start'))} / {loads_text(m.get('load_average_at_end'))}"),
        ("run took", number(result.get("duration_s"), 0, " s")),
    ]  # fmt: skip
    return report("Registry events", result, rows)


# --- I/O ----------------------------------------------------------------------------------------------------


def rest(url: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One call of MLflow's REST API; its JSON answer. An HTTP error raises with MLflow's message."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {path}: HTTP {error.code}: {error.read().decode()[:500]}") from error
    answer: dict[str, Any] = json.loads(text or "{}")
    return answer


def move_alias(url: str, version: int) -> None:
    rest(
        url, "POST", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL, "alias": ALIAS, "version": str(version)}
    )


class DeploymentWatch:
    """One `kubectl get deployments --watch` of the namespace in a thread: which Deployments exist, and since
    when (monotonic). Restarted if kubectl exits (the API server ends watches after a while); a restart lists
    again, so a Deployment created while it was down counts from the restart (later, never earlier)."""

    def __init__(self, kubectl: Kubectl, namespace: str, log_path: Path) -> None:
        self.argv = [
            kubectl.binary, "--kubeconfig", kubectl.kubeconfig, "get", "deployments", "-n", namespace, "--watch",
            "--output-watch-events", "-o", "json",
        ]  # fmt: skip
        self.log_path = log_path
        self.present: dict[str, float] = {}
        self.restarts = -1
        self.events = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="deployment-watch", daemon=True)

    def _run(self) -> None:
        with self.log_path.open("a") as err:
            while not self._stop.is_set():
                with self._changed:
                    self.present.clear()
                    self.restarts += 1
                self._process = subprocess.Popen(
                    self.argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, bufsize=1
                )
                stdout: IO[str] | None = self._process.stdout
                assert stdout is not None
                stream = WatchStream()
                for line in stdout:
                    event = stream.feed(line)
                    if event is None:
                        continue
                    with self._changed:
                        apply_watch_event(self.present, event, time.monotonic())
                        self.events += 1
                        self._changed.notify_all()
                self._process.wait()
                self._stop.wait(0.5)

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._thread.join(timeout=10)

    def wait(self, predicate: Callable[[Mapping[str, float]], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.present), timeout=timeout)

    def since(self, name: str) -> float | None:
        with self._changed:
            return self.present.get(name)


def md_status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    out = kubectl.run("get", "modeldeployment", MD_NAME, "-n", namespace, "-o", "json", timeout=60).stdout
    return dict(json.loads(out).get("status") or {})


def wait_status(
    kubectl: Kubectl, namespace: str, predicate: Callable[[Mapping[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = md_status(kubectl, namespace)
        if predicate(status):
            return status
        time.sleep(STATUS_POLL_S)
    seen = {k: status.get(k) for k in ("phase", "stableVersion", "canaryVersion", "currentStep", "message")}
    raise RuntimeError(f"{what} not reached within {timeout:g} s: {seen}")


def start_server(run: Run) -> dp.MlflowServer:
    """`mlflow server` on sqlite with the harness's argv (tests/integration/registry_server.py) and the
    webhook settings."""
    root = Path(tempfile.mkdtemp(prefix="mlflow-bench-events-registry-"))
    run.stack.callback(subprocess.run, ["rm", "-rf", str(root)], check=False)
    probe = rs.RegistryServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", run.logs)
    env = {**probe.server.env, **webhook_env(new_encryption_key())}
    server = dp.MlflowServer(probe.server.argv, env=env, log_dir=run.logs)
    log(f"starting mlflow server on {server.url}")
    run.stack.enter_context(server)
    run.result["server"] = {
        "url": server.url,
        "argv": [a if not a.startswith("sqlite:") else "sqlite:///<tmp>/mlflow.db" for a in probe.server.argv],
        "env": {k: ("<fernet key>" if k == "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" else v) for k, v in env.items()},
    }
    return server


class Bench:
    def __init__(self, run: Run, kubectl: Kubectl, namespace: str, server: dp.MlflowServer, operator: Operator) -> None:
        self.run, self.kubectl, self.namespace, self.server, self.operator = run, kubectl, namespace, server, operator
        self.watch: DeploymentWatch
        self.canary: int | None = None  # the running canary's version

    def counters(self) -> dict[str, dict[str, float]]:
        return event_counters(self.operator.scrape_metrics())

    def move(self, phase: str, index: int, target: int, wait_s: float) -> dict[str, Any]:
        """One alias move to `target`: the seconds until its canary Deployment exists; then waits until the
        rollout settled (canary `target` paused, the previous canary's Deployment gone)."""
        poll = self.run.args.poll_interval
        name, previous = deployment_name(MD_NAME, target), self.canary
        if not self.watch.wait(lambda present: name not in present, timeout=60):
            raise RuntimeError(f"{phase} move {index}: Deployment {name} still exists before the move")
        time.sleep(wait_s)
        self.operator.check_running()
        before = self.counters()
        began = time.monotonic()
        move_alias(self.server.url, target)
        rest_s = time.monotonic() - began
        timeout = min(2 * poll + 30, max(1.0, self.run.remaining() - 60))
        self.watch.wait(lambda present: name in present, timeout=timeout)
        seen = self.watch.since(name)
        record: dict[str, Any] = {
            "phase": phase,
            "index": index,
            "target": target,
            "previous_canary": previous,
            "wait_before_s": wait_s,
            "rest_s": round(rest_s, 4),
            "latency_s": None if seen is None else round(seen - began, 4),
        }
        if seen is None:
            record["counters"] = counters_delta(before, self.counters())
            record["error"] = f"no Deployment {name} within {timeout:.0f} s of the alias move"
            return record
        old = None if previous is None else deployment_name(MD_NAME, previous)
        wait_status(
            self.kubectl, self.namespace,
            lambda s: s.get("canaryVersion") == target and s.get("phase") == "Paused", 60,
            f"{phase} move {index}: canary {target} Paused",
        )  # fmt: skip
        if old is not None and not self.watch.wait(lambda present: old not in present, timeout=60):
            raise RuntimeError(f"{phase} move {index}: the previous canary's Deployment {old} was not removed")
        record["settled_s"] = round(time.monotonic() - began, 3)
        time.sleep(SETTLE_PAUSE_S)
        record["counters"] = counters_delta(before, self.counters())
        self.canary = target
        return record

    def phase(self, phase: str, targets: Sequence[int], waits: Sequence[float]) -> None:
        section: dict[str, Any] = {"moves": []}
        self.run.result["phases"][phase] = section
        began, cpu, before = time.monotonic(), self.operator.cpu_seconds(), self.counters()
        for index, (target, wait_s) in enumerate(zip(targets, waits, strict=True)):
            record = self.move(phase, index, target, wait_s)
            section["moves"].append(record)
            section["summary"] = summary(section["moves"])
            if record.get("error"):
                raise RuntimeError(f"{phase} move {index}: {record['error']}")
            log(
                f"{phase} {index + 1}/{len(targets)}: -> v{target}: canary Deployment after "
                f"{record['latency_s']:.2f} s (waited {wait_s:.1f} s before; wake-ups "
                f"{record['counters']['wakeups_total']:g})"
            )
        cpu_end = self.operator.cpu_seconds()
        section["duration_s"] = round(time.monotonic() - began, 1)
        section["operator_cpu_s"] = None if cpu is None or cpu_end is None else round(cpu_end - cpu, 2)
        section["counters"] = counters_delta(before, self.counters())
        section["condition_at_end"] = events_condition(md_status(self.kubectl, self.namespace))
        found = section["summary"]
        log(
            f"{phase}: median {number(found['p50'], 2)} s, p90 {number(found['p90'], 2)} s, max "
            f"{number(found['max'], 2)} s over {found['measured']} moves"
        )


def register_model(url: str) -> None:
    """The registered model, its versions (any source: kwok pods never load it), the alias on STABLE."""
    rest(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": MODEL})
    for version in VERSIONS:
        answer = rest(
            url, "POST", "/api/2.0/mlflow/model-versions/create",
            {"name": MODEL, "source": f"s3://bench-registry-events/models/v{version}"},
        )  # fmt: skip
        if int(answer["model_version"]["version"]) != version:
            raise RuntimeError(f"expected version {version}, MLflow created {answer['model_version']['version']}")
    move_alias(url, STABLE)


def prepare_cluster(run: Run) -> tuple[Cluster, Kubectl, str, str]:
    """The control plane, the CRDs, a namespace and its Secret with the webhook's signing secret."""
    found, kubectl = control_plane(run, log, "mlflow-bench-events-cluster-", ["modeldeployments.mlflow.operator.dev"])
    deadline = time.monotonic() + 60
    # Established comes before the API server serves the new kinds ("storage is (re)initializing", 429).
    while kubectl.run("get", "modeldeployments,trackingservers,registeredmodels", "-A", check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError("the API server does not serve the operator's kinds 60 s after the CRDs")
        time.sleep(1)
    namespace = create_namespace(run, kubectl, "mlflow-bench-events-")
    secret = secrets.token_urlsafe(32)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": namespace},
            "stringData": {SECRET_KEY: secret},
        }
    )
    return found, kubectl, namespace, secret


def start_operator_with_receiver(run: Run, found: Cluster, namespace: str) -> tuple[Operator, str]:
    """`mlflow-operator run` with the receiver on a free port of 127.0.0.1 (plain HTTP); its base URL."""
    port = dp.free_port()
    receiver = f"http://127.0.0.1:{port}"
    extra = ["--registry-events-address", f"127.0.0.1:{port}", "--registry-events-url", receiver]
    log(f"the operator's registry-events receiver: {receiver}")
    operator = start_operator(run, log, found.kubeconfig, namespace, extra_args=extra, at_end=event_counters_at_end)
    return operator, receiver


def event_counters_at_end(operator: Operator, record: dict[str, Any]) -> None:
    record["registry_events_at_end"] = event_counters(operator.scrape_metrics())


def register_webhook(run: Run, server_url: str, url: str, secret: str) -> str:
    """The webhook in MLflow, as docs/operations.md has users register it, tested once; its id."""
    webhook = rest(server_url, "POST", WEBHOOKS, webhook_body(url, secret))["webhook"]
    webhook_id = str(webhook["webhook_id"])
    test = rest(server_url, "POST", f"{WEBHOOKS}/{webhook_id}/test", {}).get("result") or {}
    run.result["webhook_test"] = {
        "url": url,
        "result": f"success {test.get('success')}, HTTP {test.get('response_status')}",
        "answer": test,
    }
    log(f"webhook {webhook_id} -> {url}; test delivery: {run.result['webhook_test']['result']}")
    time.sleep(CACHE_TTL_S + 1)  # MLflow's webhook cache
    return webhook_id


def disable_webhook(run: Run, server_url: str, webhook_id: str) -> None:
    rest(server_url, "PATCH", f"{WEBHOOKS}/{webhook_id}", {"status": "DISABLED"})
    listed = rest(server_url, "GET", f"{WEBHOOKS}/{webhook_id}").get("webhook") or {}
    run.result["webhook_disabled"] = {"status": listed.get("status")}
    if listed.get("status") != "DISABLED":
        raise RuntimeError(f"the webhook is {listed.get('status')} after PATCH status DISABLED")
    time.sleep(CACHE_TTL_S + 1)  # MLflow's webhook cache


def benchmark(run: Run) -> None:
    args, stack, result = run.args, run.stack, run.result
    found, kubectl, namespace, secret = prepare_cluster(run)
    server = start_server(run)
    log(f"registering {MODEL} with versions {list(VERSIONS)}, {ALIAS} -> {STABLE}")
    register_model(server.url)
    operator, receiver = start_operator_with_receiver(run, found, namespace)

    bench = Bench(run, kubectl, namespace, server, operator)
    bench.watch = stack.enter_context(DeploymentWatch(kubectl, namespace, run.logs / "watch.log"))
    stack.callback(lambda: result.update(watch_restarts=bench.watch.restarts, watch_events=bench.watch.events))
    spec = model_deployment(MD_NAME, MODEL, server.url, args.poll_interval, args.poll_interval)
    result["model_deployment"] = spec
    kubectl.apply(spec, namespace)
    began = time.monotonic()
    wait_status(
        kubectl, namespace, lambda s: s.get("phase") == "Succeeded" and s.get("stableVersion") == STABLE, 180,
        f"the first rollout (v{STABLE} Succeeded)",
    )  # fmt: skip
    result["first_rollout_s"] = round(time.monotonic() - began, 1)
    log(f"v{STABLE} Succeeded after {result['first_rollout_s']:g} s; registering the webhook")
    path = events.Source("secrets", namespace, SECRET_NAME).path
    webhook_id = register_webhook(run, server.url, receiver + path, secret)

    moves = args.moves
    targets = move_targets(2 * moves, VERSIONS, STABLE, None)
    log(f"phase webhooks: {moves} alias moves")
    bench.phase("webhooks", targets[:moves], [0.0] * moves)
    disable_webhook(run, server.url, webhook_id)
    log(f"phase polling: webhook disabled; {moves} alias moves after random waits under {args.poll_interval:g} s")
    bench.phase("polling", targets[moves:], random_waits(moves, args.poll_interval, args.seed))


# --- entry point --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__, "registry_events", "a smoke run: 5 moves per phase")
    parser.add_argument("--moves", type=int, help="alias moves per phase (default 20; 5 with --quick)")
    parser.add_argument(
        "--poll-interval", type=float, default=30.0, help="spec.pollInterval and registryEvents.pollInterval (30)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the polling phase's random waits (default 1)")
    args = parser.parse_args(argv)
    args.moves = args.moves if args.moves is not None else (5 if args.quick else 20)
    if not 1 <= args.moves <= 200 or args.poll_interval < 1:
        parser.error("--moves must be 1..200, --poll-interval at least 1 s")
    return args


NOTES = [
    "Latency is measured from just before the REST call that moves the alias (its own duration included) to the "
    "ADDED event of the canary Deployment in a `kubectl get deployments --watch` of the namespace: the "
    "Deployment exists in the API server; kwok makes its pods Ready without running a model server.",
    "With webhooks the path is: MLflow commits the alias, delivers MODEL_VERSION_ALIAS.CREATED to the receiver, "
    "which verifies the signature, wakes the ModelDeployment; its pass reads the alias (the event makes the read "
    "due), supersedes the paused canary and applies the new version's Deployment.",
    "Polling only: MLflow's webhook is DISABLED, so nothing is delivered; the ModelDeployment reads the alias "
    "once per pollInterval from its last read. Each move waits a random time in [0, pollInterval) first, so "
    "moves land at random points of the poll cycle: expect about half a pollInterval at the median.",
    "spec.registryEvents.pollInterval equals spec.pollInterval here, so the poll is the same in both phases "
    "(while events arrive the operator would poll at the longer of the two).",
    "The webhook's test delivery names MLflow's example model, which nothing follows: it is counted as refused "
    "with reason unknown_model.",
    "Everything (control plane, MLflow with 1 gunicorn sync worker, operator, kubectl) shares this machine's "
    "cores with whatever else runs on it: see the load averages.",
]


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    targets = move_targets(2 * args.moves, VERSIONS, STABLE, None)
    return {
        "moves": args.moves,
        "poll_interval_s": args.poll_interval,
        "events_poll_interval_s": args.poll_interval,
        "seed": args.seed,
        "versions": list(VERSIONS),
        "targets_text": ", ".join(f"v{v}" for v in targets[:4]) + ", ...",
        "target_s": TARGET_S,
    }


BENCHMARK = Benchmark(
    "registry_events",
    parse_args,
    parameters,
    benchmark,
    evaluate,
    markdown,
    NOTES,
    log,
    sections={"phases": {}},
    logs_name="registry-events",
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
