"""Carrying out the password rotations a TrackingServer's annotations request (logic.credential_rotation
decides; this module reads and writes the Secrets, MLflow's user API and Events)."""

from __future__ import annotations

from typing import Any

from mlflow_operator.adapters.registry import RegistryError
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.adapters.registry_users import RegistryUsers
from mlflow_operator.api.kinds import TRACKING_SERVER
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import new_password
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic import credential_rotation as rotation
from mlflow_operator.logic.credential_rotation import AdminStep

# Per TrackingServer and annotation, the request last refused with an Event (one Event per request).
_refused: Memo[str] = Memo(TRACKING_SERVER.kind)


def _request(body: dict[str, Any], annotation: str) -> str | None:
    return rotation.requested(body["metadata"].get("annotations"), annotation)


async def _event(rt: Runtime, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    await rt.status.post_event(body, type_, reason, message, cond.rfc3339(rt.now()))


async def _update(rt: Runtime, body: dict[str, Any], secret: str, changes: dict[str, str | None]) -> dict[str, str]:
    namespace = body["metadata"]["namespace"]
    await rt.status.patch_secret(secret, namespace, changes)
    return await rt.status.read_secret(secret, namespace) or {}


async def rotate_database_password(
    rt: Runtime, body: dict[str, Any], secret: str, data: dict[str, str]
) -> dict[str, str]:
    """The database Secret after any due rotation: one update, which every database client rolls to."""
    request = _request(body, rotation.ROTATE_DATABASE_PASSWORD)
    if request is None or not rotation.rotation_due(request, data):
        return data
    data = await _update(rt, body, secret, rotation.rotated(request, new_password()))
    message = (
        f"database password rotated in Secret {secret} ({rotation.ROTATE_DATABASE_PASSWORD}={request}):"
        " Postgres and PgBouncer restart with it (the tracking servers too when there is no pooler)"
    )
    await _event(rt, body, "Normal", rotation.EVENT_ROTATED, message)
    return data


async def stage_admin_password(rt: Runtime, body: dict[str, Any], secret: str, data: dict[str, str]) -> dict[str, str]:
    """The admin Secret with a new password staged when a rotation is due (set in MLflow by apply_...)."""
    request = _request(body, rotation.ROTATE_ADMIN_PASSWORD)
    if request is None or rotation.admin_step(request, data) is not AdminStep.STAGE:
        return data
    return await _update(rt, body, secret, rotation.staged(request, new_password()))


async def apply_admin_password(rt: Runtime, body: dict[str, Any], url: str, secret: str, data: dict[str, str]) -> bool:
    """Set a staged admin password in MLflow (the server must be up), then make it the Secret's password.
    True when the Secret changed. A failure is an Event and the next pass tries again: the staged password
    stays until MLflow has it, so the Secret never holds a password MLflow does not accept."""
    if rotation.admin_step(None, data) is not AdminStep.APPLY:
        return False
    username, staged = data["username"], data[rotation.PENDING_PASSWORD_KEY]
    try:
        # A pass that set it in MLflow but stopped before the Secret update finds it already accepted.
        if not await RegistryUsers(RegistryEndpoint(url, username=username, password=staged)).authenticates_async():
            current = RegistryEndpoint(url, username=username, password=data["password"])
            await RegistryUsers(current).set_password_async(username, staged)
    except RegistryError as error:
        await _event(
            rt, body, "Warning", rotation.EVENT_ROTATION_FAILED, f"admin password not rotated yet (retrying): {error}"
        )
        return False
    request = data.get(rotation.PENDING_ROTATION_KEY, "")
    await _update(rt, body, secret, rotation.finished(data))
    message = (
        f"admin password of {username} rotated in MLflow and in Secret {secret}"
        f" ({rotation.ROTATE_ADMIN_PASSWORD}={request}): the tracking servers restart with it"
    )
    await _event(rt, body, "Normal", rotation.EVENT_ROTATED, message)
    return True


async def refuse_rotation(rt: Runtime, body: dict[str, Any], annotation: str, why: str) -> None:
    """A rotation requested for a password the operator does not own: one Warning per request."""
    request = _request(body, annotation)
    uid = body["metadata"]["uid"]
    if request is None or _refused.get(uid, annotation) == request:
        return
    _refused.set(uid, request, annotation)
    await _event(rt, body, "Warning", rotation.EVENT_ROTATION_UNSUPPORTED, f"{annotation}={request} ignored: {why}")
