"""Every CEL rule the CRDs carry is also checked by the operator (except transition rules, which need the old
object): an object admitted without the rule is refused by the operator's validation with the same message."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_operator.api import KINDS
from mlflow_operator.api.common import WHITESPACE, ApiModel
from mlflow_operator.api.kinds import MODEL_DEPLOYMENT, REGISTERED_MODEL
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.handlers.reconcile import validated
from mlflow_operator.logic.validation import Invalid, validate_spec
from tests.unit.crd_schemas import schemas, walk

# Checked field by field by logic.lifecycle.validate_rules (tests/unit/test_lifecycle.py).
LIFECYCLE_MESSAGES = {
    "a lifecycle rule needs at least one action: expiration, noncurrentVersionExpiration, "
    "abortIncompleteMultipartUpload or transitions",
    "expiration.expiredObjectDeleteMarker cannot be combined with filter.tags",
    "abortIncompleteMultipartUpload cannot be combined with filter.tags",
}


def models() -> list[type[ApiModel]]:
    seen: list[type[ApiModel]] = []
    pending: list[type[ApiModel]] = [ApiModel]
    while pending:
        for child in pending.pop().__subclasses__():
            if child not in seen:
                seen.append(child)
                pending.append(child)
    return seen


def rechecked_messages() -> set[str]:
    messages = set(LIFECYCLE_MESSAGES)
    for info in KINDS:
        messages |= {rule.message for rule in info.name_rules()}
    for model in models():
        messages |= {model.exactly_one_message(group) for group in model.exactly_one_of}
        messages |= {rule.message for rule in model.admission_rules}
    return messages


def test_every_cel_rule_but_transitions_is_checked_by_the_operator_too() -> None:
    rechecked = rechecked_messages()
    missing = []
    for kind, schema in schemas():
        for path, node in walk(schema):
            for rule in node.get("x-kubernetes-validations") or []:
                # Map keys: the CRD generator's translation of the key type's constraints, which pydantic checks.
                keys = rule["message"].startswith("keys must")
                if "oldSelf" not in rule["rule"] and not keys and rule["message"] not in rechecked:
                    missing.append(f"{kind}{path}: {rule['message']}")
    assert missing == []
    assert len(KINDS) == 3


MD = {"trackingUri": "http://mlflow:5000", "model": {"registeredModel": "fraud", "version": 1}}
CANARY = {"strategy": {"canary": {"steps": [{"setWeight": 10}]}}}
RM = {"trackingServerRef": {"name": "mlflow"}}
TS = {"artifacts": {"s3": {"bucket": "mlflow", "credentialsSecret": {"name": "s3"}}}, "database": {"managed": {}}}


@pytest.mark.parametrize(
    ("model", "spec", "message"),
    [
        (ModelDeploymentSpec, {**MD, "replicas": 1, "autoscaling": {"maxReplicas": 3}}, "set replicas or autoscaling"),
        (ModelDeploymentSpec, {**MD, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not"),
        (ModelDeploymentSpec, {**MD, **CANARY}, "strategy.canary requires trafficRouting"),
        (
            ModelDeploymentSpec,
            {**MD, "strategy": {"canary": {"steps": [{"analysis": {}}]}}, "trafficRouting": {"replicaRatio": {}}},
            "steps[].analysis requires spec.analysis",
        ),
        (
            ModelDeploymentSpec,
            {**MD, "analysis": {"metrics": [{"name": "m", "query": "up", "thresholdRange": {}}]}},
            "thresholdRange needs min or max",
        ),
        (
            ModelDeploymentSpec,
            {**MD, "analysis": {"metrics": [{"name": "m", "query": "up", "thresholdRange": {"min": 2, "max": 1}}]}},
            "thresholdRange.min must not exceed max",
        ),
        (
            ModelDeploymentSpec,
            {"trackingServerRef": {"name": "mlflow"}, "credentialsSecret": {"name": "s"}, "model": MD["model"]},
            "credentialsSecret is only used with trackingUri",
        ),
        (
            RegisteredModelSpec,
            {"trackingServerRef": {"name": "mlflow"}, "credentialsSecret": {"name": "s"}},
            "only used",
        ),
        (
            TrackingServerSpec,
            {**TS, "database": {"managed": {}, "pooler": {"defaultPoolSize": 60, "maxDbConnections": 50}}},
            "pooler.defaultPoolSize must not exceed pooler.maxDbConnections",
        ),
        (TrackingServerSpec, {**TS, "ingress": {"enabled": True}}, "ingress.host is required"),
        (RegisteredModelSpec, {"trackingServerRef": {"name": "mlflow"}, "aliases": {"V2": 1}}, "reserved by MLflow"),
        (
            RegisteredModelSpec,
            {"trackingServerRef": {"name": "mlflow"}, "aliases": {"Latest": 1}},
            "reserved by MLflow",
        ),
    ],
)
def test_the_operator_refuses_what_cel_would_have_refused(
    model: type[ApiModel], spec: dict[str, Any], message: str
) -> None:
    result = validate_spec(model, spec)
    assert isinstance(result, Invalid), result
    assert message in result.message


def test_specs_that_follow_the_rules_are_valid() -> None:
    for model, spec in (
        (ModelDeploymentSpec, {**MD, **CANARY, "trafficRouting": {"replicaRatio": {}}, "replicas": 2}),
        (TrackingServerSpec, {**TS, "ingress": {"enabled": True, "host": "mlflow.example.com"}}),
    ):
        assert not isinstance(validate_spec(model, spec), Invalid)


def test_names_that_cel_refuses_are_refused_by_the_operator() -> None:
    spec = {"trackingServerRef": {"name": "mlflow"}, "model": {"registeredModel": "fraud", "version": 1}}
    for name, problem in (("x" * 41, "at most 40 characters"), ("fraud.v2", "must not contain dots")):
        body = {"metadata": {"name": name, "namespace": "ml"}, "spec": spec}
        typed, conditions = validated(MODEL_DEPLOYMENT, body)
        assert typed is None and problem in conditions[0].message, conditions
    assert validated(MODEL_DEPLOYMENT, {"metadata": {"name": "fraud", "namespace": "ml"}, "spec": spec})[0] is not None
    assert validated(
        REGISTERED_MODEL, {"metadata": {"name": "fraud.v2"}, "spec": {"trackingServerRef": {"name": "m"}}}
    )[0]


def test_no_crd_pattern_relies_on_the_regex_engines_idea_of_whitespace() -> None:
    """Go's RE2 (the API server) reads `\\s` as ASCII whitespace, Python as Unicode whitespace."""
    for kind, schema in schemas():
        for path, node in walk(schema):
            pattern = node.get("pattern")
            if isinstance(pattern, str):
                assert "\\s" not in pattern and "\\S" not in pattern, f"{kind}{path}: {pattern}"


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u2028", "\t"])
def test_unicode_spaces_are_refused_like_ascii_ones(space: str) -> None:
    for spec in (
        {**MD, "runtime": {"image": f"ghcr.io/x/model{space}server:1"}},
        {**MD, "trackingUri": f"http://mlflow{space}:5000"},
        {**MD, "model": {"registeredModel": f"{space}fraud", "version": 1}},
    ):
        assert isinstance(validate_spec(ModelDeploymentSpec, spec), Invalid), spec
    cron = {**TS, "retention": {"deletedRunsOlderThan": "30d", "schedule": f"0{space}3 * * *"}}
    assert not isinstance(validate_spec(TrackingServerSpec, cron), Invalid)  # a space between cron fields is one
    assert all(character in WHITESPACE or character.isspace() for character in space)
