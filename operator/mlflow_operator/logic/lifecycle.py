"""Bucket lifecycle rules of a TrackingServer's artifact bucket, as pure decisions.

The spec's typed rules become boto3 `put_bucket_lifecycle_configuration` rule dicts; they are validated
before any call (S3 reports many mistakes late, as a bare MalformedXML; which valid rules would delete
registered models is decided in lifecycle_safety); they are merged with the rules of the bucket the
operator does not own; and what the server returns on read-back is compared field by field.

The read-back matters because S3-compatible servers do not all keep what they accept: MinIO silently drops
AbortIncompleteMultipartUpload and moto drops NoncurrentVersionExpiration.NewerNoncurrentVersions. A
reconciler that compares desired with actual would re-apply forever. So the operator remembers what it
applied and what the server did not keep right after that apply (`applied_record`); the same difference
seen again later is the server's behaviour (reported once, as `LifecycleUnsupportedByServer`), while any
other difference is drift and is re-applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlflow_operator.api.trackingserver import (
    Lifecycle,
    LifecycleExpiration,
    LifecycleFilter,
    LifecycleRule,
    LifecycleStatus,
    LifecycleTransition,
)
from mlflow_operator.logic.conditions import ConditionUpdate

S3Rule = dict[str, Any]

# The condition this module reports on, and its reasons.
CONDITION_TYPE = "LifecycleApplied"
REASON_APPLIED = "LifecycleApplied"
REASON_UNSUPPORTED_BY_SERVER = "LifecycleUnsupportedByServer"
REASON_DRIFT = "LifecycleDrift"
# The spec was admitted but the operator refuses it (same reason as every other operator-only refusal).
REASON_INVALID_SPEC = "InvalidSpec"
# Reasons of the S3 adapter's errors (mlflow_operator.adapters.s3), named here so that the reconciler and its
# tests need no I/O module to know them.
REASON_BUCKET_UNREACHABLE = "BucketUnreachable"
REASON_BUCKET_NOT_FOUND = "BucketNotFound"
REASON_ACCESS_DENIED = "AccessDenied"
REASON_INVALID_LIFECYCLE = "InvalidLifecycle"  # the server refused the configuration (MalformedXML...)
REASON_S3_ERROR = "S3Error"  # any other S3 error; the message carries the server's code

RULES_PATH = "spec.artifacts.lifecycle.rules"
# Objects in these classes must be restored before they can be read: a model there cannot be served.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# AWS refuses a transition to an infrequent-access class earlier than this many days after creation.
INFREQUENT_ACCESS_MINIMUM_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30}


# --- spec -> S3 rule dicts ------------------------------------------------------------------------------


def to_s3_filter(filter_: LifecycleFilter | None) -> dict[str, Any]:
    """S3's Filter for the spec's filter. AWS requires a Filter (or the legacy Prefix) on every rule, so
    "all objects" is an empty prefix; one tag alone is Filter.Tag, anything combined is Filter.And."""
    prefix = (filter_.prefix if filter_ else None) or ""
    tags = [{"Key": tag.key, "Value": tag.value} for tag in (filter_.tags if filter_ else None) or []]
    if not tags:
        return {"Prefix": prefix}
    if not prefix and len(tags) == 1:
        return {"Tag": tags[0]}
    conjunction: dict[str, Any] = {"Prefix": prefix, "Tags": tags} if prefix else {"Tags": tags}
    return {"And": conjunction}


def _to_s3_expiration(expiration: LifecycleExpiration) -> dict[str, Any]:
    if expiration.days is not None:
        return {"Days": expiration.days}
    return {"ExpiredObjectDeleteMarker": bool(expiration.expired_object_delete_marker)}


def _to_s3_transition(transition: LifecycleTransition) -> dict[str, Any]:
    return {"Days": transition.days, "StorageClass": transition.storage_class}


def to_s3_rule(rule: LifecycleRule) -> S3Rule:
    """One spec rule as a boto3 lifecycle Rule dict (PascalCase keys); unset actions are left out."""
    s3_rule: S3Rule = {"ID": rule.id, "Status": rule.status, "Filter": to_s3_filter(rule.filter)}
    if rule.expiration is not None:
        s3_rule["Expiration"] = _to_s3_expiration(rule.expiration)
    if rule.noncurrent_version_expiration is not None:
        noncurrent: dict[str, Any] = {"NoncurrentDays": rule.noncurrent_version_expiration.noncurrent_days}
        if rule.noncurrent_version_expiration.newer_noncurrent_versions is not None:
            noncurrent["NewerNoncurrentVersions"] = rule.noncurrent_version_expiration.newer_noncurrent_versions
        s3_rule["NoncurrentVersionExpiration"] = noncurrent
    if rule.abort_incomplete_multipart_upload is not None:
        days = rule.abort_incomplete_multipart_upload.days_after_initiation
        s3_rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if rule.transitions:
        s3_rule["Transitions"] = [_to_s3_transition(t) for t in rule.transitions]
    return s3_rule


def desired_rules(lifecycle: Lifecycle | None) -> list[S3Rule]:
    """The rules the operator owns, as S3 rule dicts, in spec order."""
    return [to_s3_rule(rule) for rule in lifecycle.rules] if lifecycle else []


# --- validation -----------------------------------------------------------------------------------------


def artifact_root(artifacts_prefix: str) -> str:
    """The key prefix of everything MLflow stores, with a trailing slash ("" when at the bucket root)."""
    root = artifacts_prefix.strip("/")
    return f"{root}/" if root else ""


def _transition_problems(rule: LifecycleRule, path: str) -> list[str]:
    problems = []
    transitions = rule.transitions or []
    seen_classes: dict[str, int] = {}
    for j, transition in enumerate(transitions):
        where = f"{path}.transitions[{j}]"
        if j > 0 and transition.days <= transitions[j - 1].days:
            problems.append(
                f"{where}.days: transitions must be in strictly increasing days "
                f"({transition.days} is not after transitions[{j - 1}].days={transitions[j - 1].days})"
            )
        if transition.storage_class in seen_classes:
            problems.append(
                f"{where}.storageClass: {transition.storage_class} is already the target of "
                f"transitions[{seen_classes[transition.storage_class]}]; each storage class can appear once"
            )
        seen_classes.setdefault(transition.storage_class, j)
        minimum = INFREQUENT_ACCESS_MINIMUM_DAYS.get(transition.storage_class)
        if minimum is not None and transition.days < minimum:
            problems.append(
                f"{where}.days: S3 requires at least {minimum} days before a transition to "
                f"{transition.storage_class}, got {transition.days}"
            )
    expiration_days = rule.expiration.days if rule.expiration else None
    if expiration_days is not None and transitions:
        latest = max(t.days for t in transitions)
        if expiration_days <= latest:
            problems.append(
                f"{path}.expiration.days: must be greater than every transition's days ({expiration_days} <= {latest})"
            )
    return problems


def _filter_problems(rule: LifecycleRule, path: str) -> list[str]:
    tags = (rule.filter.tags if rule.filter else None) or []
    problems = []
    seen: set[str] = set()
    for j, tag in enumerate(tags):
        if tag.key in seen:
            problems.append(f'{path}.filter.tags[{j}].key: duplicate tag key "{tag.key}"')
        seen.add(tag.key)
    if tags and rule.expiration is not None and rule.expiration.expired_object_delete_marker is not None:
        problems.append(f"{path}.expiration.expiredObjectDeleteMarker: cannot be combined with filter.tags")
    if tags and rule.abort_incomplete_multipart_upload is not None:
        problems.append(f"{path}.abortIncompleteMultipartUpload: cannot be combined with filter.tags")
    return problems


def _has_action(rule: LifecycleRule) -> bool:
    return bool(
        rule.expiration or rule.noncurrent_version_expiration or rule.abort_incomplete_multipart_upload
    ) or bool(rule.transitions)


def validate_rules(rules: Sequence[LifecycleRule]) -> list[str]:
    """Problems S3 would report late (as MalformedXML or InvalidArgument), each naming its field as
    `spec.artifacts.lifecycle.rules[i].<field>`. Empty when valid. Whether a valid rule would delete
    registered models is mlflow_operator.logic.lifecycle_safety's question.

    Some of these are also CEL rules of the CRD; they are repeated here because a spec read from the
    cluster was admitted by whatever CRD version was installed at the time.
    """
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for i, rule in enumerate(rules):
        path = f"{RULES_PATH}[{i}]"
        if rule.id in first_index:
            problems.append(f'{path}.id: duplicate rule id "{rule.id}" (also rules[{first_index[rule.id]}])')
        first_index.setdefault(rule.id, i)
        if not _has_action(rule):
            problems.append(
                f"{path}: a lifecycle rule needs at least one action: expiration, noncurrentVersionExpiration, "
                "abortIncompleteMultipartUpload or transitions"
            )
        problems += _filter_problems(rule, path)
        problems += _transition_problems(rule, path)
    return problems


# --- merging with rules the operator does not own --------------------------------------------------------


def merge_configuration(
    existing_rules: Sequence[Mapping[str, Any]], desired: Sequence[S3Rule], owned_ids: Iterable[str]
) -> list[S3Rule]:
    """The whole configuration to PUT (S3 replaces the configuration, it cannot patch one rule).

    Rules of other owners (ids neither desired nor previously owned, including server-assigned ids) are kept
    unchanged and first, in their existing order; then the desired rules in spec order. A desired id takes
    over a same-id rule already on the bucket; previously owned ids that left the spec are dropped.
    """
    managed = {rule["ID"] for rule in desired} | set(owned_ids)
    foreign = [dict(rule) for rule in existing_rules if rule.get("ID") not in managed]
    return foreign + [dict(rule) for rule in desired]


# --- read-back comparison --------------------------------------------------------------------------------

# The actions of a rule; a field under one of them is reported by its dotted path (Expiration.Days).
ACTIONS = (
    "Expiration",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
    "Transitions",
    "NoncurrentVersionTransitions",
)


def _canonical_filter(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One shape for equivalent filters: no filter, Filter{}, Filter{Prefix:""} and the legacy rule-level
    Prefix are all "prefix, no tags"; Filter.Tag equals Filter.And with that one tag."""
    filter_ = rule.get("Filter") or {}
    conjunction = filter_.get("And") or {}
    tags = list(conjunction.get("Tags") or [])
    if filter_.get("Tag"):
        tags.append(filter_["Tag"])
    prefix = filter_.get("Prefix") or conjunction.get("Prefix") or rule.get("Prefix") or ""
    fields: dict[str, Any] = {"Filter.Prefix": prefix}
    if tags:
        fields["Filter.Tags"] = tuple(sorted((t["Key"], t.get("Value") or "") for t in tags))
    for size in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        value = filter_.get(size, conjunction.get(size))
        if value is not None:
            fields[f"Filter.{size}"] = value
    return fields


def _canonical_list(items: Sequence[Mapping[str, Any]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    # Order carries no meaning in S3's transition lists; values are compared as text so that a date
    # returned as a datetime equals the one sent as text only if the server kept it exactly.
    return tuple(sorted(tuple(sorted((k, str(v)) for k, v in item.items())) for item in items))


def canonical_fields(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as flat `dotted field -> value` pairs, with equivalent shapes made equal."""
    fields: dict[str, Any] = {"Status": rule.get("Status")}
    fields.update(_canonical_filter(rule))
    for action in ACTIONS:
        value = rule.get(action)
        if not value:
            continue
        if isinstance(value, list):
            fields[action] = _canonical_list(value)
            continue
        for key, item in value.items():
            # ExpiredObjectDeleteMarker=false does nothing; servers return it or leave it out at will.
            if key == "ExpiredObjectDeleteMarker" and not item:
                continue
            fields[f"{action}.{key}"] = str(item) if key == "Date" else item
    return fields


@dataclass(frozen=True)
class RuleReadback:
    """How one desired rule came back from the server."""

    id: str
    present: bool
    dropped: tuple[str, ...] = ()  # fields sent but not returned: an action name when all of it is gone
    changed: tuple[str, ...] = ()  # fields returned with another value, or returned but not sent

    @property
    def kept(self) -> bool:
        return self.present and not self.dropped and not self.changed

    def differences(self) -> list[str]:
        if not self.present:
            return [f"{self.id}: missing"]
        return [f"{self.id}: dropped {f}" for f in self.dropped] + [f"{self.id}: changed {f}" for f in self.changed]


@dataclass(frozen=True)
class LifecycleReadback:
    """The comparison of the desired rules with the rules read back from the bucket."""

    rules: tuple[RuleReadback, ...]

    @property
    def in_sync(self) -> bool:
        return all(rule.kept for rule in self.rules)

    @property
    def missing_ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules if not rule.present)

    @property
    def dropped_fields(self) -> tuple[str, ...]:
        """Field names the server did not return, over all rules, sorted and without repeats."""
        return tuple(sorted({field for rule in self.rules for field in rule.dropped}))

    @property
    def changed_fields(self) -> tuple[str, ...]:
        return tuple(sorted({field for rule in self.rules for field in rule.changed}))

    def differences(self) -> tuple[str, ...]:
        """Every difference as "<rule id>: missing|dropped <field>|changed <field>", in a stable order."""
        return tuple(sorted(d for rule in self.rules for d in rule.differences()))


def _dropped_names(sent: Mapping[str, Any], returned: Mapping[str, Any]) -> tuple[str, ...]:
    missing = [field for field in sent if field not in returned]
    names = set()
    for field in missing:
        action = field.split(".", 1)[0]
        # A whole action the server does not know is reported by its name, a single sub-field by its path.
        whole_action_gone = action in ACTIONS and not any(f.split(".", 1)[0] == action for f in returned)
        names.add(action if whole_action_gone else field)
    return tuple(sorted(names))


def compare_rule(desired: Mapping[str, Any], returned: Mapping[str, Any] | None) -> RuleReadback:
    rule_id = str(desired["ID"])
    if returned is None:
        return RuleReadback(rule_id, present=False)
    sent_fields, returned_fields = canonical_fields(desired), canonical_fields(returned)
    changed = sorted(
        field
        for field in set(sent_fields) | set(returned_fields)
        if field in returned_fields and sent_fields.get(field) != returned_fields[field]
    )
    return RuleReadback(rule_id, True, _dropped_names(sent_fields, returned_fields), tuple(changed))


def compare_readback(desired: Sequence[S3Rule], readback: Sequence[Mapping[str, Any]]) -> LifecycleReadback:
    """Which desired rules the server kept exactly; rules of other owners in the read-back are ignored."""
    by_id = {rule.get("ID"): rule for rule in readback}
    return LifecycleReadback(tuple(compare_rule(rule, by_id.get(rule["ID"])) for rule in desired))


# --- what was applied, and the decision ------------------------------------------------------------------


def fingerprint(desired: Sequence[S3Rule]) -> str:
    """A short stable digest of the desired rules: changes exactly when what the operator would PUT does."""
    text = json.dumps(list(desired), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The status.lifecycle fields the bucket reconciliation owns: what the operator last PUT (fingerprint, rule ids)
# and what the server did not keep when read back right after it. The API model declares them once; its other
# fields (refused..., withheld...) belong to the handler and the safety check.
APPLIED_FIELDS = frozenset({"fingerprint", "rule_ids", "not_kept"})


def applied_record(lifecycle_status: Mapping[str, Any] | None) -> LifecycleStatus | None:
    """The last apply's record as status.lifecycle keeps it; None when nothing was ever recorded there."""
    if not lifecycle_status:
        return None
    return LifecycleStatus(
        fingerprint=str(lifecycle_status.get("fingerprint") or ""),
        rule_ids=list(lifecycle_status.get("ruleIds") or []),
        not_kept=list(lifecycle_status.get("notKept") or []),
    )


def applied_status(applied: LifecycleStatus) -> dict[str, Any]:
    """The record as status.lifecycle's JSON, for the next pass to tell the server's behaviour from drift."""
    return applied.model_dump(by_alias=True, include=set(APPLIED_FIELDS))


def record_applied(desired: Sequence[S3Rule], readback_after_put: Sequence[Mapping[str, Any]]) -> LifecycleStatus:
    """The record to keep after a successful PUT and the read-back that followed it."""
    not_kept = compare_readback(desired, readback_after_put).differences()
    return LifecycleStatus(
        fingerprint=fingerprint(desired), rule_ids=[rule["ID"] for rule in desired], not_kept=list(not_kept)
    )


Action = Literal["InSync", "Apply", "UnsupportedByServer"]
IN_SYNC: Action = "InSync"
APPLY: Action = "Apply"
UNSUPPORTED_BY_SERVER: Action = "UnsupportedByServer"


@dataclass(frozen=True)
class LifecycleDecision:
    """What to do with the bucket now. Only `Apply` calls for a PUT (then a read-back and `record_applied`)."""

    action: Action
    reason: str
    message: str
    unsupported_fields: tuple[str, ...] = ()  # with UnsupportedByServer: the fields the server did not keep


def _stale_owned_ids(
    desired: Sequence[S3Rule], current: Sequence[Mapping[str, Any]], last_applied: LifecycleStatus | None
) -> list[str]:
    if last_applied is None:
        return []
    wanted = {rule["ID"] for rule in desired}
    on_bucket = {rule.get("ID") for rule in current}
    return [rule_id for rule_id in last_applied.rule_ids or [] if rule_id not in wanted and rule_id in on_bucket]


def lifecycle_decision(
    desired: Sequence[S3Rule], current_rules: Sequence[Mapping[str, Any]], last_applied: LifecycleStatus | None
) -> LifecycleDecision:
    """In sync, apply, or unsupported by the server (stable: do not re-apply).

    `current_rules` is the bucket's whole configuration as read now; `last_applied` is what the previous
    apply recorded (None if the operator never applied). A difference is the server's behaviour, not drift,
    only when the desired rules are the ones last applied and the read-back differs from them exactly as it
    did right after that apply.
    """
    stale = _stale_owned_ids(desired, current_rules, last_applied)
    if stale:
        return LifecycleDecision(
            APPLY, REASON_DRIFT, f"rules removed from the spec are still on the bucket: {', '.join(stale)}"
        )
    readback = compare_readback(desired, current_rules)
    if readback.in_sync:
        return LifecycleDecision(IN_SYNC, REASON_APPLIED, f"{len(desired)} lifecycle rule(s) applied and read back")
    differences = readback.differences()
    server_behaviour = (
        last_applied is not None
        and last_applied.fingerprint == fingerprint(desired)
        and differences == tuple(last_applied.not_kept or ())
    )
    if server_behaviour:
        return LifecycleDecision(
            UNSUPPORTED_BY_SERVER,
            REASON_UNSUPPORTED_BY_SERVER,
            "the S3 server accepted the rules but did not keep: " + "; ".join(differences),
            unsupported_fields=readback.dropped_fields + readback.changed_fields,
        )
    return LifecycleDecision(APPLY, REASON_DRIFT, "bucket rules differ from the spec: " + "; ".join(differences))


def lifecycle_condition(decision: LifecycleDecision) -> ConditionUpdate:
    """The LifecycleApplied condition for a decision taken after any apply (Apply means it is still pending)."""
    if decision.action == IN_SYNC:
        return ConditionUpdate(CONDITION_TYPE, "True", decision.reason, decision.message)
    if decision.action == UNSUPPORTED_BY_SERVER:
        return ConditionUpdate(CONDITION_TYPE, "False", decision.reason, decision.message)
    return ConditionUpdate(CONDITION_TYPE, "Unknown", decision.reason, decision.message)


def lifecycle_failure(reason: str, message: str) -> ConditionUpdate:
    """The LifecycleApplied condition for a refused spec (REASON_INVALID_SPEC) or an S3 error's reason."""
    return ConditionUpdate(CONDITION_TYPE, "False", reason, message)
