"""A TrackingServer on a real API server: the whole stack, changes, broken input, deletion.

The operator talks to a real S3 server (moto, on 127.0.0.1) for the bucket; the workloads' pods are
kwok's (or your cluster's) and never receive traffic here: the data plane itself is exercised by the
integration tests with the exact commands rendered here.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_operator.logic.credential_rotation import EVENT_ROTATED, ROTATE_DATABASE_PASSWORD, ROTATED_KEY
from tests.e2e.operator_process import IMAGE_MIRROR, RESYNC_SECONDS
from tests.e2e.stacks import apply_all, stack, ts_of
from tests.integration.registry_server import RegistryServer, run_client, sqlite_registry
from tests.integration.s3_servers import S3Server
from tests.kube import Kubectl, condition, eventually, wait_passes

FOREIGN_RULE = {
    "ID": "team-archive",
    "Status": "Enabled",
    "Filter": {"Prefix": "archive/"},
    "Expiration": {"Days": 365},
}


def wait_ready(kubectl: Kubectl, namespace: str, name: str = "mlflow", timeout: int = 180) -> dict[str, Any]:
    kubectl.run(
        "wait",
        f"trackingserver/{name}",
        "-n",
        namespace,
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    obj = kubectl.get("trackingserver", name, namespace)
    assert obj is not None
    return obj


def ready_stack(kubectl: Kubectl, namespace: str, s3: S3Server, tracking_registry: RegistryServer) -> str:
    """The default stack on a new bucket, applied and waited for until Ready; the bucket's name."""
    bucket = s3.create_bucket()
    apply_all(kubectl, stack(s3, bucket, tracking_registry), namespace)
    wait_ready(kubectl, namespace)
    return bucket


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def test_example_becomes_a_ready_stack(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = s3.create_bucket()
    s3.client().put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [FOREIGN_RULE]})
    apply_all(kubectl, stack(s3, bucket, tracking_registry), namespace)
    ts = wait_ready(kubectl, namespace)

    status = ts["status"]
    assert status["version"] == "3.17.2" and status["migratedVersion"] == "3.17.2"
    assert status["phase"] == "Ready"
    assert status["url"] == f"http://mlflow.{namespace}.svc:5000"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "DatabaseReady": "True",
        "PoolerReady": "True",
        "Migrated": "True",
        "ArtifactsReady": "True",
        "LifecycleApplied": "True",
        "Available": "True",
        "Ready": "True",
        "GarbageCollected": "Unknown",  # retention is set, no gc Job has run yet; never gates Ready
        "RegistryEvents": "False",  # this operator runs no receiver: everything polls; never gates Ready
    }
    assert condition(ts, "GarbageCollected")["reason"] == "NotRunYet"  # type: ignore[index]
    assert condition(ts, "RegistryEvents")["reason"] == "NotConfigured"  # type: ignore[index]

    postgres = kubectl.get("statefulset", "mlflow-postgres", namespace)
    assert postgres is not None
    assert postgres["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    assert kubectl.get("pvc", "data-mlflow-postgres-0", namespace)["status"]["phase"] == "Bound"  # type: ignore[index]
    ini = kubectl.get("configmap", "mlflow-pgbouncer", namespace)["data"]["pgbouncer.ini"]  # type: ignore[index]
    assert "pool_mode = transaction" in ini and "default_pool_size = 20" in ini
    assert f"host=mlflow-postgres-rw.{namespace}.svc" in ini
    job = kubectl.get("job", "mlflow-migrate-3-17-2", namespace)
    assert job is not None and container(job, "migrate")["command"][:3] == ["mlflow", "db", "upgrade"]

    server = kubectl.get("deployment", "mlflow", namespace)
    assert server is not None and server["spec"]["replicas"] == 2
    mlflow = container(server, "mlflow")
    assert mlflow["image"] == f"{IMAGE_MIRROR}/mlflow-operator/mlflow-server:3.17.2"
    # The operator's --image-registry reached every child (the example names no image of its own).
    pooler = kubectl.get("deployment", "mlflow-pgbouncer", namespace)
    pods = [obj["spec"]["template"]["spec"] for obj in (server, postgres, job, pooler) if obj is not None]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert all(image.startswith(f"{IMAGE_MIRROR}/") for image in images) and len(images) == 4, images
    assert mlflow["command"][mlflow["command"].index("--artifacts-destination") + 1] == f"s3://{bucket}/mlflow"
    assert "--app-name" in mlflow["command"]  # auth is enabled in the example
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-backend",
        "key": "pooled-uri",
    }
    pod_security = server["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    for kind, name in [
        ("service", "mlflow"),
        ("service", "mlflow-pgbouncer"),
        ("service", "mlflow-postgres"),
        ("pdb", "mlflow"),
        ("pdb", "mlflow-pgbouncer"),
        ("networkpolicy", "mlflow-postgres"),
        ("networkpolicy", "mlflow-pgbouncer"),
        ("cronjob", "mlflow-gc"),
        ("secret", "mlflow-admin"),
        ("secret", "mlflow-db"),
        ("serviceaccount", "mlflow"),
    ]:
        assert kubectl.get(kind, name, namespace) is not None, f"{kind}/{name} missing"
    # The gc Job's script travels in a ConfigMap the TrackingServer owns (the image has mlflow, not the operator).
    script = kubectl.get("configmap", "mlflow-gc", namespace)
    assert script is not None and "safe_gc.py" in script["data"], "configmap/mlflow-gc missing its script"
    assert [ref["kind"] for ref in script["metadata"]["ownerReferences"]] == ["TrackingServer"]

    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in rules} == {"team-archive", "expire-scratch", "old-versions-and-uploads"}
    assert next(r for r in rules if r["ID"] == "old-versions-and-uploads")["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 3
    }
    reasons = [e["reason"] for e in kubectl.events(namespace) if e["involvedObject"]["kind"] == "TrackingServer"]
    assert "Migrated" in reasons and "Ready" in reasons


def test_changes_roll_through_and_upgrades_migrate_first(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = s3.create_bucket()
    docs = stack(s3, bucket, tracking_registry)
    apply_all(kubectl, docs, namespace)
    wait_ready(kubectl, namespace)
    pooler_hash = kubectl.get("deployment", "mlflow-pgbouncer", namespace)["spec"]["template"]["metadata"][  # type: ignore[index]
        "annotations"
    ]["mlflow.operator.dev/config-hash"]

    ts = ts_of(docs)
    ts["spec"].update(replicas=3, workers=4, version="3.18.0")
    ts["spec"]["database"]["pooler"]["defaultPoolSize"] = 30
    kubectl.apply(ts, namespace)
    eventually(
        lambda: (o := kubectl.get("trackingserver", "mlflow", namespace)) and o["status"].get("version") == "3.18.0",
        timeout=120,
        what="version 3.18.0 serving",
    )
    ts_obj = wait_ready(kubectl, namespace)
    assert ts_obj["status"]["migratedVersion"] == "3.18.0"
    server = kubectl.get("deployment", "mlflow", namespace)
    assert server is not None and server["spec"]["replicas"] == 3
    assert container(server, "mlflow")["image"].endswith(":3.18.0")
    assert "--workers 4" in " ".join(container(server, "mlflow")["command"])
    job = kubectl.get("job", "mlflow-migrate-3-18-0", namespace)
    assert job is not None
    # The migration Job existed before any pod ran 3.18.0: the ReplicaSet for 3.18.0 was created after it.
    replicasets = json.loads(
        kubectl.run(
            "get", "replicasets", "-n", namespace, "-l", "app.kubernetes.io/component=tracking-server", "-o", "json"
        ).stdout
    )["items"]
    upgraded = [rs for rs in replicasets if container(rs, "mlflow")["image"].endswith(":3.18.0")]
    assert upgraded and job["metadata"]["creationTimestamp"] <= upgraded[0]["metadata"]["creationTimestamp"]
    pooler = kubectl.get("deployment", "mlflow-pgbouncer", namespace)
    assert pooler is not None
    assert pooler["spec"]["template"]["metadata"]["annotations"]["mlflow.operator.dev/config-hash"] != pooler_hash
    assert "default_pool_size = 30" in kubectl.get("configmap", "mlflow-pgbouncer", namespace)["data"]["pgbouncer.ini"]  # type: ignore[index]

    # A downgrade is refused and the migrated version keeps serving.
    ts["spec"]["version"] = "3.17.2"
    kubectl.apply(ts, namespace)

    def refused() -> dict[str, Any] | None:
        migrated = condition(kubectl.get("trackingserver", "mlflow", namespace), "Migrated")
        return migrated if migrated and migrated["reason"] == "DowngradeRefused" else None

    assert "cannot downgrade" in eventually(refused, what="DowngradeRefused")["message"]
    assert container(kubectl.get("deployment", "mlflow", namespace), "mlflow")["image"].endswith(":3.18.0")  # type: ignore[arg-type]


def secret_data(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str]:
    secret = kubectl.get("secret", name, namespace)
    assert secret is not None, name
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def pod_hash(kubectl: Kubectl, kind: str, name: str, namespace: str) -> str:
    workload = kubectl.get(kind, name, namespace)
    assert workload is not None, name
    return str(workload["spec"]["template"]["metadata"]["annotations"]["mlflow.operator.dev/config-hash"])


def test_a_database_password_rotation_rolls_every_database_client(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    """The annotation gives the database Secret a new password once per value; Postgres and PgBouncer get new
    pod templates, the servers (their own PgBouncer login) do not (the real node's test measures the requests
    that fail meanwhile)."""
    ready_stack(kubectl, namespace, s3, tracking_registry)
    workloads = (("statefulset", "mlflow-postgres"), ("deployment", "mlflow-pgbouncer"))
    before = {w: pod_hash(kubectl, *w, namespace) for w in workloads}
    server_before = pod_hash(kubectl, "deployment", "mlflow", namespace)
    old = secret_data(kubectl, "mlflow-db", namespace)["password"]

    kubectl.run("annotate", "-n", namespace, "trackingserver/mlflow", f"{ROTATE_DATABASE_PASSWORD}=2026-12-05")

    def new_password() -> dict[str, str] | None:
        data = secret_data(kubectl, "mlflow-db", namespace)
        return data if data["password"] != old else None

    rotated = eventually(new_password, what="a new database password")
    assert rotated[ROTATED_KEY] == "2026-12-05"
    eventually(
        lambda: all(pod_hash(kubectl, *w, namespace) != before[w] for w in workloads),
        what="Postgres and PgBouncer rolling",
    )
    assert pod_hash(kubectl, "deployment", "mlflow", namespace) == server_before
    assert rotated["password"] in secret_data(kubectl, "mlflow-pgbouncer-auth", namespace)["userlist.txt"]
    (event,) = eventually(
        lambda: [e for e in kubectl.events(namespace) if e["reason"] == EVENT_ROTATED] or None, what="a rotation Event"
    )
    assert "mlflow-db" in event["message"] and old not in event["message"]
    wait_ready(kubectl, namespace)
    # The request stays on the object: a later pass (one a spec change forces) carries out nothing again.
    kubectl.run("patch", "-n", namespace, "trackingserver/mlflow", "--type=merge", "-p", '{"spec":{"replicas":3}}')
    eventually(
        lambda: (
            (o := kubectl.get("trackingserver", "mlflow", namespace))
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
        ),
        what="a pass over the changed spec",
    )
    assert secret_data(kubectl, "mlflow-db", namespace)["password"] == rotated["password"]


def test_missing_external_secret_is_reported_and_nothing_starts(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = s3.create_bucket()
    external = {
        "external": {
            "host": "db.example.internal",
            "database": "mlflow",
            "sslMode": "require",
            "credentialsSecret": {"name": "mlflow-db-credentials"},
        }
    }
    docs = stack(s3, bucket, tracking_registry, database=external)
    apply_all(kubectl, docs, namespace)

    def database_condition() -> dict[str, Any] | None:
        found = condition(kubectl.get("trackingserver", "mlflow", namespace), "DatabaseReady")
        return found if found and found["status"] == "False" else None

    problem = eventually(database_condition, what="DatabaseReady=False")
    assert problem["reason"] == "SecretNotFound"
    assert (
        "mlflow-db-credentials" in problem["message"]
        and "spec.database.external.credentialsSecret" in problem["message"]
    )
    eventually(lambda: [e for e in kubectl.events(namespace) if e["reason"] == "SecretNotFound"], what="Warning event")
    assert kubectl.get("deployment", "mlflow", namespace) is None
    assert kubectl.get("job", "mlflow-migrate-3-17-2", namespace) is None

    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlflow-db-credentials"},
            "stringData": {"username": "mlflow", "password": "s3cret"},
        },
        namespace,
    )
    ts = wait_ready(kubectl, namespace)
    assert condition(ts, "DatabaseReady")["reason"] == "ExternalDatabase"  # type: ignore[index]
    ini = kubectl.get("configmap", "mlflow-pgbouncer", namespace)["data"]["pgbouncer.ini"]  # type: ignore[index]
    assert "host=db.example.internal" in ini and "server_tls_sslmode = require" in ini
    assert kubectl.get("statefulset", "mlflow-postgres", namespace) is None


def test_delete_collects_children_and_keeps_the_data(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = ready_stack(kubectl, namespace, s3, tracking_registry)
    kubectl.run("delete", "trackingserver", "mlflow", "-n", namespace, "--timeout=60s")
    eventually(lambda: kubectl.get("deployment", "mlflow", namespace) is None, what="server Deployment collected")
    eventually(lambda: kubectl.get("statefulset", "mlflow-postgres", namespace) is None, what="StatefulSet collected")
    assert kubectl.get("pvc", "data-mlflow-postgres-0", namespace) is not None, "database volume must be retained"
    assert kubectl.get("secret", "mlflow-db", namespace) is not None, "database password must be retained"
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in rules} == {"expire-scratch", "old-versions-and-uploads"}, (
        "bucket rules are retained by default"
    )


def test_rule_that_would_expire_model_artifacts_is_refused(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = s3.create_bucket()
    docs = stack(s3, bucket, tracking_registry)
    ts_of(docs)["spec"]["artifacts"]["lifecycle"] = {"rules": [{"id": "expire-all", "expiration": {"days": 30}}]}
    apply_all(kubectl, docs, namespace)

    def refused() -> dict[str, Any] | None:
        found = condition(kubectl.get("trackingserver", "mlflow", namespace), "LifecycleApplied")
        return found if found and found["reason"] == "EndangersRegisteredModels" else None

    message = eventually(refused, what="LifecycleApplied=False/EndangersRegisteredModels")["message"]
    assert 'rules[0].expiration (rule "expire-all"): would delete registered model artifacts' in message
    with pytest.raises(Exception, match="NoSuchLifecycleConfiguration"):
        s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)


# Registers a version of a model logged in a scratch experiment (artifact_location under scratch/): what a
# user does when an experiment meant to be thrown away produced a model worth keeping.
REGISTER_IN_SCRATCH_SCRIPT = """\
import json, os
import mlflow

params = json.loads(os.environ["TEST_PARAMS"])


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


experiment = mlflow.create_experiment(params["experiment"], artifact_location=params["location"])
with mlflow.start_run(experiment_id=experiment):
    info = mlflow.pyfunc.log_model(
        name="model", python_model=Echo(), pip_requirements=["mlflow==" + mlflow.__version__],
        registered_model_name=params["model"],
    )
print(json.dumps({"version": info.registered_model_version, "model_id": info.model_id}))
"""


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry for one test: a version registered in the shared one would endanger every later test's rule."""
    with sqlite_registry(tmp_path) as server:
        yield server


def test_a_version_registered_under_an_applied_rule_withdraws_it(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, own_registry: RegistryServer, metrics_url: str
) -> None:
    tracking_registry = own_registry
    bucket = ready_stack(kubectl, namespace, s3, tracking_registry)
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert "expire-scratch" in {r["ID"] for r in rules}

    model = f"kept-{namespace}"
    params = {"experiment": namespace, "location": f"mlflow-artifacts:/scratch/{namespace}", "model": model}
    registered = run_client(tracking_registry.url, REGISTER_IN_SCRATCH_SCRIPT, params)
    registered_at = time.monotonic()

    def withdrawn() -> dict[str, Any] | None:
        found = condition(kubectl.get("trackingserver", "mlflow", namespace), "LifecycleApplied")
        return found if found and found["reason"] == "EndangersRegisteredModels" else None

    message = eventually(withdrawn, timeout=3 * RESYNC_SECONDS + 30, what="rule withdrawn")["message"]
    elapsed = time.monotonic() - registered_at
    assert f"would delete model version {model}/{registered['version']}" in message
    assert f"s3://{bucket}/mlflow/scratch/{namespace}/models/{registered['model_id']}/artifacts/" in message
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in rules} == {"old-versions-and-uploads"}, "the other rules stay"

    def warnings() -> list[dict[str, Any]]:
        return [e for e in kubectl.events(namespace) if e["reason"] == "EndangersRegisteredModels"]

    announced = warnings()
    assert announced and all(e["type"] == "Warning" for e in announced)
    assert any(f"model version {model}/" in e["message"] for e in announced), announced
    print(f"rule withdrawn {elapsed:.1f} s after the registration (resync {RESYNC_SECONDS} s)")

    # Stays withdrawn across resyncs (no flapping, no further Event) until the spec's rules change.
    wait_passes(metrics_url, "TrackingServer")
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert "expire-scratch" not in {r["ID"] for r in rules}
    assert [e["count"] for e in warnings()] == [e["count"] for e in announced]


def test_delete_policy_removes_data_and_only_our_bucket_rules(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer
) -> None:
    bucket = s3.create_bucket()
    s3.client().put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [FOREIGN_RULE]})
    apply_all(kubectl, stack(s3, bucket, tracking_registry, deletionPolicy="Delete"), namespace)
    ts = wait_ready(kubectl, namespace)
    assert "mlflow.operator.dev/cleanup" in ts["metadata"]["finalizers"]
    assert kubectl.get("secret", "mlflow-db", namespace)["metadata"]["ownerReferences"]  # type: ignore[index]

    kubectl.run("delete", "trackingserver", "mlflow", "-n", namespace, "--timeout=90s", timeout=100)
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in rules] == ["team-archive"], "only the operator's rules are removed"
    eventually(lambda: kubectl.get("secret", "mlflow-db", namespace) is None, what="database Secret deleted")
    eventually(
        lambda: kubectl.get("pvc", "data-mlflow-postgres-0", namespace) is None,
        timeout=90,
        what="database volume deleted",
    )


def resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    kinds = "trackingservers,deployments,statefulsets,services,configmaps,secrets,jobs,cronjobs,pdb,networkpolicies"
    items = json.loads(kubectl.run("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def test_idle_resync_changes_nothing(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer, metrics_url: str
) -> None:
    ready_stack(kubectl, namespace, s3, tracking_registry)
    eventually(
        lambda: (c := condition(kubectl.get("trackingserver", "mlflow", namespace), "Ready")) and c["status"] == "True",
        what="ready",
    )
    wait_passes(metrics_url, "TrackingServer", per_object=1)  # let any converging pass finish
    before = resource_versions(kubectl, namespace)
    wait_passes(metrics_url, "TrackingServer")  # at least two more passes of every object
    after = resource_versions(kubectl, namespace)
    assert len(before) > 15
    assert after == before, {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }


def failed_gc_job(cronjob: dict[str, Any], name: str) -> dict[str, Any]:
    """A Job as the CronJob controller creates it (its jobTemplate, owned by the CronJob), but managed by
    the test: no Kubernetes controller runs it (kwok runs no containers anyway), the test writes its status."""
    template = cronjob["spec"]["jobTemplate"]
    meta = cronjob["metadata"]
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"], "uid": meta["uid"], "controller": True}
    spec = {**copy.deepcopy(template["spec"]), "managedBy": "e2e.mlflow.operator.dev/test"}
    labels = template["metadata"]["labels"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
        "spec": spec,
    }


def mark_failed(kubectl: Kubectl, namespace: str, job: str, message: str) -> None:
    """Failed through the status subresource, as the Job controller writes it after backoffLimit."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failure = {"reason": "BackoffLimitExceeded", "message": message, "lastTransitionTime": now}
    status = {
        "startTime": now,
        "failed": 3,
        "conditions": [
            {"type": "FailureTarget", "status": "True", **failure},
            {"type": "Failed", "status": "True", **failure},
        ],
    }
    patch = json.dumps({"status": status})
    kubectl.run("patch", "job", job, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)


def test_a_failed_gc_job_is_reported_once(
    kubectl: Kubectl, operator: Path, namespace: str, s3: S3Server, tracking_registry: RegistryServer, metrics_url: str
) -> None:
    ready_stack(kubectl, namespace, s3, tracking_registry)
    cronjob = kubectl.get("cronjob", "mlflow-gc", namespace)
    assert cronjob is not None

    kubectl.apply(failed_gc_job(cronjob, "mlflow-gc-29000001"), namespace)
    mark_failed(kubectl, namespace, "mlflow-gc-29000001", "Job has reached the specified backoff limit")

    def gc_failed(job: str) -> dict[str, Any] | None:
        found = condition(kubectl.get("trackingserver", "mlflow", namespace), "GarbageCollected")
        return found if found and found["status"] == "False" and job in found["message"] else None

    reported = eventually(lambda: gc_failed("mlflow-gc-29000001"), what="GarbageCollected=False")
    assert reported["reason"] == "GarbageCollectionFailed"
    assert reported["message"].startswith("Job mlflow-gc-29000001 failed at ")
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in reported["message"]

    def warnings(job: str) -> list[dict[str, Any]]:
        return [
            e
            for e in kubectl.events(namespace)
            if e["reason"] == "GarbageCollectionFailed" and e["type"] == "Warning" and job in e["message"]
        ]

    eventually(lambda: warnings("mlflow-gc-29000001"), what="a Warning Event naming the Job")
    # The TrackingServer stays Ready: a failed gc does not stop MLflow from serving.
    assert condition(kubectl.get("trackingserver", "mlflow", namespace), "Ready")["status"] == "True"  # type: ignore[index]
    wait_passes(metrics_url, "TrackingServer")  # resyncs see the same failed Job: no second Event
    assert len(warnings("mlflow-gc-29000001")) == 1

    # The next night's Job fails too: the condition keeps its status and reason, and a new Event names it.
    kubectl.apply(failed_gc_job(cronjob, "mlflow-gc-29001441"), namespace)
    mark_failed(kubectl, namespace, "mlflow-gc-29001441", "Job was active longer than specified deadline")
    eventually(lambda: gc_failed("mlflow-gc-29001441"), what="GarbageCollected names the second Job")
    eventually(lambda: warnings("mlflow-gc-29001441"), what="a Warning Event naming the second Job")
    assert len(warnings("mlflow-gc-29000001")) == 1
