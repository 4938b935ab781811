"""`python -m bench.real_node`: `make run` on the local cluster with its real node, step by step; the cluster's
memory at idle; the time from `kubectl apply` of a TrackingServer to Ready; `make cluster-down`.

1. `hack/run.py` in a new state directory (what `make run` does on a machine whose caches are warm: images
   and binaries built), its wall time and its own step timings (the `[run N s]` lines it logs);
2. after IDLE seconds with every example Ready: the RSS of each process the cluster started (control plane,
   containerd, kubelet, kube-proxy; from its state file), of the containerd shims (one per pod), and the
   memory the pods use (cgroup v1 `kubepods`: rss and page cache);
3. the Gateway's overhead: /invocations of the example model at GATEWAY_CLIENTS concurrent clients, through
   the Gateway (Traefik on 127.0.0.1) and straight to the Service `fraud-stable` (kube-proxy), in alternating
   rounds of the same run, p50/p99 of each and their ratios;
   then a canary that fails some requests (tests/e2e/rollout_models.py's night-blind version) at 50 % under
   steady load through the Gateway, analysed every 10 s by the successRate template: the time from its
   first failed request to weight 0 (tests/e2e/realpods.failing_canary_rollback, as the e2e test runs it);
4. a second, small TrackingServer applied (managed Postgres, one PgBouncer, one server) and timed to Ready,
   then deleted;
5. `localcluster.py down`, timed.

One real node runs per machine: stop any `make cluster` first. Results: bench/results/real_node.json and a
table on stdout.

    .venv/bin/python -m bench.real_node [--quick] [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from tests.e2e import realpods, traffic
from tests.kube import ROOT, Kubectl, condition, eventually, find_kubectl
from tests.scripts import run_hack

from bench.common import latency_summary, logs_dir, number, proc_status_kib, report, result_header
from bench.harness import results_path

STEP_LINE = re.compile(r"^\[run\s+(?P<at>[0-9.]+) s\] (?P<what>.*)$")
KUBEPODS_MEMORY = Path("/sys/fs/cgroup/memory/kubepods/memory.stat")


def run_steps(log: str) -> list[dict[str, Any]]:
    """hack/run.py's progress lines: seconds since it started, and what was done then."""
    steps = []
    for line in log.splitlines():
        match = STEP_LINE.match(line.strip())
        if match:
            steps.append({"at_s": float(match["at"]), "step": match["what"]})
    return steps


def memory_stat(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in text.splitlines() if line.strip())}


def rss_mib(pid: int) -> float | None:
    try:
        kib = proc_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
    except OSError:
        return None
    return None if kib is None else round(kib / 1024, 1)


def shim_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip().startswith("containerd-shim"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def idle_memory(workdir: Path) -> dict[str, Any]:
    pids = json.loads((workdir / "state.json").read_text())["pids"]
    components = {name: rss_mib(int(pid)) for name, pid in sorted(pids.items())}
    shims = [r for r in (rss_mib(pid) for pid in shim_pids()) if r is not None]
    pods = memory_stat(KUBEPODS_MEMORY.read_text()) if KUBEPODS_MEMORY.exists() else {}
    return {
        "components_rss_mib": components,
        "components_total_mib": round(sum(v for v in components.values() if v is not None), 1),
        "shims": len(shims),
        "shims_rss_mib": round(sum(shims), 1),
        "pods_rss_mib": round(pods.get("total_rss", 0) / 2**20, 1),
        "pods_cache_mib": round(pods.get("total_cache", 0) / 2**20, 1),
    }


def small_tracking_server(name: str) -> dict[str, Any]:
    database = {"managed": {"storageSize": "1Gi", "resources": realpods.small_resources()}, "pooler": {"replicas": 1}}
    return realpods.small_tracking_server(name, database)


def apply_to_ready(kubectl: Kubectl, name: str) -> float:
    kubectl.apply(small_tracking_server(name))
    began = time.monotonic()
    eventually(
        lambda: (condition(kubectl.get("trackingserver", name, "default"), "Ready") or {}).get("status") == "True",
        timeout=900,
        interval=0.5,
        what=f"TrackingServer {name} Ready",
    )
    ready_s = round(time.monotonic() - began, 1)
    kubectl.run("delete", "trackingserver", "-n", "default", name, timeout=300)
    return ready_s


GATEWAY_CLIENTS = 50


def gateway_overhead(kubectl: Kubectl, workdir: Path, requests: int, rounds: int) -> dict[str, Any]:
    """The example model through the Gateway and through its Service, alternating which goes first."""
    service = kubectl.get("service", "fraud-stable", "default")
    assert service is not None, "no Service fraud-stable"
    urls = {
        "service": f"http://{service['spec']['clusterIP']}:80/invocations",
        "gateway": f"{realpods.Platform(workdir, kubectl).gateway}/invocations",
    }
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    failed = dict.fromkeys(urls, 0)
    traffic.burst(urls["gateway"], GATEWAY_CLIENTS * 2, concurrency=GATEWAY_CLIENTS)  # warm both paths up
    traffic.burst(urls["service"], GATEWAY_CLIENTS * 2, concurrency=GATEWAY_CLIENTS)
    for index in range(rounds):
        order = list(urls) if index % 2 == 0 else list(reversed(urls))
        for name in order:
            answers = traffic.burst(urls[name], requests, concurrency=GATEWAY_CLIENTS, body=traffic.DAY_SAMPLE)
            latencies[name] += [a.latency_s for a in answers if a.status == 200]
            failed[name] += sum(1 for a in answers if a.status != 200)
    result: dict[str, Any] = {
        name: {**latency_summary(values), "failed": failed[name]} for name, values in latencies.items()
    }
    for q in ("p50", "p99"):
        gateway, direct = result["gateway"][q], result["service"][q]
        result[f"ratio_{q}"] = round(gateway / direct, 2) if gateway and direct else None
    result.update(clients=GATEWAY_CLIENTS, requests_per_round=requests, rounds=rounds)
    return result


ANALYSIS_INTERVAL_S = 10


def failing_canary(platform: realpods.Platform) -> dict[str, Any]:
    os.environ.update(realpods.mlflow_environment(platform))
    versions = realpods.register_rollout_versions(platform)
    rollback = realpods.failing_canary_rollback(platform, MlflowClient(), versions.night_blind, ANALYSIS_INTERVAL_S)
    results = rollback.status.get("analysisResults") or []
    return {
        "interval_s": rollback.interval_s,
        "first_failure_to_weight_0_s": rollback.seconds,
        "other_failed_answers": rollback.other_failures,
        "failed_measurement": next((r for r in reversed(results) if r["outcome"] == "Failed"), None),
    }


def run_make_run(workdir: Path) -> subprocess.CompletedProcess[str]:
    """hack/run.py with its progress (stderr) kept: the step timings come from it."""
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    argv = [sys.executable, str(ROOT / "hack" / "run.py"), "--dir", str(workdir)]
    made = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"hack/run.py failed:\n{made.stderr[-4000:]}")
    return made


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=120, help="seconds to let the cluster settle")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 15 s of idle")
    args = parser.parse_args(argv)
    if args.quick:
        args.idle = 15
    stamp, logs = logs_dir("real_node")
    result = result_header("real_node", stamp, argv, {"idle_s": args.idle, "quick": args.quick})
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-bench-realnode-"))
    try:
        began = time.monotonic()
        made = run_make_run(workdir)
        result["make_run_s"] = round(time.monotonic() - began, 1)
        (logs / "run.log").write_text(made.stderr)
        result["make_run_steps"] = run_steps(made.stderr)
        time.sleep(args.idle)
        result["idle_memory"] = idle_memory(workdir)
        kubectl = Kubectl(kubeconfig=str(workdir / "kubeconfig"), binary=find_kubectl())
        requests, rounds = (200, 2) if args.quick else (1000, 4)
        result["gateway_overhead"] = gateway_overhead(kubectl, workdir, requests, rounds)
        result["failing_canary"] = failing_canary(realpods.Platform(workdir, kubectl))
        result["tracking_server_apply_to_ready_s"] = apply_to_ready(kubectl, "bench")
    finally:
        began = time.monotonic()
        run_hack("localcluster.py", "down", "--dir", str(workdir), timeout=600)
        result["cluster_down_s"] = round(time.monotonic() - began, 1)
    results_path("real_node", args.quick).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    memory, canary = result["idle_memory"], result["failing_canary"]
    components = ", ".join(f"{name} {mib:.0f}" for name, mib in memory["components_rss_mib"].items() if mib)
    rows = [
        ("make run, warm caches, to every example Ready", number(result["make_run_s"], 1, " s")),
        *((f"  {step['step']}", number(step["at_s"], 1, " s")) for step in result["make_run_steps"]),
        ("idle: cluster processes RSS", f"{memory['components_total_mib']:.0f} MiB ({components})"),
        ("idle: containerd shims", f"{memory['shims']} shims, {memory['shims_rss_mib']:.0f} MiB"),
        ("idle: pods (cgroup rss / page cache)", f"{memory['pods_rss_mib']:.0f} / {memory['pods_cache_mib']:.0f} MiB"),
        *gateway_rows(result["gateway_overhead"]),
        (
            f"failing canary: first failed request to weight 0 (analysis every {canary['interval_s']} s)",
            number(canary["first_failure_to_weight_0_s"], 1, " s"),
        ),
        ("a small TrackingServer, apply to Ready", number(result["tracking_server_apply_to_ready_s"], 1, " s")),
        ("make cluster-down", number(result["cluster_down_s"], 1, " s")),
    ]
    return report("Real node", result, rows)


def gateway_rows(overhead: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name in ("service", "gateway"):
        path = overhead[name]
        latency = f"p50 {number(path['p50'] * 1000, 1)} ms, p99 {number(path['p99'] * 1000, 1)} ms"
        rows.append(
            (f"/invocations via the {name}, {overhead['clients']} clients", f"{latency}, {path['failed']} failed")
        )
    ratios = f"p50 x{number(overhead['ratio_p50'], 2)}, p99 x{number(overhead['ratio_p99'], 2)}"
    rows.append(("Gateway / Service latency", ratios))
    return rows


if __name__ == "__main__":
    print(table(run()))
