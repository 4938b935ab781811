"""How the operator reaches an MLflow server: MLflow's REST API over `requests`, with per-endpoint credentials
and bounds, call accounting, and the cache of where versions keep their artifacts.

Why not MlflowClient. It reads credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN) and its timeouts and
retries (MLFLOW_HTTP_REQUEST_TIMEOUT 120 s, 7 retries with exponential backoff, Retry-After honoured) from
process-wide settings, while the operator talks to many servers with different credentials and bounds from
several worker threads; and importing it costs about a second and 35 MiB of RSS, a fifth of the operator's,
for a dozen JSON endpoints. The REST API is the contract MLflow's own client speaks (the same paths, bodies
and error JSON); the integration tests run this module against a real MLflow server.

Retries. Connection errors, read errors and 408/429/5xx answers are retried `max_retries` times with
exponential backoff; a Retry-After header is not honoured (it must not stretch a bounded call).
CreateModelVersion is never retried by the HTTP layer: a retry after a read timeout could register the
version twice; the next reconcile pass finds the version by its idempotency tag instead.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlflow_operator import __version__

REGISTRY = "/api/2.0/mlflow"
# The registry APIs the operator calls: name (MLflow's RPC name, for call accounting) -> (method, path).
REGISTRY_APIS: Mapping[str, tuple[str, str]] = {
    "GetRegisteredModel": ("GET", f"{REGISTRY}/registered-models/get"),
    "CreateRegisteredModel": ("POST", f"{REGISTRY}/registered-models/create"),
    "UpdateRegisteredModel": ("PATCH", f"{REGISTRY}/registered-models/update"),
    "DeleteRegisteredModel": ("DELETE", f"{REGISTRY}/registered-models/delete"),
    "SetRegisteredModelTag": ("POST", f"{REGISTRY}/registered-models/set-tag"),
    "DeleteRegisteredModelTag": ("DELETE", f"{REGISTRY}/registered-models/delete-tag"),
    "SetRegisteredModelAlias": ("POST", f"{REGISTRY}/registered-models/alias"),
    "DeleteRegisteredModelAlias": ("DELETE", f"{REGISTRY}/registered-models/alias"),
    "GetModelVersionByAlias": ("GET", f"{REGISTRY}/registered-models/alias"),
    "SearchModelVersions": ("GET", f"{REGISTRY}/model-versions/search"),
    "GetModelVersion": ("GET", f"{REGISTRY}/model-versions/get"),
    "CreateModelVersion": ("POST", f"{REGISTRY}/model-versions/create"),
    "SetModelVersionTag": ("POST", f"{REGISTRY}/model-versions/set-tag"),
    "DeleteModelVersionTag": ("DELETE", f"{REGISTRY}/model-versions/delete-tag"),
}
# The registry's APIs that only read (all GETs); everything else writes.
READ_APIS = frozenset(
    {"GetRegisteredModel", "SearchModelVersions", "GetModelVersion", "GetModelVersionByAlias"}
    | {"GetLoggedModel", "GetRun"}  # where versions keep their artifacts
)
# The one write that is not idempotent: each successful request adds a version.
NON_IDEMPOTENT_APIS = frozenset({"CreateModelVersion"})
# Tracking APIs read to find where a version's artifacts are (its source names a logged model or a run).
LOGGED_MODEL_PATH = "/api/2.0/mlflow/logged-models/{model_id}"
RUN_PATH = "/api/2.0/mlflow/runs/get"
MAX_CACHED_LOCATIONS = 200_000
# What MLflow's server and proxies in front of it answer for a moment (MLflow's client retries the same).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# MLflow's error code for an answer without MLflow's error JSON (a proxy's page, the auth app's plain text),
# as MLflow's client derives it from the HTTP status.
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
}
# The transport failing underneath: no MLflow answer at all (refused, timed out, retries exhausted).
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)


# --- configuration ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryEndpoint:
    """Where the registry is, how to authenticate, and how long to wait.

    Credentials: username and password (MLflow basic auth) or a bearer token (which wins, as in MLflow), or
    none. The worst case of one request is timeout * (max_retries + 1) plus the backoff sleeps
    (backoff_factor * 2**n, the first retry immediate, plus up to backoff_jitter each).
    """

    tracking_uri: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # seconds, connect and read, per request
    max_retries: int = 2  # connection errors, read errors, 408/429/5xx
    backoff_factor: float = 1.0
    backoff_jitter: float = 0.5
    call_timeout: float = 60.0  # the *_async wrappers' bound on one observe/apply/delete
    sync_timeout: float = 180.0  # the bound on sync_async (two passes of writes plus reads)

    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password and not self.token else None

    def headers(self) -> dict[str, str]:
        bearer = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {"User-Agent": f"mlflow-operator/{__version__}"} | bearer


# --- requests --------------------------------------------------------------------------------------------


class MlflowApiError(Exception):
    """MLflow answered with an error: its error code (RESOURCE_DOES_NOT_EXIST...), message and HTTP status."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def api_error(http_status: int, text: str) -> MlflowApiError:
    """The error an answer other than 200/204 means: MLflow's error JSON when the body is one."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error_code" in body or "message" in body):
        code = str(body.get("error_code") or STATUS_CODES.get(http_status, "INTERNAL_ERROR"))
        return MlflowApiError(code, str(body.get("message", "")), http_status)
    return MlflowApiError(
        STATUS_CODES.get(http_status, "INTERNAL_ERROR"), f"HTTP {http_status}: {text[:300]}", http_status
    )


def parse_answer(http_status: int, text: str) -> dict[str, Any]:
    """An MLflow answer's JSON object; MlflowApiError for an error or a body that is not one."""
    if http_status == 204 or (http_status == 200 and not text.strip()):
        return {}
    if http_status != 200:
        raise api_error(http_status, text)
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise MlflowApiError("INTERNAL_ERROR", f"the answer is not a JSON object: {text[:300]}", http_status)
    return answer


@functools.lru_cache(maxsize=32)
def _session(max_retries: int, backoff_factor: float, backoff_jitter: float) -> requests.Session:
    """One pooled session per retry policy, shared by threads (as MLflow's client shares its sessions)."""
    retry = Retry(
        total=max_retries,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=None,  # every method: CreateModelVersion, the one write that is not idempotent, gets 0
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        respect_retry_after_header=False,
        raise_on_status=False,  # the last answer is MLflow's error, which says more than "too many retries"
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def rest_call(
    endpoint: RegistryEndpoint,
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None = None,
    params: Any = None,
    retry: bool = True,
) -> dict[str, Any]:
    """One MLflow REST call with the endpoint's credentials, timeout and retries (none with retry=False):
    the answer's JSON object, MlflowApiError when MLflow answers with an error, a TRANSPORT_ERRORS
    exception when it does not answer (adapters.registry.translate_error turns both into a RegistryError)."""
    session = _session(endpoint.max_retries if retry else 0, endpoint.backoff_factor, endpoint.backoff_jitter)
    response = session.request(
        method,
        endpoint.tracking_uri.rstrip("/") + path,
        params=params,
        json=dict(body) if body is not None else None,
        auth=endpoint.auth(),
        headers=endpoint.headers(),
        timeout=endpoint.timeout,
    )
    return parse_answer(response.status_code, response.text)


class RegistryApi:
    """The registry APIs of REGISTRY_APIS on one endpoint; `on_call(api_name)` runs before each request."""

    def __init__(self, endpoint: RegistryEndpoint, on_call: Callable[[str], None]) -> None:
        self.endpoint = endpoint
        self.on_call = on_call

    def call(self, api: str, **fields: Any) -> dict[str, Any]:
        """`api` with `fields` (None ones left out, as MLflow's client leaves unset fields out): query
        parameters for a GET, the JSON body otherwise."""
        method, path = REGISTRY_APIS[api]
        present = {key: value for key, value in fields.items() if value is not None}
        self.on_call(api)
        if method == "GET":
            return rest_call(self.endpoint, method, path, params=present)
        return rest_call(self.endpoint, method, path, body=present, retry=api not in NON_IDEMPOTENT_APIS)


# --- call accounting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallCount:
    reads: int = 0
    writes: int = 0

    def __sub__(self, other: CallCount) -> CallCount:
        return CallCount(self.reads - other.reads, self.writes - other.writes)


class CallCounter:
    """MLflow REST requests made (retries of one request by the HTTP layer count once), by API name and kind.
    Thread-safe: one adapter may be used from several worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_api: Counter[str] = Counter()

    def record(self, api: str) -> None:
        with self._lock:
            self.by_api[api] += 1

    def snapshot(self) -> CallCount:
        with self._lock:
            reads = sum(n for api, n in self.by_api.items() if api in READ_APIS)
            return CallCount(reads, sum(self.by_api.values()) - reads)

    @property
    def reads(self) -> int:
        return self.snapshot().reads

    @property
    def writes(self) -> int:
        return self.snapshot().writes


# --- where versions keep their artifacts -----------------------------------------------------------------

# (tracking URI, model, version, source) -> artifact URI: a version's source never changes, and resolving it
# costs a request, so each process resolves each version once.
LocationKey = tuple[str, str, int, str]
_LOCATIONS: dict[LocationKey, str] = {}
_LOCATIONS_LOCK = threading.Lock()


def known_location(key: LocationKey) -> str | None:
    return _LOCATIONS.get(key)


def remember_location(key: LocationKey, location: str) -> None:
    with _LOCATIONS_LOCK:
        _LOCATIONS[key] = location
        while len(_LOCATIONS) > MAX_CACHED_LOCATIONS:
            del _LOCATIONS[next(iter(_LOCATIONS))]


def forget_locations() -> None:
    """As in a process that never resolved a location (the lifecycle safety benchmark's cold case)."""
    with _LOCATIONS_LOCK:
        _LOCATIONS.clear()
