"""How the operator reaches an MLflow server: mlflow-skinny's REST store with per-client credentials and
bounds, single REST calls, call accounting, and the cache of where versions keep their artifacts.

Credentials. `MlflowClient` has no credentials parameter: for an http(s) registry URI it builds
`mlflow.store.model_registry.rest_store.RestStore(partial(get_default_host_creds, uri))`, and
`get_default_host_creds` reads MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN from the process environment (or
~/.mlflow/credentials). The operator talks to many servers with different credentials from several worker
threads, so setting those variables is not an option. The RestStore under MlflowClient takes its
credentials from a `get_host_creds` callable, documented as "invoked prior to every REST request", and is
the supported seam: `make_store` builds that store with a callable returning this server's
`MlflowHostCreds(host, username/password or token)`. The requests are MLflow's own (`http_request`: the
Authorization header, TLS options, request-header plugins, its retrying session) and so are the entities
(RegisteredModel, ModelVersion) — exactly what MlflowClient would send and return.

Timeouts and retries. MLflow's `call_endpoint` reads them from process-wide variables too
(MLFLOW_HTTP_REQUEST_TIMEOUT 120 s, MLFLOW_HTTP_REQUEST_MAX_RETRIES 7, exponential backoff factor 2 and,
with MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER, whatever a Retry-After header asks): minutes per call.
`_call_endpoint`, the store's one funnel to the network, is overridden to pass this client's bounds to
`http_request` explicitly (and to count calls). CreateModelVersion is never retried by the HTTP layer: a
retry after a read timeout could register the version twice; the next reconcile pass finds the version by
its idempotency tag instead.

mlflow is imported on first use, through `mlflow_module()`: it takes about a second and tens of MiB, and an
operator without RegisteredModels never needs it. Its modules come back typed as Any: mlflow ships
py.typed but most of its functions are unannotated, which strict mypy would refuse to call.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


# mlflow's package imports are circular: two worker threads importing parts of it for the first time at once
# hand each other half-initialised modules ("partially initialized module 'mlflow' has no attribute
# 'version'", seen when a TrackingServer's webhook registration and a RegisteredModel's sync started together).
_IMPORTING = threading.Lock()


def mlflow_module(module: str) -> Any:
    """An mlflow module, imported on first use, one import at a time."""
    with _IMPORTING:
        return importlib.import_module(f"mlflow.{module}")


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

    def host_creds(self) -> Any:
        host_creds = mlflow_module("utils.rest_utils").MlflowHostCreds
        if self.token:
            return host_creds(self.tracking_uri, token=self.token)
        return host_creds(self.tracking_uri, username=self.username, password=self.password)


# --- requests --------------------------------------------------------------------------------------------


def rest_call(
    endpoint: RegistryEndpoint, method: str, path: str, *, body: Mapping[str, Any] | None = None, params: Any = None
) -> dict[str, Any]:
    """One MLflow REST call with the endpoint's credentials, timeout and retries; MLflow's exception when it
    answers with an error (adapters.registry.translate_error turns it into a RegistryError)."""
    rest_utils = mlflow_module("utils.rest_utils")
    response = rest_utils.http_request(
        endpoint.host_creds(),
        path,
        method,
        json=dict(body) if body is not None else None,
        params=params,
        max_retries=endpoint.max_retries,
        backoff_factor=endpoint.backoff_factor,
        backoff_jitter=endpoint.backoff_jitter,
        timeout=endpoint.timeout,
        respect_retry_after_header=False,
    )
    response = rest_utils.verify_rest_response(response, path)
    answer: dict[str, Any] = json.loads(response.text or "{}")
    return answer


def make_store(endpoint: RegistryEndpoint, on_call: Callable[[str], None]) -> Any:
    """mlflow-skinny's registry RestStore bound to this endpoint's credentials and bounds (see the module
    docstring); `on_call(api_name)` runs before each request."""
    rest_store_class: Any = mlflow_module("store.model_registry.rest_store").RestStore
    rest_utils = mlflow_module("utils.rest_utils")
    parse_dict = mlflow_module("utils.proto_json_utils").parse_dict
    host_creds = endpoint.host_creds()

    class BoundedRestStore(rest_store_class):  # type: ignore[misc]
        # MLflow's BaseRestStore._call_endpoint + rest_utils.call_endpoint, with this client's bounds.
        def _call_endpoint(
            self, api: Any, json_body: str, call_all_endpoints: bool = False, extra_headers: Any = None
        ) -> Any:
            if call_all_endpoints:  # only GetLatestVersions (stages, deprecated): not used here
                raise NotImplementedError(f"{api.__name__} is not supported by this adapter")
            self._validate_workspace_support_if_specified()
            endpoint_path, method = self._get_endpoint_from_method(api)
            on_call(api.__name__)
            body = json.loads(json_body) if json_body is not None else None
            response = rest_utils.http_request(
                self.get_host_creds(),
                endpoint_path,
                method,
                max_retries=0 if api.__name__ in NON_IDEMPOTENT_APIS else endpoint.max_retries,
                backoff_factor=endpoint.backoff_factor,
                backoff_jitter=endpoint.backoff_jitter,
                timeout=endpoint.timeout,
                # A Retry-After header must not stretch a bounded call (urllib3 would sleep what it says).
                respect_retry_after_header=False,
                extra_headers=extra_headers,
                **({"params": body} if method == "GET" else {"json": body}),
            )
            response = rest_utils.verify_rest_response(response, endpoint_path)
            response_proto = self._get_response_from_method(api)
            if response.status_code == 204:
                return response_proto
            parse_dict(js_dict=json.loads(response.text), message=response_proto)
            return response_proto

    return BoundedRestStore(lambda: host_creds)


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
