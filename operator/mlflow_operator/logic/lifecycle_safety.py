"""Which bucket lifecycle rules could delete what a registered model version needs, as pure decisions.

MLflow 3, with proxied artifacts under the artifact root `<root>` (spec.artifacts.s3.prefix), writes

    <root>/<experiment id>/<run id>/artifacts/...             a run's artifacts
    <root>/<experiment id>/models/<model id>/artifacts/...    a logged model (what `log_model` writes)

and a registered model version points at a logged model (source `models:/m-...`) or at a path in a run's
artifacts (`runs:/<run id>/<path>`). A rule that expires those objects deletes a production model, silently
and for good, the day it fires. So a rule that *deletes current objects* — an expiration after some days, or
a transition to an archive class, after which a model cannot be read without a restore — is refused
(withheld: never sent to the bucket, removed from it when the operator had applied it) when:

- layout: its prefix can select a logged model of MLflow's default layout: the whole root, an experiment
  (`<root>/5/`), a prefix of experiment ids (`<root>/5`), or anything under a `models/` directory. Needs no
  registry, so `mlflow-operator render` checks it too.
- registry: its prefix overlaps the artifact location of any registered model version of the server (read
  with the operator's registry access), or of a version whose location cannot be told.

Tags and object sizes do not make a rule safe: the operator cannot see an object's tags or size without
reading every object, and nothing keeps a tagged object from being a model's. The prefix decides.

Rules that never delete a current object — noncurrent-version expiry, expired delete markers, aborting
incomplete multipart uploads, transitions to readable classes — are always allowed.

A rule withheld because of the registry stays withheld until the spec's rules change (a rule that was safe
yesterday endangers a version registered today; deleting that version later does not re-arm a rule nobody
looked at again). The record is kept in status.lifecycle (`withheld`, `withheldFor`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlflow_operator.api.trackingserver import Lifecycle, LifecycleRule
from mlflow_operator.logic.lifecycle import (
    ARCHIVE_STORAGE_CLASSES,
    RULES_PATH,
    artifact_root,
    desired_rules,
    fingerprint,
)

REASON_ENDANGERS_MODELS = "EndangersRegisteredModels"
# The registry could not be read, and rules that delete objects wait for the check.
REASON_REGISTRY_UNAVAILABLE = "RegistryUnavailable"
MAX_RECORDED = 50  # status.lifecycle.withheld is bounded by the schema
EXPERIMENT_ID = re.compile(r"^[0-9]+$")
MODELS_DIRECTORY = "models/"


@dataclass(frozen=True)
class VersionArtifacts:
    """Where one registered model version keeps its artifacts, as the registry says.

    `artifact_uri` is the resolved location (mlflow-artifacts:/..., s3://...), None when it could not be
    resolved (a logged model or run the server no longer finds): such a version is treated as anywhere.
    """

    model: str
    version: int
    source: str
    artifact_uri: str | None

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version}"


@dataclass(frozen=True)
class Refusal:
    """A rule the operator will not send to the bucket, and why (the message names the field and a model)."""

    rule_id: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.rule_id, "message": self.message[:1024]}


# --- what a rule does ----------------------------------------------------------------------------------


def deleting_action(rule: LifecycleRule) -> str | None:
    """The field of the rule's first action that deletes (or archives) current objects, or None."""
    if rule.expiration is not None and rule.expiration.days is not None:
        return "expiration"
    for j, transition in enumerate(rule.transitions or []):
        if transition.storage_class in ARCHIVE_STORAGE_CLASSES:
            return f"transitions[{j}].storageClass"
    return None


def rule_prefix(rule: LifecycleRule) -> str:
    return (rule.filter.prefix if rule.filter else None) or ""


def overlaps(prefix: str, key_prefix: str) -> bool:
    """Whether a rule's prefix selects at least one key under `key_prefix` (a directory, ending in "/")."""
    return key_prefix.startswith(prefix) or prefix.startswith(key_prefix)


# --- layout ----------------------------------------------------------------------------------------------


def layout_problem(prefix: str, artifacts_prefix: str) -> str | None:
    """Why a deleting rule with this prefix can select a logged model of MLflow's default layout, or None."""
    root = artifact_root(artifacts_prefix)
    if root.startswith(prefix):
        if not root:
            return "covers the whole bucket (artifacts are at its root)"
        return f'covers the whole artifact root "{root}"'
    if not prefix.startswith(root):
        return None  # outside the artifact root: MLflow never writes there
    rest = prefix[len(root) :]
    first, slash, after = rest.partition("/")
    if f"/{MODELS_DIRECTORY}" in f"/{rest}":
        return f'is inside a "{MODELS_DIRECTORY}" directory, where MLflow keeps logged models'
    if not slash:
        if EXPERIMENT_ID.match(first):
            return f'selects every experiment whose id starts with "{first}", with its logged models'
        return None
    if EXPERIMENT_ID.match(first) and MODELS_DIRECTORY.startswith(after):
        return f'covers experiment {first}, whose logged models are under "{root}{first}/{MODELS_DIRECTORY}"'
    return None


def _advice(artifacts_prefix: str) -> str:
    root = artifact_root(artifacts_prefix)
    return (
        f'expire a scratch location instead (e.g. "{root}scratch/", for experiments created with '
        f'artifact_location "mlflow-artifacts:/scratch/<name>"), or a run\'s own directory'
    )


def backup_problem(prefix: str, backup_prefix: str | None) -> str | None:
    """Why a deleting rule with this prefix can select the database's backups in the same bucket, or None:
    an expiry cannot tell a base backup the recovery window still needs from one it does not."""
    if backup_prefix is None or not overlaps(prefix, backup_prefix):
        return None
    return (
        f'selects the database backups under "{backup_prefix}", which barman-cloud-backup-delete expires by'
        " spec.database.managed.backup.retention"
    )


def layout_refusals(
    rules: Sequence[LifecycleRule], artifacts_prefix: str, backup_prefix: str | None = None
) -> list[Refusal]:
    """Deleting rules whose prefix can select logged models, by layout alone (checked whatever the rule's
    status: enabling a rule is a one-word edit and should not be the moment it is first called dangerous),
    and those that can select the database's backups when they share the bucket (`backup_prefix`)."""
    refusals = []
    for i, rule in enumerate(rules):
        action = deleting_action(rule)
        if action and (problem := backup_problem(rule_prefix(rule), backup_prefix)):
            refusals.append(Refusal(rule.id, f'{RULES_PATH}[{i}].{action} (rule "{rule.id}"): its filter {problem}'))
            continue
        problem = layout_problem(rule_prefix(rule), artifacts_prefix) if action else None
        if action and problem:
            refusals.append(
                Refusal(
                    rule.id,
                    f'{RULES_PATH}[{i}].{action} (rule "{rule.id}"): would delete registered model artifacts: '
                    f"its filter {problem}; {_advice(artifacts_prefix)}",
                )
            )
    return refusals


# --- registry --------------------------------------------------------------------------------------------


def artifact_key_prefix(artifact_uri: str, bucket: str, artifacts_prefix: str) -> str | None:
    """The bucket key prefix ("<dir>/") of an artifact URI, or None when it is not in this bucket.

    `mlflow-artifacts:` URIs are relative to the server's artifact root (proxied artifacts); `s3://` URIs
    name their bucket. Any other scheme (file:, gs:, another bucket) is not this bucket's."""
    parts = urlsplit(artifact_uri)
    if parts.scheme == "mlflow-artifacts":
        return artifact_root(artifacts_prefix) + _directory(parts.path)
    if parts.scheme in ("s3", "s3a", "s3n") and parts.netloc == bucket:
        return _directory(parts.path)
    return None


def _directory(path: str) -> str:
    path = path.strip("/")
    return f"{path}/" if path else ""


def endangered_version(
    rule: LifecycleRule, versions: Iterable[VersionArtifacts], bucket: str, artifacts_prefix: str
) -> tuple[VersionArtifacts, str] | None:
    """The first version (and where it is) that a deleting rule's prefix reaches, or None."""
    prefix = rule_prefix(rule)
    for version in versions:
        if version.artifact_uri is None:
            if overlaps(prefix, artifact_root(artifacts_prefix)):
                return version, f"an unknown location (source {version.source}, not found on the server)"
            continue
        key_prefix = artifact_key_prefix(version.artifact_uri, bucket, artifacts_prefix)
        if key_prefix is not None and overlaps(prefix, key_prefix):
            return version, f"s3://{bucket}/{key_prefix}"
    return None


def registry_refusals(
    rules: Sequence[LifecycleRule], versions: Sequence[VersionArtifacts], bucket: str, artifacts_prefix: str
) -> list[Refusal]:
    """Deleting rules that reach a registered model version's artifacts."""
    refusals = []
    for i, rule in enumerate(rules):
        action = deleting_action(rule)
        found = endangered_version(rule, versions, bucket, artifacts_prefix) if action else None
        if action and found:
            version, where = found
            refusals.append(
                Refusal(
                    rule.id,
                    f'{RULES_PATH}[{i}].{action} (rule "{rule.id}"): would delete model version {version.label}, '
                    f"whose artifacts are at {where}; {_advice(artifacts_prefix)}",
                )
            )
    return refusals


# --- the decision ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyDecision:
    """Which rules go to the bucket now.

    `withheld`: refused rules (layout, registry, or carried over from an earlier pass at the same spec);
    `unverified`: deleting rules that wait for a registry check (the registry could not be read); `record`:
    what to keep in status.lifecycle for the next pass.
    """

    withheld: tuple[Refusal, ...]
    unverified: tuple[str, ...]
    record: dict[str, Any]

    def allowed(self, rules: Sequence[LifecycleRule]) -> list[LifecycleRule]:
        held = {r.rule_id for r in self.withheld} | set(self.unverified)
        return [rule for rule in rules if rule.id not in held]


def carried_refusals(previous: Mapping[str, Any] | None, rules_fingerprint: str) -> list[Refusal]:
    """The refusals of an earlier pass, while the spec's rules are the ones they were decided for."""
    if not previous or previous.get("withheldFor") != rules_fingerprint:
        return []
    return [Refusal(str(item["id"]), str(item.get("message", ""))) for item in previous.get("withheld") or []]


def safety_decision(
    rules: Sequence[LifecycleRule],
    artifacts_prefix: str,
    bucket: str,
    versions: Sequence[VersionArtifacts] | None,
    previous: Mapping[str, Any] | None,
    rules_fingerprint: str,
    applied_fingerprint: str | None = None,
    backup_prefix: str | None = None,
) -> SafetyDecision:
    """Combine the layout check, the registry check (`versions` None: the registry could not be read) and
    what an earlier pass at the same spec withheld.

    Without the registry, deleting rules that were not checked wait (`unverified`), unless the rules allowed
    are exactly those last applied (`applied_fingerprint`): those were checked when applied, and taking them
    off the bucket for a registry outage would only make them flap (no version can be registered meanwhile)."""
    found: dict[str, Refusal] = {}
    registry = registry_refusals(rules, versions, bucket, artifacts_prefix) if versions is not None else []
    carried = carried_refusals(previous, rules_fingerprint)
    for refusal in [*layout_refusals(rules, artifacts_prefix, backup_prefix), *registry, *carried]:
        found.setdefault(refusal.rule_id, refusal)
    ordered = tuple(found[rule.id] for rule in rules if rule.id in found)
    unverified: tuple[str, ...] = ()
    if versions is None:
        kept = [rule for rule in rules if rule.id not in found]
        if fingerprint(desired_rules(Lifecycle(rules=kept))) != applied_fingerprint:
            unverified = tuple(rule.id for rule in kept if deleting_action(rule))
    record = {"withheld": [r.to_dict() for r in ordered[:MAX_RECORDED]], "withheldFor": rules_fingerprint}
    return SafetyDecision(ordered, unverified, record if ordered else {})


def withheld_message(decision: SafetyDecision) -> str:
    """The LifecycleApplied message for withheld rules: each rule with its reason, and what happened."""
    reasons = "; ".join(r.message for r in decision.withheld)
    return (
        f"{len(decision.withheld)} rule(s) withheld from the bucket (not applied, or removed) until the spec's "
        f"rules change: {reasons}"
    )
