"""Test-side access to a cluster through kubectl: what a user types is what the tests run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def find_kubectl() -> str:
    """$KUBECTL, else the kubectl built with the local control plane, else the one on PATH."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    env = subprocess.run(
        ["python3", str(ROOT / "hack" / "localcluster.py"), "env"], capture_output=True, text=True, check=True
    ).stdout
    built = dict(line.split("=", 1) for line in env.splitlines())["kubectl"]
    if Path(built).exists():
        return built
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: set $KUBECTL or run `make cluster` to build one")
    return found


def run_cli(
    command: list[str], what: str, *, stdin: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs a command-line tool with its output captured as text; with check, a non-zero exit fails the test
    with `what` and the tool's stderr."""
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{what} failed: {result.stderr.strip()}")
    return result


@dataclass
class Kubectl:
    kubeconfig: str
    binary: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        return run_cli(command, f"kubectl {' '.join(args)}", stdin=stdin, check=check, timeout=timeout)

    def apply(
        self, obj: dict[str, Any] | str, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        ns = ["-n", namespace] if namespace else []
        return self.run("apply", *ns, "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        result = self.run("get", kind, name, *ns, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return dict(json.loads(result.stdout))

    def resource_version(self, path: str) -> str:
        """The collection's resourceVersion now (`path`: its API path), to ask later for what changed since."""
        return str(json.loads(self.run("get", "--raw", path).stdout)["metadata"]["resourceVersion"])

    def changes_since(self, path: str, resource_version: str) -> list[dict[str, Any]]:
        """Every version of the collection's objects the API server recorded after `resource_version`, in
        order: a watch from that point, replayed, so a transient state is seen however late this runs
        (a poll, or a watch started after the change, misses it on a busy machine)."""
        query = f"{path}?watch=1&resourceVersion={resource_version}&timeoutSeconds=2"
        lines = self.run("get", "--raw", query, timeout=30).stdout.splitlines()
        return [json.loads(line)["object"] for line in lines if line.strip()]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        items = json.loads(self.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def eventually(check: Callable[[], T | None], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> T:
    """Poll until check returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def md_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """A ModelDeployment's status ({} while it has none)."""
    obj = kubectl.get("modeldeployment", name, namespace) or {}
    return dict(obj.get("status") or {})


def wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 120, **fields: Any
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        current = md_status(kubectl, namespace, name)
        wanted = current.get("phase") == phase and all(current.get(k) == v for k, v in fields.items())
        return current if wanted else None

    return eventually(reached, timeout=timeout, interval=0.5, what=f"{name} phase {phase} {fields}")


# --- the operator's /metrics ------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# The gauges that are zero when a kind's controller has nothing left to do.
IDLE_GAUGES = ("mlflow_operator_queue_depth", "mlflow_operator_reconciles_in_progress")


def scrape(url: str) -> Samples:
    """Every sample an operator's /metrics shows, by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - only e2e tests need it

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def passes(samples: Samples, kind: str, results: tuple[str, ...] = ("success", "error")) -> float:
    """Reconcile passes of a kind so far (mlflow_operator_reconciles_total)."""
    return sum(samples.get(("mlflow_operator_reconciles_total", (("kind", kind), ("result", r))), 0.0) for r in results)


def wait_object_pass(metrics_url: str, kind: str, namespace: str, name: str, after: float, timeout: float = 60) -> None:
    """Until a pass of one object has finished after `after` (Unix time) and the kind's controller is idle (no
    key queued, no pass running): so a pass caused by a change made at `after` has run, however long it took.
    Waiting on the object's own series keeps other objects' passes from ending the wait early."""
    labels = (("kind", kind), ("name", name), ("namespace", namespace))

    def settled() -> bool:
        samples = scrape(metrics_url)
        last = samples.get(("mlflow_operator_last_reconcile_timestamp_seconds", labels), 0.0)
        busy = sum(samples.get((metric, (("kind", kind),)), 0.0) for metric in IDLE_GAUGES)
        return last > after and busy == 0

    eventually(settled, timeout=timeout, interval=0.5, what=f"a {kind} {namespace}/{name} pass after the change")


def wait_passes(metrics_url: str, kind: str, per_object: int = 2, timeout: float = 180) -> None:
    """Until the operator has run `per_object` more passes of `kind` per object it knows: what a "nothing
    changed across resyncs" check must wait for. A fixed sleep passes vacuously on a cluster too slow to resync
    within it; this waits as long as the resyncs take, and no longer."""
    before = scrape(metrics_url)
    objects = before.get(("mlflow_operator_objects", (("kind", kind),)), 0.0)
    wanted = passes(before, kind) + per_object * max(objects, 1.0)
    eventually(
        lambda: passes(scrape(metrics_url), kind) >= wanted,
        timeout=timeout,
        interval=1,
        what=f"{per_object} more {kind} passes per object ({objects:.0f} objects)",
    )
