"""The steps every kind's reconcile shares: validate the spec, then write status and Events."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from mlflow_operator.api import KindInfo
from mlflow_operator.handlers import memo
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339
from mlflow_operator.logic.status import changed_fields
from mlflow_operator.logic.validation import Invalid, validate_spec

INVALID_SPEC = "InvalidSpec"
# Only for deletionPolicy: Delete, where there is work outside the cluster: with Retain (the default)
# deleting a resource never waits for the operator.
FINALIZER = "mlflow.operator.dev/cleanup"
# Children a pass applied are applied again only after this long when nothing in them changed, so someone's edit
# of a child is put back within it (at once after a restart, and at once when a workload is missing). Longer
# than the default resync (60 s) on purpose: at 60 s most idle resyncs landed just past the window and still
# re-applied everything (the scale benchmark: 2700 no-op applies a minute for 400 resources).
REAPPLY_SECONDS = 300.0


class SecretProblem(Exception):
    """A referenced Secret or key is missing: reported as a condition, never retried in a hot loop."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def read_secret_keys(rt: Runtime, namespace: str, name: str, field: str, keys: dict[str, str]) -> dict[str, str]:
    """The values of `keys` (key -> the spec field naming it) from Secret `name`, or a SecretProblem whose
    message names the spec field to fix."""
    data = await rt.status.read_secret(name, namespace)
    if data is None:
        raise SecretProblem("SecretNotFound", f"Secret {name} ({field}.name) not found")
    for key, path in keys.items():
        if key not in data:
            raise SecretProblem("SecretKeyNotFound", f"Secret {name} has no key {key} ({field}.{path})")
    return {key: data[key] for key in keys}


class ResourcePass:
    """What every kind's reconcile pass knows of the resource it works on (mixed into each kind's Pass)."""

    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])


def new_password() -> str:
    """A generated password (24 random bytes, URL-safe: no quoting needed in URIs, INI or userlist files)."""
    return secrets.token_urlsafe(24)


async def generated_secret(rt: Runtime, secret: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, str] | None:
    """A Secret the operator generates once: read it, and create it only when it is missing (the scale
    benchmark counted 100 refused creates a minute when every pass tried to create it first)."""
    name, namespace = secret["metadata"]["name"], secret["metadata"]["namespace"]
    data = await rt.status.read_secret(name, namespace)
    if data is None:
        await rt.status.create_if_absent(secret, owner=owner)
        data = await rt.status.read_secret(name, namespace)
    return data


def generation(body: dict[str, Any]) -> int | None:
    value = body["metadata"].get("generation")
    return int(value) if value is not None else None


def current_conditions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


def validated(info: KindInfo, body: dict[str, Any]) -> tuple[Any | None, list[ConditionUpdate]]:
    """The typed spec, or None and the InvalidSpec condition. Invalid specs are final until the spec
    changes: no exception, so nothing retries them in a loop."""
    name = body["metadata"]["name"]
    broken = [rule.message for rule in info.name_rules() if not rule.holds(name)]
    result = validate_spec(info.spec_model, body.get("spec") or {})
    if broken or isinstance(result, Invalid):
        message = "; ".join([*broken, *([result.message] if isinstance(result, Invalid) else [])])
        return None, [ConditionUpdate(cond.READY, "False", INVALID_SPEC, message)]
    return result.spec, []


def first_sight(body: dict[str, Any], condition_types: Sequence[str]) -> list[ConditionUpdate]:
    """Conditions never seen before start as Unknown, so `kubectl wait` and dashboards see them at once."""
    current = current_conditions(body)
    return cond.initial_unknown(
        [t for t in condition_types if cond.find(current, t) is None], "Reconciling", "not yet observed"
    )


async def write_status(
    rt: Runtime,
    info: KindInfo,
    body: dict[str, Any],
    updates: Sequence[ConditionUpdate],
    fields: dict[str, Any] | None = None,
    own_events: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Apply condition updates and other status fields; patch only what changed; one Event per transition,
    except for the condition types in own_events, whose Events the caller posts."""
    now = rt.now()
    old = current_conditions(body)
    new = cond.apply_updates(old, updates, generation(body), now)
    desired = {**(fields or {}), "conditions": new, "observedGeneration": generation(body)}
    changes = changed_fields(body.get("status"), desired)
    meta = body["metadata"]
    if changes:
        await rt.status.patch_status(info.kind, meta["name"], meta["namespace"], changes)
    for event in cond.transition_events(old, [c for c in new if c["type"] not in own_events]):
        await rt.status.post_event(body, event.type, event.reason, event.message, rfc3339(now))
    return new


async def ensure_finalizer(rt: Runtime, info: KindInfo, body: dict[str, Any], wanted: bool) -> None:
    finalizers = list(body["metadata"].get("finalizers") or [])
    if (FINALIZER in finalizers) == wanted:
        return
    updated = [*finalizers, FINALIZER] if wanted else [f for f in finalizers if f != FINALIZER]
    # resourceVersion makes this an optimistic update: a concurrent change fails it and the pass is retried.
    meta = body["metadata"]
    await rt.status.patch_metadata(
        info.kind, meta["name"], meta["namespace"], {"finalizers": updated, "resourceVersion": meta["resourceVersion"]}
    )


Finalize = Callable[[Runtime, dict[str, Any], Any | None], Awaitable[float | None]]
ReconcileSpec = Callable[[Runtime, dict[str, Any], Any], Awaitable[float | None]]


async def with_finalizer(
    rt: Runtime,
    info: KindInfo,
    body: dict[str, Any],
    *,
    finalize: Finalize,
    finalizer_wanted: Callable[[Any], bool],
    reconcile_spec: ReconcileSpec,
) -> float | None:
    """The start of a pass of a kind that may hold a finalizer, in the order that keeps deletion safe: a
    deleted object is finalized even when its spec is invalid (finalize gets None then: an object must never
    be stuck undeletable); an invalid spec is reported and nothing is built; the finalizer is in place (or
    gone, when the spec no longer needs cleanup) before reconcile_spec creates anything that needs it."""
    spec, invalid = validated(info, body)
    if body["metadata"].get("deletionTimestamp"):
        return await finalize(rt, body, spec)
    if spec is None:
        await write_status(rt, info, body, invalid)
        return None
    await ensure_finalizer(rt, info, body, wanted=finalizer_wanted(spec))
    return await reconcile_spec(rt, body, spec)


def fingerprint(objects: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(list(objects), sort_keys=True, default=str).encode()).hexdigest()


class AppliedChildren:
    """What the last passes applied (fingerprint, when) per key (an owner's uid, or its uid and a stage).

    Applying exactly the same objects again less than `reapply_seconds` later changes nothing but costs one
    server-side apply per object: idle resyncs of 100 TrackingServers were ~2000 no-op applies a minute, and
    passes that only poll or wait queue behind them. The caller still re-applies when it sees a child missing
    (a Deployment it reads anyway), and forgets the key when applying failed. In memory on purpose: after a
    restart everything is applied again at once.
    """

    def __init__(
        self, kind: str | None = None, reapply_seconds: float = REAPPLY_SECONDS, prune_above: int = 1024
    ) -> None:
        """Keys start with the uid of an object of `kind`: its deletion drops them (handlers.memo)."""
        self.reapply_seconds = reapply_seconds
        self._prune_above = prune_above
        self._applied: dict[str, tuple[str, datetime]] = {}
        if kind is not None:
            memo.register(kind, self)

    def unchanged(self, key: str, objects: Sequence[dict[str, Any]], now: datetime) -> bool:
        """Whether `objects` are what was applied under `key` less than reapply_seconds before `now`."""
        last = self._applied.get(key)
        if last is None:
            return False
        applied, at = last
        return (now - at).total_seconds() < self.reapply_seconds and applied == fingerprint(objects)

    def remember(self, key: str, objects: Sequence[dict[str, Any]], now: datetime) -> None:
        self._applied[key] = (fingerprint(objects), now)
        if len(self._applied) > self._prune_above:  # keys of deleted owners: nothing is skipped after the window
            self._applied = {
                k: v for k, v in self._applied.items() if (now - v[1]).total_seconds() < self.reapply_seconds
            }
            self._prune_above = max(self._prune_above, 2 * len(self._applied))

    def forget(self, key: str) -> None:
        """Drop `key` and every `key/...` stage key."""
        for found in [k for k in self._applied if k == key or k.startswith(f"{key}/")]:
            del self._applied[found]

    def __len__(self) -> int:
        return len(self._applied)
