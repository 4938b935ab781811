"""A RegisteredModel's registry entry as pure decisions: what to change in the MLflow registry, and the status.

The registry adapter (mlflow_operator.adapters.registry) reads the registry into the plain dataclasses
below; `plan_sync` compares them with the spec and returns either a refusal or an ordered list of actions;
the adapter executes the actions. Nothing here talks to MLflow, so every rule is unit-tested.

Ownership. The operator changes only what it owns:
- tags: the spec's tags, plus the ones it set before (status.ownedTags) so that a tag removed from the
  spec is deleted. Any other tag is left alone.
- aliases: likewise with status.ownedAliases; with aliasPolicy Exclusive every alias not in the spec is
  deleted too.
- description: only when the spec sets one.
- versions: spec.versions are registered once each. Each registered version carries the operator-owned tag
  VERSION_KEY_TAG, whose value is a hash of (source, runId); a version is registered only when no version of
  the model carries its key. The tag is sent in the same CreateModelVersion request, so no version ever
  exists without it: retries, lost responses and operator restarts (status lost) never register twice.
  A version deleted in the registry is registered again (as a new number): the spec says it should exist.

Aliases naming versions registered in the same pass. Version numbers are assigned by the server and cannot
be predicted (another client may register concurrently; deleted numbers are not reused by every store), so
the planner never guesses: when versions are pending registration, aliases whose version does not exist
yet are deferred (`SyncPlan.deferred_aliases`) and the adapter plans a follow-up pass right after the
registrations. An alias whose version does not exist and cannot come from a pending registration refuses
the whole pass (reason VersionNotFound) with no action at all.

Drift. `resync=True` tells the planner that the spec is the one last synced successfully (the handler knows:
observedGeneration == generation and Synced was True). The registry matched the spec then, so every action
needed now corrects a change made behind the operator's back (UI, scripts): `SyncPlan.drift` describes them,
for an Event. On a spec change or a first sync, the actions are the spec's and are not drift.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.logic.backoff import exponential_backoff
from mlflow_operator.logic.conditions import ConditionUpdate, rfc3339

# The condition this module reports on, and its reasons.
CONDITION_TYPE = "Synced"
REASON_SYNCED = "Synced"
REASON_VERSION_NOT_FOUND = "VersionNotFound"
# Reasons of the registry adapter's errors (mlflow_operator.adapters.registry), named here so that the
# handler and its tests need no I/O module to know them.
REASON_REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # connection refused, timeouts, 5xx
REASON_UNAUTHORIZED = "Unauthorized"  # 401/403
REASON_MODEL_NOT_FOUND = "ModelNotFound"  # the model vanished between the read and a write
REASON_ALIAS_NOT_FOUND = "AliasNotFound"  # a ModelDeployment follows an alias the model does not have
REASON_REGISTRY_ERROR = "RegistryError"  # anything else; the message carries MLflow's error code
# The reason of the Event that lists drift corrections.
REASON_DRIFT_CORRECTED = "DriftCorrected"

# Operator-owned tag on every version it registers: the idempotency key of the spec entry.
VERSION_KEY_TAG = "mlflow.operator.dev/source-key"

# Status bounds (api.registeredmodel.RegisteredModelStatus): a longer list would be refused by the API server.
STATUS_MAX_VERSIONS = 100
STATUS_MAX_ALIASES = 100
STATUS_MAX_VERSION_ALIASES = 20
STATUS_MAX_SOURCE = 1024
# MLflow accepts any `\w` (Unicode) alias; the API's alias names are ASCII. Aliases that do not fit the
# status schema are left out of status rather than making every status write fail.
_STATUS_ALIAS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$")
_STATUS_RUN_ID = re.compile(r"^[a-zA-Z0-9]{0,64}$")

AliasPolicy = Literal["Owned", "Exclusive"]


# --- observed registry state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedVersion:
    """A model version as the registry reports it."""

    version: int
    status: str | None = None  # READY, PENDING_REGISTRATION, FAILED_REGISTRATION
    run_id: str | None = None
    source: str | None = None
    aliases: tuple[str, ...] = ()
    creation_timestamp_ms: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def key(self) -> str | None:
        """The operator's idempotency key, when the operator registered this version."""
        return self.tags.get(VERSION_KEY_TAG)


@dataclass(frozen=True)
class ObservedModel:
    """A registered model and all its versions, as read in one observation."""

    name: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, int] = field(default_factory=dict)
    versions: tuple[ObservedVersion, ...] = ()

    @property
    def version_numbers(self) -> frozenset[int]:
        return frozenset(v.version for v in self.versions)

    @property
    def latest_version(self) -> int | None:
        return max(self.version_numbers, default=None)

    def version_with_key(self, key: str) -> ObservedVersion | None:
        return next((v for v in self.versions if v.key == key), None)


# --- desired state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredVersion:
    """A spec.versions entry, with its idempotency key and the request fields MLflow's server expects."""

    key: str
    source: str
    run_id: str | None = None
    model_id: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredModel:
    name: str
    description: str | None = None  # None: not managed
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, int] = field(default_factory=dict)
    alias_policy: AliasPolicy = "Owned"
    versions: tuple[DesiredVersion, ...] = ()


def version_key(source: str, run_id: str | None) -> str:
    """Stable across restarts, spec reordering and insertions (unlike an index): what the version is made of.
    A NUL separator cannot occur in either field, so distinct pairs never collide by concatenation."""
    digest = hashlib.sha256(f"{source}\0{run_id or ''}".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def run_id_from_source(source: str) -> str | None:
    """The run of a `runs:/<run_id>/<path>` source. MLflow's server accepts such a source only together with
    the same run_id, as mlflow.register_model sends it."""
    match = re.fullmatch(r"runs:/([a-zA-Z0-9]+)(/.*)?", source)
    return match.group(1) if match else None


def model_id_from_source(source: str) -> str | None:
    """The logged model of a `models:/<model_id>` source (MLflow 3's log_model URIs). MLflow's server accepts
    such a source only together with model_id, as mlflow.register_model sends it. `models:/<name>/<version>`
    and `models:/<name>@<alias>` name registered versions, not logged models."""
    match = re.fullmatch(r"models:/([^/@]+)", source)
    return match.group(1) if match else None


def desired_version(
    source: str, run_id: str | None, description: str | None, tags: Mapping[str, str]
) -> DesiredVersion:
    key = version_key(source, run_id)
    return DesiredVersion(
        key=key,
        source=source,
        run_id=run_id or run_id_from_source(source),
        model_id=model_id_from_source(source),
        description=description,
        # The key last, so that a spec tag of the same name cannot break idempotency.
        tags={**tags, VERSION_KEY_TAG: key},
    )


def desired_model(spec: RegisteredModelSpec, metadata_name: str) -> DesiredModel:
    """The spec as the planner compares it; the registry name is modelName, else metadata.name."""
    versions: dict[str, DesiredVersion] = {}
    for entry in spec.versions or ():
        version = desired_version(entry.source, entry.run_id, entry.description, entry.tags or {})
        versions.setdefault(version.key, version)  # the same source and run listed twice is one version
    return DesiredModel(
        name=spec.model_name or metadata_name,
        description=spec.description,
        tags=dict(spec.tags or {}),
        aliases=dict(spec.aliases or {}),
        alias_policy=spec.alias_policy,
        versions=tuple(versions.values()),
    )


# --- actions ------------------------------------------------------------------------------------------

DESCRIBED_VALUE_LENGTH = 80  # tag values may be 5000 characters: Events and conditions quote a prefix


def _short(value: str) -> str:
    return value if len(value) <= DESCRIBED_VALUE_LENGTH else value[: DESCRIBED_VALUE_LENGTH - 3] + "..."


@dataclass(frozen=True)
class CreateModel:
    """Create the registered model with its description and tags in one request."""

    description: str | None
    tags: Mapping[str, str]

    def describe(self) -> str:
        return "registered model created"


@dataclass(frozen=True)
class SetDescription:
    description: str
    previous: str

    def describe(self) -> str:
        return "description restored" if self.previous else "description set"


@dataclass(frozen=True)
class SetTag:
    key: str
    value: str
    previous: str | None  # None: the tag was missing

    def describe(self) -> str:
        if self.previous is None:
            return f'tag "{self.key}" set to "{_short(self.value)}"'
        return f'tag "{self.key}" set to "{_short(self.value)}" (was "{_short(self.previous)}")'


@dataclass(frozen=True)
class DeleteTag:
    key: str
    previous: str

    def describe(self) -> str:
        return f'tag "{self.key}" deleted (was "{_short(self.previous)}")'


@dataclass(frozen=True)
class RegisterVersion:
    """Create a model version; `tags` include VERSION_KEY_TAG, so the request is idempotent across passes."""

    key: str
    source: str
    run_id: str | None
    model_id: str | None
    description: str | None
    tags: Mapping[str, str]

    def describe(self) -> str:
        return f'version registered from "{self.source}"'


@dataclass(frozen=True)
class SetAlias:
    alias: str
    version: int
    previous: int | None  # None: the alias was missing

    def describe(self) -> str:
        if self.previous is None:
            return f'alias "{self.alias}" set to version {self.version}'
        return f'alias "{self.alias}" moved to version {self.version} (was {self.previous})'


@dataclass(frozen=True)
class DeleteAlias:
    alias: str
    previous: int

    def describe(self) -> str:
        return f'alias "{self.alias}" deleted (was version {self.previous})'


Action = CreateModel | SetDescription | SetTag | DeleteTag | RegisterVersion | SetAlias | DeleteAlias


@dataclass(frozen=True)
class Refusal:
    """The pass was refused: nothing may change. `reason` is the Synced condition's reason."""

    reason: str
    message: str
    missing: tuple[tuple[str, int], ...] = ()  # (alias, version) pairs naming versions that do not exist


@dataclass(frozen=True)
class SyncPlan:
    """What one pass does. Persist owned_tags/owned_aliases in status only once every action succeeded: if
    an action fails, keep the previous lists (they still name everything that may need deleting)."""

    actions: tuple[Action, ...] = ()
    refusal: Refusal | None = None
    owned_tags: tuple[str, ...] = ()
    owned_aliases: tuple[str, ...] = ()
    # Aliases waiting for the versions registered by this plan: plan again once it is applied.
    deferred_aliases: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()  # descriptions of the corrections, when resync=True

    @property
    def in_sync(self) -> bool:
        """The registry already matches the spec: an idle resync (zero writes)."""
        return not self.actions and self.refusal is None and not self.deferred_aliases

    @property
    def needs_follow_up(self) -> bool:
        return bool(self.deferred_aliases) and self.refusal is None

    def drift_summary(self) -> str:
        return "; ".join(self.drift)


# --- planning -------------------------------------------------------------------------------------------


def _description_actions(desired: DesiredModel, observed: ObservedModel) -> list[Action]:
    if desired.description is None or desired.description == observed.description:
        return []
    return [SetDescription(desired.description, observed.description)]


def _tag_actions(desired: DesiredModel, observed: ObservedModel, owned_tags: Iterable[str]) -> list[Action]:
    actions: list[Action] = [
        SetTag(key, value, observed.tags.get(key))
        for key, value in sorted(desired.tags.items())
        if observed.tags.get(key) != value
    ]
    stale = sorted(set(owned_tags) - set(desired.tags))
    actions += [DeleteTag(key, observed.tags[key]) for key in stale if key in observed.tags]
    return actions


def _pending_versions(desired: DesiredModel, observed: ObservedModel | None) -> list[DesiredVersion]:
    """spec.versions without a version carrying their key, in spec order."""
    if observed is None:
        return list(desired.versions)
    return [v for v in desired.versions if observed.version_with_key(v.key) is None]


def _register(version: DesiredVersion) -> RegisterVersion:
    return RegisterVersion(
        version.key, version.source, version.run_id, version.model_id, version.description, version.tags
    )


def _missing_aliases(desired: DesiredModel, observed: ObservedModel | None) -> list[tuple[str, int]]:
    existing = observed.version_numbers if observed else frozenset()
    return sorted((alias, v) for alias, v in desired.aliases.items() if v not in existing)


def _alias_actions(
    desired: DesiredModel, observed: ObservedModel | None, owned_aliases: Iterable[str], deferred: set[str]
) -> list[Action]:
    current = dict(observed.aliases) if observed else {}
    actions: list[Action] = [
        SetAlias(alias, version, current.get(alias))
        for alias, version in sorted(desired.aliases.items())
        if alias not in deferred and current.get(alias) != version
    ]
    removable = set(current) if desired.alias_policy == "Exclusive" else set(owned_aliases)
    stale = sorted(alias for alias in removable - set(desired.aliases) if alias in current)
    actions += [DeleteAlias(alias, current[alias]) for alias in stale]
    return actions


def _version_not_found(desired: DesiredModel, missing: Sequence[tuple[str, int]], latest: int | None) -> Refusal:
    named = ", ".join(f'alias "{alias}" names version {version}' for alias, version in missing)
    existing = f"latest version is {latest}" if latest is not None else "it has no versions"
    return Refusal(
        REASON_VERSION_NOT_FOUND,
        f'{named}, which does not exist in registered model "{desired.name}" ({existing}); nothing was changed',
        tuple(missing),
    )


def plan_sync(
    desired: DesiredModel,
    observed: ObservedModel | None,
    owned_tags: Iterable[str] = (),
    owned_aliases: Iterable[str] = (),
    *,
    resync: bool = False,
) -> SyncPlan:
    """One pass: a refusal, or the ordered actions that make the registry match the spec.

    `observed` is None when the registered model does not exist. `owned_*` come from status (empty after a
    restart that lost status, or for a new resource). Order: create the model (with description and tags),
    description, tags, versions in spec order, then aliases, so that aliases can name fresh versions on the
    follow-up pass. An in-sync registry gives zero actions.
    """
    owned_tags, owned_aliases = list(owned_tags), list(owned_aliases)
    pending = _pending_versions(desired, observed)
    missing = _missing_aliases(desired, observed)
    if missing and not pending:
        return SyncPlan(
            refusal=_version_not_found(desired, missing, observed.latest_version if observed else None),
            owned_tags=tuple(sorted(owned_tags)),
            owned_aliases=tuple(sorted(owned_aliases)),
        )
    deferred = {alias for alias, _ in missing}
    actions: list[Action] = []
    if observed is None:
        actions.append(CreateModel(desired.description, dict(desired.tags)))
    else:
        actions += _description_actions(desired, observed)
        actions += _tag_actions(desired, observed, owned_tags)
    actions += [_register(version) for version in pending]
    actions += _alias_actions(desired, observed, owned_aliases, deferred)
    return SyncPlan(
        actions=tuple(actions),
        owned_tags=tuple(sorted(desired.tags)),
        owned_aliases=tuple(sorted(desired.aliases)),
        deferred_aliases=tuple(sorted(deferred)),
        drift=tuple(action.describe() for action in actions) if resync else (),
    )


# --- conditions -----------------------------------------------------------------------------------------


def synced_condition(plan: SyncPlan, desired: DesiredModel, observed: ObservedModel | None) -> ConditionUpdate:
    """Synced after the last pass of a sync (its plan computed on the read-back that followed the writes)."""
    if plan.refusal is not None:
        return ConditionUpdate(CONDITION_TYPE, "False", plan.refusal.reason, plan.refusal.message)
    if not plan.in_sync:
        # Someone else changed the registry between our writes and the read-back: the next pass converges.
        pending = "; ".join(action.describe() for action in plan.actions) or "aliases wait for new versions"
        return ConditionUpdate(CONDITION_TYPE, "Unknown", "Syncing", f"still differs from the spec: {pending}")
    versions = len(observed.versions) if observed else 0
    return ConditionUpdate(
        CONDITION_TYPE,
        "True",
        REASON_SYNCED,
        f'registered model "{desired.name}" matches the spec ({versions} version(s), '
        f"{len(desired.aliases)} alias(es), {len(desired.tags)} tag(s) managed)",
    )


def sync_failure(reason: str, message: str) -> ConditionUpdate:
    """Synced for a registry error's reason (REASON_REGISTRY_UNAVAILABLE, REASON_UNAUTHORIZED...)."""
    return ConditionUpdate(CONDITION_TYPE, "False", reason, message)


def retry_delay(failures: int, *, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds before syncing again after `failures` consecutive registry failures."""
    return exponential_backoff(failures, base=base, cap=cap)


# --- status ---------------------------------------------------------------------------------------------


def _timestamp(ms: int | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(ms / 1000, tz=UTC)) if ms else None


def _version_status(version: ObservedVersion) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "version": version.version,
        "status": version.status,
        "runId": version.run_id if version.run_id and _STATUS_RUN_ID.match(version.run_id) else None,
        "source": version.source[:STATUS_MAX_SOURCE] if version.source else None,
        "aliases": sorted(a for a in version.aliases if _STATUS_ALIAS.match(a))[:STATUS_MAX_VERSION_ALIASES] or None,
        "creationTimestamp": _timestamp(version.creation_timestamp_ms),
    }
    return {key: value for key, value in fields.items() if value is not None}


def status_fields(
    model_name: str, observed: ObservedModel | None, owned_tags: Iterable[str], owned_aliases: Iterable[str]
) -> dict[str, Any]:
    """status fields (camelCase) describing the registry: versions newest first (at most 100), all aliases
    that fit the schema, and the owned lists. lastSyncTime and conditions are the handler's."""
    versions = sorted(observed.versions, key=lambda v: v.version, reverse=True) if observed else []
    aliases = {a: v for a, v in sorted((observed.aliases if observed else {}).items()) if _STATUS_ALIAS.match(a)}
    return {
        "modelName": model_name,
        "latestVersion": observed.latest_version if observed else None,
        "versions": [_version_status(v) for v in versions[:STATUS_MAX_VERSIONS]],
        "aliases": dict(list(aliases.items())[:STATUS_MAX_ALIASES]),
        "ownedTags": sorted(set(owned_tags)),
        "ownedAliases": sorted(set(owned_aliases)),
    }
