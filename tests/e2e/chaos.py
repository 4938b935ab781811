"""Chaos harness for tests/e2e/test_chaos.py: operators killed at seeded random moments, a control plane of
our own whose kube-apiserver and etcd the test may restart or pause, and guards over data the operator
must never touch (rows in a real Postgres, objects in a real bucket).

Randomness comes from one `random.Random` per test, seeded from $CHAOS_SEED or at random; the seed is in
every failure message, so `CHAOS_SEED=<seed> pytest tests/e2e/test_chaos.py` repeats a run's moments.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.operator_process import RESYNC_SECONDS, OperatorProcess, start_operator
from tests.integration.dataplane import Postgres
from tests.integration.s3_servers import S3Server
from tests.kube import ROOT, Kubectl, find_kubectl

MANAGED_BY = "app.kubernetes.io/managed-by=mlflow-operator"
# Every kind the operator creates (and the PVCs the managed database's StatefulSet claims).
CHILD_KINDS = (
    "deployments.apps,statefulsets.apps,services,configmaps,secrets,jobs.batch,cronjobs.batch,"
    "poddisruptionbudgets.policy,networkpolicies.networking.k8s.io,serviceaccounts,persistentvolumeclaims,"
    "ingresses.networking.k8s.io"
)
EARLY_KILLS = 0.2  # the share of kills that land during the operator's start-up
OWNER_KINDS = "trackingservers,modeldeployments,registeredmodels"
LOCALCLUSTER = ROOT / "hack" / "localcluster.py"


def seeded_rng() -> tuple[random.Random, int]:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed: {seed} (CHAOS_SEED={seed} repeats these moments)")
    return random.Random(seed), seed


def launch_operator(
    kubeconfig: str, namespace: str, log_path: Path, *, resync_seconds: float = RESYNC_SECONDS, healthy: bool = True
) -> OperatorProcess:
    """The operator's console script, as conftest.start_operator runs it, with a chosen resync interval
    (a long one lets the test see the backoff the reconcile asks for) and optionally without waiting for
    its liveness endpoint (so a kill can land during start-up)."""
    # No --image-registry: the operator's default images.
    return start_operator(
        kubeconfig, namespace, log_path, resync_seconds=resync_seconds, image_registry=None, healthy=healthy
    )


@dataclass
class Kill:
    number: int
    lived: float  # seconds from the operator's start to its kill
    converged_before: bool  # whether the scenario had already converged when the kill landed


@dataclass
class KillLoop:
    """Start an operator, SIGKILL it after a random delay, repeat; `converged` tells whether a kill still
    landed inside the scenario's active window."""

    kubeconfig: str
    namespace: str
    logs: Path
    rng: random.Random
    seed: int
    window: tuple[float, float] = (0.0, 2.5)  # after the liveness endpoint answers: while it works
    startup_window: tuple[float, float] = (0.2, 1.2)  # after the process starts: while kopf starts up
    kills: list[Kill] = field(default_factory=list)

    def run_waves(self, count: int, waves: list[tuple[Callable[[], None], Callable[[], bool]]]) -> None:
        """At least `count` kills over waves of (start, converged): a wave starts once the previous one
        converged, so the kills keep landing while something is in flight. Kills go on (up to three
        times `count`) until every wave has started; the last wave is finished by the final operator."""
        pending = list(waves)
        start, converged = pending.pop(0)
        start()
        done = 0
        while done < count or (pending and done < 3 * count):
            if pending and converged():
                start, converged = pending.pop(0)
                start()
            self.run(1, converged)
            done += 1
        assert not pending, f"seed {self.seed}: {len(pending)} waves never started in {done} kills"

    def run(self, count: int, converged: Callable[[], bool]) -> None:
        """`count` lives: a few killed during start-up, most at a random moment after they began to work
        (measured from their liveness endpoint answering, so a loaded machine still lets each life work)."""
        for _ in range(count):
            number = len(self.kills) + 1
            early = self.rng.random() < EARLY_KILLS
            delay = round(self.rng.uniform(*(self.startup_window if early else self.window)), 2)
            log = self.logs / f"operator-{number:02d}.log"
            started = time.monotonic()
            operator = launch_operator(self.kubeconfig, self.namespace, log, healthy=not early)
            time.sleep(delay)
            crashed = operator.process.poll()
            operator.kill()
            assert crashed is None, (
                f"seed {self.seed}: operator {number} exited on its own ({crashed}) before its kill:\n"
                f"{operator.log_tail(3000)}"
            )
            self.kills.append(Kill(number, round(time.monotonic() - started, 2), converged()))

    def final(self) -> OperatorProcess:
        """The last operator, left running: it must converge whatever the kills left behind."""
        return launch_operator(self.kubeconfig, self.namespace, self.logs / "operator-final.log")

    def in_window(self) -> int:
        return sum(not kill.converged_before for kill in self.kills)


# ------------------------------------------------------------------------------------------------ children


def children(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl.run("get", CHILD_KINDS, "-n", namespace, "-l", MANAGED_BY, "-o", "json").stdout
    return list(json.loads(out)["items"])


def live_uids(kubectl: Kubectl, namespace: str) -> set[str]:
    kinds = f"{OWNER_KINDS},{CHILD_KINDS},replicasets.apps"
    items = json.loads(kubectl.run("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    return {item["metadata"]["uid"] for item in items}


def child_inventory(kubectl: Kubectl, namespace: str, retained: set[str]) -> tuple[set[str], list[str]]:
    """("Kind/name" of every object the operator manages, the orphans among them): an orphan has an owner that
    no longer exists, or none at all without being one of the deliberately `retained`. A Job a CronJob started
    carries the CronJob's labels but is the CronJob controller's: it counts for orphans only (the gc CronJob
    fires at 03:00, and a suite running then saw its Jobs as unexpected children)."""
    return inventory(children(kubectl, namespace), live_uids(kubectl, namespace), retained)


def inventory(items: list[dict[str, Any]], uids: set[str], retained: set[str]) -> tuple[set[str], list[str]]:
    names, orphans = set(), []
    for item in items:
        key = f"{item['kind']}/{item['metadata']['name']}"
        owners = item["metadata"].get("ownerReferences") or []
        if not any(owner["kind"] == "CronJob" for owner in owners):
            names.add(key)
        if not owners and key not in retained:
            orphans.append(f"{key} (no owner)")
        orphans += [f"{key} (owner {o['kind']}/{o['name']} gone)" for o in owners if o["uid"] not in uids]
    return names, orphans


# ------------------------------------------------------------------------------------------------ data guards


@dataclass
class DataGuard:
    """Rows in a real Postgres and objects in a real bucket, written before the scenarios: the operator must
    never change them, whatever happens to it."""

    postgres: Postgres
    s3: S3Server
    bucket: str
    tables: dict[str, int]
    objects: dict[str, str]  # key -> ETag

    @classmethod
    def seed(cls, postgres: Postgres, s3: S3Server, rows: int = 1000, objects: int = 20) -> DataGuard:
        tables = {"experiments_chaos": rows, "runs_chaos": rows * 3}
        for table, count in tables.items():
            postgres.psql(
                f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL);"
                f"INSERT INTO {table} (payload) SELECT md5(i::text) FROM generate_series(1, {count}) AS i;"
                f"ALTER TABLE {table} OWNER TO {postgres.user};",
                dbname=postgres.dbname,
            )
        bucket = s3.create_bucket()
        client = s3.client()
        for i in range(objects):
            prefix = "mlflow/tmp" if i % 5 == 0 else "mlflow/artifacts"
            client.put_object(Bucket=bucket, Key=f"{prefix}/run-{i}/model.pkl", Body=os.urandom(256 + i))
        guard = cls(postgres, s3, bucket, tables, {})
        guard.objects = guard.bucket_objects()
        return guard

    def row_counts(self) -> dict[str, int]:
        return {
            table: int(self.postgres.psql(f"SELECT count(*) FROM {table}", dbname=self.postgres.dbname))
            for table in self.tables
        }

    def bucket_objects(self) -> dict[str, str]:
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {item["Key"]: item["ETag"] for item in listed}

    def assert_intact(self, seed: int | None = None) -> None:
        assert self.row_counts() == self.tables, f"seed {seed}: rows changed in Postgres"
        assert self.bucket_objects() == self.objects, f"seed {seed}: objects changed in s3://{self.bucket}"


# ------------------------------------------------------------------------------------------------ metrics


def reconcile_count(operator: OperatorProcess, kind: str) -> int:
    """mlflow_operator_reconciles_total of a kind, successful and failed passes together."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlflow_operator_reconciles_total{") and f'kind="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def watch_passes(
    operator: OperatorProcess, kind: str, before: int, seconds: float, probe: Callable[[], Any]
) -> tuple[list[tuple[float, int]], Any]:
    """For `seconds`: (seconds since the start, reconciles so far) at every change of the count, and the
    first truthy result of `probe`."""
    started = time.monotonic()
    samples: list[tuple[float, int]] = [(0.0, before)]
    seen = None
    while time.monotonic() - started < seconds:
        count = reconcile_count(operator, kind)
        if samples[-1][1] != count:
            samples.append((round(time.monotonic() - started, 1), count))
        seen = seen or probe()
        time.sleep(0.25)
    return samples, seen


def longest_quiet(samples: list[tuple[float, int]], seconds: float) -> float:
    """The longest stretch without a pass after the first one, the quiet time up to `seconds` included."""
    times = [t for t, _ in samples[1:]] + [float(seconds)]
    return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)


# ------------------------------------------------------------------------------------------------ own cluster


@dataclass
class OwnCluster:
    """A control plane of our own (hack/localcluster.py), whose processes the test may restart or pause."""

    workdir: Path
    kubeconfig: str

    def _run(self, *args: str, timeout: float = 240) -> None:
        result = subprocess.run(
            [sys.executable, str(LOCALCLUSTER), *args, "--dir", str(self.workdir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"localcluster {' '.join(args)} failed:\n{result.stderr[-3000:]}"
        print(result.stderr.strip())

    def restart(self, component: str) -> None:
        self._run("restart", component)

    def pause(self, component: str) -> None:
        self._run("pause", component, timeout=30)

    def resume(self, component: str) -> None:
        self._run("resume", component, timeout=30)

    def kubectl(self) -> Kubectl:
        return Kubectl(kubeconfig=self.kubeconfig, binary=find_kubectl())


@contextmanager
def own_cluster(workdir: Path) -> Iterator[OwnCluster]:
    script = [sys.executable, str(LOCALCLUSTER)]
    try:
        result = subprocess.run(
            [*script, "up", "--dir", str(workdir), "--no-real-node", "--fake-nodes", "1"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"own control plane did not start:\n{result.stderr[-4000:]}"
        yield OwnCluster(workdir, result.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([*script, "down", "--dir", str(workdir)], capture_output=True, timeout=120, check=False)
