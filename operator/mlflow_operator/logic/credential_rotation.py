"""Rotating a TrackingServer's generated passwords on request: the decisions, no I/O.

A request is an annotation on the TrackingServer whose value changed (any value: a date, a ticket id).
The generated Secret records the request it last carried out (ROTATED_KEY), so each request is carried out
once, survives an operator restart, and a new value asks again; deleting the annotation asks for nothing.

- The database password is one Secret update: Postgres sets the Secret's password at its next start (its
  pod template carries the password's hash, so the update restarts it) and PgBouncer and the servers roll
  to it the same way.
- The admin password lives in MLflow's user table too, and only the current password can change it there.
  It moves in three steps that each survive a crash: the new password is staged in the Secret
  (PENDING_PASSWORD_KEY), set in MLflow, then made the Secret's password. A pass that finds a staged
  password finishes it before anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

ROTATE_DATABASE_PASSWORD = "mlflow.operator.dev/rotate-database-password"
ROTATE_ADMIN_PASSWORD = "mlflow.operator.dev/rotate-admin-password"
# Keys of the generated Secrets besides username/password.
ROTATED_KEY = "rotated-for"
PENDING_PASSWORD_KEY = "pending-password"
PENDING_ROTATION_KEY = "pending-rotation"

EVENT_ROTATED = "PasswordRotated"
EVENT_ROTATION_FAILED = "PasswordRotationFailed"
EVENT_ROTATION_UNSUPPORTED = "PasswordRotationUnsupported"


def requested(annotations: Mapping[str, str] | None, annotation: str) -> str | None:
    """The rotation request an annotation carries; an empty value is no request."""
    value = (annotations or {}).get(annotation, "").strip()
    return value or None


def rotation_due(request: str | None, secret: Mapping[str, str]) -> bool:
    """A request the Secret has not carried out yet."""
    return request is not None and secret.get(ROTATED_KEY) != request


def rotated(request: str, password: str) -> dict[str, str | None]:
    """The Secret update that makes `password` current for `request` (None removes a key)."""
    return {"password": password, ROTATED_KEY: request, PENDING_PASSWORD_KEY: None, PENDING_ROTATION_KEY: None}


class AdminStep(Enum):
    IDLE = "idle"
    STAGE = "stage"  # write a new password under PENDING_PASSWORD_KEY
    APPLY = "apply"  # set the staged password in MLflow, then make it the Secret's password


def admin_step(request: str | None, secret: Mapping[str, str]) -> AdminStep:
    if secret.get(PENDING_PASSWORD_KEY):
        return AdminStep.APPLY  # a staged password is finished even if the annotation went away since
    return AdminStep.STAGE if rotation_due(request, secret) else AdminStep.IDLE


def staged(request: str, password: str) -> dict[str, str | None]:
    return {PENDING_PASSWORD_KEY: password, PENDING_ROTATION_KEY: request}


def finished(secret: Mapping[str, str]) -> dict[str, str | None]:
    """The Secret update once MLflow has the staged password."""
    return rotated(secret.get(PENDING_ROTATION_KEY, ""), secret[PENDING_PASSWORD_KEY])
