"""Bucket lifecycle rules: spec -> S3 shape, validation, merging with foreign rules, read-back, decision."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_operator.api.trackingserver import (
    Lifecycle,
    LifecycleRule,
    LifecycleStatus,
    TrackingServerSpec,
)
from mlflow_operator.logic import lifecycle as lc
from mlflow_operator.logic.lifecycle import (
    APPLY,
    IN_SYNC,
    UNSUPPORTED_BY_SERVER,
    applied_record,
    applied_status,
    compare_readback,
    desired_rules,
    lifecycle_decision,
    merge_configuration,
    record_applied,
    to_s3_rule,
    validate_rules,
)

ROOT = Path(__file__).resolve().parents[2]


def rule(**fields: Any) -> LifecycleRule:
    """A rule from its wire (camelCase) form, as the operator reads it from the cluster."""
    return LifecycleRule.model_validate({"id": "r", **fields})


def rules(*specs: dict[str, Any]) -> list[LifecycleRule]:
    return [LifecycleRule.model_validate(spec) for spec in specs]


EXPIRE_TMP = {"id": "expire-tmp", "filter": {"prefix": "mlflow/tmp/"}, "expiration": {"days": 7}}
ABORT = {"id": "abort-multipart", "abortIncompleteMultipartUpload": {"daysAfterInitiation": 3}}
MINIO_STYLE = {
    "id": "tmp-and-uploads",
    "filter": {"prefix": "mlflow/tmp/"},
    "expiration": {"days": 7},
    "abortIncompleteMultipartUpload": {"daysAfterInitiation": 3},
}


# --- spec -> S3 rule dicts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (None, {"Prefix": ""}),
        ({}, {"Prefix": ""}),
        ({"prefix": ""}, {"Prefix": ""}),
        ({"prefix": "mlflow/tmp/"}, {"Prefix": "mlflow/tmp/"}),
        ({"tags": []}, {"Prefix": ""}),
        ({"tags": [{"key": "k", "value": "v"}]}, {"Tag": {"Key": "k", "Value": "v"}}),
        ({"prefix": "", "tags": [{"key": "k"}]}, {"Tag": {"Key": "k", "Value": ""}}),
        (
            {"prefix": "p/", "tags": [{"key": "k", "value": "v"}]},
            {"And": {"Prefix": "p/", "Tags": [{"Key": "k", "Value": "v"}]}},
        ),
        (
            {"tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
            {"And": {"Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}},
        ),
        (
            {"prefix": "p/", "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
            {"And": {"Prefix": "p/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}},
        ),
    ],
    ids=["none", "empty", "empty-prefix", "prefix", "no-tags", "one-tag", "one-tag-empty-prefix", "prefix+tag",
         "two-tags", "prefix+two-tags"],
)  # fmt: skip
def test_filter_shapes(filter_: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    spec = {"expiration": {"days": 1}} | ({"filter": filter_} if filter_ is not None else {})
    assert to_s3_rule(rule(**spec))["Filter"] == expected


def test_every_field_of_a_full_rule() -> None:
    full = rule(
        id="full",
        status="Disabled",
        filter={"prefix": "mlflow/tmp/"},
        expiration={"days": 400},
        noncurrentVersionExpiration={"noncurrentDays": 30, "newerNoncurrentVersions": 3},
        abortIncompleteMultipartUpload={"daysAfterInitiation": 2},
        transitions=[{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}],
    )
    assert to_s3_rule(full) == {
        "ID": "full",
        "Status": "Disabled",
        "Filter": {"Prefix": "mlflow/tmp/"},
        "Expiration": {"Days": 400},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
        "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER"}],
    }


def test_minimal_rule_has_only_id_status_filter_and_its_action() -> None:
    assert to_s3_rule(rule(id="a", abortIncompleteMultipartUpload={"daysAfterInitiation": 3})) == {
        "ID": "a",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
    }


@pytest.mark.parametrize(
    ("expiration", "expected"),
    [
        ({"days": 7}, {"Days": 7}),
        ({"expiredObjectDeleteMarker": True}, {"ExpiredObjectDeleteMarker": True}),
        ({"expiredObjectDeleteMarker": False}, {"ExpiredObjectDeleteMarker": False}),
    ],
)
def test_expiration_shapes(expiration: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_s3_rule(rule(expiration=expiration))["Expiration"] == expected


def test_noncurrent_expiration_without_newer_versions_leaves_the_key_out() -> None:
    s3_rule = to_s3_rule(rule(noncurrentVersionExpiration={"noncurrentDays": 14}))
    assert s3_rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 14}


def test_empty_transitions_are_left_out() -> None:
    assert "Transitions" not in to_s3_rule(rule(expiration={"days": 3}, transitions=[]))


def test_desired_rules_keep_spec_order_and_none_is_no_rules() -> None:
    lifecycle = Lifecycle.model_validate({"rules": [ABORT, EXPIRE_TMP]})
    assert [r["ID"] for r in desired_rules(lifecycle)] == ["abort-multipart", "expire-tmp"]
    assert desired_rules(None) == []
    assert desired_rules(Lifecycle()) == []


def test_example_tracking_server_rules() -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "tracking-server.yaml").read_text()))
    spec = TrackingServerSpec.model_validate(next(d for d in docs if d["kind"] == "TrackingServer")["spec"])
    assert desired_rules(spec.artifacts.lifecycle) == [
        {
            "ID": "expire-scratch",
            "Status": "Enabled",
            "Filter": {"Prefix": "mlflow/scratch/"},
            "Expiration": {"Days": 14},
        },
        {
            "ID": "old-versions-and-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
        },
    ]
    assert validate_rules(spec.artifacts.lifecycle.rules) == []  # type: ignore[union-attr]


# --- validation -----------------------------------------------------------------------------------------


def only_problem(specs: list[dict[str, Any]]) -> str:
    problems = validate_rules(rules(*specs))
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    ("transitions", "expiration", "expected"),
    [
        (
            [{"days": 60, "storageClass": "GLACIER_IR"}, {"days": 60, "storageClass": "STANDARD_IA"}],
            None,
            "spec.artifacts.lifecycle.rules[0].transitions[1].days: transitions must be in strictly increasing days "
            "(60 is not after transitions[0].days=60)",
        ),
        (
            [{"days": 90, "storageClass": "GLACIER_IR"}, {"days": 30, "storageClass": "STANDARD_IA"}],
            None,
            "spec.artifacts.lifecycle.rules[0].transitions[1].days: transitions must be in strictly increasing days "
            "(30 is not after transitions[0].days=90)",
        ),
        (
            [{"days": 30, "storageClass": "GLACIER_IR"}, {"days": 60, "storageClass": "GLACIER_IR"}],
            None,
            "spec.artifacts.lifecycle.rules[0].transitions[1].storageClass: GLACIER_IR is already the target of "
            "transitions[0]; each storage class can appear once",
        ),
        (
            [{"days": 29, "storageClass": "STANDARD_IA"}],
            None,
            "spec.artifacts.lifecycle.rules[0].transitions[0].days: S3 requires at least 30 days before a "
            "transition to STANDARD_IA, got 29",
        ),
        (
            [{"days": 0, "storageClass": "ONEZONE_IA"}],
            None,
            "spec.artifacts.lifecycle.rules[0].transitions[0].days: S3 requires at least 30 days before a "
            "transition to ONEZONE_IA, got 0",
        ),
        (
            [{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}],
            {"days": 90},
            "spec.artifacts.lifecycle.rules[0].expiration.days: must be greater than every transition's days "
            "(90 <= 90)",
        ),
    ],
    ids=["equal-days", "decreasing-days", "repeated-class", "standard-ia-29", "onezone-ia-0", "expire-at-transition"],
)
def test_transition_rules(transitions: list[dict[str, Any]], expiration: dict[str, Any] | None, expected: str) -> None:
    spec: dict[str, Any] = {"id": "t", "filter": {"prefix": "mlflow/tmp/"}, "transitions": transitions}
    if expiration:
        spec["expiration"] = expiration
    assert only_problem([spec]) == expected


def test_valid_transition_chain_with_later_expiration() -> None:
    spec = {
        "id": "t",
        "filter": {"prefix": "mlflow/tmp/"},
        "transitions": [{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}],
        "expiration": {"days": 91},
    }
    assert validate_rules(rules(spec)) == []


def test_duplicate_ids_name_both_rules() -> None:
    problems = validate_rules(rules(EXPIRE_TMP, ABORT, {**ABORT, "id": "expire-tmp"}))
    assert problems == ['spec.artifacts.lifecycle.rules[2].id: duplicate rule id "expire-tmp" (also rules[0])']


def test_rule_without_action() -> None:
    assert only_problem([{"id": "nothing", "filter": {"prefix": "mlflow/tmp/"}}]) == (
        "spec.artifacts.lifecycle.rules[0]: a lifecycle rule needs at least one action: expiration, "
        "noncurrentVersionExpiration, abortIncompleteMultipartUpload or transitions"
    )
    assert "at least one action" in only_problem([{"id": "empty-transitions", "transitions": []}])


def test_duplicate_tag_keys() -> None:
    tags = [{"key": "a", "value": "1"}, {"key": "b"}, {"key": "a", "value": "2"}]
    spec = {"id": "x", "filter": {"tags": tags}, "noncurrentVersionExpiration": {"noncurrentDays": 1}}
    assert only_problem([spec]) == 'spec.artifacts.lifecycle.rules[0].filter.tags[2].key: duplicate tag key "a"'


def test_tags_cannot_go_with_delete_markers_or_multipart_aborts() -> None:
    tags = {"tags": [{"key": "a"}]}
    delete_markers = {"id": "dm", "filter": tags, "expiration": {"expiredObjectDeleteMarker": True}}
    abort = {"id": "ab", "filter": tags, "abortIncompleteMultipartUpload": {"daysAfterInitiation": 1}}
    assert validate_rules(rules(delete_markers, abort)) == [
        "spec.artifacts.lifecycle.rules[0].expiration.expiredObjectDeleteMarker: cannot be combined with filter.tags",
        "spec.artifacts.lifecycle.rules[1].abortIncompleteMultipartUpload: cannot be combined with filter.tags",
    ]


def test_problems_of_several_rules_are_all_reported_with_their_index() -> None:
    problems = validate_rules(
        rules(
            EXPIRE_TMP,
            {"id": "bad-ia", "filter": {"prefix": "mlflow/tmp/"},
             "transitions": [{"days": 1, "storageClass": "STANDARD_IA"}]},
            {"id": "kills-models", "expiration": {"days": 30},
             "transitions": [{"days": 60, "storageClass": "DEEP_ARCHIVE"}]},
        ),
    )  # fmt: skip
    assert [p.split(":")[0] for p in problems] == [
        "spec.artifacts.lifecycle.rules[1].transitions[0].days",
        "spec.artifacts.lifecycle.rules[2].expiration.days",
    ]


# --- merge ----------------------------------------------------------------------------------------------

FOREIGN = {"ID": "team-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}}
FOREIGN_SERVER_ID = {"ID": "d1b0c3s4e5rv", "Status": "Enabled", "Filter": {"Prefix": "x/"}, "Expiration": {"Days": 1}}
FOREIGN_NO_ID = {"Status": "Enabled", "Filter": {"Prefix": "y/"}, "Expiration": {"Days": 2}}


def s3(spec: dict[str, Any]) -> dict[str, Any]:
    return to_s3_rule(LifecycleRule.model_validate(spec))


def test_merge_keeps_foreign_rules_first_and_desired_in_spec_order() -> None:
    existing = [FOREIGN, s3(EXPIRE_TMP), FOREIGN_SERVER_ID, FOREIGN_NO_ID]
    desired = [s3(ABORT), s3({**EXPIRE_TMP, "expiration": {"days": 9}})]
    merged = merge_configuration(existing, desired, owned_ids=["expire-tmp"])
    assert merged == [FOREIGN, FOREIGN_SERVER_ID, FOREIGN_NO_ID, *desired]


def test_merge_removes_previously_owned_rules_that_left_the_spec() -> None:
    existing = [s3(EXPIRE_TMP), FOREIGN, s3(ABORT)]
    merged = merge_configuration(existing, [s3(ABORT)], owned_ids=["expire-tmp", "abort-multipart"])
    assert merged == [FOREIGN, s3(ABORT)]


def test_merge_with_nothing_desired_removes_only_owned_rules() -> None:
    existing = [s3(EXPIRE_TMP), FOREIGN]
    assert merge_configuration(existing, [], owned_ids=["expire-tmp"]) == [FOREIGN]
    assert merge_configuration([s3(EXPIRE_TMP)], [], owned_ids=["expire-tmp"]) == []


def test_merge_takes_over_a_foreign_rule_with_a_desired_id() -> None:
    hand_made = {**FOREIGN, "ID": "expire-tmp"}
    assert merge_configuration([hand_made], [s3(EXPIRE_TMP)], owned_ids=[]) == [s3(EXPIRE_TMP)]


def test_merge_does_not_mutate_its_inputs_or_share_dicts() -> None:
    existing, desired = [copy.deepcopy(FOREIGN)], [s3(EXPIRE_TMP)]
    before = copy.deepcopy((existing, desired))
    merged = merge_configuration(existing, desired, owned_ids=[])
    merged[0]["Status"] = "Disabled"
    merged[1]["Status"] = "Disabled"
    assert (existing, desired) == before


rule_ids = st.text(alphabet="abcxyz-", min_size=1, max_size=4)
s3_rules = st.builds(
    lambda rule_id, days: (
        ({"ID": rule_id} if rule_id is not None else {})
        | {"Status": "Enabled", "Filter": {"Prefix": "p/"}, "Expiration": {"Days": days}}
    ),
    st.none() | rule_ids,
    st.integers(1, 100),
)


@settings(max_examples=300)
@given(
    existing=st.lists(s3_rules, max_size=8),
    desired_ids=st.lists(rule_ids, max_size=5, unique=True),
    owned=st.sets(rule_ids, max_size=5),
)
def test_merge_never_loses_a_foreign_rule(
    existing: list[dict[str, Any]], desired_ids: list[str], owned: set[str]
) -> None:
    desired = [{"ID": i, "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}} for i in desired_ids]
    merged = merge_configuration(existing, desired, owned)
    managed = set(desired_ids) | owned
    foreign = [r for r in existing if r.get("ID") not in managed]
    assert merged[: len(foreign)] == foreign  # every foreign rule, unchanged, in its order
    assert merged[len(foreign) :] == desired  # then exactly the desired rules, in spec order
    assert not any(r.get("ID") in owned - set(desired_ids) for r in merged)


# --- read-back comparison --------------------------------------------------------------------------------


def test_exact_readback_is_in_sync_and_foreign_rules_are_ignored() -> None:
    desired = [s3(EXPIRE_TMP), s3(ABORT)]
    readback = compare_readback(desired, [FOREIGN_SERVER_ID, *copy.deepcopy(desired), FOREIGN_NO_ID])
    assert readback.in_sync
    assert readback.differences() == ()
    assert [r.id for r in readback.rules] == ["expire-tmp", "abort-multipart"]


def test_minio_drops_abort_incomplete_multipart_upload() -> None:
    desired = [s3(MINIO_STYLE)]
    returned = {k: v for k, v in desired[0].items() if k != "AbortIncompleteMultipartUpload"}
    readback = compare_readback(desired, [returned])
    assert not readback.in_sync
    assert readback.rules[0].present
    assert readback.dropped_fields == ("AbortIncompleteMultipartUpload",)
    assert readback.changed_fields == ()
    assert readback.differences() == ("tmp-and-uploads: dropped AbortIncompleteMultipartUpload",)


def test_a_dropped_sub_field_is_named_by_its_path() -> None:
    desired = [s3({"id": "nv", "noncurrentVersionExpiration": {"noncurrentDays": 30, "newerNoncurrentVersions": 3}})]
    returned = {**desired[0], "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}
    assert compare_readback(desired, [returned]).dropped_fields == (
        "NoncurrentVersionExpiration.NewerNoncurrentVersions",
    )


def reshaped(sent: dict[str, Any], drop: tuple[str, ...] = (), **replace: Any) -> dict[str, Any]:
    return {k: v for k, v in sent.items() if k not in drop} | replace


NO_FILTER = s3({"id": "a", "noncurrentVersionExpiration": {"noncurrentDays": 1}})
PREFIXED = s3({"id": "a", "expiration": {"days": 1}, "filter": {"prefix": "mlflow/x/"}})
ONE_TAG = s3({"id": "a", "expiration": {"days": 1}, "filter": {"tags": [{"key": "k", "value": "v"}]}})
ONE_BARE_TAG = s3({"id": "a", "expiration": {"days": 1}, "filter": {"tags": [{"key": "k"}]}})
TWO_TAGS = s3({"id": "a", "expiration": {"days": 1}, "filter": {"tags": [{"key": "k"}, {"key": "j", "value": "2"}]}})
TRANSITIONS = s3(
    {
        "id": "a",
        "filter": {"prefix": "mlflow/tmp/"},
        "expiration": {"days": 365},
        "transitions": [{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}],
    }
)
NO_OP_EXPIRATION = s3(
    {
        "id": "a",
        "filter": {"prefix": "mlflow/tmp/"},
        "expiration": {"expiredObjectDeleteMarker": False},
        "noncurrentVersionExpiration": {"noncurrentDays": 1},
    }
)

EQUIVALENT_SHAPES = [
    # (what the operator sends, what a server may return instead)
    (NO_FILTER, reshaped(NO_FILTER, drop=("Filter",))),
    (NO_FILTER, reshaped(NO_FILTER, Filter={})),
    (NO_FILTER, reshaped(NO_FILTER, drop=("Filter",), Prefix="")),
    (PREFIXED, reshaped(PREFIXED, drop=("Filter",), Prefix="mlflow/x/")),
    (ONE_TAG, reshaped(ONE_TAG, Filter={"And": {"Prefix": "", "Tags": [{"Key": "k", "Value": "v"}]}})),
    (ONE_BARE_TAG, reshaped(ONE_BARE_TAG, Filter={"Tag": {"Key": "k"}})),
    (TWO_TAGS, reshaped(TWO_TAGS, Filter={"And": {"Tags": [{"Key": "j", "Value": "2"}, {"Key": "k"}]}})),
    (TRANSITIONS, reshaped(TRANSITIONS, Transitions=[{"StorageClass": "GLACIER", "Days": 90},
                                                     {"StorageClass": "STANDARD_IA", "Days": 30}])),
    (NO_OP_EXPIRATION, reshaped(NO_OP_EXPIRATION, drop=("Expiration",))),
]  # fmt: skip
SHAPE_IDS = ["no-filter", "empty-filter", "legacy-empty-prefix", "legacy-prefix", "tag-as-and", "tag-without-value",
             "tags-reordered", "transitions-reordered", "no-op-expiration"]  # fmt: skip


@pytest.mark.parametrize(("sent", "returned"), EQUIVALENT_SHAPES, ids=SHAPE_IDS)
def test_equivalent_shapes_are_in_sync(sent: dict[str, Any], returned: dict[str, Any]) -> None:
    readback = compare_readback([sent], [returned])
    assert readback.in_sync, readback


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Expiration": {"Days": 8}}, ("Expiration.Days",)),
        ({"Status": "Disabled"}, ("Status",)),
        ({"Filter": {"Prefix": "mlflow/"}}, ("Filter.Prefix",)),
        ({"Filter": {"And": {"Prefix": "mlflow/tmp/", "Tags": [{"Key": "k", "Value": "v"}]}}}, ("Filter.Tags",)),
        ({"Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}, ("Transitions",)),
        ({"NoncurrentVersionExpiration": {"NoncurrentDays": 5}}, ("NoncurrentVersionExpiration.NoncurrentDays",)),
    ],
    ids=["days", "status", "prefix", "tags-added", "action-added", "other-action-added"],
)
def test_changed_or_added_fields_are_changes(change: dict[str, Any], expected: tuple[str, ...]) -> None:
    desired = [s3(EXPIRE_TMP)]
    readback = compare_readback(desired, [desired[0] | change])
    assert readback.changed_fields == expected
    assert readback.dropped_fields == ()
    assert not readback.in_sync


def test_missing_rule() -> None:
    readback = compare_readback([s3(EXPIRE_TMP), s3(ABORT)], [s3(ABORT), FOREIGN])
    assert readback.missing_ids == ("expire-tmp",)
    assert readback.differences() == ("expire-tmp: missing",)


def test_server_assigned_id_on_a_foreign_rule_does_not_matter() -> None:
    # The bucket had a rule without an id; MinIO returns it with one the operator never sent.
    desired = [s3(EXPIRE_TMP)]
    assert compare_readback(desired, [{**FOREIGN_NO_ID, "ID": "cv9kq2lnh1s0"}, s3(EXPIRE_TMP)]).in_sync


# Typed spec rules, for the round-trip properties. Built from wire dicts: st.builds on the models would also
# fill the camelCase aliases of their signatures.
def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


tag_dicts = st.lists(
    st.fixed_dictionaries({"key": st.text(alphabet="abk-_.", min_size=1, max_size=6)},
                          optional={"value": st.text(alphabet="xyz", max_size=3)}),
    max_size=3,
    unique_by=lambda t: t["key"],
)  # fmt: skip
filter_dicts = st.builds(without_none, prefix=optional(st.text(alphabet="mlflow/tmp5", max_size=10)),
                         tags=optional(tag_dicts))  # fmt: skip
expiration_dicts = st.one_of(
    st.builds(lambda days: {"days": days}, st.integers(1, 36500)),
    st.builds(lambda marker: {"expiredObjectDeleteMarker": marker}, st.booleans()),
)
noncurrent_dicts = st.builds(
    without_none, noncurrentDays=st.integers(1, 36500), newerNoncurrentVersions=optional(st.integers(1, 100))
)
transition_dicts = st.lists(
    st.fixed_dictionaries(
        {
            "days": st.integers(0, 36500),
            "storageClass": st.sampled_from(
                ["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR"]
            ),
        }
    ),
    max_size=3,
    unique_by=lambda t: t["storageClass"],
)
typed_rules = st.builds(
    without_none,
    id=st.text(alphabet="abc-1", min_size=1, max_size=8),
    status=st.sampled_from(["Enabled", "Disabled"]),
    filter=optional(filter_dicts),
    expiration=optional(expiration_dicts),
    noncurrentVersionExpiration=optional(noncurrent_dicts),
    abortIncompleteMultipartUpload=optional(st.builds(lambda d: {"daysAfterInitiation": d}, st.integers(1, 36500))),
    transitions=optional(transition_dicts),
).map(LifecycleRule.model_validate)


def as_a_server_might_return(sent: dict[str, Any]) -> dict[str, Any]:
    """The same rule in the other legal shapes: Filter.And for one tag, reversed lists, no empty filter."""
    returned = copy.deepcopy(sent)
    filter_ = returned["Filter"]
    if "Tag" in filter_:
        returned["Filter"] = {"And": {"Tags": [filter_["Tag"]]}}
    elif "And" in filter_:
        filter_["And"]["Tags"].reverse()
    elif filter_ == {"Prefix": ""}:
        del returned["Filter"]
    if "Transitions" in returned:
        returned["Transitions"].reverse()
    return returned


@settings(max_examples=300)
@given(typed=st.lists(typed_rules, max_size=4, unique_by=lambda r: r.id))
def test_to_s3_rule_round_trips_as_in_sync(typed: list[LifecycleRule]) -> None:
    desired = [to_s3_rule(r) for r in typed]
    # Through JSON, as over the wire: nothing of the comparison may depend on object identity.
    assert compare_readback(desired, json.loads(json.dumps(desired))).in_sync
    assert compare_readback(desired, [as_a_server_might_return(r) for r in reversed(desired)]).in_sync


# --- the decision ---------------------------------------------------------------------------------------


def test_nothing_desired_and_never_applied_is_in_sync() -> None:
    decision = lifecycle_decision([], [FOREIGN], last_applied=None)
    assert decision.action == IN_SYNC


def test_missing_rules_are_applied() -> None:
    decision = lifecycle_decision([s3(EXPIRE_TMP)], [FOREIGN], last_applied=None)
    assert decision.action == APPLY
    assert decision.reason == lc.REASON_DRIFT
    assert "expire-tmp: missing" in decision.message


def test_exact_apply_is_in_sync_afterwards() -> None:
    desired = [s3(EXPIRE_TMP)]
    bucket = merge_configuration([FOREIGN], desired, owned_ids=[])
    applied = record_applied(desired, bucket)
    assert applied == LifecycleStatus(fingerprint=lc.fingerprint(desired), rule_ids=["expire-tmp"], not_kept=[])
    decision = lifecycle_decision(desired, bucket, applied)
    assert (decision.action, decision.reason) == (IN_SYNC, lc.REASON_APPLIED)


def minio_bucket(rules_sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "AbortIncompleteMultipartUpload"} for r in rules_sent]


def test_server_that_drops_a_field_is_reported_and_not_reapplied() -> None:
    desired = [s3(MINIO_STYLE)]
    before_apply = lifecycle_decision(desired, [], last_applied=None)
    assert before_apply.action == APPLY
    bucket = minio_bucket(merge_configuration([], desired, owned_ids=[]))
    applied = record_applied(desired, bucket)
    assert applied.not_kept == ["tmp-and-uploads: dropped AbortIncompleteMultipartUpload"]
    for _pass in range(3):  # every later pass with the same bucket: stable, no PUT
        decision = lifecycle_decision(desired, bucket, applied)
        assert decision.action == UNSUPPORTED_BY_SERVER
        assert decision.reason == lc.REASON_UNSUPPORTED_BY_SERVER == "LifecycleUnsupportedByServer"
        assert decision.unsupported_fields == ("AbortIncompleteMultipartUpload",)
        assert "AbortIncompleteMultipartUpload" in decision.message


def test_unsupported_state_still_catches_drift() -> None:
    desired = [s3(MINIO_STYLE)]
    bucket = minio_bucket(desired)
    applied = record_applied(desired, bucket)
    # Someone edits the rule on the bucket: a new difference, so it is re-applied.
    edited = [{**bucket[0], "Expiration": {"Days": 1}}]
    assert lifecycle_decision(desired, edited, applied).action == APPLY
    # Someone deletes it.
    assert lifecycle_decision(desired, [], applied).action == APPLY
    # The spec changes: what the server did with the old rules says nothing about the new ones.
    changed_spec = [s3({**MINIO_STYLE, "expiration": {"days": 8}})]
    assert lifecycle_decision(changed_spec, bucket, applied).action == APPLY


def test_a_spec_change_in_a_dropped_field_is_applied_once_more() -> None:
    # The bucket differs from the new spec exactly as it did from the old one, but the old observation was
    # about other rules: apply (the server may have been upgraded), then the new record settles it.
    desired = [s3(MINIO_STYLE)]
    applied = record_applied(desired, minio_bucket(desired))
    new_desired = [s3({**MINIO_STYLE, "abortIncompleteMultipartUpload": {"daysAfterInitiation": 5}})]
    assert lifecycle_decision(new_desired, minio_bucket(desired), applied).action == APPLY
    reapplied = record_applied(new_desired, minio_bucket(new_desired))
    assert lifecycle_decision(new_desired, minio_bucket(new_desired), reapplied).action == UNSUPPORTED_BY_SERVER


def test_a_difference_never_seen_after_our_apply_is_drift() -> None:
    desired = [s3(MINIO_STYLE)]
    exact_apply = record_applied(desired, desired)
    assert lifecycle_decision(desired, minio_bucket(desired), exact_apply).action == APPLY


def test_rules_removed_from_the_spec_are_removed_from_the_bucket() -> None:
    old_desired = [s3(EXPIRE_TMP), s3(ABORT)]
    bucket = merge_configuration([FOREIGN], old_desired, owned_ids=[])
    applied = record_applied(old_desired, bucket)
    new_desired = [s3(ABORT)]
    decision = lifecycle_decision(new_desired, bucket, applied)
    assert decision.action == APPLY
    assert "expire-tmp" in decision.message
    bucket = merge_configuration(bucket, new_desired, applied.rule_ids or [])
    assert bucket == [FOREIGN, s3(ABORT)]
    assert lifecycle_decision(new_desired, bucket, record_applied(new_desired, bucket)).action == IN_SYNC


drop_choices = st.sampled_from(["AbortIncompleteMultipartUpload", "NoncurrentVersionExpiration", "Transitions"])


@settings(max_examples=200)
@given(typed=st.lists(typed_rules, min_size=1, max_size=3, unique_by=lambda r: r.id), dropped=st.sets(drop_choices))
def test_after_an_apply_the_same_readback_never_asks_for_another_apply(
    typed: list[LifecycleRule], dropped: set[str]
) -> None:
    desired = [to_s3_rule(r) for r in typed]
    bucket = [{k: v for k, v in r.items() if k not in dropped} for r in desired]
    applied = record_applied(desired, bucket)
    assert lifecycle_decision(desired, bucket, applied).action in (IN_SYNC, UNSUPPORTED_BY_SERVER)


def test_applied_record_survives_json_and_the_status_schema() -> None:
    applied = record_applied([s3(MINIO_STYLE)], minio_bucket([s3(MINIO_STYLE)]))
    assert applied.not_kept  # MinIO's dropped field: what the next pass must recognise
    written = json.loads(json.dumps(applied_status(applied)))
    assert set(written) == {"fingerprint", "ruleIds", "notKept"}  # the handler's fields are left to it
    assert applied_record(written) == applied
    assert LifecycleStatus.model_validate(written) == applied  # what the CRD's status schema admits
    assert applied_record(None) is None
    assert applied_record({}) is None
    # A status with only the handler's fields (a refused apply) still counts as recorded: nothing owned yet.
    assert applied_record({"refusedFingerprint": "f"}) == LifecycleStatus(fingerprint="", rule_ids=[], not_kept=[])


def test_fingerprint_changes_exactly_with_the_rules() -> None:
    assert lc.fingerprint([s3(EXPIRE_TMP)]) == lc.fingerprint(json.loads(json.dumps([s3(EXPIRE_TMP)])))
    assert lc.fingerprint([s3(EXPIRE_TMP)]) != lc.fingerprint([s3({**EXPIRE_TMP, "expiration": {"days": 8}})])
    assert lc.fingerprint([s3(EXPIRE_TMP), s3(ABORT)]) != lc.fingerprint([s3(ABORT), s3(EXPIRE_TMP)])


def test_conditions_for_each_outcome() -> None:
    desired = [s3(MINIO_STYLE)]
    in_sync = lc.lifecycle_condition(lifecycle_decision(desired, desired, record_applied(desired, desired)))
    assert (in_sync.type, in_sync.status, in_sync.reason) == ("LifecycleApplied", "True", "LifecycleApplied")
    bucket = minio_bucket(desired)
    unsupported = lc.lifecycle_condition(lifecycle_decision(desired, bucket, record_applied(desired, bucket)))
    assert (unsupported.status, unsupported.reason) == ("False", "LifecycleUnsupportedByServer")
    pending = lc.lifecycle_condition(lifecycle_decision(desired, [], None))
    assert (pending.status, pending.reason) == ("Unknown", "LifecycleDrift")
    failure = lc.lifecycle_failure(lc.REASON_BUCKET_UNREACHABLE, "connection refused")
    assert (failure.type, failure.status, failure.reason) == ("LifecycleApplied", "False", "BucketUnreachable")
