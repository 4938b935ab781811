"""The operator validates with the same models that generated the CRDs; messages name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_operator.api import kind_info
from mlflow_operator.api.common import duration_seconds
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.logic.status import changed_fields
from mlflow_operator.logic.validation import Invalid, Valid, validate_spec

ROOT = Path(__file__).resolve().parents[2]

MINIMAL_TS: dict[str, Any] = {"database": {"managed": {}}, "artifacts": {"s3": {"bucket": "bucket-1"}}}


def example_resources() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["apiVersion"].startswith("mlflow.")]
    return docs


@pytest.mark.parametrize("resource", example_resources(), ids=lambda r: r["kind"])
def test_examples_are_valid(resource: dict[str, Any]) -> None:
    assert isinstance(validate_spec(kind_info(resource["kind"]).spec_model, resource["spec"]), Valid)


def test_examples_cover_every_kind() -> None:
    assert {r["kind"] for r in example_resources()} == {
        "TrackingServer",
        "RegisteredModel",
        "ModelDeployment",
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({**MINIMAL_TS, "version": "2.3.0"}, "spec.version: Value error, MLflow 2.9.0 or newer is required"),
        ({**MINIMAL_TS, "database": {}}, "spec.database: Value error, exactly one of managed or external"),
        ({**MINIMAL_TS, "replicas": 0}, "spec.replicas: Input should be greater than or equal to 1"),
        ({**MINIMAL_TS, "unknownField": 1}, "spec.unknownField: Extra inputs are not permitted"),
        ({"database": {"managed": {}}}, "spec.artifacts: Field required"),
    ],
)
def test_invalid_tracking_server_names_the_field(spec: dict[str, Any], expected: str) -> None:
    result = validate_spec(TrackingServerSpec, spec)
    assert isinstance(result, Invalid)
    assert expected in result.message


def test_camel_case_wire_names_round_trip() -> None:
    result = validate_spec(
        TrackingServerSpec, {**MINIMAL_TS, "database": {"managed": {}, "pooler": {"defaultPoolSize": 7}}}
    )
    assert isinstance(result, Valid)
    assert result.spec.database.pooler.default_pool_size == 7
    assert result.spec.model_dump(by_alias=True)["database"]["pooler"]["defaultPoolSize"] == 7


def test_only_changed_status_fields_are_written() -> None:
    assert changed_fields({"a": 1, "b": [1]}, {"a": 1, "b": [1]}) == {}
    assert changed_fields({"a": 1}, {"a": 2, "c": None}) == {"a": 2}
    assert changed_fields(None, {"a": 1}) == {"a": 1}


def test_durations_parse_as_the_api_writes_them() -> None:
    assert duration_seconds("30s") == 30 and duration_seconds("5m") == 300 and duration_seconds("1h30m") == 5400
    assert duration_seconds("7d") == 604800 and duration_seconds("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("5 minutes")
