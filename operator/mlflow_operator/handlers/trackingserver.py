"""TrackingServer reconciler: database, pooler, migration, tracking server, artifacts.

Each pass is level-based: it reads what exists, applies what the spec implies, and reports conditions.
Stages gate each other: no tracking Deployment is started against unresolved database credentials, and
no pod runs an MLflow version before its migration Job succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow_operator import metrics
from mlflow_operator.adapters.kube import Kube
from mlflow_operator.adapters.registry import ModelRegistry, RegistryError
from mlflow_operator.adapters.s3 import BucketLifecycle, InvalidLifecycle, S3Endpoint, S3LifecycleError
from mlflow_operator.api.kinds import TRACKING_SERVER
from mlflow_operator.api.trackingserver import Lifecycle, LifecycleRule, LifecycleStatus, TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.common import selector
from mlflow_operator.handlers import credential_rotation, database_backups, registry_events
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import (
    FINALIZER,
    INVALID_SPEC,
    AppliedChildren,
    ResourcePass,
    SecretProblem,
    current_conditions,
    ensure_finalizer,
    first_sight,
    generated_secret,
    new_password,
    with_finalizer,
    write_status,
)
from mlflow_operator.handlers.registry_access import tracking_server_registry, tracking_server_url
from mlflow_operator.handlers.registry_reader import sweep_due, sweep_readers
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import credential_rotation as rotation
from mlflow_operator.logic import gc, lifecycle, lifecycle_safety
from mlflow_operator.logic.backoff import RetrySchedule
from mlflow_operator.logic.conditions import ConditionUpdate, EventSpec, parse_time
from mlflow_operator.logic.readiness import deployment_readiness, job_state, statefulset_readiness
from mlflow_operator.logic.trackingserver import (
    WAIT_SECONDS,
    conditions_failed,
    decide_migration,
    phase,
    retry_failed_migration,
)
from mlflow_operator.logic.trackingserver import next_pass as decide_next_pass

CONTROLLER = "trackingserver"
DATABASE_READY, POOLER_READY, MIGRATED = "DatabaseReady", "PoolerReady", "Migrated"
ARTIFACTS_READY, LIFECYCLE_APPLIED, AVAILABLE = "ArtifactsReady", "LifecycleApplied", "Available"
CONDITIONS = (
    DATABASE_READY,
    POOLER_READY,
    MIGRATED,
    ARTIFACTS_READY,
    LIFECYCLE_APPLIED,
    AVAILABLE,
    registry_events.REGISTRY_EVENTS,
    cond.READY,
)
READY_REQUIRES = (DATABASE_READY, POOLER_READY, MIGRATED, ARTIFACTS_READY, LIFECYCLE_APPLIED, AVAILABLE)
_retries: Memo[RetrySchedule] = Memo(TRACKING_SERVER.kind)  # while something is broken, for the backoff
_gc_warned: Memo[str] = Memo(TRACKING_SERVER.kind)  # the last gc failure announced with an Event
CLEANUP_DEADLINE = timedelta(minutes=10)  # re-check soon while something is converging; the resync covers the idle case
# Per TrackingServer (uid) and stage, what the last pass applied: unchanged stages are not re-applied for
# REAPPLY_SECONDS (an idle resync applied ~20 children per TrackingServer, none of them changed).
_applied = AppliedChildren(TRACKING_SERVER.kind)


@dataclass
class Pass(ResourcePass):
    """One reconcile pass: what it applied and what it concluded."""

    rt: Runtime
    kube: Kube
    body: dict[str, Any]
    spec: TrackingServerSpec
    updates: list[ConditionUpdate]
    converging: bool = False
    gc_warning: EventSpec | None = None
    # The generated admin Secret as this pass read it (a staged rotation included); None when auth is off or
    # the admin Secret is the user's.
    admin_secret: dict[str, str] | None = None
    # The restore the database pod starts with (spec.database.managed.restore), and status.restore and
    # status.backup. A pass that stops before deciding them (a problem earlier in the database stage) keeps
    # the last ones: a restore's base backup is chosen once, and a recorded backup destination stands for
    # this server's claim on it.
    restore: build.RestorePlan | None = None
    restore_fields: dict[str, Any] | None = None
    backup_fields: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        status = self.body.get("status") or {}
        self.restore_fields, self.backup_fields = status.get("restore"), status.get("backup")

    async def apply(self, objects: list[dict[str, Any]], owned: bool = True) -> None:
        for obj in objects:
            await self.kube.apply(obj, owner=self.body if owned else None)

    async def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(api_version, kind, name, self.namespace)

    async def apply_stage(
        self, stage: str, objects: list[dict[str, Any]], workload: tuple[str, str, str]
    ) -> dict[str, Any] | None:
        """Apply a stage's objects and read its workload (apiVersion, kind, name). The apply is skipped when the
        last pass applied the same objects less than REAPPLY_SECONDS ago and the workload still exists."""
        key, now = f"{self.uid}/{stage}", self.rt.now()
        if _applied.unchanged(key, objects, now):
            found = await self.get(*workload)
            if found is not None:
                return found
        await self.apply(objects)
        _applied.remember(key, objects, now)
        return await self.get(*workload)


def ready_requires(conditions: list[dict[str, Any]]) -> tuple[str, ...]:
    """A lifecycle field the S3 server does not support (MinIO drops AbortIncompleteMultipartUpload) is
    reported on LifecycleApplied but does not make the tracking server unready: it serves, and GitOps
    would otherwise show it degraded forever for a server limitation."""
    applied = cond.find(conditions, LIFECYCLE_APPLIED)
    if applied is not None and applied["reason"] == lifecycle.REASON_UNSUPPORTED_BY_SERVER:
        return tuple(t for t in READY_REQUIRES if t != LIFECYCLE_APPLIED)
    return READY_REQUIRES


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    return await with_finalizer(
        rt, TRACKING_SERVER, body, finalize=finalize, finalizer_wanted=needs_cleanup, reconcile_spec=reconcile_spec
    )


async def reconcile_spec(rt: Runtime, body: dict[str, Any], spec: TrackingServerSpec) -> float | None:
    step = Pass(rt, rt.kube(CONTROLLER), body, spec, first_sight(body, CONDITIONS))
    status = body.get("status") or {}
    fields: dict[str, Any] = {"url": build.tracking_url(step.name, step.namespace)}
    credentials = await database(step)
    serving: str | None = status.get("version")
    events_enabled = build.registry_events_enabled(spec)
    # Before any server starts: its env reads the key MLflow encrypts webhook secrets with from this Secret.
    events_secret = await registry_events.server_events_secret(rt, body) if events_enabled else {}
    if credentials is not None:
        inputs = build.TrackingServerInputs(
            step.name,
            step.namespace,
            spec,
            serving or spec.version,
            credentials,
            await admin_credentials(step),
            images=rt.images,
            pooler_credentials=await pooler_login(step),
            events_url=rt.events_url,
            events_ca=events_secret.get(build.EVENTS_CA_KEY) if rt.events_ca else None,
        )
        await pooler(step, inputs)
        decision = await migration(step, inputs, status)
        serving = decision.serving_version
        fields["migratedVersion"] = decision.migrated_version
        if serving is not None:
            await server(step, replace(inputs, serving_version=serving))
            await finish_admin_rotation(step)
    else:
        step.updates += [
            ConditionUpdate(POOLER_READY, "Unknown", "WaitingForDatabase", "database credentials unresolved"),
            ConditionUpdate(AVAILABLE, "False", "WaitingForDatabase", "no server without a database"),
        ]
    available = any(u.type == AVAILABLE and u.status == "True" for u in step.updates)
    webhook_secret = events_secret.get(build.WEBHOOK_SECRET_KEY)
    step.updates.append(await registry_events.server_webhook(rt, body, events_enabled, available, webhook_secret))
    fields.update(restore=step.restore_fields, backup=step.backup_fields)
    fields["lifecycle"] = await artifacts(step, status)
    await garbage_collection(step)
    conditions = cond.apply_updates(current_conditions(body), step.updates, None, rt.now())
    ready = cond.summarize_ready(conditions, ready_requires(conditions))
    failed = conditions_failed(conditions, READY_REQUIRES)
    fields.update(version=serving, phase=phase(ready.status == "True", failed, step.converging, serving))
    # GarbageCollected posts its own Events, one per failed Job (a transition Event misses the second one).
    own_events = {gc.GARBAGE_COLLECTED}
    await write_status(rt, TRACKING_SERVER, body, [*step.updates, ready], fields, own_events=own_events)
    if ready.status == "True" and spec.auth is not None and spec.auth.enabled:
        await remove_gone_readers(rt, body)
    warning = step.gc_warning
    # A pass may start from a body older than the previous pass's status write (the watch lags): the
    # condition it reads back cannot tell it the Event was posted, this memo can.
    if warning is not None and _gc_warned.get(step.uid) != warning.message:
        _gc_warned.set(step.uid, warning.message)
        await rt.status.post_event(body, warning.type, warning.reason, warning.message, cond.rfc3339(rt.now()))
    return next_pass(body["metadata"]["uid"], ready.status == "True", failed, rt.now())


async def remove_gone_readers(rt: Runtime, body: dict[str, Any]) -> None:
    """The MLflow users of ModelDeployments that are gone (handlers.registry_reader), now and then."""
    if not sweep_due(body["metadata"]["uid"], rt.now()):
        return
    try:
        access = await tracking_server_registry(rt, body)
    except SecretProblem:
        return  # the admin Secret's own condition reports it
    await sweep_readers(rt, body, access, rt.now())


def next_pass(uid: str, ready: bool, failed: bool, now: datetime) -> float | None:
    """logic.trackingserver.next_pass, with this object's retry schedule remembered between passes."""
    decision = decide_next_pass(ready, failed, _retries.get(uid), now)
    if decision.retry is None:
        _retries.pop(uid)
    else:
        _retries.set(uid, decision.retry)
    return decision.after_seconds


# ------------------------------------------------------------------------------------------------ database


async def database(step: Pass) -> build.Credentials | None:
    try:
        if step.spec.database.managed is not None:
            return await managed_database(step)
        return await external_database(step)
    except SecretProblem as problem:
        step.updates.append(ConditionUpdate(DATABASE_READY, "False", problem.reason, problem.message))
        return None


async def managed_database(step: Pass) -> build.Credentials:
    names = build.Names(step.name)
    retained = step.spec.deletion_policy == "Retain"
    # Created once with a random password, rewritten only by a requested rotation; retained unless
    # deletionPolicy: Delete.
    secret = build.get_database_secret(step.name, step.namespace, new_password())
    data = await generated_secret(step.rt, secret, owner=None if retained else step.body)
    if data is None or not data.get("password"):
        raise SecretProblem("SecretNotFound", f"Secret {names.database_secret} is missing or has no password")
    data = await credential_rotation.rotate_database_password(step.rt, step.body, names.database_secret, data)
    # Before the database exists: a restore that cannot start must not leave an empty database behind.
    step.restore = await database_backups.restore_plan(step.rt, step.body, step.spec)
    step.restore_fields = database_backups.restore_status(step.restore)
    await database_backups.claim_backup_location(step.rt, step.kube, step.body, step.spec)
    objects = build.desired_database(
        step.name, step.namespace, step.spec, data["password"], step.rt.images, step.restore
    )
    readiness = statefulset_readiness(
        await step.apply_stage(DATABASE_READY, objects, ("apps/v1", "StatefulSet", names.postgres))
    )
    step.converging |= not readiness.ready
    step.updates.append(
        ConditionUpdate(DATABASE_READY, "True" if readiness.ready else "False", readiness.reason, readiness.message)
    )
    health, step.backup_fields = await database_backups.backups(
        step.rt, step.kube, step.body, step.spec, readiness.ready
    )
    if health is not None:
        step.updates.append(health)
    return build.Credentials(data.get("username", build.DATABASE_USER), data["password"])


async def external_database(step: Pass) -> build.Credentials:
    external = step.spec.database.external
    assert external is not None
    ref = external.credentials_secret
    field = "spec.database.external.credentialsSecret"
    await credential_rotation.refuse_rotation(
        step.rt,
        step.body,
        rotation.ROTATE_DATABASE_PASSWORD,
        f"an external database's password is yours: change it in the database and in Secret {ref.name}"
        f" ({field}); PgBouncer and the servers roll to it at the next resync",
    )
    data = await step.rt.status.read_secret(ref.name, step.namespace)
    if data is None:
        raise SecretProblem("SecretNotFound", f"Secret {ref.name} ({field}.name) not found")
    if ref.uri_key:
        if ref.uri_key not in data:
            raise SecretProblem("SecretKeyNotFound", f"Secret {ref.name} has no key {ref.uri_key} ({field}.uriKey)")
        parsed = urlparse(data[ref.uri_key])
        if not parsed.username or parsed.password is None:
            raise SecretProblem(
                "InvalidDatabaseURI", f"the URI in Secret {ref.name} key {ref.uri_key} has no user or password"
            )
        credentials = build.Credentials(unquote(parsed.username), unquote(parsed.password))
    else:
        for key, path in ((ref.username_key, "usernameKey"), (ref.password_key, "passwordKey")):
            if key not in data:
                raise SecretProblem("SecretKeyNotFound", f"Secret {ref.name} has no key {key} ({field}.{path})")
        credentials = build.Credentials(data[ref.username_key], data[ref.password_key])
    step.updates.append(
        ConditionUpdate(
            DATABASE_READY,
            "True",
            "ExternalDatabase",
            f"credentials resolved for {external.host}:{external.port}; the migration Job checks connectivity",
        )
    )
    return credentials


async def admin_credentials(step: Pass) -> build.Credentials | None:
    auth = step.spec.auth
    if auth is None or not auth.enabled:
        return None
    name = auth.admin_secret.name if auth.admin_secret else build.Names(step.name).admin_secret
    if auth.admin_secret is None:
        generated = build.get_admin_secret(step.name, step.namespace, new_password())
        data = await generated_secret(step.rt, generated, owner=step.body) or {}
        if data.get("password"):
            data = await credential_rotation.stage_admin_password(step.rt, step.body, name, data)
        step.admin_secret = data
    else:
        data = await step.rt.status.read_secret(name, step.namespace) or {}
        await credential_rotation.refuse_rotation(
            step.rt,
            step.body,
            rotation.ROTATE_ADMIN_PASSWORD,
            f"Secret {name} (spec.auth.adminSecret) is yours: change the password with MLflow's"
            " users/update-password API, then in the Secret",
        )
    if not data.get("username") or not data.get("password"):
        raise SecretProblem("SecretKeyNotFound", f"Secret {name} (spec.auth.adminSecret) needs username and password")
    return build.Credentials(data["username"], data["password"])


async def finish_admin_rotation(step: Pass) -> None:
    """A staged admin password goes into MLflow once the servers are up; the servers then roll to the
    Secret's new password at the pass this one asks for right away."""
    available = any(u.type == AVAILABLE and u.status == "True" for u in step.updates)
    if step.admin_secret is None or not available:
        return
    url = tracking_server_url(step.body) or build.tracking_url(step.name, step.namespace)
    secret = build.Names(step.name).admin_secret
    if await credential_rotation.apply_admin_password(step.rt, step.body, url, secret, step.admin_secret):
        step.rt.wake(TRACKING_SERVER.kind, step.namespace, step.name)


# -------------------------------------------------------------------------------------------------- pooler


async def pooler_login(step: Pass) -> build.Credentials | None:
    """The tracking servers' own PgBouncer login (generated once): a rotated database password then rolls
    PgBouncer alone. None without a pooler, or should the Secret vanish between its create and read (the
    servers then log in with the database credentials until the next pass recreates it)."""
    if not step.spec.database.pooler.enabled:
        return None
    generated = build.get_pooler_client_secret(step.name, step.namespace, new_password())
    data = await generated_secret(step.rt, generated, owner=step.body) or {}
    if not data.get("password"):
        return None
    return build.Credentials(data.get("username") or build.POOLER_CLIENT_USER, data["password"])


async def pooler(step: Pass, inputs: build.TrackingServerInputs) -> None:
    if not step.spec.database.pooler.enabled:
        step.updates.append(ConditionUpdate(POOLER_READY, "True", "Disabled", "no pooler: direct connections"))
        return
    # A credential that cannot be written into userlist.txt raises ValueError in the builder.
    await apply_deployment_stage(step, POOLER_READY, inputs.names.pooler, lambda: build.desired_pooler(inputs))


# ----------------------------------------------------------------------------------------------- migration


async def migration(step: Pass, inputs: build.TrackingServerInputs, status: dict[str, Any]) -> Any:
    desired = step.spec.version
    job_name = inputs.names.migration(desired)
    job = await step.get("batch/v1", "Job", job_name)
    state, message = job_state(job) if job is not None else (None, "")
    database_ready = any(u.type == DATABASE_READY and u.status == "True" for u in step.updates)
    decision = decide_migration(
        desired, status.get("migratedVersion"), status.get("version"), database_ready, state, message
    )
    if job is not None and state == "Failed" and retry_failed_migration(job, step.rt.now()):
        # Deleting the failed Job lets the next pass run the migration again (a retry with backoff).
        await step.kube.delete("batch/v1", "Job", job_name, step.namespace)
        step.converging = True
    if decision.action == "run":
        # The Job reads the direct URI from the backend Secret: apply it first.
        await step.apply([build.get_backend_secret(inputs), build.get_migration_job(inputs, desired)])
        step.converging = True
    step.updates.append(decision.condition)
    return decision


# -------------------------------------------------------------------------------------------------- server


async def server(step: Pass, inputs: build.TrackingServerInputs) -> None:
    # Admin credentials that cannot be written into basic_auth.ini raise ValueError in the builder.
    await apply_deployment_stage(step, AVAILABLE, inputs.names.server, lambda: build.desired_server(inputs))


async def apply_deployment_stage(
    step: Pass, condition: str, deployment: str, render: Callable[[], list[dict[str, Any]]]
) -> None:
    """Render a stage's objects, apply them, and report its Deployment's readiness as `condition`.
    A value the builders refuse (ValueError) is reported instead of applying a broken config."""
    try:
        objects = render()
    except ValueError as unsafe:
        step.updates.append(ConditionUpdate(condition, "False", "InvalidSecretValue", str(unsafe)))
        return
    readiness = deployment_readiness(await step.apply_stage(condition, objects, ("apps/v1", "Deployment", deployment)))
    step.converging |= not readiness.ready
    step.updates.append(
        ConditionUpdate(condition, "True" if readiness.ready else "False", readiness.reason, readiness.message)
    )


# ----------------------------------------------------------------------------------------------- artifacts


async def s3_keys(step: Pass) -> tuple[str | None, str | None]:
    """The access keys from spec.artifacts.s3.credentialsSecret, or (None, None) for IRSA."""
    ref = step.spec.artifacts.s3.credentials_secret
    if ref is None:
        return None, None
    field = "spec.artifacts.s3.credentialsSecret"
    data = await step.rt.status.read_secret(ref.name, step.namespace)
    if data is None:
        raise SecretProblem("SecretNotFound", f"Secret {ref.name} ({field}.name) not found")
    for key, path in ((ref.access_key_id_key, "accessKeyIdKey"), (ref.secret_access_key_key, "secretAccessKeyKey")):
        if key not in data:
            raise SecretProblem("SecretKeyNotFound", f"Secret {ref.name} has no key {key} ({field}.{path})")
    return data[ref.access_key_id_key], data[ref.secret_access_key_key]


async def artifacts(step: Pass, status: dict[str, Any]) -> dict[str, Any] | None:
    """ArtifactsReady (credentials and bucket) and LifecycleApplied. Returns the new status.lifecycle."""
    s3 = step.spec.artifacts.s3
    previous: dict[str, Any] | None = status.get("lifecycle")
    try:
        key_id, secret_key = await s3_keys(step)
        bucket = await BucketLifecycle.open_async(S3Endpoint.for_artifacts(s3, key_id, secret_key))
        await bucket.check_bucket_async()
    except (SecretProblem, S3LifecycleError) as problem:
        step.updates += [
            ConditionUpdate(ARTIFACTS_READY, "False", problem.reason, str(problem)),
            ConditionUpdate(LIFECYCLE_APPLIED, "Unknown", "BucketUnavailable", str(problem)),
        ]
        return previous
    step.updates.append(
        ConditionUpdate(ARTIFACTS_READY, "True", "BucketReachable", f"artifacts go to s3://{s3.bucket}/{s3.prefix}")
    )
    return await bucket_lifecycle(step, bucket, previous)


async def bucket_lifecycle(
    step: Pass, bucket: BucketLifecycle, previous: dict[str, Any] | None
) -> dict[str, Any] | None:
    lifecycle_spec = step.spec.artifacts.lifecycle
    rules = lifecycle_spec.rules if lifecycle_spec else []
    problems = lifecycle.validate_rules(rules)
    if problems:
        step.updates.append(lifecycle.lifecycle_failure(lifecycle.REASON_INVALID_SPEC, "; ".join(problems)))
        return previous
    applied = lifecycle.applied_record(previous)
    if not rules and applied is None:
        step.updates.append(ConditionUpdate(LIFECYCLE_APPLIED, "True", "NoRules", "no lifecycle rules requested"))
        return previous
    safety, registry_problem = await model_safety(step, rules, previous, applied)
    desired = lifecycle.desired_rules(Lifecycle(rules=safety.allowed(rules)))
    wanted = lifecycle.fingerprint(desired)
    if previous and previous.get("refusedFingerprint") == wanted:
        # The server refused exactly these rules before: wait for a spec change instead of a hot loop.
        step.updates.append(
            lifecycle.lifecycle_failure(
                lifecycle.REASON_INVALID_LIFECYCLE, previous.get("refusedMessage") or "refused by the server"
            )
        )
        return previous
    try:
        sync = await bucket.reconcile_async(desired, applied)
    except InvalidLifecycle as refused:
        step.updates.append(lifecycle.lifecycle_failure(refused.reason, str(refused)))
        return {**(previous or {}), "refusedFingerprint": wanted, "refusedMessage": str(refused)[:1024]}
    except S3LifecycleError as error:
        step.updates.append(lifecycle.lifecycle_failure(error.reason, str(error)))
        return previous
    if sync.put and applied is not None and applied.fingerprint == wanted:  # same rules re-applied: drift
        metrics.count_lifecycle_correction(step.namespace, step.name)
    step.updates.append(safety_condition(safety, registry_problem) or lifecycle.lifecycle_condition(sync.decision))
    record = lifecycle.applied_status(sync.applied) if sync.applied is not None else {}
    return {**record, **safety.record} or None


async def model_safety(
    step: Pass, rules: list[LifecycleRule], previous: dict[str, Any] | None, applied: LifecycleStatus | None
) -> tuple[lifecycle_safety.SafetyDecision, str | None]:
    """Which rules could delete what a registered model version needs (see logic.lifecycle_safety), and why
    the registry could not be read, if it could not. The registry is read only when a rule that deletes
    objects passed the layout check. (The condition's change to EndangersRegisteredModels is the Warning
    Event: write_status posts one per condition transition.)"""
    s3 = step.spec.artifacts.s3
    spec_rules = lifecycle.fingerprint(lifecycle.desired_rules(step.spec.artifacts.lifecycle))
    backups = build.artifact_bucket_backups(step.name, step.namespace, step.spec)
    layout_refused = {r.rule_id for r in lifecycle_safety.layout_refusals(rules, s3.prefix, backups)}
    versions: list[lifecycle_safety.VersionArtifacts] | None = []
    problem: str | None = None
    if any(lifecycle_safety.deleting_action(rule) and rule.id not in layout_refused for rule in rules):
        try:
            versions = await registry_versions(step)
        except (SecretProblem, RegistryError) as error:
            versions, problem = None, str(error)
    applied_fingerprint = applied.fingerprint if applied else None
    safety = lifecycle_safety.safety_decision(
        rules, s3.prefix, s3.bucket, versions, previous, spec_rules, applied_fingerprint, backups
    )
    return safety, problem


async def registry_versions(step: Pass) -> list[lifecycle_safety.VersionArtifacts]:
    """Every registered model version of this TrackingServer's own registry, with its artifact location."""
    status = {**(step.body.get("status") or {}), "url": build.tracking_url(step.name, step.namespace)}
    body = {**step.body, "status": status}
    access = await tracking_server_registry(step.rt, body)
    registry = ModelRegistry(access.endpoint)
    return await registry.version_artifacts_async()


def safety_condition(safety: lifecycle_safety.SafetyDecision, registry_problem: str | None) -> ConditionUpdate | None:
    """LifecycleApplied when the safety check holds rules back; None when every rule went to the bucket."""
    if safety.withheld:
        reason, message = lifecycle_safety.REASON_ENDANGERS_MODELS, lifecycle_safety.withheld_message(safety)
        return ConditionUpdate(LIFECYCLE_APPLIED, "False", reason, message)
    if safety.unverified:
        return ConditionUpdate(
            LIFECYCLE_APPLIED,
            "Unknown",
            lifecycle_safety.REASON_REGISTRY_UNAVAILABLE,
            f"rules that delete objects ({', '.join(safety.unverified)}) wait until the registry can be read, to "
            f"check that no registered model version lives under them: {registry_problem}",
        )
    return None


# ------------------------------------------------------------------------------------ garbage collection


async def garbage_collection(step: Pass) -> None:
    """GarbageCollected from the gc CronJob and its Jobs: one GET and one label-selected LIST (the CronJob
    keeps at most 4 Jobs), and only with spec.retention. Removing retention deletes the CronJob, once."""
    previous = cond.find(current_conditions(step.body), gc.GARBAGE_COLLECTED)
    name = build.Names(step.name).gc
    if step.spec.retention is None:
        if previous is not None and previous.get("reason") != gc.REASON_RETENTION_UNSET:
            await step.kube.delete("batch/v1", "CronJob", name, step.namespace)
            step.updates.append(gc.retention_unset())
        return
    cronjob = await step.get("batch/v1", "CronJob", name)
    jobs = []
    if cronjob is not None:
        labels = selector(step.name, build.COMPONENT_GC)
        jobs = await step.kube.list("batch/v1", "Job", step.namespace, labels)
    report = gc.gc_report(cronjob, jobs, previous)
    step.updates.append(report.condition)
    step.gc_warning = report.warning


# ------------------------------------------------------------------------------------------------ deletion


def needs_cleanup(spec: TrackingServerSpec | None) -> bool:
    """Only deletionPolicy: Delete has work outside the cluster (the bucket's rules): only then a finalizer,
    so that with Retain (the default) deleting never waits for the operator."""
    return spec is not None and spec.deletion_policy == "Delete"


async def finalize(rt: Runtime, body: dict[str, Any], spec: TrackingServerSpec | None) -> float | None:
    """Remove the operator's lifecycle rules from the bucket (children go with their owner references).
    An unreachable bucket is retried with backoff for CLEANUP_DEADLINE, then given up with a Warning, so
    deletion never hangs forever."""
    if FINALIZER not in (body["metadata"].get("finalizers") or []):
        return None
    now = rt.now()
    if spec is not None:
        try:
            await remove_lifecycle_rules(rt, body, spec)
        except (SecretProblem, S3LifecycleError) as problem:
            deleted_at = parse_time(body["metadata"]["deletionTimestamp"])
            if now - deleted_at < CLEANUP_DEADLINE:
                return WAIT_SECONDS
            await rt.status.post_event(
                body,
                "Warning",
                "CleanupAbandoned",
                f"bucket lifecycle rules not removed after {CLEANUP_DEADLINE}: {problem}",
                cond.rfc3339(now),
            )
    await ensure_finalizer(rt, TRACKING_SERVER, body, wanted=False)
    return None


async def remove_lifecycle_rules(rt: Runtime, body: dict[str, Any], spec: TrackingServerSpec) -> None:
    applied = lifecycle.applied_record((body.get("status") or {}).get("lifecycle"))
    if applied is None or not applied.rule_ids:
        return
    step = Pass(rt, rt.kube(CONTROLLER), body, spec, [])
    key_id, secret_key = await s3_keys(step)
    bucket = await BucketLifecycle.open_async(S3Endpoint.for_artifacts(spec.artifacts.s3, key_id, secret_key))
    await bucket.reconcile_async([], applied)


__all__ = ["INVALID_SPEC", "reconcile"]
