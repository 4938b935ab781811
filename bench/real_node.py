"""`python -m bench.real_node`: `make run` on the local cluster with its real node, step by step; the cluster's
memory at idle; the time from `kubectl apply` of a TrackingServer to Ready; `make cluster-down`.

1. `hack/run.py` in a new state directory (what `make run` does on a machine whose caches are warm: images
   and binaries built), its wall time and its own step timings (the `[run N s]` lines it logs);
2. after IDLE seconds with every example Ready: the RSS of each process the cluster started (control plane,
   containerd, kubelet, kube-proxy; from its state file), of the containerd shims (one per pod), and the
   memory the pods use (cgroup v1 `kubepods`: rss and page cache);
3. a second, small TrackingServer applied (managed Postgres, one PgBouncer, one server) and timed to Ready,
   then deleted;
4. `localcluster.py down`, timed.

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

from tests.kube import ROOT, Kubectl, condition, eventually, find_kubectl
from tests.scripts import run_hack

from bench.common import RESULTS_DIR, logs_dir, number, proc_status_kib, report, result_header
from mlflow_operator.api.kinds import API_VERSION

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
    small = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrackingServer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "workers": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "database": {"managed": {"storageSize": "1Gi", "resources": small}, "pooler": {"replicas": 1}},
            "artifacts": {
                "s3": {
                    "bucket": "mlflow-artifacts",
                    "prefix": name,
                    "endpoint": "http://minio.storage.svc:9000",
                    "credentialsSecret": {"name": "mlflow-artifacts-s3"},
                }
            },
            "deletionPolicy": "Delete",
        },
    }


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
        result["tracking_server_apply_to_ready_s"] = apply_to_ready(kubectl, "bench")
    finally:
        began = time.monotonic()
        run_hack("localcluster.py", "down", "--dir", str(workdir), timeout=600)
        result["cluster_down_s"] = round(time.monotonic() - began, 1)
    name = "real_node-quick.json" if args.quick else "real_node.json"
    (RESULTS_DIR / name).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    memory = result["idle_memory"]
    components = ", ".join(f"{name} {mib:.0f}" for name, mib in memory["components_rss_mib"].items() if mib)
    rows = [
        ("make run, warm caches, to every example Ready", number(result["make_run_s"], 1, " s")),
        *((f"  {step['step']}", number(step["at_s"], 1, " s")) for step in result["make_run_steps"]),
        ("idle: cluster processes RSS", f"{memory['components_total_mib']:.0f} MiB ({components})"),
        ("idle: containerd shims", f"{memory['shims']} shims, {memory['shims_rss_mib']:.0f} MiB"),
        ("idle: pods (cgroup rss / page cache)", f"{memory['pods_rss_mib']:.0f} / {memory['pods_cache_mib']:.0f} MiB"),
        ("a small TrackingServer, apply to Ready", number(result["tracking_server_apply_to_ready_s"], 1, " s")),
        ("make cluster-down", number(result["cluster_down_s"], 1, " s")),
    ]
    return report("Real node", result, rows)


if __name__ == "__main__":
    print(table(run()))
