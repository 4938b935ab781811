"""Which lifecycle rules could delete registered model artifacts: layout, registry, and the decision."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_operator.api.trackingserver import Lifecycle, LifecycleRule
from mlflow_operator.logic.lifecycle import desired_rules, fingerprint
from mlflow_operator.logic.lifecycle_safety import (
    VersionArtifacts,
    artifact_key_prefix,
    deleting_action,
    layout_problem,
    layout_refusals,
    overlaps,
    registry_refusals,
    safety_decision,
    withheld_message,
)

BUCKET = "artifacts"


def rule(**fields: Any) -> LifecycleRule:
    return LifecycleRule.model_validate({"id": "r", **fields})


def expire(prefix: str | None = None, rule_id: str = "r", **filter_: Any) -> LifecycleRule:
    spec: dict[str, Any] = {"id": rule_id, "expiration": {"days": 30}}
    if prefix is not None or filter_:
        spec["filter"] = ({"prefix": prefix} if prefix is not None else {}) | filter_
    return LifecycleRule.model_validate(spec)


def logged_model(experiment: str, model_id: str = "m-abc", name: str = "fraud", version: int = 3) -> VersionArtifacts:
    return VersionArtifacts(
        name, version, f"models:/{model_id}", f"mlflow-artifacts:/{experiment}/models/{model_id}/artifacts"
    )


# --- what deletes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "action"),
    [
        ({"expiration": {"days": 1}}, "expiration"),
        ({"transitions": [{"days": 30, "storageClass": "STANDARD_IA"}, {"days": 90, "storageClass": "GLACIER"}]},
         "transitions[1].storageClass"),
        ({"transitions": [{"days": 1, "storageClass": "DEEP_ARCHIVE"}]}, "transitions[0].storageClass"),
        ({"transitions": [{"days": 0, "storageClass": "GLACIER_IR"}]}, None),  # instant retrieval: readable
        ({"transitions": [{"days": 30, "storageClass": "STANDARD_IA"}]}, None),
        ({"noncurrentVersionExpiration": {"noncurrentDays": 1}}, None),
        ({"expiration": {"expiredObjectDeleteMarker": True}}, None),
        ({"abortIncompleteMultipartUpload": {"daysAfterInitiation": 1}}, None),
    ],
)  # fmt: skip
def test_deleting_actions(spec: dict[str, Any], action: str | None) -> None:
    assert deleting_action(rule(**spec)) == action


# --- layout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "refused"),
    [
        ("", True),
        ("m", True),
        ("mlflow", True),
        ("mlflow/", True),  # the whole root
        ("mlflow/5", True),  # experiments 5, 50, 51...
        ("mlflow/5/", True),  # experiment 5, with its logged models
        ("mlflow/12/m", True),
        ("mlflow/12/models", True),
        ("mlflow/12/models/", True),
        ("mlflow/12/models/m-abc/artifacts/", True),
        ("mlflow/scratch/exp1/models/", True),  # a models/ directory anywhere
        ("mlflow/5/0a1b2c3d4e5f/", False),  # one run's directory
        ("mlflow/5/0a1b2c3d4e5f/artifacts/tmp/", False),
        ("mlflow/scratch/", False),  # a custom artifact location: the registry check decides
        ("mlflow/s", False),
        ("mlflow/tmp/", False),
        ("other/", False),  # outside the artifact root
        ("mlflow-old/", False),
    ],
)
def test_layout_of_mlflow_3(prefix: str, refused: bool) -> None:
    assert (layout_problem(prefix, "mlflow") is not None) == refused


def test_a_tag_filter_does_not_make_a_layout_refusal_safe() -> None:
    tagged = expire("mlflow/5/", tags=[{"key": "scratch", "value": "true"}])
    assert [r.rule_id for r in layout_refusals([tagged], "mlflow")] == ["r"]


def test_layout_refusal_message_names_field_rule_and_way_out() -> None:
    rules = [rule(id="keep", abortIncompleteMultipartUpload={"daysAfterInitiation": 1}), expire("mlflow/5/", "exp5")]
    [refusal] = layout_refusals(rules, "mlflow")
    assert refusal.rule_id == "exp5"
    assert refusal.message == (
        'spec.artifacts.lifecycle.rules[1].expiration (rule "exp5"): would delete registered model artifacts: its '
        'filter covers experiment 5, whose logged models are under "mlflow/5/models/"; expire a scratch location '
        'instead (e.g. "mlflow/scratch/", for experiments created with artifact_location '
        '"mlflow-artifacts:/scratch/<name>"), or a run\'s own directory'
    )


def test_archive_transition_over_the_root_names_the_transition() -> None:
    archive = rule(id="cold", transitions=[{"days": 90, "storageClass": "GLACIER"}])
    [refusal] = layout_refusals([archive], "mlflow")
    assert refusal.message.startswith('spec.artifacts.lifecycle.rules[0].transitions[0].storageClass (rule "cold")')
    assert 'covers the whole artifact root "mlflow/"' in refusal.message


def test_artifacts_at_the_bucket_root() -> None:
    assert layout_problem("", "") == "covers the whole bucket (artifacts are at its root)"
    assert layout_problem("5/", "") is not None
    assert layout_problem("scratch/", "") is None


def test_disabled_and_non_deleting_rules() -> None:
    disabled = expire("mlflow/5/", "off").model_copy(update={"status": "Disabled"})
    harmless = rule(id="nv", noncurrentVersionExpiration={"noncurrentDays": 1})
    assert [r.rule_id for r in layout_refusals([disabled, harmless], "mlflow")] == ["off"]


# --- artifact locations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "key_prefix"),
    [
        ("mlflow-artifacts:/5/models/m-abc/artifacts", "mlflow/5/models/m-abc/artifacts/"),
        ("mlflow-artifacts://tracking:5000/5/run/artifacts/model", "mlflow/5/run/artifacts/model/"),
        ("s3://artifacts/mlflow/5/models/m-abc/artifacts", "mlflow/5/models/m-abc/artifacts/"),
        ("s3://artifacts/elsewhere/model/", "elsewhere/model/"),
        ("s3://other-bucket/mlflow/5/models/m-abc/artifacts", None),
        ("file:///mnt/models/x", None),
        ("gs://artifacts/mlflow/5", None),
    ],
)
def test_artifact_key_prefix(uri: str, key_prefix: str | None) -> None:
    assert artifact_key_prefix(uri, BUCKET, "mlflow") == key_prefix


@pytest.mark.parametrize(
    ("prefix", "key_prefix", "expected"),
    [
        ("mlflow/5/", "mlflow/5/models/m-abc/artifacts/", True),
        ("mlflow/5/models/m-ab", "mlflow/5/models/m-abc/artifacts/", True),
        ("mlflow/5/models/m-abc/artifacts/MLmodel", "mlflow/5/models/m-abc/artifacts/", True),  # inside
        ("mlflow/6/", "mlflow/5/models/m-abc/artifacts/", False),
        ("mlflow/5/models/m-abd", "mlflow/5/models/m-abc/artifacts/", False),
    ],
)
def test_overlaps(prefix: str, key_prefix: str, expected: bool) -> None:
    assert overlaps(prefix, key_prefix) is expected


# --- registry --------------------------------------------------------------------------------------------


def test_a_rule_reaching_a_registered_version_is_refused_naming_it() -> None:
    versions = [logged_model("7", "m-x", "churn", 1), logged_model("5", "m-abc", "fraud", 3)]
    [refusal] = registry_refusals([expire("mlflow/5/models/m-a", "exp5")], versions, BUCKET, "mlflow")
    assert refusal.message.startswith(
        'spec.artifacts.lifecycle.rules[0].expiration (rule "exp5"): would delete model version fraud/3, whose '
        "artifacts are at s3://artifacts/mlflow/5/models/m-abc/artifacts/;"
    )


def test_a_version_registered_from_a_runs_artifacts_protects_that_run() -> None:
    from_run = VersionArtifacts("fraud", 1, "runs:/r1/model", "mlflow-artifacts:/scratch/e/r1/artifacts/model")
    refused = registry_refusals([expire("mlflow/scratch/", "scratch")], [from_run], BUCKET, "mlflow")
    assert [r.rule_id for r in refused] == ["scratch"]
    assert registry_refusals([expire("mlflow/scratch/e/r2/", "other-run")], [from_run], BUCKET, "mlflow") == []


def test_versions_elsewhere_do_not_matter_and_unknown_locations_block_the_root() -> None:
    elsewhere = VersionArtifacts("m", 1, "s3://other/x", "s3://other/x")
    assert registry_refusals([expire("mlflow/scratch/")], [elsewhere], BUCKET, "mlflow") == []
    unknown = VersionArtifacts("m", 2, "models:/m-gone", None)
    [refusal] = registry_refusals([expire("mlflow/scratch/")], [unknown], BUCKET, "mlflow")
    assert "model version m/2" in refusal.message and "source models:/m-gone, not found" in refusal.message
    assert registry_refusals([expire("archive/")], [unknown], BUCKET, "mlflow") == []  # outside the root


def test_non_deleting_rules_ignore_the_registry() -> None:
    versions = [logged_model("5")]
    harmless = [
        rule(id="ia", transitions=[{"days": 30, "storageClass": "STANDARD_IA"}]),
        rule(id="nv", noncurrentVersionExpiration={"noncurrentDays": 1}),
        rule(id="ab", abortIncompleteMultipartUpload={"daysAfterInitiation": 1}),
    ]
    assert registry_refusals(harmless, versions, BUCKET, "mlflow") == []


# generated MLflow layouts: experiment ids, run ids and logged model ids under the root
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=6)
experiments = st.integers(min_value=0, max_value=200).map(str)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[VersionArtifacts], list[str]]:
    """Registered versions (logged models and run paths) and all keys MLflow would have written."""
    versions, keys = [], []
    for n in range(draw(st.integers(min_value=1, max_value=6))):
        experiment = draw(experiments)
        if draw(st.booleans()):
            model_id = "m-" + draw(ids)
            uri = f"mlflow-artifacts:/{experiment}/models/{model_id}/artifacts"
        else:
            uri = f"mlflow-artifacts:/{experiment}/{draw(ids)}/artifacts/model"
        versions.append(VersionArtifacts("model", n + 1, uri, uri))
        keys.append("mlflow/" + uri.removeprefix("mlflow-artifacts:/") + "/MLmodel")
    return versions, keys


prefixes = st.text(alphabet="mlflow/0123456789abcdefs-", max_size=30)


@given(layouts(), prefixes)
def test_no_applied_rule_selects_a_registered_models_key(
    layout: tuple[list[VersionArtifacts], list[str]], prefix: str
) -> None:
    """The property the whole module exists for: a deleting rule that passes both checks selects no key of
    any registered version."""
    versions, keys = layout
    candidate = expire(prefix)
    refused = layout_refusals([candidate], "mlflow") + registry_refusals([candidate], versions, BUCKET, "mlflow")
    if not refused:
        assert not [key for key in keys if key.startswith(prefix)]


@given(layouts(), prefixes)
def test_layout_alone_protects_every_logged_model(
    layout: tuple[list[VersionArtifacts], list[str]], prefix: str
) -> None:
    """Even without the registry, no prefix the layout check lets through reaches a logged model's key."""
    _versions, keys = layout
    if layout_problem(prefix, "mlflow") is None:
        assert not [key for key in keys if "/models/" in key and key.startswith(prefix)]


# --- the decision ----------------------------------------------------------------------------------------


def spec_fingerprint(rules: list[LifecycleRule]) -> str:
    return fingerprint(desired_rules(Lifecycle(rules=rules)))


SCRATCH = expire("mlflow/scratch/", "scratch")
ABORT = rule(id="abort", abortIncompleteMultipartUpload={"daysAfterInitiation": 3})
IN_SCRATCH = VersionArtifacts("fraud", 4, "models:/m-s", "mlflow-artifacts:/scratch/e/models/m-s/artifacts")


def test_safe_rules_all_go() -> None:
    rules = [SCRATCH, ABORT]
    decision = safety_decision(rules, "mlflow", BUCKET, [logged_model("5")], None, spec_fingerprint(rules))
    assert decision.allowed(rules) == rules and decision.withheld == () and decision.record == {}


def test_endangering_rule_is_withheld_and_recorded_for_this_spec() -> None:
    rules = [SCRATCH, ABORT]
    decision = safety_decision(rules, "mlflow", BUCKET, [IN_SCRATCH], None, spec_fingerprint(rules))
    assert decision.allowed(rules) == [ABORT]
    assert decision.record["withheldFor"] == spec_fingerprint(rules)
    assert [item["id"] for item in decision.record["withheld"]] == ["scratch"]
    assert withheld_message(decision).startswith("1 rule(s) withheld from the bucket")
    assert "model version fraud/4" in withheld_message(decision)


def test_a_withheld_rule_stays_withheld_until_the_spec_changes() -> None:
    rules = [SCRATCH, ABORT]
    first = safety_decision(rules, "mlflow", BUCKET, [IN_SCRATCH], None, spec_fingerprint(rules))
    # The version was deleted since: the rule is still withheld, nobody looked at it again.
    later = safety_decision(rules, "mlflow", BUCKET, [], first.record, spec_fingerprint(rules))
    assert [r.rule_id for r in later.withheld] == ["scratch"]
    # A spec change re-checks from scratch.
    changed = [
        expire("mlflow/scratch/", "scratch").model_copy(update={"expiration": SCRATCH.expiration}),
        ABORT,
        rule(id="nv", noncurrentVersionExpiration={"noncurrentDays": 5}),
    ]
    fresh = safety_decision(changed, "mlflow", BUCKET, [], first.record, spec_fingerprint(changed))
    assert fresh.withheld == () and fresh.allowed(changed) == changed


def test_without_the_registry_new_deleting_rules_wait_and_applied_ones_stay() -> None:
    rules = [SCRATCH, ABORT]
    waiting = safety_decision(rules, "mlflow", BUCKET, None, None, spec_fingerprint(rules), applied_fingerprint=None)
    assert waiting.unverified == ("scratch",) and waiting.allowed(rules) == [ABORT]
    applied = spec_fingerprint(rules)
    kept = safety_decision(rules, "mlflow", BUCKET, None, None, spec_fingerprint(rules), applied_fingerprint=applied)
    assert kept.unverified == () and kept.allowed(rules) == rules


def test_layout_refusals_need_no_registry() -> None:
    rules = [expire("mlflow/5/", "exp5"), ABORT]
    decision = safety_decision(rules, "mlflow", BUCKET, None, None, spec_fingerprint(rules))
    assert [r.rule_id for r in decision.withheld] == ["exp5"] and decision.unverified == ()
    assert decision.allowed(rules) == [ABORT]
