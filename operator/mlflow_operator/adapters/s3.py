"""S3 bucket lifecycle configuration through boto3, with bounded timeouts and retries.

Every boto3 call blocks, and a blocking call inside kopf's event loop freezes the whole operator (watches
included), so async handlers use the `*_async` methods, which run the call in a worker thread.

Errors become a small hierarchy whose `reason` is the condition reason to report (see the REASON_*
constants in mlflow_operator.logic.lifecycle); the message carries the server's own words.

boto3 and botocore are imported on first use (the two `noqa: PLC0415` below): importing boto3 adds about
9 MiB to an operator that otherwise starts at about 46 MiB, and resources without lifecycle rules never
need it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mlflow_operator.adapters.errors import DependencyError
from mlflow_operator.api.trackingserver import LifecycleStatus, S3Artifacts
from mlflow_operator.logic.lifecycle import (
    APPLY,
    REASON_ACCESS_DENIED,
    REASON_BUCKET_NOT_FOUND,
    REASON_BUCKET_UNREACHABLE,
    REASON_INVALID_LIFECYCLE,
    REASON_S3_ERROR,
    LifecycleDecision,
    S3Rule,
    lifecycle_decision,
    merge_configuration,
    record_applied,
)

# S3 error codes, grouped by what the operator reports. head_bucket has no body, so it gives bare statuses.
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
INVALID_LIFECYCLE_CODES = frozenset({"MalformedXML", "InvalidRequest", "InvalidArgument", "InvalidStorageClass"})
NO_LIFECYCLE_CODE = "NoSuchLifecycleConfiguration"


class S3LifecycleError(DependencyError):
    """An S3 call failed; `reason` is the condition reason, `code` the S3 error code when there is one."""

    reason: str = REASON_S3_ERROR


class BucketUnreachable(S3LifecycleError):
    """No answer (connection refused, timeout) or a server error, after the bounded retries."""

    reason = REASON_BUCKET_UNREACHABLE


class BucketNotFound(S3LifecycleError):
    reason = REASON_BUCKET_NOT_FOUND


class AccessDenied(S3LifecycleError):
    """Refused credentials or permissions, or no credentials at all."""

    reason = REASON_ACCESS_DENIED


class InvalidLifecycle(S3LifecycleError):
    """The server refused the configuration (MalformedXML, InvalidRequest...); the message is the server's."""

    reason = REASON_INVALID_LIFECYCLE


@dataclass(frozen=True)
class S3Endpoint:
    """Where the bucket is and how long to wait for it. No credentials: boto3's chain (IRSA, env)."""

    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_attempts: int = 3  # the first call included

    @classmethod
    def for_artifacts(
        cls, s3: S3Artifacts, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> S3Endpoint:
        """The artifact bucket of a TrackingServer; the keys come from its credentialsSecret, if any."""
        return cls(s3.bucket, s3.region or "us-east-1", s3.endpoint, access_key_id, secret_access_key)


def client_options(endpoint: S3Endpoint) -> dict[str, Any]:
    """botocore Config options: bounded timeouts and retries, path-style addressing for custom endpoints."""
    options: dict[str, Any] = {
        "region_name": endpoint.region,
        "connect_timeout": endpoint.connect_timeout,
        "read_timeout": endpoint.read_timeout,
        "retries": {"max_attempts": endpoint.max_attempts, "mode": "standard"},
        # Checksums only where the API requires them: S3-compatible servers lag behind AWS's newer defaults.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if endpoint.endpoint_url:
        # Virtual-hosted addressing needs DNS for <bucket>.<host>, which in-cluster MinIO does not have.
        options["s3"] = {"addressing_style": "path"}
    return options


# Clients by everything that shapes them except the bucket: building one loads the S3 service model again
# (the scale benchmark measured ~180 ms of CPU and an RSS that grew from 71 to 210 MiB over 200 builds),
# while a built client is thread-safe and reusable. Bounded: least recently used clients are dropped.
MAX_CACHED_CLIENTS = 64
_clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_clients_lock = threading.Lock()
_session: Any = None  # one botocore session: credentials are passed per client, never stored on it


def _client_key(endpoint: S3Endpoint) -> tuple[Any, ...]:
    secret = hashlib.sha256((endpoint.secret_access_key or "").encode()).hexdigest()
    return (
        endpoint.endpoint_url,
        endpoint.region,
        endpoint.access_key_id,
        secret,
        endpoint.connect_timeout,
        endpoint.read_timeout,
        endpoint.max_attempts,
    )


def make_client(endpoint: S3Endpoint) -> Any:
    """A boto3 S3 client for this endpoint and credentials, built once and shared (clients are thread-safe;
    building them is not, hence the lock)."""
    global _session  # noqa: PLW0603 - one shared session for the process, created on first use
    key = _client_key(endpoint)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        if _session is None:
            _session = boto3.session.Session()
        client = _session.client(
            "s3",
            endpoint_url=endpoint.endpoint_url,
            region_name=endpoint.region,
            aws_access_key_id=endpoint.access_key_id,
            aws_secret_access_key=endpoint.secret_access_key,
            config=Config(**client_options(endpoint)),
        )
        _clients[key] = client
        while len(_clients) > MAX_CACHED_CLIENTS:
            _clients.popitem(last=False)
        return client


def _client_error(error: Any, bucket: str) -> S3LifecycleError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"{code}: {details.get('Message') or error}"
    if code in NOT_FOUND_CODES:
        return BucketNotFound(f'bucket "{bucket}" does not exist ({message})', code)
    if code in ACCESS_DENIED_CODES:
        return AccessDenied(f'access to bucket "{bucket}" denied ({message})', code)
    if code in INVALID_LIFECYCLE_CODES:
        return InvalidLifecycle(f"the S3 server refused the lifecycle configuration: {message}", code)
    if status >= 500:
        return BucketUnreachable(f'S3 server error for bucket "{bucket}" ({message})', code)
    return S3LifecycleError(f'S3 error for bucket "{bucket}" ({message})', code)


@contextmanager
def translated_errors(bucket: str) -> Iterator[None]:
    from botocore.exceptions import (  # noqa: PLC0415
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError  # noqa: PLC0415

    try:
        yield
    except ClientError as error:
        raise _client_error(error, bucket) from error
    except (BotoConnectionError, HTTPClientError) as error:
        raise BucketUnreachable(f'S3 endpoint for bucket "{bucket}" unreachable: {error}') from error
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise AccessDenied(f'no usable credentials for bucket "{bucket}": {error}') from error
    except BotoCoreError as error:
        raise S3LifecycleError(f'S3 call for bucket "{bucket}" failed: {error}') from error


@dataclass(frozen=True)
class LifecycleSync:
    """The outcome of one reconcile pass over a bucket's lifecycle rules."""

    decision: LifecycleDecision  # never Apply: InSync or UnsupportedByServer (see lifecycle_condition)
    applied: LifecycleStatus | None  # the record to keep for the next pass (logic.lifecycle.APPLIED_FIELDS)
    put: bool  # whether this pass wrote the configuration


class BucketLifecycle:
    """The lifecycle configuration of one bucket. Blocking methods, each with an `*_async` twin."""

    def __init__(self, endpoint: S3Endpoint, client: Any | None = None) -> None:
        self.endpoint = endpoint
        # No network; the first client costs boto3's import and service model (0.3 s), later ones come from
        # the cache (make_client). In async code, use open_async.
        self.client = client if client is not None else make_client(endpoint)

    @classmethod
    async def open_async(cls, endpoint: S3Endpoint) -> BucketLifecycle:
        """The constructor, off the event loop."""
        return await asyncio.to_thread(cls, endpoint)

    @property
    def bucket(self) -> str:
        return self.endpoint.bucket

    def check_bucket(self) -> None:
        """Raise BucketNotFound, AccessDenied or BucketUnreachable unless the bucket is usable."""
        with translated_errors(self.bucket):
            self.client.head_bucket(Bucket=self.bucket)

    def get_rules(self) -> list[S3Rule]:
        """The bucket's rules as boto3 returns them; [] when the bucket has no lifecycle configuration."""
        try:
            with translated_errors(self.bucket):
                response = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except S3LifecycleError as error:
            if error.code == NO_LIFECYCLE_CODE:
                return []
            raise
        return [dict(rule) for rule in response.get("Rules", [])]

    def put_rules(self, rules: Sequence[Mapping[str, Any]]) -> None:
        """Replace the whole configuration; an empty list deletes it (S3 refuses a configuration of no rules)."""
        with translated_errors(self.bucket):
            if rules:
                self.client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": [dict(rule) for rule in rules]}
                )
            else:
                self.client.delete_bucket_lifecycle(Bucket=self.bucket)

    def reconcile(self, desired: Sequence[S3Rule], last_applied: LifecycleStatus | None) -> LifecycleSync:
        """One pass: read the bucket, decide, and only if the decision is Apply, PUT the merged configuration
        and read it back. Validate the spec first (validate_rules): this sends what it is given.

        Raises S3LifecycleError (InvalidLifecycle when the server refuses the rules): the previous record stays
        valid then, since the bucket did not change.
        """
        current = self.get_rules()
        decision = lifecycle_decision(desired, current, last_applied)
        if decision.action != APPLY:
            return LifecycleSync(decision, last_applied, put=False)
        owned = (last_applied.rule_ids or []) if last_applied else []
        self.put_rules(merge_configuration(current, desired, owned))
        readback = self.get_rules()
        applied = record_applied(desired, readback)
        return LifecycleSync(lifecycle_decision(desired, readback, applied), applied, put=True)

    async def reconcile_async(self, desired: Sequence[S3Rule], last_applied: LifecycleStatus | None) -> LifecycleSync:
        return await asyncio.to_thread(self.reconcile, desired, last_applied)

    async def check_bucket_async(self) -> None:
        await asyncio.to_thread(self.check_bucket)

    async def get_rules_async(self) -> list[S3Rule]:
        return await asyncio.to_thread(self.get_rules)
