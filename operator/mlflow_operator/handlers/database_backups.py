"""A TrackingServer's database backups, around the managed database's stage of the reconcile:

- before the database exists, the restore plan: the base backup of the source that the restore starts from
  (logic.backup.choose_base_backup over what the source's store holds), kept in status.restore so the pod
  template never changes after the first choice;
- before the database archives into a location, the claim on it (logic.backup.claim_location): never into
  another database's archive;
- once the database runs, what its own store holds: status.backup, BackupsHealthy, metrics, and the Jobs
  of on-demand (annotation) and first base backups.
"""

from __future__ import annotations

from typing import Any

from mlflow_operator import metrics
from mlflow_operator.adapters.backup_store import read_owner_async, read_store_async, write_owner_async
from mlflow_operator.adapters.kube import Kube
from mlflow_operator.adapters.s3 import S3Endpoint, S3LifecycleError
from mlflow_operator.api.trackingserver import BackupStore, TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.common import selector
from mlflow_operator.handlers.reconcile import SecretProblem, read_secret_keys
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import backup
from mlflow_operator.logic.backup import StoreContents
from mlflow_operator.logic.conditions import ConditionUpdate
from mlflow_operator.logic.readiness import job_state

BACKUP_JOB_API = ("batch/v1", "Job")


async def store_endpoint(rt: Runtime, namespace: str, store: BackupStore, field: str) -> S3Endpoint:
    """The store's bucket with the keys of its credentialsSecret (a SecretProblem naming `field` otherwise)."""
    ref = store.credentials_secret
    keys = await read_secret_keys(
        rt,
        namespace,
        ref.name,
        f"{field}.credentialsSecret",
        {ref.access_key_id_key: "accessKeyIdKey", ref.secret_access_key_key: "secretAccessKeyKey"},
    )
    return S3Endpoint(
        store.bucket,
        store.region or "us-east-1",
        store.endpoint,
        keys[ref.access_key_id_key],
        keys[ref.secret_access_key_key],
    )


def check_locations(name: str, namespace: str, spec: TrackingServerSpec) -> None:
    problems = build.location_problems(name, namespace, spec)
    if problems:
        raise SecretProblem("InvalidBackupSettings", "; ".join(problems))


async def restore_plan(rt: Runtime, body: dict[str, Any], spec: TrackingServerSpec) -> build.RestorePlan | None:
    """The restore the database pod starts with, or None without one. Chosen once: a plan in status.restore
    is kept (a later backup of the source must not change a running database's pod template). A
    SecretProblem (RestoreNotPossible, with the field to fix) keeps the database from being created."""
    meta = body["metadata"]
    check_locations(meta["name"], meta["namespace"], spec)
    managed = spec.database.managed
    source = build.restore_source(meta["namespace"], spec)
    if managed is None or managed.restore is None or source is None:
        return None
    target = managed.restore.target_time
    chosen = ((body.get("status") or {}).get("restore") or {}).get("backupId")
    if chosen:
        return build.RestorePlan(source, chosen, target)
    field = "spec.database.managed.restore.fromBackup.s3"
    endpoint = await store_endpoint(rt, meta["namespace"], source.store, field)
    try:
        contents = await read_store_async(endpoint, source.key_prefix)
    except S3LifecycleError as error:
        raise SecretProblem(backup.RESTORE_NOT_POSSIBLE, f"{source}: {error}") from error
    choice = backup.choose_base_backup(contents, str(source), target)
    if choice.backup is None:
        raise SecretProblem(backup.RESTORE_NOT_POSSIBLE, choice.problem or f"nothing to restore in {source}")
    return build.RestorePlan(source, choice.backup.backup_id, target)


async def claim_backup_location(rt: Runtime, kube: Kube, body: dict[str, Any], spec: TrackingServerSpec) -> None:
    """Before the database archives into its backup location: claim it, or raise a SecretProblem
    (BackupLocationInUse, naming the field) that keeps the database from being created or changed. Once
    status.backup reports the location, it is this server's and the store is not asked again."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    location = build.backup_location(name, namespace, spec)
    recorded = ((body.get("status") or {}).get("backup") or {}).get("destination")
    if location is None or recorded == str(location):
        return
    field = "spec.database.managed.backup.s3"
    endpoint = await store_endpoint(rt, namespace, location.store, field)
    me = backup.LocationOwner(meta["uid"], namespace, name)
    volume = await kube.get("v1", "PersistentVolumeClaim", build.Names(name).postgres_data, namespace)
    retained = backup.retained_volume(
        (volume or {}).get("metadata", {}).get("creationTimestamp"), meta.get("creationTimestamp")
    )
    try:
        found, holds_data = await read_owner_async(endpoint, location.key_prefix)
        claim = backup.claim_location(str(location), field, me, found, holds_data, retained)
        if claim.write:
            await write_owner_async(endpoint, location.key_prefix, me)
    except S3LifecycleError as error:
        raise SecretProblem(backup.STORE_UNAVAILABLE, f"{field}: {location}: {error}") from error
    if claim.problem is not None:
        raise SecretProblem(backup.LOCATION_IN_USE, claim.problem)


def restore_status(plan: build.RestorePlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"source": str(plan.source), "backupId": plan.backup_id, "targetTime": plan.target_time}


async def failed_backup_job(kube: Kube, name: str, namespace: str) -> str | None:
    """The newest backup Job's failure, if it failed (a later success clears it)."""
    jobs = await kube.list(*BACKUP_JOB_API, namespace, selector(name, build.COMPONENT_BACKUP))
    if not jobs:
        return None
    newest = max(jobs, key=lambda job: job["metadata"].get("creationTimestamp") or "")
    state, detail = job_state(newest)
    return f"Job {newest['metadata']['name']} failed: {detail}" if state == "Failed" else None


async def backups(
    rt: Runtime, kube: Kube, body: dict[str, Any], spec: TrackingServerSpec, database_ready: bool
) -> tuple[ConditionUpdate | None, dict[str, Any] | None]:
    """BackupsHealthy and status.backup, after asking for a base backup when one is due; (None, None)
    without backups."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    location = build.backup_location(name, namespace, spec)
    if location is None:
        return None, None
    last_request = ((body.get("status") or {}).get("backup") or {}).get("lastRequest")
    contents: StoreContents | None = None
    error: str | None = None
    try:
        endpoint = await store_endpoint(rt, namespace, location.store, "spec.database.managed.backup.s3")
        contents = await read_store_async(endpoint, location.key_prefix)
    except (SecretProblem, S3LifecycleError) as problem:
        error = str(problem)
    annotation = (meta.get("annotations") or {}).get(build.REQUEST_ANNOTATION)
    request = backup.backup_request(annotation, last_request, contents) if database_ready else None
    if request is not None:
        job = build.get_backup_job(name, namespace, spec, request, rt.images)
        if job is not None:
            await kube.apply(job, owner=body)
            last_request = request
    failed = await failed_backup_job(kube, name, namespace)
    # The endpoint too: "unreachable" is about the address the operator (and the pods) dial.
    where = f"{location} at {location.store.endpoint}" if location.store.endpoint else str(location)
    health = backup.health(where, contents, error, failed)
    fields = backup.status_fields(str(location), contents or StoreContents((), None), last_request)
    completed = contents.completed() if contents is not None else []
    newest_end = completed[-1].end_time if completed else None
    failure = health.reason if health.reason in (backup.STORE_UNAVAILABLE, backup.BACKUP_FAILED) else None
    metrics.observe_backups(namespace, name, newest_end.timestamp() if newest_end else None, failure)
    return health, fields
