"""The MLflow model registry of one server: reads, the sync of a RegisteredModel, a rollout's write-back.

The requests are MLflow's REST API with this server's credentials and bounds (adapters.registry_store); the
answers are MLflow's JSON (RegisteredModel, ModelVersion), read here into the logic's observed types.

Every call blocks, and a blocking call inside kopf's event loop freezes the whole operator, so async
handlers use the `*_async` methods: a worker thread, bounded by `asyncio.wait_for` (a thread cannot be
cancelled: it ends on its own within the per-request bounds).

Errors become a small hierarchy whose `reason` is the Synced condition's reason (the REASON_* constants of
mlflow_operator.logic.registeredmodel); `code` is MLflow's error code when there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflow_operator.adapters.errors import DependencyError
from mlflow_operator.adapters.registry_store import (
    LOGGED_MODEL_PATH,
    RUN_PATH,
    TRANSIENT_STATUSES,
    TRANSPORT_ERRORS,
    CallCount,
    CallCounter,
    MlflowApiError,
    RegistryApi,
    RegistryEndpoint,
    known_location,
    remember_location,
    rest_call,
)
from mlflow_operator.logic.lifecycle_safety import VersionArtifacts
from mlflow_operator.logic.registeredmodel import (
    REASON_ALIAS_NOT_FOUND,
    REASON_MODEL_NOT_FOUND,
    REASON_REGISTRY_ERROR,
    REASON_REGISTRY_UNAVAILABLE,
    REASON_UNAUTHORIZED,
    REASON_VERSION_NOT_FOUND,
    Action,
    CreateModel,
    DeleteAlias,
    DeleteTag,
    DesiredModel,
    ObservedModel,
    ObservedVersion,
    RegisterVersion,
    SetAlias,
    SetDescription,
    SetTag,
    SyncPlan,
    plan_sync,
)

T = TypeVar("T")

# MLflow error codes (mlflow.protos.databricks_pb2.ErrorCode names), grouped by what the operator reports.
UNAUTHORIZED_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED", "UNAUTHORIZED"})
NOT_FOUND_CODE = "RESOURCE_DOES_NOT_EXIST"
ALREADY_EXISTS_CODES = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})
VERSIONS_PAGE_SIZE = 1000  # the server's default page is 10000 and its maximum 200000
MAX_VERSION_PAGES = 200
# Passes of one sync: the plan, and its follow-up when aliases wait for versions registered by the first.
MAX_PASSES = 2


# --- errors ---------------------------------------------------------------------------------------------


class RegistryError(DependencyError):
    """A registry call failed; `reason` is the Synced condition reason, `code` MLflow's error code if any."""

    reason: str = REASON_REGISTRY_ERROR


class RegistryUnavailable(RegistryError):
    """No answer (connection refused, timeout), a server error (5xx), or a timeout or throttling answer (408,
    429) still there after the bounded retries."""

    reason = REASON_REGISTRY_UNAVAILABLE


class Unauthorized(RegistryError):
    """Credentials refused (401) or not allowed to do this (403)."""

    reason = REASON_UNAUTHORIZED


class ModelNotFound(RegistryError):
    reason = REASON_MODEL_NOT_FOUND


class VersionNotFound(RegistryError):
    reason = REASON_VERSION_NOT_FOUND


class AliasNotFound(RegistryError):
    reason = REASON_ALIAS_NOT_FOUND


def translate_error(error: Exception, what: str, uri: str) -> RegistryError:
    """The RegistryError for an exception raised by a registry call while doing `what`."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, TRANSPORT_ERRORS):
        return RegistryUnavailable(f"MLflow at {uri} unreachable while {what}: {error}")
    if not isinstance(error, MlflowApiError):
        return RegistryError(f"{what} failed: {type(error).__name__}: {error}")
    message = f"{what}: {error}"
    if error.code in UNAUTHORIZED_CODES:
        return Unauthorized(f"MLflow at {uri} refused the credentials ({message})", error.code)
    if error.code == NOT_FOUND_CODE:
        return ModelNotFound(message, error.code)
    if error.http_status >= 500 or error.http_status in TRANSIENT_STATUSES:
        return RegistryUnavailable(f"MLflow at {uri} failed ({message})", error.code)
    return RegistryError(message, error.code)


# --- the adapter ------------------------------------------------------------------------------------------


def _search_filter(name: str) -> str:
    """`name = '<name>'` in MLflow's search grammar, which has no escapes: quote with the other quote."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    raise RegistryError(f"cannot search the versions of {name!r}: MLflow's filter grammar cannot quote it")


def _tags(entity: Mapping[str, Any]) -> dict[str, str]:
    """A RegisteredModel's or ModelVersion's tags: MLflow's JSON lists them as {key, value} pairs."""
    return {tag["key"]: tag.get("value", "") for tag in entity.get("tags") or []}


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def _observed_version(version: Mapping[str, Any], model_aliases: Mapping[str, int]) -> ObservedVersion:
    number = int(version["version"])
    # SearchModelVersions leaves ModelVersion.aliases empty (MLflow 3.17.2's SQL store): the model's alias
    # map, from GetRegisteredModel, is the authority.
    aliases = {alias for alias, target in model_aliases.items() if target == number}
    created = version.get("creation_timestamp")
    return ObservedVersion(
        version=number,
        status=version.get("status") or None,
        run_id=version.get("run_id") or None,
        source=version.get("source") or None,
        aliases=tuple(sorted(aliases)),
        creation_timestamp_ms=int(created) if created else None,
        tags=_tags(version),
        description=version.get("description") or "",
    )


@dataclass(frozen=True)
class SyncOutcome:
    """One sync: the registry as read last, the plan computed on it, and what was done.

    `plan` is the final plan: in_sync (Synced=True), a refusal (VersionNotFound: its pass wrote nothing; a
    first pass may have registered versions before the follow-up found an alias still unresolvable), or
    actions still needed because someone changed the registry meanwhile (the next pass converges). Persist
    `owned_tags`/`owned_aliases` in status; emit `drift` as one Event when non-empty.
    """

    observed: ObservedModel | None
    plan: SyncPlan
    applied: tuple[Action, ...]
    drift: tuple[str, ...]
    calls: CallCount

    @property
    def owned_tags(self) -> tuple[str, ...]:
        return self.plan.owned_tags

    @property
    def owned_aliases(self) -> tuple[str, ...]:
        return self.plan.owned_aliases


@dataclass(frozen=True)
class ResolvedVersion:
    """What a `models:/<name>@<alias>` or `models:/<name>/<version>` URI points at now."""

    version: int
    status: str | None  # READY, PENDING_REGISTRATION or FAILED_REGISTRATION
    source: str | None
    run_id: str | None


async def bounded_call(uri: str, seconds: float, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking registry call in a worker thread, given up after `seconds` as RegistryUnavailable (the thread
    itself cannot be cancelled: the HTTP layer's own timeouts end it)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call, *args, **kwargs), seconds)
    except TimeoutError as error:
        raise RegistryUnavailable(f"MLflow at {uri}: no answer within {seconds:.0f} s while {what}") from error


class ModelRegistry:
    """The registry of one MLflow server. Blocking methods, each with an `*_async` twin."""

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        self.endpoint = endpoint
        self.calls = CallCounter()
        self.api = RegistryApi(endpoint, self.calls.record)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            raise translate_error(error, what, self.endpoint.tracking_uri) from error

    # --- reads ---

    def observe(self, name: str) -> ObservedModel | None:
        """The model and all its versions (1 GetRegisteredModel + 1 SearchModelVersions per 1000 versions);
        None when the model does not exist."""
        try:
            with self._translated(f'reading registered model "{name}"'):
                model = self.api.call("GetRegisteredModel", name=name)["registered_model"]
        except ModelNotFound:
            return None
        aliases = {alias["alias"]: int(alias["version"]) for alias in model.get("aliases") or []}
        return ObservedModel(
            name=model["name"],
            description=model.get("description") or "",
            tags=_tags(model),
            aliases=aliases,
            versions=tuple(_observed_version(v, aliases) for v in self._all_versions(name)),
        )

    def _all_versions(self, name: str) -> list[dict[str, Any]]:
        return self._search_versions(_search_filter(name), ["version_number DESC"], f'listing the versions of "{name}"')

    def _search_versions(self, filter_string: str | None, order_by: list[str], what: str) -> list[dict[str, Any]]:
        """Every page of a SearchModelVersions; `order_by` must be stable (page tokens are offsets)."""
        versions: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_VERSION_PAGES):
            with self._translated(what):
                page = self.api.call(
                    "SearchModelVersions",
                    filter=filter_string,
                    max_results=VERSIONS_PAGE_SIZE,
                    order_by=order_by,
                    page_token=token,
                )
            versions.extend(page.get("model_versions") or [])
            token = page.get("next_page_token")
            if not token:
                return versions
        raise RegistryError(f"{what}: more than {MAX_VERSION_PAGES * VERSIONS_PAGE_SIZE} versions")

    # --- writes ---

    def apply(self, name: str, actions: Sequence[Action]) -> None:
        """Executes the actions in order; raises at the first failure (those before it stay applied)."""
        for action in actions:
            self._apply_one(name, action)

    def _apply_one(self, name: str, action: Action) -> None:
        what = f'{type(action).__name__} on "{name}"'
        try:
            with self._translated(what):
                self._send(name, action)
        except ModelNotFound as error:
            if isinstance(action, DeleteTag | DeleteAlias):
                return  # already gone: what a retried delete finds
            if isinstance(action, SetAlias) and "version" in error.message.lower():
                raise VersionNotFound(error.message, error.code) from error
            raise
        except RegistryError as error:
            if isinstance(action, CreateModel) and error.code in ALREADY_EXISTS_CODES:
                return  # created meanwhile (or by our own lost request): adopt it; the read-back shows the rest
            raise

    def _send(self, name: str, action: Action) -> None:
        if isinstance(action, CreateModel):
            self.api.call(
                "CreateRegisteredModel", name=name, tags=_tag_list(action.tags), description=action.description
            )
        elif isinstance(action, SetDescription):
            self.api.call("UpdateRegisteredModel", name=name, description=action.description)
        elif isinstance(action, SetTag):
            self.api.call("SetRegisteredModelTag", name=name, key=action.key, value=action.value)
        elif isinstance(action, DeleteTag):
            self.api.call("DeleteRegisteredModelTag", name=name, key=action.key)
        elif isinstance(action, RegisterVersion):
            self.api.call(
                "CreateModelVersion",
                name=name,
                source=action.source,
                run_id=action.run_id,
                tags=_tag_list(action.tags),
                description=action.description,
                model_id=action.model_id,
            )
        elif isinstance(action, SetAlias):
            self.set_alias(name, action.alias, action.version)
        elif isinstance(action, DeleteAlias):
            self.api.call("DeleteRegisteredModelAlias", name=name, alias=action.alias)

    def delete_model(self, name: str) -> bool:
        """Deletes the registered model and its versions; False when it did not exist."""
        try:
            with self._translated(f'deleting registered model "{name}"'):
                self.api.call("DeleteRegisteredModel", name=name)
        except ModelNotFound:
            return False
        return True

    # --- serving: resolve a model, write the outcome of a rollout back ---

    def resolve(self, name: str, *, alias: str | None = None, version: int | None = None) -> ResolvedVersion:
        """The version an alias points at (one GetModelVersionByAlias), or a pinned version (one
        GetModelVersion). ModelNotFound, AliasNotFound or VersionNotFound say which part is missing."""
        what = f'resolving "{name}@{alias}"' if alias is not None else f'reading version {version} of "{name}"'
        try:
            with self._translated(what):
                if alias is not None:
                    found = self.api.call("GetModelVersionByAlias", name=name, alias=alias)["model_version"]
                else:
                    found = self.api.call("GetModelVersion", name=name, version=str(version))["model_version"]
        except RegistryError as error:
            # MLflow 3.17 answers a missing alias with INVALID_PARAMETER_VALUE ("Registered model alias x not
            # found") and a missing version with RESOURCE_DOES_NOT_EXIST: MLflow's own message (the cause; ours
            # names the alias and version we asked for) tells which part is missing.
            text = str(error.__cause__ or error).lower()
            if "not found" in text and alias is not None and "alias" in text:
                raise AliasNotFound(error.message, error.code) from error
            if "not found" in text and version is not None and "version" in text:
                raise VersionNotFound(error.message, error.code) from error
            raise
        return ResolvedVersion(
            version=int(found["version"]),
            status=found.get("status") or None,
            source=found.get("source") or None,
            run_id=found.get("run_id") or None,
        )

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        with self._translated(f'tagging version {version} of "{name}"'):
            for key, value in sorted(tags.items()):
                self.api.call("SetModelVersionTag", name=name, version=str(version), key=key, value=value)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        with self._translated(f'moving alias "{alias}" of "{name}" to version {version}'):
            self.api.call("SetRegisteredModelAlias", name=name, alias=alias, version=str(version))

    # --- where every version keeps its artifacts (lifecycle safety) ---

    def version_artifacts(self) -> list[VersionArtifacts]:
        """Every registered model version of the server, with its artifact location. One SearchModelVersions
        per 1000 versions, plus one GetLoggedModel or GetRun per version whose source names one and that no
        earlier call resolved: a version's source never changes, so resolved locations are cached."""
        found = []
        for version in self._every_version():
            source = version.get("source") or ""
            key = (self.endpoint.tracking_uri, version["name"], int(version["version"]), source)
            location = known_location(key)
            if location is None:
                location = self._artifact_uri(source)
                if location is not None:
                    remember_location(key, location)
            found.append(VersionArtifacts(version["name"], int(version["version"]), source, location))
        return found

    def _every_version(self) -> list[dict[str, Any]]:
        return self._search_versions(None, ["name ASC", "version_number DESC"], "listing every model version")

    def _artifact_uri(self, source: str) -> str | None:
        """Where a source's artifacts are: a logged model's or a run's artifact URI (None when the server no
        longer finds it), or the source itself when it is already a location (mlflow-artifacts:, s3:...)."""
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            answer = self._get_json(LOGGED_MODEL_PATH.format(model_id=model_id), {}, f"reading logged model {model_id}")
            return ((answer or {}).get("model", {}).get("info", {}).get("artifact_uri")) or None
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            answer = self._get_json(RUN_PATH, {"run_id": run_id}, f"reading run {run_id}")
            run_uri = (answer or {}).get("run", {}).get("info", {}).get("artifact_uri")
            return f"{run_uri.rstrip('/')}/{path}".rstrip("/") if run_uri else None
        if source.startswith("models:/"):
            return None  # a registry URI: which version it named then is not recorded
        return source

    def _get_json(self, path: str, params: Mapping[str, str], what: str) -> dict[str, Any] | None:
        """A tracking API GET with this registry's credentials and bounds; None when it does not exist."""
        self.calls.record("GetRun" if path == RUN_PATH else "GetLoggedModel")
        try:
            with self._translated(what):
                return rest_call(self.endpoint, "GET", path, params=dict(params))
        except ModelNotFound:
            return None

    # --- one reconcile pass ---

    def sync(
        self, desired: DesiredModel, owned_tags: Iterable[str], owned_aliases: Iterable[str], *, resync: bool = False
    ) -> SyncOutcome:
        """Read, plan, apply, read back; once more when aliases wait for versions the first pass registered.
        An idle sync is reads only: GetRegisteredModel and SearchModelVersions. Raises RegistryError."""
        before = self.calls.snapshot()
        observed = self.observe(desired.name)
        plan = plan_sync(desired, observed, owned_tags, owned_aliases, resync=resync)
        applied: list[Action] = []
        drift: list[str] = []
        for _ in range(MAX_PASSES):
            if not plan.actions:
                break
            self.apply(desired.name, plan.actions)
            applied += plan.actions
            drift += plan.drift
            observed = self.observe(desired.name)
            plan = plan_sync(desired, observed, plan.owned_tags, plan.owned_aliases, resync=resync)
        return SyncOutcome(observed, plan, tuple(applied), tuple(drift), self.calls.snapshot() - before)

    # --- async twins ---

    async def _bounded(self, seconds: float, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await bounded_call(self.endpoint.tracking_uri, seconds, what, call, *args, **kwargs)

    async def observe_async(self, name: str) -> ObservedModel | None:
        return await self._bounded(self.endpoint.call_timeout, f'reading "{name}"', self.observe, name)

    async def resolve_async(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> ResolvedVersion:
        return await self._bounded(
            self.endpoint.call_timeout, f'resolving "{name}"', self.resolve, name, alias=alias, version=version
        )

    async def set_version_tags_async(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        await self._bounded(self.endpoint.call_timeout, f'tagging "{name}"', self.set_version_tags, name, version, tags)

    async def set_alias_async(self, name: str, alias: str, version: int) -> None:
        await self._bounded(
            self.endpoint.call_timeout, f'moving an alias of "{name}"', self.set_alias, name, alias, version
        )

    async def version_artifacts_async(self) -> list[VersionArtifacts]:
        return await self._bounded(self.endpoint.sync_timeout, "listing every model version", self.version_artifacts)

    async def delete_model_async(self, name: str) -> bool:
        return await self._bounded(self.endpoint.call_timeout, f'deleting "{name}"', self.delete_model, name)

    async def sync_async(
        self, desired: DesiredModel, owned_tags: Iterable[str], owned_aliases: Iterable[str], *, resync: bool = False
    ) -> SyncOutcome:
        return await self._bounded(
            self.endpoint.sync_timeout,
            f'syncing "{desired.name}"',
            self.sync,
            desired,
            list(owned_tags),
            list(owned_aliases),
            resync=resync,
        )
