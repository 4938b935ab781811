"""A ModelDeployment's own MLflow reader (logic.registry_reader): its Secret, the MLflow user behind it, and
the removal of readers whose ModelDeployment is gone (from the TrackingServer's reconcile)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mlflow_operator.adapters.registry import RegistryError
from mlflow_operator.adapters.registry_users import RegistryUsers
from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.kinds import API_VERSION, MODEL_DEPLOYMENT, TRACKING_SERVER
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import SecretProblem, generated_secret, new_password
from mlflow_operator.handlers.registry_access import RegistryAccess
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic.registry_reader import (
    ReaderGrant,
    grant_needed,
    password_revision,
    reader_of,
    reader_username,
)

# Per ModelDeployment: what its MLflow user was last set up with.
_grants: Memo[ReaderGrant] = Memo(MODEL_DEPLOYMENT.kind)
# Per TrackingServer: when its readers were last checked for a ModelDeployment that is gone.
_swept: Memo[datetime] = Memo(TRACKING_SERVER.kind)
SWEEP_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class Reader:
    """The pods' registry access (the reader's Secret), the password's revision for their template, and why
    MLflow could not be brought up to date (the pods keep the reader's Secret: a registry outage must not
    restart them, nor hand them the admin's credentials)."""

    access: RegistryAccess
    revision: str
    problem: RegistryError | None = None


async def reader_access(
    rt: Runtime, body: dict[str, Any], access: RegistryAccess, model: str, served: frozenset[tuple[str, str]]
) -> Reader:
    """The reader of this ModelDeployment, set up in MLflow with READ on `model` and on the experiments of
    the `served` (source, run id) pairs. Raises SecretProblem when its Secret cannot be had."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    username = reader_username(namespace, name)
    password = await reader_password(rt, body, username)
    wanted = ReaderGrant(password_revision(password), model, served)
    secret = RegistryCredentials(
        name=build.Names(name).registry_reader, username_key="username", password_key="password"
    )
    reader = Reader(replace(access, secret=secret, admin=False), wanted.revision)
    needed = grant_needed(_grants.get(uid), wanted)
    if needed is None:
        return reader
    try:
        await set_up(RegistryUsers(access.endpoint), username, password, needed)
    except RegistryError as problem:
        return replace(reader, problem=problem)
    _grants.set(uid, needed)
    return reader


async def set_up(users: RegistryUsers, username: str, password: str, grant: ReaderGrant) -> None:
    experiments = set()
    for source, run_id in grant.sources:
        experiment = await users.experiment_of_async(source, run_id or None)
        if experiment is not None:
            experiments.add(experiment)
    await users.ensure_reader_async(username, password, grant.model, experiments)


async def reader_password(rt: Runtime, body: dict[str, Any], username: str) -> str:
    """The reader's password from its Secret, generated (owned by the ModelDeployment) when missing."""
    meta = body["metadata"]
    secret = build.get_reader_secret(meta["name"], meta["namespace"], username, new_password())
    name = secret["metadata"]["name"]
    data = await generated_secret(rt, secret, owner=body)
    if not data or not data.get("password"):
        raise SecretProblem("SecretKeyNotFound", f"Secret {name} (the model servers' MLflow reader) has no password")
    return data["password"]


# --------------------------------------------------------------------------------------------- clean-up


async def sweep_readers(rt: Runtime, server: dict[str, Any], access: RegistryAccess, now: datetime) -> int:
    """Delete the MLflow users of ModelDeployments of this namespace that are gone or now use another
    registry (read from the API server, not the cache: a cache still filling after a restart must not
    delete a live reader). At most every SWEEP_INTERVAL; returns how many were deleted."""
    meta = server["metadata"]
    if not sweep_due(meta["uid"], now):
        return 0
    users = RegistryUsers(access.endpoint)
    deleted = 0
    try:
        for username in await users.usernames_async():
            name = reader_of(username, meta["namespace"])
            if name is not None and not await still_reads(rt, meta["namespace"], name, meta["name"]):
                deleted += await users.delete_user_async(username)
    except RegistryError:
        return deleted  # the next pass after SWEEP_INTERVAL tries again; the registry's own condition reports it
    _swept.set(meta["uid"], now)
    return deleted


def sweep_due(uid: str, now: datetime) -> bool:
    last = _swept.get(uid)
    return last is None or now - last >= SWEEP_INTERVAL


async def still_reads(rt: Runtime, namespace: str, name: str, server: str) -> bool:
    deployment = await rt.kube("registry").get(API_VERSION, MODEL_DEPLOYMENT.kind, name, namespace)
    if deployment is None or deployment["metadata"].get("deletionTimestamp"):
        return False
    ref = (deployment.get("spec") or {}).get("trackingServerRef") or {}
    return bool(ref.get("name") == server)
