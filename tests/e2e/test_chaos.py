"""Chaos: the operator SIGKILLed at seeded random moments, kube-apiserver restarted and etcd paused
mid-reconcile, the S3 endpoint down during lifecycle reconciliation, a TrackingServer deleted while the
operator is down. After each: the right final state, every child once and owned, nothing lost in Postgres
or the bucket.

Covered elsewhere, not repeated here: MLflow down during RegisteredModel sync and SIGKILL during
registration (test_registeredmodel.py), MLflow down mid-rollout and one kill mid-rollout
(test_modeldeployment.py).

Each test runs its own operator on a namespace outside `mlflow-e2e-*` (the session operator's). A failure
message carries the chaos seed; `CHAOS_SEED=<seed>` repeats the same kill moments.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chaos import (
    DataGuard,
    KillLoop,
    child_inventory,
    launch_operator,
    longest_quiet,
    own_cluster,
    reconcile_count,
    seeded_rng,
    watch_passes,
)
from tests.e2e.serving import Metrics, Registry, deployments, events, model_deployment, route_weights
from tests.e2e.stacks import stack, ts_of
from tests.integration.dataplane import Postgres
from tests.integration.s3_servers import S3Server, minio_server
from tests.kube import ROOT, Kubectl, condition, eventually, md_status

pytestmark = pytest.mark.chaos

UPGRADE_TO = "3.18.0"
KILLS = {"create": 20, "upgrade": 20, "rollout": 20}
OUTAGE_SECONDS = 50
WAVES = 5  # TrackingServers created (then upgraded) one after the other under the kills
# Rules that delete no current object, so that applying them needs no registry check (the TrackingServers'
# own servers do not run on kwok nodes; test_trackingserver.py covers the check with a real registry).
LIFECYCLE = {
    "rules": [
        {
            "id": "tmp-old-versions",
            "filter": {"prefix": "mlflow/tmp/"},
            "noncurrentVersionExpiration": {"noncurrentDays": 7},
        }
    ]
}


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """This module's own MinIO, which a test kills: its objects are on disk, so it can be started again on the
    same port (the session's moto, tests/e2e/conftest.py's `s3`, is not stopped by anyone)."""
    with minio_server(tmp_path_factory.mktemp("minio")) as server:
        yield server


@pytest.fixture(scope="module")
def guard(minio: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataGuard]:
    """A real Postgres (the external database of the TrackingServers below) and a bucket, both with known
    contents written before any scenario."""
    with Postgres(log_dir=tmp_path_factory.mktemp("postgres-logs")) as postgres:
        yield DataGuard.seed(postgres, minio)


def chaos_namespace(kubectl: Kubectl) -> str:
    name = f"mlflow-chaos-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    return name


def tracking_server(guard: DataGuard, name: str, external: bool, **spec: Any) -> list[dict[str, Any]]:
    """The example TrackingServer named `name`, on the guard's bucket, with our lifecycle rules (MinIO
    supports them all), and the guard's Postgres as its external database when `external`."""
    docs = copy.deepcopy(stack(guard.s3, guard.bucket, None, **spec))  # LIFECYCLE needs no registry check
    ts = ts_of(docs)
    ts["metadata"]["name"] = name
    ts["spec"]["artifacts"]["lifecycle"] = LIFECYCLE
    if external:
        ts["spec"]["database"] = {
            "external": {
                "host": guard.postgres.host,
                "port": guard.postgres.port,
                "database": guard.postgres.dbname,
                "sslMode": "disable",
                "credentialsSecret": {"name": "chaos-db-credentials"},
            },
            "pooler": ts["spec"]["database"]["pooler"],
        }
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "chaos-db-credentials"},
                "stringData": {"username": guard.postgres.user, "password": guard.postgres.password},
            }
        )
    return docs


def apply(kubectl: Kubectl, docs: list[dict[str, Any]], namespace: str) -> None:
    for doc in docs:
        kubectl.apply(doc, namespace)


def ts_state(kubectl: Kubectl, namespace: str, name: str) -> tuple[str | None, str | None]:
    """(Ready status, status.version) of a TrackingServer at its current generation."""
    obj = kubectl.get("trackingserver", name, namespace) or {}
    st = obj.get("status") or {}
    ready = condition(obj, "Ready")
    fresh = st.get("observedGeneration", obj.get("metadata", {}).get("generation")) == obj.get("metadata", {}).get(
        "generation"
    )
    return (ready["status"] if ready and fresh else None), st.get("version")


def ts_converged(kubectl: Kubectl, namespace: str, names: list[str], version: str) -> bool:
    return all(ts_state(kubectl, namespace, name) == ("True", version) for name in names)


def expected_ts_children(name: str, external: bool, versions: list[str]) -> set[str]:
    keys = {
        f"Deployment/{name}",
        f"Service/{name}",
        f"PodDisruptionBudget/{name}",
        f"ServiceAccount/{name}",
        f"Secret/{name}-admin",
        f"Secret/{name}-auth-config",
        f"Secret/{name}-backend",
        f"CronJob/{name}-gc",
        f"ConfigMap/{name}-gc",  # the safe gc script the CronJob mounts
        f"Deployment/{name}-pgbouncer",
        f"Service/{name}-pgbouncer",
        f"ConfigMap/{name}-pgbouncer",
        f"NetworkPolicy/{name}-pgbouncer",
        f"PodDisruptionBudget/{name}-pgbouncer",
        f"Secret/{name}-pgbouncer-auth",
        f"Secret/{name}-pgbouncer-client",  # the servers' own PgBouncer login
        f"Secret/{name}-registry-events",  # the webhook's signing secret and MLflow's webhook encryption key
        *(f"Job/{name}-migrate-{v.replace('.', '-')}" for v in versions),
    }
    if not external:
        keys |= {
            f"Secret/{name}-db",
            f"StatefulSet/{name}-postgres",
            f"Service/{name}-postgres",
            f"Service/{name}-postgres-rw",  # the clients' address
            f"NetworkPolicy/{name}-postgres",
            f"PersistentVolumeClaim/data-{name}-postgres-0",
        }
    return keys


def retained(name: str) -> set[str]:
    """What deletionPolicy: Retain keeps without an owner: the database's password and volume."""
    return {f"Secret/{name}-db", f"PersistentVolumeClaim/data-{name}-postgres-0"}


def test_sigkill_during_create_and_upgrade_converges(
    kubectl: Kubectl, kubeconfig: str, crds: None, guard: DataGuard, tmp_path: Path
) -> None:
    """TrackingServers (managed databases, and the guard's Postgres as an external one) created one after
    the other, then upgraded 3.17.2 -> 3.18.0 one after the other, while operators are SIGKILLed at random
    moments; after the last kill, a last operator converges them all."""
    rng, seed = seeded_rng()
    namespace = chaos_namespace(kubectl)
    servers = {f"ts-{i}": i % 2 == 1 for i in range(WAVES)}  # name -> external database
    docs = {name: tracking_server(guard, name, ext) for name, ext in servers.items()}
    names = list(servers)
    final = None

    def create(name: str) -> tuple[Any, Any]:
        return (
            lambda: apply(kubectl, docs[name], namespace),
            lambda: ts_converged(kubectl, namespace, [name], "3.17.2"),
        )

    def upgrade(name: str) -> tuple[Any, Any]:
        def start() -> None:
            ts_of(docs[name])["spec"]["version"] = UPGRADE_TO
            kubectl.apply(ts_of(docs[name]), namespace)

        return start, lambda: ts_converged(kubectl, namespace, [name], UPGRADE_TO)

    try:
        loop = KillLoop(kubeconfig, namespace, tmp_path, rng, seed)
        loop.run_waves(KILLS["create"], [create(name) for name in names])
        started = time.monotonic()
        final = loop.final()
        eventually(
            lambda: ts_converged(kubectl, namespace, names, "3.17.2"),
            timeout=150,
            what=f"seed {seed}: every TrackingServer Ready on 3.17.2 after {len(loop.kills)} kills",
        )
        created_in = time.monotonic() - started
        secrets = {name: kubectl.get("secret", f"{name}-db", namespace) for name, ext in servers.items() if not ext}
        check_children(kubectl, namespace, servers, ["3.17.2"], seed)
        guard.assert_intact(seed)
        final.kill()

        upgrade_from = len(loop.kills)
        loop.run_waves(KILLS["upgrade"], [upgrade(name) for name in names])
        started = time.monotonic()
        final = loop.final()
        eventually(
            lambda: ts_converged(kubectl, namespace, names, UPGRADE_TO),
            timeout=150,
            what=f"seed {seed}: every TrackingServer Ready on {UPGRADE_TO} after {len(loop.kills)} kills",
        )
        upgraded_in = time.monotonic() - started
        for name in names:
            obj = kubectl.get("trackingserver", name, namespace)
            assert obj is not None and obj["status"]["migratedVersion"] == UPGRADE_TO, (seed, obj)
            server = kubectl.get("deployment", name, namespace)
            assert server is not None
            images = {c["image"] for c in server["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"}
            assert len(images) == 1 and images.pop().endswith(f":{UPGRADE_TO}"), seed
        check_children(kubectl, namespace, servers, ["3.17.2", UPGRADE_TO], seed)
        # Each managed database's password was generated once, whatever the kills interrupted.
        for name, before in secrets.items():
            after = kubectl.get("secret", f"{name}-db", namespace)
            assert before is not None and after is not None, seed
            assert after["metadata"]["uid"] == before["metadata"]["uid"], f"seed {seed}: {name}-db recreated"
            assert after["data"] == before["data"], f"seed {seed}: {name}-db password regenerated"
        reasons = [e["reason"] for e in kubectl.events(namespace) if e["involvedObject"]["kind"] == "TrackingServer"]
        assert "Migrated" in reasons and "Ready" in reasons, (seed, reasons)
        guard.assert_intact(seed)
        create_kills, upgrade_kills = loop.kills[:upgrade_from], loop.kills[upgrade_from:]
        print(
            f"seed {seed}: create: {len(create_kills)} kills, {sum(not k.converged_before for k in create_kills)} "
            f"mid-flight, converged {created_in:.1f}s after the last start; upgrade: {len(upgrade_kills)} kills, "
            f"{sum(not k.converged_before for k in upgrade_kills)} mid-flight, converged {upgraded_in:.1f}s after "
            "the last start"
        )
    finally:
        if final is not None and final.process.poll() is None:
            final.kill()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def check_children(kubectl: Kubectl, namespace: str, servers: dict[str, bool], versions: list[str], seed: int) -> None:
    expected = set().union(*(expected_ts_children(name, ext, versions) for name, ext in servers.items()))
    keep = set().union(*(retained(name) for name, ext in servers.items() if not ext))

    def settled() -> tuple[set[str], list[str]] | None:
        names, orphans = child_inventory(kubectl, namespace, keep)
        return None if names != expected or orphans else (names, orphans)

    try:
        eventually(settled, timeout=30, what="children settled")
    except AssertionError:
        names, orphans = child_inventory(kubectl, namespace, keep)
        raise AssertionError(
            f"seed {seed}: missing {sorted(expected - names)}, unexpected {sorted(names - expected)}, orphans {orphans}"
        ) from None


def md_converged(kubectl: Kubectl, namespace: str, name: str, version: int) -> bool:
    current = md_status(kubectl, namespace, name)
    return current.get("phase") == "Succeeded" and current.get("stableVersion") == version


def test_sigkill_during_canary_rollouts_converges(
    kubectl: Kubectl,
    kubeconfig: str,
    crds: None,
    registry: Registry,
    metrics: Metrics,
    gateway_api: None,
    guard: DataGuard,
    tmp_path: Path,
) -> None:
    """Canary rollouts (an alias moves, the canary's metrics are healthy) of two ModelDeployments, one after
    the other, while operators are SIGKILLed at random moments: each version succeeds exactly once, the
    registry has no version twice, the last version serves alone."""
    rng, seed = seeded_rng()
    namespace = chaos_namespace(kubectl)
    models = {f"canary-{i}": f"chaos-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)}
    final = None
    try:
        for name, model in models.items():
            registry.register(model, champion=1)
            metrics.set_error_rate(namespace, name, 0.0)
            kubectl.apply(model_deployment(name, registry, metrics.prometheus.url, model), namespace)
        final = launch_operator(kubeconfig, namespace, tmp_path / "operator-setup.log")
        eventually(
            lambda: all(md_converged(kubectl, namespace, name, 1) for name in models), timeout=90, what="v1 serving"
        )
        final.kill()

        def move(version: int) -> tuple[Any, Any]:
            def start() -> None:
                for model in models.values():
                    registry.move_alias(model, "champion", version)

            return start, lambda: all(md_converged(kubectl, namespace, name, version) for name in models)

        waves = [move(2), move(3)]  # both ModelDeployments roll out together: each kill hits two rollouts
        loop = KillLoop(kubeconfig, namespace, tmp_path, rng, seed)
        loop.run_waves(KILLS["rollout"], waves)
        started = time.monotonic()
        final = loop.final()
        eventually(
            lambda: all(md_converged(kubectl, namespace, name, 3) for name in models),
            timeout=120,
            what=f"seed {seed}: every ModelDeployment Succeeded on version 3 after {len(loop.kills)} kills",
        )
        converged_in = time.monotonic() - started
        for name, model in models.items():
            done = md_status(kubectl, namespace, name)
            history = [(r["version"], r["outcome"]) for r in done["history"]]
            assert history == [(1, "Succeeded"), (2, "Succeeded"), (3, "Succeeded")], (seed, name, history)
            assert route_weights(kubectl, namespace, name) == (100, 0), seed
            read = registry.read(model)
            assert sorted(v["version"] for v in read["versions"]) == [1, 2, 3], f"seed {seed}: {read['versions']}"
            assert read["aliases"] == {"champion": 3, "production": 3}, (seed, read["aliases"])
            # The status history above is the record; Events are best-effort (posted after the status
            # write, so a SIGKILL between the two loses one). What must never happen is one twice: a
            # rollout that succeeded twice.
            reasons = [reason for reason, _ in events(kubectl, namespace, name)]
            assert reasons.count("RolloutSucceeded") <= 3, (seed, name, reasons)
        eventually(
            lambda: deployments(kubectl, namespace) == sorted(f"{name}-v3" for name in models),
            timeout=30,
            what=f"seed {seed}: only version 3 deployed",
        )
        _, orphans = child_inventory(kubectl, namespace, set())
        assert not orphans, (seed, orphans)
        guard.assert_intact(seed)
        print(
            f"seed {seed}: rollout: {len(loop.kills)} kills, {loop.in_window()} mid-flight, converged "
            f"{converged_in:.1f}s after the last start"
        )
    finally:
        if final is not None and final.process.poll() is None:
            final.kill()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_s3_down_during_lifecycle_reconciliation_backs_off_and_recovers(
    kubectl: Kubectl, kubeconfig: str, crds: None, guard: DataGuard, tmp_path: Path
) -> None:
    """The S3 endpoint stops while the operator applies new lifecycle rules: ArtifactsReady=False with a
    reason naming the endpoint, retries with exponential backoff (not the resync, not a hot loop), and the
    rules are applied with nobody's help once the endpoint is back on the same port."""
    namespace = chaos_namespace(kubectl)
    # A long resync, so that the retries seen are the backoff the reconcile asks for.
    operator = launch_operator(kubeconfig, namespace, tmp_path / "operator.log", resync_seconds=300)
    try:
        docs = tracking_server(guard, "mlflow", True)
        apply(kubectl, docs, namespace)
        eventually(lambda: ts_converged(kubectl, namespace, ["mlflow"], "3.17.2"), timeout=120, what="Ready")
        ts = ts_of(docs)
        rule = {
            "id": "scratch-old-versions",
            "filter": {"prefix": "mlflow/scratch/"},
            "noncurrentVersionExpiration": {"noncurrentDays": 1},
        }
        ts["spec"]["artifacts"]["lifecycle"] = {"rules": [*LIFECYCLE["rules"], rule]}
        guard.s3.process.kill()  # the endpoint dies: connections refused
        guard.s3.process.wait(timeout=10)
        before = reconcile_count(operator, "TrackingServer")
        kubectl.apply(ts, namespace)

        def unavailable() -> dict[str, Any] | None:
            found = condition(kubectl.get("trackingserver", "mlflow", namespace), "ArtifactsReady")
            return found if found and found["status"] == "False" else None

        # Watch the passes for a while: after the first failures, further and further apart.
        samples, problem = watch_passes(operator, "TrackingServer", before, OUTAGE_SECONDS, unavailable)
        assert problem is not None, "ArtifactsReady never became False"
        assert problem["reason"] == "BucketUnreachable", problem
        assert guard.s3.endpoint_url in problem["message"], problem
        ready = condition(kubectl.get("trackingserver", "mlflow", namespace), "Ready")
        assert ready is not None and ready["status"] == "False", ready
        passes = samples[-1][1] - before
        print(f"S3 outage: {passes} reconciles in {OUTAGE_SECONDS}s, at (s, total) {samples}")
        assert passes <= 8, f"a hot loop: {passes} reconciles in {OUTAGE_SECONDS} s of outage ({samples})"
        assert longest_quiet(samples, OUTAGE_SECONDS) >= 15, f"retries at a short fixed cadence: {samples}"
        assert operator.process.poll() is None
    finally:
        guard.s3.restart()
    try:
        back = time.monotonic()
        eventually(
            lambda: ts_converged(kubectl, namespace, ["mlflow"], "3.17.2"),
            # The retry due next: failures count only at their scheduled retries (10, 20, 40 s apart), so
            # after a ~50 s outage the next one is due within ~40 s (it was up to 160 s before that fix).
            timeout=90,
            interval=1,
            what="Ready again after the endpoint came back",
        )
        print(f"S3 back: Ready again after {time.monotonic() - back:.1f}s")
        ids = {r["ID"] for r in guard.s3.client().get_bucket_lifecycle_configuration(Bucket=guard.bucket)["Rules"]}
        assert ids == {"tmp-old-versions", "scratch-old-versions"}, ids
        guard.assert_intact()
    finally:
        operator.kill()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_delete_while_operator_is_down(
    kubectl: Kubectl, kubeconfig: str, crds: None, guard: DataGuard, tmp_path: Path, policy: str
) -> None:
    """Deleted while no operator runs: Retain has no finalizer and goes at once; Delete waits for the next
    operator, which removes our bucket rules only. The database's PVC and Secret stay with Retain."""
    namespace = chaos_namespace(kubectl)
    operator = launch_operator(kubeconfig, namespace, tmp_path / "operator-1.log")
    try:
        foreign = {
            "ID": "team-archive",
            "Status": "Enabled",
            "Filter": {"Prefix": "archive/"},
            "Expiration": {"Days": 365},
        }
        try:
            bucket_rules = guard.s3.client().get_bucket_lifecycle_configuration(Bucket=guard.bucket)["Rules"]
        except Exception:  # NoSuchLifecycleConfiguration: run on its own
            bucket_rules = []
        # Whatever earlier tests left, plus a rule of somebody else's; none of ours.
        keep = [r for r in bucket_rules if r["ID"] not in {"tmp-old-versions", "scratch-old-versions", "team-archive"}]
        keep.append(foreign)
        guard.s3.client().put_bucket_lifecycle_configuration(
            Bucket=guard.bucket, LifecycleConfiguration={"Rules": keep}
        )
        apply(kubectl, tracking_server(guard, "mlflow", False, deletionPolicy=policy), namespace)
        eventually(lambda: ts_converged(kubectl, namespace, ["mlflow"], "3.17.2"), timeout=120, what="Ready")
        operator.kill()
        result = kubectl.run("delete", "trackingserver", "mlflow", "-n", namespace, "--wait=false")
        assert result.returncode == 0
        if policy == "Retain":
            eventually(lambda: kubectl.get("trackingserver", "mlflow", namespace) is None, timeout=15, what="gone")
        else:
            time.sleep(3)
            obj = kubectl.get("trackingserver", "mlflow", namespace)
            assert obj is not None and obj["metadata"].get("deletionTimestamp"), "the finalizer must hold it"
        started = time.monotonic()
        operator = launch_operator(kubeconfig, namespace, tmp_path / "operator-2.log")
        eventually(lambda: kubectl.get("trackingserver", "mlflow", namespace) is None, timeout=60, what="deleted")
        print(f"{policy}: deletion completed {time.monotonic() - started:.1f}s after the operator started")
        eventually(lambda: kubectl.get("deployment", "mlflow", namespace) is None, timeout=60, what="children gone")
        if policy == "Retain":
            assert kubectl.get("pvc", "data-mlflow-postgres-0", namespace) is not None, "database volume retained"
            assert kubectl.get("secret", "mlflow-db", namespace) is not None, "database password retained"
        else:
            eventually(lambda: kubectl.get("secret", "mlflow-db", namespace) is None, what="database Secret deleted")
            eventually(
                lambda: kubectl.get("pvc", "data-mlflow-postgres-0", namespace) is None, timeout=60, what="PVC deleted"
            )
        rules = guard.s3.client().get_bucket_lifecycle_configuration(Bucket=guard.bucket)["Rules"]
        ids = {r["ID"] for r in rules}
        assert "team-archive" in ids, "foreign rules are never removed"
        assert ("tmp-old-versions" in ids) == (policy == "Retain"), ids
        _, orphans = child_inventory(kubectl, namespace, retained("mlflow"))
        assert not orphans, orphans
        guard.assert_intact()
    finally:
        operator.kill()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_apiserver_restart_and_etcd_pause_mid_reconcile(guard: DataGuard, tmp_path: Path) -> None:
    """On a control plane of our own: kube-apiserver SIGKILLed and started again, then etcd SIGSTOPped for
    10 s, each while TrackingServers reconcile; the same operator process reconnects and converges."""
    with ExitStack() as stack:
        cluster = stack.enter_context(own_cluster(tmp_path / "cluster"))
        kubectl = cluster.kubectl()
        kubectl.run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
        kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/trackingservers.mlflow.operator.dev")
        namespace = chaos_namespace(kubectl)
        operator = launch_operator(cluster.kubeconfig, namespace, tmp_path / "operator.log")
        stack.callback(operator.kill)

        apply(kubectl, tracking_server(guard, "first", True), namespace)
        time.sleep(1.0)  # mid-reconcile: children being created
        started = time.monotonic()
        cluster.restart("kube-apiserver")
        print(f"kube-apiserver back after {time.monotonic() - started:.1f}s")
        eventually(
            lambda: ts_converged(kubectl, namespace, ["first"], "3.17.2"),
            timeout=120,
            what="Ready after the kube-apiserver restart",
        )
        print(f"converged {time.monotonic() - started:.1f}s after the restart began")
        assert operator.process.poll() is None, "the operator must survive the restart"

        apply(kubectl, tracking_server(guard, "second", True), namespace)
        time.sleep(1.0)
        cluster.pause("etcd")
        try:
            time.sleep(10)
            assert operator.process.poll() is None, "the operator must survive a hung etcd"
        finally:
            cluster.resume("etcd")
        resumed = time.monotonic()
        eventually(
            lambda: ts_converged(kubectl, namespace, ["first", "second"], "3.17.2"),
            timeout=120,
            what="Ready after etcd resumed",
        )
        print(f"converged {time.monotonic() - resumed:.1f}s after etcd resumed")
        assert operator.process.poll() is None
        _, orphans = child_inventory(kubectl, namespace, set())
        assert not orphans, orphans
        guard.assert_intact()
