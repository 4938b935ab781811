"""`python -m bench.scale`: 100 TrackingServers and 300 ModelDeployments on the local control plane.

All on 127.0.0.1: a real Kubernetes control plane (hack/localcluster.py, or $KUBECONFIG) whose kwok nodes make
pods Ready (and Jobs complete) without running them, a real `mlflow server` on Postgres as the registry (one
registered model, version 1, pinned by every ModelDeployment), one moto S3 server (one bucket, a prefix per
TrackingServer), and the operator's console script as a subprocess watching the benchmark's namespaces (a glob).

1. Floor: the render CLI (`mlflow-operator render`) prints every object the operator would create for the same
   specs; they are applied with `kubectl apply --server-side` into fresh namespaces (one kubectl per namespace,
   all at once) and the clock stops when every Deployment is available, every StatefulSet ready and every Job
   complete: "Ready" without the operator. Secrets keep the render's `<generated at runtime>` placeholders.
2. Operator: the same TrackingServers and ModelDeployments, applied the same way into other fresh namespaces
   with the operator running; the clock stops when all are Ready=True. Target: <= 1.5x the floor.
3. Idle (`--idle-window`, 10 minutes): nothing changes; the operator's requests (its
   mlflow_operator_kube_requests_total by verb), the kube-apiserver's apiserver_request_total by verb and
   resource (cluster-wide, kopf's watches and the control plane's own background included; a window without
   the operator before it starts is the background), and resourceVersion changes of the custom resources and
   every object in their namespaces. Target: 0 changes.
4. The operator's RSS and CPU (/proc, every second) during the ramp-up and the idle window (target <= 150 MiB);
   and what its imports cost (RSS after importing each module, in a fresh interpreter).

Results: bench/results/scale.json (raw figures, machine, other processes' CPU) and bench/results/scale.md;
--quick (10 TrackingServers, 30 ModelDeployments, 1 minute idle) writes scale-quick.*; --rerender JSON rewrites
the targets and the .md of a results file.

    .venv/bin/python -m bench.scale [--quick] [--tracking-servers N] [--model-deployments M] [--idle-window S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.integration import dataplane as dp
from tests.integration import registry_server as rs
from tests.integration.s3_servers import S3Server, moto_server
from tests.kube import Kubectl

from bench import registry
from bench.common import Cluster, Operator, Run, loads_text, logger, metric_samples, number, report
from bench.harness import (
    Benchmark,
    CpuWindow,
    Sampler,
    control_plane,
    cpu_parts,
    distribution,
    run_parser,
    start_operator,
    usage_summary,
)
from bench.modeldeployment import REGISTER_MANY_SCRIPT

API_VERSION = "mlflow.operator.dev/v1alpha1"
MODEL = "bench-scale"
BUCKET = "bench-scale"
S3_SECRET = "bench-s3"
RATIO_TARGET = 1.5
RSS_TARGET_MIB = 150.0
POLL_S = 2.0  # one `kubectl get` of every workload (floor) or custom resource (operator)
SAMPLE_S = 1.0  # operator CPU / RSS from /proc
WRITE_VERBS = frozenset({"APPLY", "PATCH", "CREATE", "UPDATE", "DELETE", "DELETECOLLECTION", "POST", "PUT"})
OPERATOR_WRITE_VERBS = frozenset({"apply", "create", "patch", "delete"})
# Everything a TrackingServer or ModelDeployment creates, and what a namespace has of its own.
SNAPSHOT_KINDS = (
    "trackingservers,modeldeployments,deployments,statefulsets,jobs,cronjobs,services,configmaps,secrets,"
    "serviceaccounts,poddisruptionbudgets,networkpolicies,persistentvolumeclaims,horizontalpodautoscalers"
)
WORKLOAD_PATH = (
    "{range .items[*]}{.kind}|{.metadata.namespace}|{.metadata.name}|{.spec.replicas}|{.status.readyReplicas}|"
    '{.status.availableReplicas}|{.spec.completions}|{.status.succeeded}{"\\n"}{end}'
)
READY_PATH = (
    "{range .items[*]}{.kind}|{.metadata.namespace}|{.metadata.name}|"
    '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'
)
RV_PATH = '{range .items[*]}{.kind}|{.metadata.namespace}|{.metadata.name}|{.metadata.resourceVersion}{"\\n"}{end}'
# RSS after each import, in a fresh interpreter: what the operator's memory is made of before any object.
IMPORT_STEPS = (
    ("asyncio, json, yaml", "import asyncio, json, yaml"),
    ("pydantic", "import pydantic"),
    ("aiohttp", "import aiohttp"),
    ("prometheus_client", "import prometheus_client"),
    ("lightkube (+ models)", "import lightkube, lightkube.resources.apps_v1, lightkube.resources.core_v1"),
    ("kopf", "import kopf"),
    ("mlflow_operator (cli, handlers)", "import mlflow_operator.cli, mlflow_operator.handlers"),
)
log = logger("scale-bench")


# --- pure helpers (tests/unit/test_bench_scale.py) ---------------------------------------------------------


def namespaces(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(count)]


def spread(count: int, where: Sequence[str]) -> list[str]:
    """The namespace of object i: round robin, so every namespace gets the same share (+-1)."""
    return [where[i % len(where)] for i in range(count)]


def tracking_server(name: str, namespace: str, endpoint: str) -> dict[str, Any]:
    """A TrackingServer with a managed database (pooler on), 1 replica, artifacts under its own prefix of the
    shared bucket, no auth and no lifecycle rules."""
    return {
        "apiVersion": API_VERSION,
        "kind": "TrackingServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": "3.17.2",
            "replicas": 1,
            "database": {"managed": {"storageSize": "1Gi"}},
            "artifacts": {
                "s3": {
                    "bucket": BUCKET,
                    "prefix": f"{namespace}/{name}",
                    "endpoint": endpoint,
                    "credentialsSecret": {"name": S3_SECRET},
                }
            },
        },
    }


def model_deployment(name: str, namespace: str, tracking_uri: str, version: int = 1) -> dict[str, Any]:
    """A ModelDeployment of a pinned version, 1 replica, no canary steps and no router."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"trackingUri": tracking_uri, "model": {"registeredModel": MODEL, "version": version}, "replicas": 1},
    }


def s3_secret(namespace: str, key_id: str, secret_key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret_key},
    }


def resources(
    tracking_servers: int, model_deployments: int, where: Sequence[str], s3_endpoint: str, tracking_uri: str
) -> list[dict[str, Any]]:
    ts = [tracking_server(f"ts-{i:03d}", ns, s3_endpoint) for i, ns in enumerate(spread(tracking_servers, where))]
    md = [model_deployment(f"md-{i:03d}", ns, tracking_uri) for i, ns in enumerate(spread(model_deployments, where))]
    return ts + md


def nodes_for(tracking_servers: int, model_deployments: int) -> int:
    """kwok nodes (110 pods, 32 CPUs each) for both phases' pods at once, with one to spare: a TrackingServer runs
    4 pods requesting 0.97 CPU (Postgres, 2 PgBouncers, the server), a ModelDeployment 1 pod of 0.5 CPU;
    completed migration pods take no room. At least localcluster's 3."""
    pods = 2 * (4 * tracking_servers + model_deployments)
    cpus = 2 * (0.97 * tracking_servers + 0.5 * model_deployments)
    return max(3, max(-(-pods // 100), int(-(-cpus // 30))) + 1)


def by_namespace(objects: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    found: dict[str, list[Mapping[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["metadata"]["namespace"], []).append(obj)
    return found


def rows(text: str) -> list[list[str]]:
    """`a|b|c` lines of a jsonpath output."""
    return [line.split("|") for line in text.splitlines() if line.strip()]


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def workload_ready(row: Sequence[str]) -> bool:
    """kind|ns|name|replicas|ready|available|completions|succeeded: a Deployment available, a StatefulSet
    ready, a Job complete (what `Ready` means without the operator)."""
    kind, replicas = row[0], _int(row[3]) if row[3].strip() else 1
    if kind == "Deployment":
        return _int(row[5]) >= replicas
    if kind == "StatefulSet":
        return _int(row[4]) >= replicas
    if kind == "Job":
        return _int(row[7]) >= (_int(row[6]) or 1)
    return True


def condition_ready(row: Sequence[str]) -> bool:
    """kind|ns|name|Ready status."""
    return len(row) > 3 and row[3].strip() == "True"


def key(row: Sequence[str]) -> str:
    return f"{row[0]}/{row[1]}/{row[2]}"


def resource_versions(text: str, prefix: str) -> dict[str, str]:
    """kind/ns/name -> resourceVersion, for the namespaces starting with prefix."""
    return {key(r): r[3] for r in rows(text) if len(r) > 3 and r[1].startswith(prefix)}


def rv_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, Any]:
    """Objects whose resourceVersion changed, appeared or disappeared, counted by kind, with some names."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    kinds = Counter(k.split("/", 1)[0] for k in changed)
    return {"objects": len(before), "changed": len(changed), "by_kind": dict(kinds), "first": changed[:20]}


def apiserver_requests(text: str) -> dict[str, float]:
    """`VERB resource[/subresource]` -> requests, from the kube-apiserver's apiserver_request_total."""
    found: dict[str, float] = {}
    for labels, value in metric_samples(text, "apiserver_request_total"):
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += f"/{labels['subresource']}"
        name = f"{labels.get('verb', '')} {resource}"
        found[name] = found.get(name, 0.0) + value
    return dict(found)


def operator_requests(text: str) -> dict[str, float]:
    """`verb kind` -> requests, from the operator's mlflow_operator_kube_requests_total."""
    found: dict[str, float] = {}
    for labels, value in metric_samples(text, "mlflow_operator_kube_requests_total"):
        name = f"{labels.get('verb', '')} {labels.get('kind', '')}"
        found[name] = found.get(name, 0.0) + value
    return dict(found)


def reconciles(text: str) -> dict[str, float]:
    """`kind result` -> reconcile passes, from the operator's mlflow_operator_reconciles_total."""
    return {
        f"{labels.get('kind', '')} {labels.get('result', '')}": value
        for labels, value in metric_samples(text, "mlflow_operator_reconciles_total")
    }


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after - before per key, without the keys that did not move."""
    keys = set(before) | set(after)
    moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return {k: v for k, v in sorted(moved.items()) if v}


def per_minute(counts: Mapping[str, float], seconds: float) -> dict[str, float]:
    return {k: round(v * 60 / seconds, 2) for k, v in counts.items()} if seconds > 0 else {}


def by_verb(counts: Mapping[str, float]) -> dict[str, float]:
    """`VERB resource` counts summed per verb."""
    found: dict[str, float] = {}
    for name, value in counts.items():
        verb = name.split(" ", 1)[0]
        found[verb] = found.get(verb, 0.0) + value
    return dict(found)


def writes(counts: Mapping[str, float], verbs: frozenset[str]) -> float:
    return sum(v for k, v in counts.items() if k.split(" ", 1)[0] in verbs)


def top(counts: Mapping[str, float], limit: int = 8) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {v:g}" for k, v in ranked) or "none"


def ratio(operator_s: float | None, floor_s: float | None) -> float | None:
    return operator_s / floor_s if operator_s is not None and floor_s else None


def first_ready(timeline: Mapping[str, float]) -> dict[str, Any]:
    """Per object, seconds until first seen ready: distribution per kind."""
    kinds: dict[str, list[float]] = {}
    for name, t in timeline.items():
        kinds.setdefault(name.split("/", 1)[0], []).append(t)
    return {kind: distribution(values) for kind, values in sorted(kinds.items())}


def import_rss_steps(lines: Iterable[str]) -> list[dict[str, Any]]:
    """`label|rss KiB` lines -> each step's RSS and what it added, in MiB."""
    steps, previous = [], None
    for line in lines:
        label, _, kib = line.rpartition("|")
        if not label or not kib.strip().isdigit():
            continue
        mib = int(kib) / 1024
        steps.append({"step": label, "rss_mib": round(mib, 1), "added_mib": round(mib - (previous or mib), 1)})
        previous = mib
    return steps


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met (True), missed (False) or not measured (None), with the figures."""
    p = result["parameters"]
    floor, op, idle = result.get("floor") or {}, result.get("operator_ramp") or {}, result.get("idle") or {}
    usage = result.get("operator") or {}
    targets = []
    found = ratio(op.get("all_ready_s"), floor.get("all_ready_s"))
    targets.append(
        {
            "target": f"{p['tracking_servers']} TrackingServers + {p['model_deployments']} ModelDeployments all Ready "
            f"within {RATIO_TARGET:g}x the floor (the rendered objects applied directly)",
            "met": None if found is None else found <= RATIO_TARGET,
            "detail": "not measured"
            if found is None
            else f"operator {number(op.get('all_ready_s'), 1)} s, floor {number(floor.get('all_ready_s'), 1)} s: "
            f"{found:.2f}x",
        }
    )
    rv = idle.get("resource_versions") or {}
    targets.append(
        {
            "target": f"idle {number(p.get('idle_window_s'), 0)} s: 0 resourceVersion changes on the custom "
            "resources and their children",
            "met": None if not rv else rv.get("changed") == 0,
            "detail": "not measured"
            if not rv
            else f"{rv.get('changed')} of {rv.get('objects')} objects changed ({rv.get('by_kind')}); operator writes "
            f"{number(idle.get('operator_writes_per_min'), 1)}/min, requests "
            f"{number(idle.get('operator_requests_per_min'), 1)}/min",
        }
    )
    peak = usage.get("rss_peak_mib")
    targets.append(
        {
            "target": f"operator RSS <= {RSS_TARGET_MIB:g} MiB at that scale",
            "met": None if peak is None else peak <= RSS_TARGET_MIB,
            "detail": "not measured"
            if peak is None
            else f"peak (VmHWM) {peak:.0f} MiB; end of idle {number(usage.get('rss_end_mib'), 0)} MiB",
        }
    )
    return targets


def markdown(result: Mapping[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    floor, op, idle = result.get("floor") or {}, result.get("operator_ramp") or {}, result.get("idle") or {}
    usage, background = result.get("operator") or {}, result.get("background") or {}
    ramp_use, idle_use = op.get("operator_usage") or {}, idle.get("operator_usage") or {}
    floor_cpu, op_cpu, idle_cpu = floor.get("cpu") or {}, op.get("cpu") or {}, idle.get("cpu") or {}
    rss_steps = result.get("import_rss") or []

    def spread_text(found: Mapping[str, Any]) -> str:
        return " / ".join(number(found.get(k), 1, " s") for k in ("p50", "p90", "max"))

    def cores(cpu: Mapping[str, Any]) -> str:
        return f"{number(cpu.get('machine_busy_cores'), 2)} / {number(cpu.get('other_cores'), 2)}"

    rows_ = [
        ("**scale**", f"{p['tracking_servers']} TrackingServers + {p['model_deployments']} ModelDeployments "
         f"in {p['namespaces']} namespaces"),
        ("**1. floor**: render CLI", f"{number(floor.get('render_s'), 1, ' s')} for "
         f"{floor.get('objects', 'n/a')} objects"),
        ("floor: kubectl apply --server-side (one per namespace, in parallel) took",
         number(floor.get("apply_s"), 1, " s")),
        ("**floor: all Deployments available, StatefulSets ready, Jobs complete**",
         number(floor.get("all_ready_s"), 1, " s")),
        ("floor: per Deployment / StatefulSet / Job ready, p50 / p90 / max", "; ".join(
            f"{k} {spread_text(v)}" for k, v in (floor.get("first_ready") or {}).items()) or "n/a"),
        ("**2. operator**: kubectl apply of the custom resources took", number(op.get("apply_s"), 1, " s")),
        ("**operator: all Ready=True**", number(op.get("all_ready_s"), 1, " s")),
        ("**operator / floor** (target <= 1.5)", number(ratio(op.get("all_ready_s"), floor.get("all_ready_s")), 2)),
        ("operator: per kind Ready, p50 / p90 / max", "; ".join(
            f"{k} {spread_text(v)}" for k, v in (op.get("first_ready") or {}).items()) or "n/a"),
        ("ramp-up: reconciles (kind result)", json.dumps(op.get("reconciles") or {})),
        ("ramp-up: operator requests by verb", json.dumps(by_verb(op.get("operator_requests") or {}))),
        ("**ramp-up: operator CPU** mean / p90 / peak cores", " / ".join(
            number(ramp_use.get(k), 2) for k in ("cpu_mean_cores", "cpu_p90_cores", "cpu_peak_cores"))),
        ("**ramp-up: operator RSS** start / peak / end", " / ".join(
            number(ramp_use.get(k), 0, " MiB") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))),
        ("machine busy cores (of {}): floor / other; operator ramp / other".format(m["cores"]),
         f"{cores(floor_cpu)}; {cores(op_cpu)}"),
        (f"**3. idle {number(idle.get('window_s'), 0, ' s')}**: resourceVersion changes",
         f"{(idle.get('resource_versions') or {}).get('changed', 'n/a')} of "
         f"{(idle.get('resource_versions') or {}).get('objects', 'n/a')} objects "
         f"{(idle.get('resource_versions') or {}).get('by_kind', '')}"),
        ("idle: reconcile passes (kind result)", json.dumps(idle.get("reconciles") or {})),
        ("**idle: operator requests / writes per minute** (its own counter)",
         f"{number(idle.get('operator_requests_per_min'), 1)} / {number(idle.get('operator_writes_per_min'), 1)}"),
        ("idle: operator requests per minute by verb and kind", top(idle.get("operator_per_min") or {})),
        ("**idle: kube-apiserver requests / writes per minute** (cluster-wide, kopf and kwok included)",
         f"{number(idle.get('apiserver_requests_per_min'), 1)} / {number(idle.get('apiserver_writes_per_min'), 1)}"),
        ("idle: kube-apiserver writes per minute by verb and resource",
         top({k: v for k, v in (idle.get("apiserver_per_min") or {}).items() if k.split(" ")[0] in WRITE_VERBS})),
        (f"background without the operator ({number(background.get('window_s'), 0, ' s')}): kube-apiserver "
         "requests / writes per minute",
         f"{number(background.get('requests_per_min'), 1)} / {number(background.get('writes_per_min'), 1)}"),
        ("**idle: operator CPU** mean / peak cores; RSS start / end",
         f"{number(idle_use.get('cpu_mean_cores'), 3)} / {number(idle_use.get('cpu_peak_cores'), 2)}; "
         f"{number(idle_use.get('rss_start_mib'), 0, ' MiB')} / {number(idle_use.get('rss_end_mib'), 0, ' MiB')}"),
        ("idle: machine busy cores / other processes", cores(idle_cpu)),
        ("**4. operator RSS** peak (VmHWM) / end", f"{number(usage.get('rss_peak_mib'), 0, ' MiB')} / "
         f"{number(usage.get('rss_end_mib'), 0, ' MiB')}"),
        ("imports (fresh interpreter): RSS after each, + added", "; ".join(
            f"{s['step']} {s['rss_mib']:.0f} (+{s['added_mib']:.0f})" for s in rss_steps) or "n/a"),
        ("official `kubernetes` client imported by the operator", str(result.get("kubernetes_imported", "n/a"))),
        ("operator log: errors / warnings", f"{(usage.get('log') or {}).get('errors', 'n/a')} / "
         f"{(usage.get('log') or {}).get('warnings', 'n/a')}"),
        ("load average at start / end", f"{loads_text(m.get('load_average_at_start'))} / "
         f"{loads_text(m.get('load_average_at_end'))}"),
    ]  # fmt: skip
    return report("Scale", result, rows_)


# --- cluster I/O --------------------------------------------------------------------------------------------


def apply_parallel(kubectl: Kubectl, groups: Mapping[str, Sequence[Mapping[str, Any]]], workers: int) -> float:
    """One `kubectl apply --server-side` per namespace, `workers` at a time; seconds until all returned."""
    began = time.monotonic()

    def apply(objects: Sequence[Mapping[str, Any]]) -> None:
        kubectl.run("apply", "--server-side", "-f", "-", stdin=registry.manifests(objects), timeout=900)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done in [pool.submit(apply, objects) for objects in groups.values()]:
            done.result()
    return time.monotonic() - began


def wait_until(
    poll: Callable[[], list[list[str]]],
    ready: Callable[[Sequence[str]], bool],
    prefix: str,
    expected: int,
    timeout: float,
    began: float,
    check: Callable[[], None] = lambda: None,
) -> tuple[float | None, dict[str, float], list[tuple[float, int, int]], list[list[str]]]:
    """Polls every POLL_S until `expected` objects in namespaces starting with prefix are ready; (seconds since
    `began` or None, first time each object was seen ready, (t, seen, ready) timeline, the last rows)."""
    first: dict[str, float] = {}
    timeline: list[tuple[float, int, int]] = []
    last: list[list[str]] = []
    while time.monotonic() - began < timeout:
        started = time.monotonic()
        check()
        last = [r for r in poll() if len(r) > 2 and r[1].startswith(prefix)]
        now = round(time.monotonic() - began, 2)
        for row in last:
            if ready(row):
                first.setdefault(key(row), now)
        done = sum(1 for r in last if ready(r))
        timeline.append((now, len(last), done))
        if len(last) >= expected and done == len(last):
            return now, first, timeline, last
        time.sleep(max(0.0, POLL_S - (time.monotonic() - started)))
    return None, first, timeline, last


def not_ready(last: Sequence[Sequence[str]], ready: Callable[[Sequence[str]], bool]) -> list[str]:
    return [key(r) for r in last if not ready(r)][:20]


def import_rss() -> tuple[list[dict[str, Any]], bool | None]:
    """RSS after each IMPORT_STEPS import in a fresh interpreter, and whether `kubernetes` got imported."""
    code = ["import sys", "def rss():", "    for l in open('/proc/self/status'):", "        if l.startswith('VmRSS'):"]
    code += ["            return l.split()[1]", "print('python|' + rss())"]
    for label, statement in IMPORT_STEPS:
        code += [statement, f"print({label!r} + '|' + rss())"]
    code += ["print('kubernetes|' + str('kubernetes' in sys.modules))"]
    out = subprocess.run(
        [sys.executable, "-c", "\n".join(code)], capture_output=True, text=True, timeout=120, check=False
    ).stdout.splitlines()
    imported = next((line.split("|", 1)[1] == "True" for line in out if line.startswith("kubernetes|")), None)
    return import_rss_steps(line for line in out if not line.startswith("kubernetes|")), imported


# --- the run ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """What a ramp polls: the kinds for `kubectl get -A`, the jsonpath of their rows, when a row counts as
    ready, and the namespaces' prefix."""

    kinds: str
    path: str
    ready: Callable[[Sequence[str]], bool]
    prefix: str


def operator_metrics_at_end(operator: Operator, record: dict[str, Any]) -> None:
    """The operator's reconciles and requests over the whole run, from its /metrics ({} when unread)."""
    record["metrics_at_end"] = {}
    text = operator.scrape_metrics()
    record["metrics_at_end"] = {"reconciles": reconciles(text), "requests": operator_requests(text)}


class Bench:
    def __init__(self, run: Run, found: Cluster, kubectl: Kubectl) -> None:
        self.run, self.found, self.kubectl, self.args = run, found, kubectl, run.args
        self.tag = uuid.uuid4().hex[:6]
        self.floor_prefix, self.op_prefix = f"scale-floor-{self.tag}", f"scale-op-{self.tag}"
        self.server: dp.MlflowServer
        self.s3: S3Server

    def create_namespaces(self, names: Sequence[str]) -> None:
        docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
        self.kubectl.run("apply", "-f", "-", stdin=registry.manifests(docs))
        for name in names:
            self.run.stack.callback(self.kubectl.run, "delete", "namespace", name, "--wait=false", check=False)

    def apiserver_metrics(self) -> dict[str, float]:
        return apiserver_requests(self.kubectl.run("get", "--raw", "/metrics", timeout=60).stdout)

    def specs(self, where: Sequence[str]) -> list[dict[str, Any]]:
        a = self.args
        return resources(a.tracking_servers, a.model_deployments, where, self.s3.endpoint_url, self.server.url)

    def cpu_parts(self, operator: Operator | None) -> dict[str, Callable[[], float | None]]:
        return cpu_parts(self.found, operator, self.server, {"moto s3": self.s3.process.pid})

    def ramp(
        self, phase: str, objects: Sequence[Mapping[str, Any]], watch: Watch, expected: int, operator: Operator | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Applies `objects` (one kubectl per namespace, all at once) and polls until `expected` of what
        `watch` names are ready: the phase's figures, and its CPU window's."""
        timeout = min(self.args.ramp_timeout, self.run.remaining())
        check = operator.check_running if operator is not None else lambda: None
        groups = by_namespace(objects)
        with CpuWindow(self.cpu_parts(operator)) as window:
            began = time.monotonic()
            apply_s = apply_parallel(self.kubectl, groups, self.args.namespaces)
            log(f"{phase}: applied in {apply_s:.1f} s; waiting for {expected} ready")
            all_s, first, timeline, last = wait_until(
                lambda: self.rows(watch), watch.ready, watch.prefix, expected, timeout, began, check
            )
        figures = {
            "apply_s": apply_s,
            "all_ready_s": all_s,
            "first_ready": first_ready(first),
            "timeline": timeline,
            "not_ready": not_ready(last, watch.ready),
        }
        return figures, window.fields

    def rows(self, watch: Watch) -> list[list[str]]:
        out = self.kubectl.run("get", watch.kinds, "-A", "-o", f"jsonpath={watch.path}", timeout=120).stdout
        return rows(out)

    def floor(self) -> None:
        a, result = self.args, self.run.result
        where = namespaces(self.floor_prefix, a.namespaces)
        self.create_namespaces(where)
        source = Path(tempfile.mkdtemp(prefix="mlflow-bench-scale-")) / "resources.yaml"
        source.write_text(registry.manifests(self.specs(where)))
        binary = Path(sys.executable).parent / "mlflow-operator"
        began = time.monotonic()
        rendered = subprocess.run(
            [str(binary), "render", "-f", str(source)], capture_output=True, text=True, timeout=300, check=True
        ).stdout
        render_s = time.monotonic() - began
        objects = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = Counter(str(o["kind"]) for o in objects)
        workloads = sum(kinds[k] for k in ("Deployment", "StatefulSet", "Job"))
        log(f"floor: rendered {len(objects)} objects in {render_s:.1f} s; applying them into {len(where)} namespaces")
        watch = Watch("deployments,statefulsets,jobs", WORKLOAD_PATH, workload_ready, self.floor_prefix)
        figures, cpu = self.ramp("floor", objects, watch, workloads, None)
        result["floor"] = {
            "namespaces": where,
            "render_s": render_s,
            "objects": len(objects),
            "objects_by_kind": dict(kinds),
            "workloads": workloads,
            **figures,
            "cpu": cpu,
        }
        if figures["all_ready_s"] is None:
            raise RuntimeError(f"floor: not every workload ready: {figures['not_ready']}")
        log(f"floor: all {workloads} workloads ready after {figures['all_ready_s']:.1f} s")

    def background(self) -> None:
        """The kube-apiserver's requests without the operator (kwok, the controllers, the floor's objects)."""
        window = self.args.background_window
        before = self.apiserver_metrics()
        began = time.monotonic()
        time.sleep(window)
        counts = delta(before, self.apiserver_metrics())
        seconds = time.monotonic() - began
        self.run.result["background"] = {
            "window_s": seconds,
            "requests_per_min": sum(counts.values()) * 60 / seconds,
            "writes_per_min": writes(counts, WRITE_VERBS) * 60 / seconds,
            "per_min": per_minute(counts, seconds),
        }

    def operator_run(self) -> None:
        a, result = self.args, self.run.result
        where = namespaces(self.op_prefix, a.namespaces)
        self.create_namespaces(where)
        self.kubectl.run(
            "apply", "-f", "-",
            stdin=registry.manifests(s3_secret(n, self.s3.access_key_id, self.s3.secret_access_key) for n in where),
        )  # fmt: skip
        operator = start_operator(
            self.run, log, self.found.kubeconfig, f"{self.op_prefix}-*", at_end=operator_metrics_at_end
        )
        specs = self.specs(where)
        expected = len(specs)
        text = operator.scrape_metrics()
        requests_before, reconciles_before = operator_requests(text), reconciles(text)
        api_before = self.apiserver_metrics()
        log(f"operator: applying {expected} custom resources into {len(where)} namespaces")
        watch = Watch("trackingservers,modeldeployments", READY_PATH, condition_ready, self.op_prefix)
        with Sampler(operator, SAMPLE_S) as sampler:
            figures, cpu = self.ramp("operator", specs, watch, expected, operator)
        text = operator.scrape_metrics()
        ramp = {
            "namespaces": where,
            "resources": expected,
            **figures,
            "reconciles": delta(reconciles_before, reconciles(text)),
            "operator_requests": delta(requests_before, operator_requests(text)),
            "apiserver_requests": delta(api_before, self.apiserver_metrics()),
            "operator_usage": usage_summary(sampler.samples),
            "operator_samples": [(round(t, 1), c, r) for t, c, r in sampler.samples],
            "cpu": cpu,
        }
        result["operator_ramp"] = ramp
        if figures["all_ready_s"] is None:
            raise RuntimeError(f"operator: not every resource Ready: {ramp['not_ready']}")
        log(
            f"operator: all {expected} Ready after {figures['all_ready_s']:.1f} s "
            f"(floor {result['floor']['all_ready_s']:.1f} s)"
        )
        self.idle(operator)

    def snapshot(self) -> dict[str, str]:
        out = self.kubectl.run("get", SNAPSHOT_KINDS, "-A", "-o", f"jsonpath={RV_PATH}", timeout=300).stdout
        return resource_versions(out, self.op_prefix)

    def idle(self, operator: Operator) -> None:
        a, result = self.args, self.run.result
        log(f"idle: settling {a.settle:g} s, then {a.idle_window:g} s with nothing changing")
        time.sleep(a.settle)
        rv_before = self.snapshot()
        text = operator.scrape_metrics()
        requests_before, reconciles_before = operator_requests(text), reconciles(text)
        api_before = self.apiserver_metrics()
        with Sampler(operator, SAMPLE_S) as sampler, CpuWindow(self.cpu_parts(operator)) as window:
            began = time.monotonic()
            end_at = began + a.idle_window
            while time.monotonic() < end_at:
                operator.check_running()
                time.sleep(min(5.0, max(0.0, end_at - time.monotonic())))
            api_counts = delta(api_before, self.apiserver_metrics())
            text = operator.scrape_metrics()
            seconds = time.monotonic() - began
        requests = delta(requests_before, operator_requests(text))
        rv = rv_changes(rv_before, self.snapshot())
        result["idle"] = {
            "settle_s": a.settle,
            "window_s": seconds,
            "resource_versions": rv,
            "reconciles": delta(reconciles_before, reconciles(text)),
            "operator_requests": requests,
            "operator_per_min": per_minute(requests, seconds),
            "operator_requests_per_min": sum(requests.values()) * 60 / seconds,
            "operator_writes_per_min": writes(requests, OPERATOR_WRITE_VERBS) * 60 / seconds,
            "apiserver_requests": api_counts,
            "apiserver_per_min": per_minute(api_counts, seconds),
            "apiserver_requests_per_min": sum(api_counts.values()) * 60 / seconds,
            "apiserver_writes_per_min": writes(api_counts, WRITE_VERBS) * 60 / seconds,
            "operator_usage": usage_summary(sampler.samples),
            "operator_samples": [(round(t, 1), c, r) for t, c, r in sampler.samples],
            "cpu": window.fields,
        }
        idle = result["idle"]
        log(
            f"idle {seconds:.0f} s: {rv['changed']} resourceVersions changed of {rv['objects']}; operator "
            f"{idle['operator_requests_per_min']:.1f} requests/min ({idle['operator_writes_per_min']:.1f} writes)"
        )


def benchmark(run: Run) -> None:
    stack, result = run.stack, run.result
    steps, imported = import_rss()
    result["import_rss"], result["kubernetes_imported"] = steps, imported
    crds = ["trackingservers.mlflow.operator.dev", "modeldeployments.mlflow.operator.dev"]
    found, kubectl = control_plane(run, log, "mlflow-bench-scale-cluster-", crds, run.args.nodes)
    bench = Bench(run, found, kubectl)
    result["parameters"]["namespace_prefixes"] = [bench.floor_prefix, bench.op_prefix]
    bench.server, logged, _ = registry.start_registry(run)
    rs.run_client(bench.server.url, REGISTER_MANY_SCRIPT, {"names": [MODEL], "versions": 1, "logged": logged})
    moto_dir = Path(tempfile.mkdtemp(prefix="mlflow-bench-scale-moto-"))
    stack.callback(subprocess.run, ["rm", "-rf", str(moto_dir)], check=False)
    bench.s3 = stack.enter_context(moto_server(moto_dir))
    bench.s3.client().create_bucket(Bucket=BUCKET)
    result["s3"] = {"server": "moto", "endpoint": bench.s3.endpoint_url, "bucket": BUCKET}
    bench.floor()
    bench.background()
    bench.operator_run()


# --- entry point --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__, "scale", "a smoke run: 10 + 30 resources, 1 minute idle", timeout=3600.0)
    parser.add_argument("--tracking-servers", type=int, help="TrackingServers (default 100; 10 quick)")
    parser.add_argument("--model-deployments", type=int, help="ModelDeployments (default 300; 30 quick)")
    parser.add_argument("--namespaces", type=int, help="namespaces the resources are spread over (default 10; 2 quick)")
    parser.add_argument("--idle-window", type=float, help="seconds of idle measured (default 600; 60 quick)")
    parser.add_argument(
        "--settle", type=float, help="seconds between all Ready and the idle window (default 60; 15 quick)"
    )
    parser.add_argument(
        "--background-window", type=float, help="seconds of kube-apiserver requests without the operator (60; 15 quick)"
    )
    parser.add_argument("--nodes", type=int, help="kwok nodes of the local control plane (default: enough pods)")
    parser.add_argument("--ramp-timeout", type=float, default=1500.0, help="seconds to wait for all ready, per phase")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "tracking_servers": 10 if quick else 100,
        "model_deployments": 30 if quick else 300,
        "namespaces": 2 if quick else 10,
        "idle_window": 60.0 if quick else 600.0,
        "settle": 15.0 if quick else 60.0,
        "background_window": 15.0 if quick else 60.0,
    }
    defaults["nodes"] = nodes_for(
        int(args.tracking_servers if args.tracking_servers is not None else defaults["tracking_servers"]),
        int(args.model_deployments if args.model_deployments is not None else defaults["model_deployments"]),
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.namespaces <= 50 or args.tracking_servers < 0 or args.model_deployments < 0:
        parser.error("--namespaces must be 1..50, the counts non-negative")
    if args.tracking_servers > 999 or args.model_deployments > 999:
        parser.error("at most 999 of each (names are ts-NNN, md-NNN)")
    return args


NOTES = [
    "The floor applies what `mlflow-operator render` prints, with one `kubectl apply --server-side` per namespace "
    "all at once, and needs nothing to happen in order: every workload starts at once. The operator gates the "
    "TrackingServer's stages as in production (no pooler before the database credentials, no migration before the "
    "database is ready, no server before the migration Job completed), so its floor is the chain of those waits.",
    "The local control plane gets enough kwok nodes (110 pods each) for both phases' pods at once (kwok_nodes); "
    "kwok makes pods Ready (and the migration Jobs complete) without running them: the figures are the operator's "
    "and the control plane's, not MLflow's or Postgres's start-up. PersistentVolumeClaims are bound by the "
    "kube-controller-manager's hostPath provisioner, for the floor and the operator alike.",
    "Ready is polled every ~2 s with one `kubectl get` of every workload (floor) or custom resource (operator): "
    "both times are rounded up to the next poll.",
    "Idle requests: mlflow_operator_kube_requests_total counts the requests the reconcilers send (children, status, "
    "Events, Secrets); kopf's watches are not in it. apiserver_request_total is cluster-wide: it includes kwok's "
    "node heartbeats and leases, the controllers and kopf; the background window (no operator running, the floor's "
    "objects in place) shows the control plane's own share.",
    "Everything (control plane, Postgres, MLflow, moto, operator, kubectl) shares this machine's cores with "
    "whatever else runs on it: see cpu.other_cores and the load averages.",
]


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tracking_servers": args.tracking_servers,
        "model_deployments": args.model_deployments,
        "namespaces": args.namespaces,
        "kwok_nodes": args.nodes,
        "idle_window_s": args.idle_window,
        "settle_s": args.settle,
        "background_window_s": args.background_window,
    }


BENCHMARK = Benchmark("scale", parse_args, parameters, benchmark, evaluate, markdown, NOTES, log)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
