"""`python -m bench.modeldeployment`: how fast ModelDeployments roll back and roll out.

All on 127.0.0.1: a real Kubernetes control plane (hack/localcluster.py, or $KUBECONFIG) whose kwok nodes make
the model-server pods Ready without running them, the CRDs and the Gateway API CRDs, a real `mlflow server` on
Postgres as the registry (the integration harness, as bench.registry starts it), a real Prometheus scraping an
exporter whose `model_error_rate{namespace,service}` series the benchmark sets (tests/integration/
prometheus_server.py), and the operator's console script as a subprocess watching one namespace.

1. Failing metrics -> weight 0 (`--repeats` R ModelDeployments, one at a time). Each follows the alias
   champion of its own registered model; gatewayAPI router; steps setWeight 25, analysis (count 2 every
   `--interval` I, failureLimit 0), setWeight 50, pause 2s. Stable on v1, its canary's error rate is set
   failing (0.5 > max 0.05) and awaited in Prometheus, then the alias moves to v2 (one REST call). One
   `kubectl get` of the ModelDeployment and its HTTPRoute every ~0.25 s tells when the canary enters the
   analysis step (status.currentStep = 1, canaryVersion 2), when status says RolledBack with canaryWeight 0,
   and when the HTTPRoute's canary backendRef weight is 0. Target: within one analysis interval
   + 10 s of the analysis step's start; the analysis takes its first measurement one interval after the step
   starts, so I is the floor.
2. N at once (`--deployments`, default 50): N ModelDeployments, each following the alias of its own registered
   model (a fleet of models; see NOTES), steps setWeight 50, analysis (count 2 every I, healthy metrics),
   pause 5s, roll out v1 and reach Succeeded; the idle fleet is watched for `--idle-window` s (reconciles
   per second against the alias polls due, the operator's ModelDeployment queue); then every alias moves to
   v2 (N REST calls in a row, about a second) and one `kubectl get` per second tells when each is Succeeded
   on v2. The operator's CPU and RSS (/proc) and its queue (/metrics) are sampled every 0.5 s. The floor is
   what the steps impose (pauses + count x interval); a ModelDeployment also notices the alias up to one
   spec.pollInterval late.
3. The operator's own /metrics (reconciles per kind and result, durations, queue) at the start and the end.

Results: bench/results/modeldeployment.json (every raw timing, the machine, the other processes' CPU) and
bench/results/modeldeployment.md; --quick (5 deployments, 1 repeat) writes modeldeployment-quick.*;
--rerender JSON rewrites the targets and the .md of a results file.

    .venv/bin/python -m bench.modeldeployment [--quick] [--deployments N] [--repeats R] [--interval S]
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.serving import gateway_api_crds_dir
from tests.integration import dataplane as dp
from tests.integration import registry_server as rs
from tests.integration.prometheus_server import MetricsExporter, PrometheusServer, start_prometheus
from tests.kube import ROOT, Kubectl

from bench import registry
from bench.common import Operator, Run, loads_text, logger, metric_samples, number, report
from bench.harness import (
    Benchmark,
    CpuWindow,
    Sampler,
    control_plane,
    cpu_parts,
    create_namespace,
    distribution,
    queue_summary,
    run_parser,
    start_operator,
    usage_summary,
)

API_VERSION = "mlflow.operator.dev/v1alpha1"
KIND = "ModelDeployment"
METRIC = "model_error_rate"
FAILING, HEALTHY, THRESHOLD = 0.5, 0.0, 0.05
FAIL_PREFIX, SCALE_PREFIX = "fail-", "scale-"
FAST_POLL_S = 0.25  # scenario 1: one `kubectl get` of the ModelDeployment and its HTTPRoute
SLOW_POLL_S = 1.0  # scenario 2: one `kubectl get modeldeployments` of the namespace
SAMPLE_S = 0.5  # operator CPU / RSS from /proc
BOUND_EXTRA_S = 10.0  # the target: weight 0 within one analysis interval + 10 s
log = logger("modeldeployment-bench")

# One process registers every model: `versions` versions of one logged model each, alias champion -> 1.
REGISTER_MANY_SCRIPT = """\
import json, os
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
client, logged = MlflowClient(), params["logged"]
for name in params["names"]:
    client.create_registered_model(name)
    for _ in range(params["versions"]):
        client.create_model_version(name, logged["model_uri"], run_id=logged["run_id"], model_id=logged["model_id"])
    client.set_registered_model_alias(name, "champion", 1)
print(json.dumps({"registered": len(params["names"])}))
"""


# --- pure helpers (tests/unit/test_bench_modeldeployment.py) -----------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """A spec duration ("5s", "500ms", "2m", "1h") in seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def fail_steps() -> list[dict[str, Any]]:
    return [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}]


def scale_steps() -> list[dict[str, Any]]:
    return [{"setWeight": 50}, {"analysis": {}}, {"pause": {"duration": "5s"}}]


def analysis_step_index(steps: Sequence[Mapping[str, Any]]) -> int:
    return next(i for i, step in enumerate(steps) if "analysis" in step)


def step_floor_s(steps: Sequence[Mapping[str, Any]], interval_s: float, count: int) -> float:
    """The least time the steps impose: every timed pause, and count measurements one interval apart per
    analysis step (the first one interval after the step starts). setWeight steps take no time of their own."""
    total = 0.0
    for step in steps:
        if "pause" in step and (step["pause"] or {}).get("duration"):
            total += seconds(step["pause"]["duration"])
        elif "analysis" in step:
            total += ((step["analysis"] or {}).get("count") or count) * interval_s
    return total


def model_deployment(
    name: str,
    model: str,
    *,
    tracking_uri: str,
    prometheus: str,
    steps: Sequence[Mapping[str, Any]],
    interval_s: float,
    poll_interval_s: float,
    inconclusive_limit: int = 0,
    prefix: str = "",
) -> dict[str, Any]:
    """A ModelDeployment following `model`'s alias champion: 1 replica per track, gatewayAPI router, the
    canary's max(model_error_rate) under 0.05, count 2, failureLimit 0."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": {"bench": prefix.rstrip("-") or "md"}},
        "spec": {
            "trackingUri": tracking_uri,
            "model": {"registeredModel": model, "alias": "champion"},
            "pollInterval": registry.duration(poll_interval_s),
            "replicas": 1,
            "strategy": {"canary": {"steps": [dict(step) for step in steps]}},
            "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
            "analysis": {
                "prometheusAddress": prometheus,
                "interval": registry.duration(interval_s),
                "count": 2,
                "failureLimit": 0,
                "inconclusiveLimit": inconclusive_limit,
                "metrics": [
                    {
                        "name": "error-rate",
                        "query": f'max({METRIC}{{namespace="{{{{namespace}}}}",service="{{{{canary}}}}"}})',
                        "thresholdRange": {"max": THRESHOLD},
                    }
                ],
            },
        },
    }


def canary_route_weight(route: Mapping[str, Any] | None, name: str) -> int | None:
    """The weight of the `<name>-canary` backendRef in the HTTPRoute's last rule; None without a route or ref."""
    if not route:
        return None
    rules = (route.get("spec") or {}).get("rules") or []
    for ref in (rules[-1].get("backendRefs") or []) if rules else []:
        if ref.get("name") == f"{name}-canary":
            return int(ref.get("weight", 1))
    return None


def in_analysis(status: Mapping[str, Any], index: int, version: int) -> bool:
    """The canary of `version` is in (or past) the analysis step `index`, and not finished."""
    step = status.get("currentStep")
    return status.get("canaryVersion") == version and step is not None and step >= index


def rolled_back(status: Mapping[str, Any], version: int) -> bool:
    return (
        status.get("phase") == "RolledBack"
        and int(status.get("canaryWeight") or 0) == 0
        and status.get("rolledBackVersion") == version
    )


def succeeded_on(status: Mapping[str, Any], version: int) -> bool:
    return status.get("phase") == "Succeeded" and status.get("stableVersion") == version


def operator_metrics(text: str) -> dict[str, Any]:
    """The operator's /metrics: per kind, reconciles by result, their duration (count, sum, mean), the
    queue's gauges; and the process collector's CPU and RSS."""
    kinds: dict[str, dict[str, Any]] = {}

    def kind(labels: Mapping[str, str]) -> dict[str, Any]:
        return kinds.setdefault(labels.get("kind", ""), {"reconciles": {}})

    for labels, value in metric_samples(text, "mlflow_operator_reconciles_total"):
        kind(labels)["reconciles"][labels.get("result", "")] = round(value)
    for suffix in ("count", "sum"):
        for labels, value in metric_samples(text, f"mlflow_operator_reconcile_duration_seconds_{suffix}"):
            kind(labels)[f"duration_{suffix}"] = value
    gauges = {"queue_depth": "queue_depth", "reconciles_in_progress": "in_progress", "objects": "objects"}
    gauges["objects_retrying"] = "retrying"
    for metric, key in gauges.items():
        for labels, value in metric_samples(text, f"mlflow_operator_{metric}"):
            kind(labels)[key] = round(value)
    for found in kinds.values():
        count, total = found.get("duration_count"), found.get("duration_sum")
        found["duration_mean_s"] = total / count if count else None
    process = {}
    for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        samples = metric_samples(text, metric)
        if samples:
            process[metric] = samples[0][1]
    return {"kinds": kinds, "process": process}


def reconciles_between(before: Mapping[str, Any], after: Mapping[str, Any], kind: str = KIND) -> dict[str, Any]:
    """Reconciles of `kind` by result and their mean duration between two operator_metrics() snapshots."""
    old, new = before.get("kinds", {}).get(kind, {}), after.get("kinds", {}).get(kind, {})
    results = set(old.get("reconciles", {})) | set(new.get("reconciles", {}))
    delta = {r: new.get("reconciles", {}).get(r, 0) - old.get("reconciles", {}).get(r, 0) for r in sorted(results)}
    count = (new.get("duration_count") or 0) - (old.get("duration_count") or 0)
    total = (new.get("duration_sum") or 0.0) - (old.get("duration_sum") or 0.0)
    return {
        "reconciles": delta,
        "duration_count": count,
        "duration_sum_s": total,
        "mean_s": total / count if count else None,
    }


def evaluate(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met (True), missed (False) or not measured (None), with the figures."""
    targets = []
    fail = result.get("failing") or {}
    interval = result["parameters"]["interval_s"]
    bound = interval + BOUND_EXTRA_S
    for key, what in (
        ("analysis_to_status_zero_s", "status.canaryWeight 0"),
        ("analysis_to_route_zero_s", "HTTPRoute"),
    ):
        summary = (fail.get("summary") or {}).get(key) or {}
        repeats = len(fail.get("repeats") or [])
        worst = summary.get("max")
        complete = bool(repeats) and summary.get("count") == repeats
        targets.append(
            {
                "target": f"failing metrics -> weight 0 ({what}) within one analysis interval + 10 s "
                f"({bound:g} s) of the analysis step's start",
                "met": None if not repeats else complete and worst is not None and worst <= bound,
                "detail": "not measured"
                if not repeats
                else f"median {number(summary.get('p50'), 1)} s, max {number(worst, 1)} s over "
                f"{summary.get('count', 0)}/{repeats} repeats",
            }
        )
    scale = result.get("scale") or {}
    rollout = scale.get("rollout") or {}
    n = result["parameters"]["deployments"]
    done = rollout.get("succeeded", 0)
    targets.append(
        {
            "target": f"{n} ModelDeployments rolling out at once all reach Succeeded on the new version",
            "met": None if not rollout else done == n,
            "detail": "not measured"
            if not rollout
            else f"{done}/{n} in {number(rollout.get('all_succeeded_s'), 1)} s; floor {scale.get('floor_s'):g} s "
            f"(+ up to {scale.get('poll_interval_s'):g} s to notice the alias)",
        }
    )
    errors = ((result.get("operator") or {}).get("reconciles_during_run") or {}).get("reconciles", {}).get("error")
    targets.append(
        {
            "target": "no ModelDeployment reconcile errors (operator /metrics)",
            "met": None if errors is None else errors == 0,
            "detail": "not measured" if errors is None else f"{errors} errors",
        }
    )
    return targets


def markdown(result: Mapping[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    fail, scale, op = result.get("failing") or {}, result.get("scale") or {}, result.get("operator") or {}
    fs = fail.get("summary") or {}
    rollout, initial = scale.get("rollout") or {}, scale.get("initial") or {}
    usage, cpu = rollout.get("operator_usage") or {}, rollout.get("cpu") or {}
    idle = scale.get("idle_before") or {}
    idle_queue, queue = idle.get("queue") or {}, rollout.get("queue") or {}
    per_md, started = rollout.get("per_deployment_succeeded_s") or {}, rollout.get("per_deployment_started_s") or {}
    reconciles = rollout.get("reconciles") or {}
    ok_errors = reconciles.get("reconciles") or {}
    run_counts = (op.get("reconciles_during_run") or {}).get("reconciles") or {}
    mean_ms = None if reconciles.get("mean_s") is None else reconciles["mean_s"] * 1000

    route_first = fs.get("status_to_route_zero_s") or {}

    def med_max(key: str) -> str:
        found = fs.get(key) or {}
        return f"{number(found.get('p50'), 1, ' s')} / {number(found.get('max'), 1, ' s')}"

    def spread(found: Mapping[str, Any]) -> str:
        return " / ".join(number(found.get(k), 1, " s") for k in ("min", "p50", "p90", "max"))

    rows = [
        ("**1. failing metrics -> weight 0**", ""),
        ("repeats; analysis interval; bound (interval + 10 s)", f"{len(fail.get('repeats') or [])}; "
         f"{p['interval_s']:g} s; {p['interval_s'] + BOUND_EXTRA_S:g} s"),
        ("alias moved -> canary in its analysis step: median / max", med_max("move_to_analysis_s")),
        ("**analysis step -> status canaryWeight 0, RolledBack**: median / max", med_max("analysis_to_status_zero_s")),
        ("**analysis step -> HTTPRoute canary weight 0**: median / max", med_max("analysis_to_route_zero_s")),
        ("failing value visible in Prometheus -> status weight 0: median / max", med_max("visible_to_status_zero_s")),
        ("failing value visible in Prometheus -> HTTPRoute weight 0: median / max", med_max("visible_to_route_zero_s")),
        ("status weight 0 -> HTTPRoute weight 0 (negative: the route first): min / median / max",
         f"{number(route_first.get('min'), 1, ' s')} / {med_max('status_to_route_zero_s')}"),
        ("poll gap (resolution): median / max", med_max("poll_gap_s")),
        (f"**2. {p['deployments']} ModelDeployments at once**", ""),
        ("steps; floor the steps impose; alias pollInterval",
         f"{scale.get('steps_text', 'n/a')}; {number(scale.get('floor_s'), 0, ' s')}; "
         f"{number(scale.get('poll_interval_s'), 0, ' s')}"),
        ("first rollout (v1, no canary): all Succeeded after the apply",
         number(initial.get("all_succeeded_s"), 1, " s")),
        (f"idle fleet ({number(idle.get('window_s'), 0, ' s')} before the moves): reconciles/s done / alias polls due",
         f"{number(idle_queue.get('per_s'), 1)} / {number(idle.get('poll_demand_per_s'), 1)}"),
        ("idle fleet: ModelDeployment queue depth mean / max; passes running (of 4 workers)",
         f"{number(idle_queue.get('depth_mean'), 1)} / {number(idle_queue.get('depth_max'), 0)}; "
         f"{number(idle_queue.get('running_mean'), 1)}"),
        ("alias moves (REST, one after another) took", number(rollout.get("moves_s"), 2, " s")),
        ("**all Succeeded on v2** (from the first alias move)", number(rollout.get("all_succeeded_s"), 1, " s")),
        ("overhead over the floor: all / median deployment",
         f"{number(rollout.get('overhead_all_s'), 1, ' s')} / {number(rollout.get('overhead_p50_s'), 1, ' s')}"),
        ("per deployment, alias moved -> Succeeded: min / p50 / p90 / max", spread(per_md)),
        ("per deployment, alias moved -> canary started: min / p50 / p90 / max", spread(started)),
        ("Succeeded on v2 at the end", f"{rollout.get('succeeded', 0)}/{p['deployments']} "
         f"(phases: {rollout.get('phases_at_end', {})})"),
        ("rollout: reconciles/s; queue depth mean / max; passes running",
         f"{number(queue.get('per_s'), 1)}; {number(queue.get('depth_mean'), 1)} / "
         f"{number(queue.get('depth_max'), 0)}; {number(queue.get('running_mean'), 1)}"),
        ("**operator CPU during the rollout**: mean / p90 / peak cores (0.5 s samples)", " / ".join(
            number(usage.get(k), 2) for k in ("cpu_mean_cores", "cpu_p90_cores", "cpu_peak_cores"))),
        ("**operator RSS during the rollout**: start / peak / end", " / ".join(
            number(usage.get(k), 0, " MiB") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))),
        ("ModelDeployment reconciles during the rollout: ok / errors; mean duration",
         f"{ok_errors.get('success', 'n/a')} / {ok_errors.get('error', 'n/a')}; {number(mean_ms, 0, ' ms')}"),
        ("MLflow requests during the rollout: reads / writes / 5xx", " / ".join(
            str((rollout.get("mlflow_requests") or {}).get(k, "n/a")) for k in ("reads", "writes", "errors_5xx"))),
        (f"machine busy during the rollout (cores of {m['cores']}): all / other processes",
         f"{number(cpu.get('machine_busy_cores'), 2)} / {number(cpu.get('other_cores'), 2)}"),
        ("**operator, whole run**", ""),
        ("RSS after start / peak (VmHWM) / end", " / ".join(
            number(op.get(k), 0, " MiB") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))),
        ("ModelDeployment reconciles: ok / errors",
         f"{run_counts.get('success', 'n/a')} / {run_counts.get('error', 'n/a')}"),
        ("operator log: errors / warnings", f"{(op.get('log') or {}).get('errors', 'n/a')} / "
         f"{(op.get('log') or {}).get('warnings', 'n/a')}"),
        ("load average at start / end", f"{loads_text(m.get('load_average_at_start'))} / "
         f"{loads_text(m.get('load_average_at_end'))}"),
    ]  # fmt: skip
    return report("ModelDeployment", result, rows)


# --- cluster and registry I/O -------------------------------------------------------------------------------


def get_items(kubectl: Kubectl, namespace: str, *refs: str) -> list[dict[str, Any]]:
    out = kubectl.run("get", *refs, "-n", namespace, "-o", "json", "--ignore-not-found", timeout=60).stdout
    if not out.strip():
        return []
    document = json.loads(out)
    return list(document["items"]) if "items" in document else [document]


def list_deployments(kubectl: Kubectl, namespace: str, prefix: str) -> list[dict[str, Any]]:
    items = get_items(kubectl, namespace, "modeldeployments", "-l", f"bench={prefix.rstrip('-')}")
    return [obj for obj in items if obj["metadata"]["name"].startswith(prefix)]


def move_alias(url: str, model: str, version: int, alias: str = "champion") -> None:
    """One SetRegisteredModelAlias over REST, as any client or the UI does it."""
    body = json.dumps({"name": model, "alias": alias, "version": str(version)}).encode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/registered-models/alias", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def wait_all(
    kubectl: Kubectl,
    namespace: str,
    prefix: str,
    count: int,
    marks: Mapping[str, Callable[[Mapping[str, Any]], bool]],
    timeout: float,
    operator: Operator,
) -> tuple[float | None, dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Polls every SLOW_POLL_S until `count` objects satisfy the last mark; (s until then or None, per mark the
    first time each name satisfied it, the last items)."""
    began = time.monotonic()
    first: dict[str, dict[str, float]] = {mark: {} for mark in marks}
    until = list(marks)[-1]
    items: list[dict[str, Any]] = []
    while time.monotonic() - began < timeout:
        poll = time.monotonic()
        operator.check_running()
        items = list_deployments(kubectl, namespace, prefix)
        now = time.monotonic() - began
        for obj in items:
            for mark, predicate in marks.items():
                if predicate(obj.get("status") or {}):
                    first[mark].setdefault(obj["metadata"]["name"], now)
        if len(first[until]) >= count:
            return now, first, items
        time.sleep(max(0.0, SLOW_POLL_S - (time.monotonic() - poll)))
    return None, first, items


def phases(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for obj in items:
        phase = str((obj.get("status") or {}).get("phase"))
        found[phase] = found.get(phase, 0) + 1
    return found


def modeldeployment_queue(operator: Operator) -> tuple[int, int, int]:
    """The operator's ModelDeployment queue from its /metrics: depth, passes running, reconciles so far."""
    kind = operator_metrics(operator.scrape_metrics())["kinds"].get(KIND, {})
    return kind.get("queue_depth", 0), kind.get("in_progress", 0), sum(kind.get("reconciles", {}).values())


# --- the scenarios ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, run: Run, kubectl: Kubectl, namespace: str, server: dp.MlflowServer) -> None:
        self.run, self.kubectl, self.namespace, self.server = run, kubectl, namespace, server
        self.args = run.args
        self.exporter: MetricsExporter
        self.prometheus: PrometheusServer
        self.operator: Operator

    def spec(self, name: str, steps: Sequence[Mapping[str, Any]], poll_s: float, prefix: str, limit: int) -> Any:
        return model_deployment(
            name, f"bench-md-{name}", tracking_uri=self.server.url, prometheus=self.prometheus.url, steps=steps,
            interval_s=self.args.interval, poll_interval_s=poll_s, inconclusive_limit=limit, prefix=prefix,
        )  # fmt: skip

    def set_error_rate(self, name: str, value: float) -> float:
        """Sets the canary's series and returns when Prometheus answers it (monotonic)."""
        labels = {"namespace": self.namespace, "service": f"{name}-canary"}
        self.exporter.set(METRIC, value, labels)
        query = f'{METRIC}{{namespace="{self.namespace}",service="{name}-canary"}}'
        self.prometheus.wait_for(query, lambda seen: seen == value)
        return time.monotonic()

    def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.kubectl.run("apply", "-n", self.namespace, "-f", "-", stdin=registry.manifests(objects), timeout=300)

    def failing(self) -> None:
        args, result = self.args, self.run.result
        names = [f"{FAIL_PREFIX}{i}" for i in range(args.repeats)]
        steps = fail_steps()
        index = analysis_step_index(steps)
        section: dict[str, Any] = {"steps": steps, "analysis_step": index, "repeats": []}
        result["failing"] = section
        self.apply([self.spec(name, steps, args.fail_poll_interval, FAIL_PREFIX, 0) for name in names])
        log(f"scenario 1: {len(names)} ModelDeployments rolling out v1")
        all_s, _, items = wait_all(
            self.kubectl, self.namespace, FAIL_PREFIX, len(names), {"v1": lambda s: succeeded_on(s, 1)}, 300,
            self.operator,
        )  # fmt: skip
        if all_s is None:
            raise RuntimeError(f"scenario 1: not all Succeeded on v1: {phases(items)}")
        for repeat, name in enumerate(names):
            section["repeats"].append(self.fail_once(name, index))
            log(f"scenario 1: repeat {repeat + 1}/{len(names)}: {section['repeats'][-1]['summary']}")
        keys = ["move_to_analysis_s", "analysis_to_status_zero_s", "analysis_to_route_zero_s"]
        keys += ["visible_to_status_zero_s", "visible_to_route_zero_s", "status_to_route_zero_s"]
        section["summary"] = {k: distribution(r.get(k) for r in section["repeats"]) for k in keys}
        section["summary"]["poll_gap_s"] = distribution(g for r in section["repeats"] for g in r["poll_gaps_s"])

    def fail_once(self, name: str, index: int) -> dict[str, Any]:
        """v2 with a failing canary: the moments (s after the alias move) each state was first seen."""
        visible = self.set_error_rate(name, FAILING)
        moved = time.monotonic()
        move_alias(self.server.url, f"bench-md-{name}", 2)
        seen: dict[str, float] = {}
        timeline: list[tuple[float, Any, Any, Any, Any]] = []
        gaps: list[float] = []
        last_poll: float | None = None
        route_at_analysis: int | None = None
        deadline = moved + 60 + 2 * self.args.interval
        while time.monotonic() < deadline and not {"status_zero", "route_zero"} <= set(seen):
            poll = time.monotonic()
            if last_poll is not None:
                gaps.append(poll - last_poll)
            last_poll = poll
            items = get_items(self.kubectl, self.namespace, f"modeldeployment/{name}", f"httproute/{name}")
            now = time.monotonic() - moved
            md = next((o for o in items if o["kind"] == KIND), {})
            route = next((o for o in items if o["kind"] == "HTTPRoute"), None)
            status, weight = md.get("status") or {}, canary_route_weight(route, name)
            state = (status.get("phase"), status.get("currentStep"), status.get("canaryWeight"), weight)
            if not timeline or timeline[-1][1:] != state:
                timeline.append((round(now, 3), *state))
            if status.get("canaryVersion") == 2:
                seen.setdefault("started", now)
            if in_analysis(status, index, 2) and "analysis" not in seen:
                seen["analysis"], route_at_analysis = now, weight
            if rolled_back(status, 2):
                seen.setdefault("status_zero", now)
                seen.setdefault("analysis", now)  # (never seen in between: it lasted less than a poll)
            if "analysis" in seen and not weight and (route_at_analysis or "status_zero" in seen):
                seen.setdefault("route_zero", now)
            time.sleep(max(0.0, FAST_POLL_S - (time.monotonic() - poll)))
        back = visible - moved  # negative: seconds before the move

        def since(start: str | None, end: str) -> float | None:
            if end not in seen or (start is not None and start not in seen):
                return None
            return seen[end] - (seen[start] if start is not None else back)

        found = {
            "name": name,
            "seen_s_after_move": seen,
            "visible_s_before_move": -back,
            "route_weight_at_analysis": route_at_analysis,
            "move_to_analysis_s": seen.get("analysis"),
            "analysis_to_status_zero_s": since("analysis", "status_zero"),
            "analysis_to_route_zero_s": since("analysis", "route_zero"),
            "visible_to_status_zero_s": since(None, "status_zero"),
            "visible_to_route_zero_s": since(None, "route_zero"),
            "status_to_route_zero_s": since("status_zero", "route_zero"),
            "poll_gaps_s": [round(g, 3) for g in gaps],
            "timeline": timeline,
            "status_at_end": {
                k: status.get(k) for k in ("phase", "stableVersion", "rolledBackVersion", "canaryWeight")
            },
            "history": status.get("history"),
            "analysis_results": status.get("analysisResults"),
        }
        found["summary"] = (
            f"analysis at {number(seen.get('analysis'), 1)} s, status 0 after "
            f"{number(since('analysis', 'status_zero'), 1)} s, "
            f"route 0 after {number(since('analysis', 'route_zero'), 1)} s"
        )
        return found

    def scale(self, parts: Mapping[str, Any]) -> None:
        args, result = self.args, self.run.result
        n = args.deployments
        names = [f"{SCALE_PREFIX}{i:03d}" for i in range(n)]
        steps = scale_steps()
        floor = step_floor_s(steps, args.interval, 2)
        section: dict[str, Any] = {
            "deployments": n,
            "steps": steps,
            "steps_text": ", ".join(json.dumps(s, separators=(",", ":")) for s in steps),
            "floor_s": floor,
            "poll_interval_s": args.scale_poll_interval,
            "models": "one registered model per ModelDeployment; every alias moved to v2 in one burst",
        }
        result["scale"] = section
        for name in names:
            self.exporter.set(METRIC, HEALTHY, {"namespace": self.namespace, "service": f"{name}-canary"})
        count = f'count({METRIC}{{namespace="{self.namespace}",service=~"{SCALE_PREFIX}.*"}} == {HEALTHY:g})'
        self.prometheus.wait_for(count, lambda seen: seen == n, timeout=60)
        log(f"scenario 2: applying {n} ModelDeployments (v1)")
        began = time.monotonic()
        self.apply([self.spec(name, steps, args.scale_poll_interval, SCALE_PREFIX, 2) for name in names])
        all_s, _, items = wait_all(
            self.kubectl, self.namespace, SCALE_PREFIX, n, {"v1": lambda s: succeeded_on(s, 1)},
            args.rollout_timeout, self.operator,
        )  # fmt: skip
        section["initial"] = {
            "all_succeeded_s": all_s,
            "apply_and_wait_s": time.monotonic() - began,
            "phases": phases(items),
        }
        if all_s is None:
            raise RuntimeError(f"scenario 2: not all {n} Succeeded on v1: {phases(items)}")
        log(f"scenario 2: all {n} Succeeded on v1 after {all_s:.1f} s; watching the idle fleet")
        with Sampler(self.operator, SAMPLE_S, modeldeployment_queue) as idle:
            time.sleep(args.idle_window)  # no rollout: only the alias polls and resyncs of every deployment
        demand = n / args.scale_poll_interval + args.repeats / args.fail_poll_interval
        section["idle_before"] = {
            "window_s": args.idle_window,
            "poll_demand_per_s": demand,
            **idle.summary(),
            "queue_samples": idle.queue,
        }
        log(
            f"scenario 2: idle {args.idle_window:g} s: {number(section['idle_before']['queue']['per_s'], 1)} "
            f"reconciles/s for {demand:.1f}/s of alias polls; queue depth mean "
            f"{number(section['idle_before']['queue']['depth_mean'], 1)}; moving every alias to v2"
        )
        metrics_before = operator_metrics(self.operator.scrape_metrics())
        requests_before = registry.scrape(self.server.url)
        with Sampler(self.operator, SAMPLE_S, modeldeployment_queue) as sampler, CpuWindow(parts) as window:
            moved_at: dict[str, float] = {}
            start = time.monotonic()
            for name in names:
                move_alias(self.server.url, f"bench-md-{name}", 2)
                moved_at[name] = time.monotonic() - start
            moves_s = time.monotonic() - start
            # The poll's clock starts now; times are shifted to each model's own alias move.
            offset = time.monotonic() - start
            marks: dict[str, Callable[[Mapping[str, Any]], bool]] = {
                "started": lambda s: s.get("canaryVersion") == 2 or succeeded_on(s, 2),
                "succeeded": lambda s: succeeded_on(s, 2),
            }
            all_s, first, items = wait_all(
                self.kubectl, self.namespace, SCALE_PREFIX, n, marks, min(args.rollout_timeout, self.run.remaining()),
                self.operator,
            )  # fmt: skip
        requests = registry.scrape(self.server.url) - requests_before
        metrics_after = operator_metrics(self.operator.scrape_metrics())
        per_done = {name: t + offset - moved_at[name] for name, t in first["succeeded"].items()}
        per_start = {name: t + offset - moved_at[name] for name, t in first["started"].items()}
        section["rollout"] = {
            "moves_s": moves_s,
            "all_succeeded_s": None if all_s is None else all_s + offset,
            "succeeded": len(per_done),
            "phases_at_end": phases(items),
            "not_done": sorted(set(names) - set(per_done)),
            "per_deployment_succeeded_s": distribution(per_done.values()),
            "per_deployment_started_s": distribution(per_start.values()),
            "per_deployment_raw_s": {k: round(v, 3) for k, v in sorted(per_done.items())},
            "operator_usage": usage_summary(sampler.samples),
            "queue": queue_summary(sampler.queue),
            "queue_samples": sampler.queue,
            "operator_samples": [(round(t, 2), c, r) for t, c, r in sampler.samples],
            "cpu": window.fields,
            "reconciles": reconciles_between(metrics_before, metrics_after),
            "mlflow_requests": requests.summary(),
            "inconclusive_measurements": sum(
                1
                for obj in items
                for r in (obj.get("status") or {}).get("analysisResults") or []
                if r.get("outcome") == "Inconclusive"
            ),
        }
        rollout = section["rollout"]
        if rollout["all_succeeded_s"] is not None:
            rollout["overhead_all_s"] = rollout["all_succeeded_s"] - floor
        p50 = rollout["per_deployment_succeeded_s"]["p50"]
        rollout["overhead_p50_s"] = None if p50 is None else p50 - floor
        log(
            f"scenario 2: {len(per_done)}/{n} Succeeded on v2"
            + (f" after {rollout['all_succeeded_s']:.1f} s" if all_s is not None else "")
            + f" (floor {floor:g} s); operator CPU mean {number(rollout['operator_usage']['cpu_mean_cores'], 2)} cores"
        )
        if all_s is None:
            raise RuntimeError(f"scenario 2: not all {n} Succeeded on v2: {phases(items)}")


def benchmark(run: Run) -> None:
    args, stack, result = run.args, run.stack, run.result
    found, kubectl = control_plane(run, log, "mlflow-bench-md-cluster-", ["modeldeployments.mlflow.operator.dev"])
    crds = gateway_api_crds_dir()
    if not (crds / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        subprocess.run([str(ROOT / "hack" / "build-binaries.sh"), "gateway-api"], check=True, timeout=600)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")
    namespace = create_namespace(run, kubectl, "mlflow-bench-md-")

    server, logged, _ = registry.start_registry(run)
    names = [f"bench-md-{FAIL_PREFIX}{i}" for i in range(args.repeats)]
    names += [f"bench-md-{SCALE_PREFIX}{i:03d}" for i in range(args.deployments)]
    log(f"registering {len(names)} models with 2 versions each")
    rs.run_client(server.url, REGISTER_MANY_SCRIPT, {"names": names, "versions": 2, "logged": logged})

    bench = Bench(run, kubectl, namespace, server)
    bench.exporter = stack.enter_context(MetricsExporter())
    prometheus_dir = Path(tempfile.mkdtemp(prefix="mlflow-bench-md-prometheus-"))
    stack.callback(subprocess.run, ["rm", "-rf", str(prometheus_dir)], check=False)
    bench.prometheus = stack.enter_context(start_prometheus([bench.exporter.target], prometheus_dir))
    result["prometheus"] = {"url": bench.prometheus.url, "scrape_interval": "1s"}

    operator = start_operator(run, log, found.kubeconfig, namespace, at_end=operator_metrics_at_end)
    bench.operator = operator
    result["operator"]["metrics_at_start"] = operator_metrics(operator.scrape_metrics())

    if args.repeats:
        bench.failing()
    if args.deployments:
        bench.scale(cpu_parts(found, operator, server, {"prometheus": bench.prometheus.process.pid}))


def operator_metrics_at_end(operator: Operator, record: dict[str, Any]) -> None:
    """The operator's /metrics at the end, and its ModelDeployment reconciles over the whole run."""
    record["metrics_at_end"] = operator_metrics(operator.scrape_metrics())
    record["reconciles_during_run"] = reconciles_between(record["metrics_at_start"], record["metrics_at_end"])


# --- entry point --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__, "modeldeployment", "a smoke run: 5 deployments, 1 repeat")
    parser.add_argument("--deployments", type=int, help="ModelDeployments rolling out at once (default 50; 5 quick)")
    parser.add_argument("--repeats", type=int, help="failing-metrics rollbacks measured (default 5; 1 quick)")
    parser.add_argument("--interval", type=float, default=5.0, help="spec.analysis.interval, seconds (default 5)")
    parser.add_argument(
        "--fail-poll-interval", type=float, default=2.0, help="scenario 1 spec.pollInterval, seconds (default 2)"
    )
    parser.add_argument(
        "--scale-poll-interval", type=float, default=5.0, help="scenario 2 spec.pollInterval, seconds (default 5)"
    )
    parser.add_argument(
        "--idle-window", type=float, default=10.0, help="seconds to watch the idle fleet before the alias moves"
    )
    parser.add_argument("--rollout-timeout", type=float, default=600.0, help="seconds to wait for all Succeeded")
    args = parser.parse_args(argv)
    args.deployments = args.deployments if args.deployments is not None else (5 if args.quick else 50)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if not 0 <= args.deployments <= 999 or not 0 <= args.repeats <= 100 or args.interval <= 0:
        parser.error("--deployments must be 0..999, --repeats 0..100, --interval positive")
    return args


NOTES = [
    "Scenario 2 gives every ModelDeployment its own registered model: the operator writes back per version "
    "(rollout tags naming the deployment, promotion.setAlias), which assumes one ModelDeployment per model, and "
    "a fleet of models promoted together by one pipeline run is the common burst. The burst is the same for the "
    "operator as 50 deployments of one model: 50 alias changes to notice within one pollInterval.",
    "Scenario 1's failing value is set and visible in Prometheus before the alias moves, so 'from visible' includes "
    "noticing the alias, the setWeight step and the analysis interval; the issue's bound is measured from the "
    "analysis step's start (the first measurement is due one interval after it).",
    "Scenario 1 polls the ModelDeployment and its HTTPRoute with one `kubectl get` every ~0.25 s (poll_gap_s gives "
    "the real resolution); scenario 2 polls the namespace's ModelDeployments once a second.",
    "kwok makes the model-server pods Ready without running them: the figures are the operator's and the control "
    "plane's, not a model server's start-up.",
    "Everything (control plane, Postgres, MLflow with 1 gunicorn sync worker, Prometheus, operator, kubectl) shares "
    "this machine's cores with whatever else runs on it: see cpu.other_cores and "
    "the load averages.",
]


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "deployments": args.deployments,
        "repeats": args.repeats,
        "interval_s": args.interval,
        "fail_poll_interval_s": args.fail_poll_interval,
        "scale_poll_interval_s": args.scale_poll_interval,
        "idle_window_s": args.idle_window,
        "bound_s": args.interval + BOUND_EXTRA_S,
    }


BENCHMARK = Benchmark("modeldeployment", parse_args, parameters, benchmark, evaluate, markdown, NOTES, log)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
