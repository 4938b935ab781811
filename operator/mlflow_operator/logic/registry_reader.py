"""Least privilege for model servers: a ModelDeployment on a TrackingServer with auth gets its own MLflow
user, READ on its registered model (and on the experiments holding the versions it serves), instead of the
TrackingServer's admin credentials. Its password lives in a Secret the ModelDeployment owns; deleting that
Secret rotates it (a new password, set in MLflow, and the model server pods roll to it).

Pure: names, and when the MLflow user must be set up again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# MLflow usernames are free text; a ModelDeployment's is derived from where it lives, so the TrackingServer
# can tell its readers from people's accounts and remove a reader whose ModelDeployment is gone.
READER_PREFIX = "modeldeployment/"


def reader_username(namespace: str, name: str) -> str:
    return f"{READER_PREFIX}{namespace}/{name}"


def reader_of(username: str, namespace: str) -> str | None:
    """The ModelDeployment (name) a username belongs to in this namespace, or None for any other user."""
    prefix = f"{READER_PREFIX}{namespace}/"
    name = username.removeprefix(prefix)
    return name if username.startswith(prefix) and name and "/" not in name else None


def password_revision(password: str) -> str:
    """Names a password without revealing it (a pod template annotation: a new password rolls the pods)."""
    return hashlib.sha256(password.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReaderGrant:
    """What the MLflow user was last set up with (kept in memory: after a restart it is set up once again,
    which is idempotent)."""

    revision: str
    model: str
    # (source, run id) of the versions served: READ goes to the experiments holding their artifacts.
    sources: frozenset[tuple[str, str]]

    def covers(self, wanted: ReaderGrant) -> bool:
        return self.revision == wanted.revision and self.model == wanted.model and wanted.sources <= self.sources


def grant_needed(last: ReaderGrant | None, wanted: ReaderGrant) -> ReaderGrant | None:
    """The grant to set up now (the sources granted before stay granted), or None when nothing is new."""
    if last is not None and last.covers(wanted):
        return None
    if last is not None and last.revision == wanted.revision and last.model == wanted.model:
        return ReaderGrant(wanted.revision, wanted.model, last.sources | wanted.sources)
    return wanted
