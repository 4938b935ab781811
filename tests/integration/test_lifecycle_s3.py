"""Bucket lifecycle rules against real S3 servers on 127.0.0.1: moto (AWS's shapes) and MinIO (a real server
that drops what it does not support). The assertions state what each server actually does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import yaml

from mlflow_operator.adapters.s3 import (
    AccessDenied,
    BucketLifecycle,
    BucketNotFound,
    BucketUnreachable,
    InvalidLifecycle,
    S3Endpoint,
)
from mlflow_operator.api.trackingserver import Lifecycle, TrackingServerSpec
from mlflow_operator.logic.lifecycle import (
    IN_SYNC,
    REASON_UNSUPPORTED_BY_SERVER,
    UNSUPPORTED_BY_SERVER,
    S3Rule,
    compare_readback,
    desired_rules,
    validate_rules,
)
from mlflow_operator.logic.lifecycle_safety import layout_refusals
from tests.integration.s3_servers import (
    ROOT,
    S3Server,
    closed_port,
    unique_bucket_name,
)

UNREACHABLE_BOUND = 15.0  # seconds; the adapter's retries and timeouts must give up well before this


class CountingBucket(BucketLifecycle):
    """The adapter, remembering every configuration it PUT: a pass that writes nothing is visible."""

    def __init__(self, endpoint: S3Endpoint) -> None:
        super().__init__(endpoint)
        self.puts: list[list[dict[str, Any]]] = []

    def put_rules(self, rules: Sequence[Mapping[str, Any]]) -> None:
        self.puts.append([dict(rule) for rule in rules])
        super().put_rules(rules)


def bucket_on(server: S3Server, *foreign_rules: Mapping[str, Any]) -> CountingBucket:
    """A new bucket on server, holding `foreign_rules` when given: rules put there behind the operator's back."""
    bucket = CountingBucket(server.endpoint(server.create_bucket()))
    if foreign_rules:
        server.client().put_bucket_lifecycle_configuration(
            Bucket=bucket.bucket, LifecycleConfiguration={"Rules": list(foreign_rules)}
        )
    return bucket


def spec_rules(*rules: dict[str, Any], artifacts_prefix: str = "mlflow") -> list[S3Rule]:
    """Rules as the operator would send them, checked by its own validation first."""
    lifecycle = Lifecycle.model_validate({"rules": list(rules)})
    assert validate_rules(lifecycle.rules) == []
    assert layout_refusals(lifecycle.rules, artifacts_prefix) == []
    return desired_rules(lifecycle)


def example_spec() -> TrackingServerSpec:
    docs = yaml.safe_load_all((ROOT / "examples" / "tracking-server.yaml").read_text())
    return TrackingServerSpec.model_validate(next(d for d in docs if d and d["kind"] == "TrackingServer")["spec"])


def example_rules() -> list[S3Rule]:
    spec = example_spec()
    assert spec.artifacts.lifecycle is not None
    assert validate_rules(spec.artifacts.lifecycle.rules) == []
    assert layout_refusals(spec.artifacts.lifecycle.rules, spec.artifacts.s3.prefix) == []
    return desired_rules(spec.artifacts.lifecycle)


FOREIGN_WITH_ID = {"ID": "team-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}}
FOREIGN_WITHOUT_ID = {"Status": "Enabled", "Filter": {"Prefix": "scratch/"}, "Expiration": {"Days": 1}}
EVERY_FIELD: list[dict[str, Any]] = [
    {"id": "noncurrent", "noncurrentVersionExpiration": {"noncurrentDays": 30, "newerNoncurrentVersions": 3}},
    {"id": "one-tag-disabled", "status": "Disabled", "filter": {"tags": [{"key": "tmp", "value": "yes"}]},
     "noncurrentVersionExpiration": {"noncurrentDays": 9}},
    {"id": "archive-scratch",
     "filter": {"prefix": "mlflow/scratch/", "tags": [{"key": "a", "value": "1"}, {"key": "b"}]},
     "transitions": [{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}],
     "expiration": {"days": 365}},
    {"id": "two-tags", "filter": {"tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
     "noncurrentVersionExpiration": {"noncurrentDays": 5}},
    {"id": "delete-markers", "expiration": {"expiredObjectDeleteMarker": True}},
]  # fmt: skip
EXPIRE_AND_ABORT = {
    "id": "tmp-and-uploads",
    "filter": {"prefix": "mlflow/tmp/"},
    "expiration": {"days": 7},
    "abortIncompleteMultipartUpload": {"daysAfterInitiation": 3},
}


def by_id(rules: Sequence[Mapping[str, Any]]) -> dict[Any, Mapping[str, Any]]:
    return {rule.get("ID"): rule for rule in rules}


# --- moto: AWS's shapes ---------------------------------------------------------------------------------


def test_moto_keeps_the_example_rules_exactly(moto: S3Server) -> None:
    bucket = bucket_on(moto)
    desired = example_rules()
    first = bucket.reconcile(desired, None)
    assert (first.put, first.decision.action) == (True, IN_SYNC), first.decision.message
    assert by_id(bucket.get_rules())["old-versions-and-uploads"] == desired[1]  # moto keeps every field here
    second = bucket.reconcile(desired, first.applied)
    assert (second.put, second.decision.action) == (False, IN_SYNC)
    assert len(bucket.puts) == 1


def test_moto_round_trips_every_field_but_newer_noncurrent_versions(moto: S3Server) -> None:
    bucket = bucket_on(moto, FOREIGN_WITH_ID, FOREIGN_WITHOUT_ID)
    foreign_before = bucket.get_rules()
    assert foreign_before == [FOREIGN_WITH_ID, FOREIGN_WITHOUT_ID]  # moto assigns no id to a rule without one
    desired = example_rules() + spec_rules(*EVERY_FIELD)

    sync = bucket.reconcile(desired, None)

    after = bucket.get_rules()
    assert after[:2] == foreign_before  # foreign rules untouched, still first
    # The one thing moto 5.2.5 does not store: NoncurrentVersionExpiration.NewerNoncurrentVersions.
    assert compare_readback(desired, after).differences() == (
        "noncurrent: dropped NoncurrentVersionExpiration.NewerNoncurrentVersions",
    )
    assert by_id(after)["noncurrent"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    # Everything else comes back in the very shape it was sent (a tag's empty Value aside).
    sent = by_id(desired)
    for rule_id in ("expire-scratch", "old-versions-and-uploads", "one-tag-disabled", "two-tags", "delete-markers"):
        assert by_id(after)[rule_id] == sent[rule_id], rule_id
    assert by_id(after)["archive-scratch"]["Transitions"] == sent["archive-scratch"]["Transitions"]
    assert by_id(after)["archive-scratch"]["Filter"] == {
        "And": {"Prefix": "mlflow/scratch/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b"}]}
    }
    # So the decision reports it once and the next passes write nothing.
    assert sync.put
    assert sync.decision.action == UNSUPPORTED_BY_SERVER
    assert sync.decision.reason == REASON_UNSUPPORTED_BY_SERVER
    assert sync.decision.unsupported_fields == ("NoncurrentVersionExpiration.NewerNoncurrentVersions",)
    for _pass in range(2):
        again = bucket.reconcile(desired, sync.applied)
        assert (again.put, again.decision.action) == (False, UNSUPPORTED_BY_SERVER)
    assert len(bucket.puts) == 1


def test_moto_removing_a_rule_from_the_spec_removes_only_it(moto: S3Server) -> None:
    bucket = bucket_on(moto, FOREIGN_WITH_ID)
    both = example_rules()
    applied = bucket.reconcile(both, None).applied
    assert applied is not None and applied.rule_ids == ["expire-scratch", "old-versions-and-uploads"]

    only_old_versions = [rule for rule in both if rule["ID"] == "old-versions-and-uploads"]
    sync = bucket.reconcile(only_old_versions, applied)

    assert sync.put and sync.decision.action == IN_SYNC
    assert bucket.get_rules() == [FOREIGN_WITH_ID, *only_old_versions]
    # An empty spec removes the operator's rules and leaves the foreign one.
    assert bucket.reconcile([], sync.applied).put
    assert bucket.get_rules() == [FOREIGN_WITH_ID]


def test_moto_last_owned_rule_removed_deletes_the_configuration(moto: S3Server) -> None:
    bucket = bucket_on(moto)
    applied = bucket.reconcile(example_rules(), None).applied
    sync = bucket.reconcile([], applied)
    assert (sync.put, sync.decision.action) == (True, IN_SYNC)
    assert bucket.puts[-1] == []  # S3 refuses an empty configuration: put_rules deleted it instead
    assert bucket.get_rules() == []  # NoSuchLifecycleConfiguration reads as no rules
    assert sync.applied is not None and sync.applied.rule_ids == []  # nothing owned any more


def test_async_wrappers_do_the_same_work_off_the_event_loop(moto: S3Server) -> None:
    endpoint = moto.endpoint(moto.create_bucket())

    async def one_pass() -> tuple[str, list[S3Rule]]:
        bucket = await BucketLifecycle.open_async(endpoint)
        await bucket.check_bucket_async()
        sync = await bucket.reconcile_async(example_rules(), None)
        return sync.decision.action, await bucket.get_rules_async()

    action, rules = asyncio.run(one_pass())
    assert action == IN_SYNC
    assert rules == example_rules()


# --- MinIO: a real server that drops a field ------------------------------------------------------------


def test_minio_drops_abort_incomplete_multipart_upload_and_is_not_reapplied(minio: S3Server) -> None:
    bucket = bucket_on(minio)
    desired = spec_rules(EXPIRE_AND_ABORT)

    first = bucket.reconcile(desired, None)

    returned = by_id(bucket.get_rules())["tmp-and-uploads"]
    assert "AbortIncompleteMultipartUpload" not in returned  # accepted, then silently dropped
    assert returned["Expiration"] == {"Days": 7}
    assert first.put
    assert first.decision.action == UNSUPPORTED_BY_SERVER
    assert first.decision.reason == "LifecycleUnsupportedByServer"
    assert first.decision.unsupported_fields == ("AbortIncompleteMultipartUpload",)
    assert "AbortIncompleteMultipartUpload" in first.decision.message
    for _pass in range(2):
        again = bucket.reconcile(desired, first.applied)
        assert (again.put, again.decision.action) == (False, UNSUPPORTED_BY_SERVER)
    assert len(bucket.puts) == 1


def test_minio_refuses_a_rule_whose_only_action_is_abort(minio: S3Server) -> None:
    bucket = bucket_on(minio)
    abort_only = spec_rules({"id": "abort-multipart", "abortIncompleteMultipartUpload": {"daysAfterInitiation": 3}})
    with pytest.raises(InvalidLifecycle) as refused:
        bucket.reconcile(abort_only, None)
    assert refused.value.reason == "InvalidLifecycle"
    assert refused.value.code == "InvalidArgument"  # MinIO's code; AWS says MalformedXML for malformed XML
    assert "not well-formed" in refused.value.message  # the server's own message is carried
    assert bucket.get_rules() == []  # nothing was stored


def test_minio_assigns_ids_to_foreign_rules_and_they_survive(minio: S3Server) -> None:
    bucket = bucket_on(minio, FOREIGN_WITHOUT_ID)
    (foreign,) = bucket.get_rules()
    assert foreign["ID"]  # an id nobody sent
    assert {k: v for k, v in foreign.items() if k != "ID"} == FOREIGN_WITHOUT_ID
    desired = spec_rules(
        {"id": "expire-tmp", "filter": {"prefix": "mlflow/tmp/"}, "expiration": {"days": 7}}, *EVERY_FIELD[:2]
    )

    sync = bucket.reconcile(desired, None)

    assert sync.decision.action == IN_SYNC, sync.decision.message  # MinIO keeps NewerNoncurrentVersions
    assert bucket.get_rules()[0] == foreign
    removed = bucket.reconcile(desired[1:], sync.applied)
    assert removed.put and removed.decision.action == IN_SYNC
    assert bucket.get_rules()[0] == foreign
    assert [rule["ID"] for rule in bucket.get_rules()] == [foreign["ID"], "noncurrent", "one-tag-disabled"]


def test_minio_wrong_credentials_are_access_denied(minio: S3Server) -> None:
    bucket = minio.create_bucket()
    endpoint = S3Endpoint(bucket, endpoint_url=minio.endpoint_url, access_key_id=minio.access_key_id,
                          secret_access_key="not-the-password")  # fmt: skip
    with pytest.raises(AccessDenied) as denied:
        BucketLifecycle(endpoint).get_rules()
    assert denied.value.reason == "AccessDenied"
    assert denied.value.code == "SignatureDoesNotMatch"


# --- errors ---------------------------------------------------------------------------------------------


def raises_bucket_not_found(call: Callable[[], object], bucket: str) -> None:
    with pytest.raises(BucketNotFound) as missing:
        call()
    assert missing.value.reason == "BucketNotFound"
    assert bucket in missing.value.message


@pytest.mark.parametrize("server_name", ["moto", "minio"])
def test_missing_bucket_is_bucket_not_found(server_name: str, request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue(server_name)
    bucket = BucketLifecycle(server.endpoint(unique_bucket_name("missing")))
    raises_bucket_not_found(bucket.check_bucket, bucket.bucket)
    raises_bucket_not_found(bucket.get_rules, bucket.bucket)
    # A pass reads before it writes, so it stops at the missing bucket on every server.
    raises_bucket_not_found(lambda: bucket.reconcile(example_rules(), None), bucket.bucket)


def test_moto_refuses_a_put_on_a_missing_bucket(moto: S3Server) -> None:
    bucket = BucketLifecycle(moto.endpoint(unique_bucket_name("missing")))
    raises_bucket_not_found(lambda: bucket.put_rules(example_rules()), bucket.bucket)


def test_minio_accepts_a_put_on_a_missing_bucket_and_stores_nothing(minio: S3Server) -> None:
    # Observed with the pinned MinIO: PutBucketLifecycleConfiguration answers 200 for a bucket that does not
    # exist. Only the read-back (which reconcile does first anyway) tells.
    bucket = BucketLifecycle(minio.endpoint(unique_bucket_name("missing")))
    bucket.put_rules(example_rules()[:1])
    raises_bucket_not_found(bucket.get_rules, bucket.bucket)


def unreachable_calls(bucket: BucketLifecycle) -> list[Callable[[], object]]:
    return [
        bucket.check_bucket,
        bucket.get_rules,
        lambda: bucket.put_rules(example_rules()),
        lambda: asyncio.run(bucket.get_rules_async()),
    ]


def test_closed_port_is_bucket_unreachable_within_bounded_time() -> None:
    endpoint = S3Endpoint("bucket-1", endpoint_url=f"http://127.0.0.1:{closed_port()}", access_key_id="a",
                          secret_access_key="b")  # fmt: skip
    bucket = BucketLifecycle(endpoint)
    for call in unreachable_calls(bucket):
        started = time.monotonic()
        with pytest.raises(BucketUnreachable) as unreachable:
            call()
        assert time.monotonic() - started < UNREACHABLE_BOUND
        assert unreachable.value.reason == "BucketUnreachable"


def test_silent_server_is_bucket_unreachable_after_the_read_timeout() -> None:
    # A socket that accepts connections (the kernel's backlog) but never answers: only the read timeout
    # and the bounded retries end the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        endpoint = S3Endpoint("bucket-1", endpoint_url=f"http://127.0.0.1:{port}", access_key_id="a",
                              secret_access_key="b", read_timeout=1.0, max_attempts=2)  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BucketUnreachable) as unreachable:
            BucketLifecycle(endpoint).get_rules()
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < UNREACHABLE_BOUND
    assert "timeout" in unreachable.value.message.lower()
