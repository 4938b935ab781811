"""Alias ownership between RegisteredModels and a ModelDeployment's followed and promotion aliases."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.logic.alias_ownership import AliasOwner, alias_owner, alias_report

REF = {"trackingServerRef": {"name": "mlflow"}}


def deployment(alias: str = "champion", promote: str | None = "production", **connection: Any) -> ModelDeploymentSpec:
    spec: dict[str, Any] = {**(connection or REF), "model": {"registeredModel": "fraud", "alias": alias}}
    if promote:
        spec["promotion"] = {"setAlias": promote}
    return ModelDeploymentSpec.model_validate(spec)


def owner(name: str = "fraud", **spec: Any) -> AliasOwner:
    return alias_owner(name, RegisteredModelSpec.model_validate({**REF, **spec}))


def test_no_registered_model_no_conflict() -> None:
    report = alias_report(deployment(), [owner(aliases={"staging": 1})])
    assert (report.condition.status, report.condition.reason) == ("False", "NoConflict")
    assert report.promotion_may_set_alias


def test_an_owned_promotion_alias_is_a_conflict_and_is_not_moved() -> None:
    report = alias_report(deployment(), [owner("fraud-registry", modelName="fraud", aliases={"production": 1})])
    assert (report.condition.status, report.condition.reason) == ("True", "PromotionAliasOwned")
    assert not report.promotion_may_set_alias
    assert (
        'setAlias "production"' in report.condition.message
        and "RegisteredModel fraud-registry" in report.condition.message
    )


def test_an_exclusive_registered_model_owns_every_alias() -> None:
    report = alias_report(deployment(), [owner(aliasPolicy="Exclusive")])
    assert report.condition.reason == "PromotionAliasOwned"


def test_an_owned_followed_alias_is_reported_not_refused() -> None:
    report = alias_report(deployment(promote=None), [owner(aliases={"champion": 1})])
    assert (report.condition.status, report.condition.reason) == ("False", "FollowedAliasOwned")
    assert report.promotion_may_set_alias and "move it by editing that RegisteredModel" in report.condition.message


def test_other_models_and_other_registries_own_nothing_here() -> None:
    others = [
        owner(modelName="churn", aliases={"production": 1, "champion": 1}),
        alias_owner("elsewhere", RegisteredModelSpec.model_validate(
            {"trackingUri": "http://other:5000", "modelName": "fraud", "aliases": {"production": 1}})),
    ]  # fmt: skip
    assert alias_report(deployment(), others).condition.reason == "NoConflict"
    # The same URI, written with a trailing slash, is the same registry.
    same = alias_owner("same", RegisteredModelSpec.model_validate(
        {"trackingUri": "http://other:5000/", "modelName": "fraud", "aliases": {"production": 1}}))  # fmt: skip
    report = alias_report(deployment(trackingUri="http://other:5000"), [same])
    assert report.condition.reason == "PromotionAliasOwned"


def test_the_model_name_defaults_to_the_registered_models_name() -> None:
    assert alias_report(deployment(), [owner("fraud", aliases={"production": 2})]).condition.reason == (
        "PromotionAliasOwned"
    )
    assert alias_report(deployment(), [owner("not-fraud", aliases={"production": 2})]).condition.reason == (
        "NoConflict"
    )


def test_the_rollout_runs_without_an_owned_promotion_alias() -> None:
    spec = deployment()
    conflict = alias_report(spec, [owner(aliases={"production": 1})])
    assert conflict.rollout_spec(spec).promotion is not None
    assert conflict.rollout_spec(spec).promotion.set_alias is None  # type: ignore[union-attr]
    assert spec.promotion is not None and spec.promotion.set_alias == "production"  # the spec is not changed
    assert alias_report(spec, []).rollout_spec(spec) is spec
