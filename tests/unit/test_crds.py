"""The CRDs are generated from the models, structural, bounded, documented, and checked in unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from mlflow_operator.api import KINDS
from mlflow_operator.api.common import ApiModel
from mlflow_operator.api.crd import SchemaError, crd_files, crd_for, openapi_schema
from tests.unit.crd_schemas import schemas, walk

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "const", "uniqueItems", "patternProperties", "propertyNames", "title"}


def test_checked_in_crds_match_the_models() -> None:
    generated = crd_files()
    on_disk = {path.name: path.read_text() for path in (ROOT / "crds").glob("*.yaml")}
    assert set(on_disk) == set(generated), "crds/ has files the models do not generate: run `make crds`"
    for name, text in generated.items():
        assert on_disk[name] == text, f"crds/{name} differs from the models: run `make crds`"


@pytest.mark.parametrize(("kind", "schema"), list(schemas()), ids=[info.kind for info in KINDS])
def test_schema_is_structural(kind: str, schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        if "x-kubernetes-validations" in path.split(".")[-1:]:
            continue
        assert not FORBIDDEN_KEYWORDS & set(node), f"{kind}{path}: {FORBIDDEN_KEYWORDS & set(node)}"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, f"{kind}{path}: anyOf only for int-or-string"


@pytest.mark.parametrize(("kind", "schema"), list(schemas()), ids=[info.kind for info in KINDS])
def test_every_field_is_described_for_kubectl_explain(kind: str, schema: dict[str, Any]) -> None:
    undocumented = [
        f"{path}.{name}"
        for path, node in walk(schema)
        for name, child in (node.get("properties") or {}).items()
        if isinstance(child, dict) and name not in {"metadata"} and not child.get("description")
    ]
    assert undocumented == []


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    for kind, schema in schemas():
        conditions = schema["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map", kind
        assert conditions["x-kubernetes-list-map-keys"] == ["type"], kind
        assert "type" in conditions["items"]["required"], kind


def test_every_cel_rule_has_a_message() -> None:
    for kind, schema in schemas():
        for path, node in walk(schema):
            for rule in (
                node.get("x-kubernetes-validations", [])
                if isinstance(node.get("x-kubernetes-validations"), list)
                else []
            ):
                assert rule.get("message"), f"{kind}{path}: {rule['rule']}"


def test_printer_columns_include_ready_reason_and_age() -> None:
    for info in KINDS:
        names = [c["name"] for c in crd_for(info)["spec"]["versions"][0]["additionalPrinterColumns"]]
        assert {"Ready", "Reason", "Age"} <= set(names), info.kind


def test_exactly_one_of_becomes_a_cel_rule() -> None:
    database = openapi_schema(KINDS[0].spec_model)["properties"]["database"]
    rules = [v["rule"] for v in database["x-kubernetes-validations"]]
    assert "[has(self.managed), has(self.external)].filter(x, x).size() == 1" in rules


def test_defaults_survive_as_scalars_only() -> None:
    spec = openapi_schema(KINDS[0].spec_model)
    assert spec["properties"]["replicas"]["default"] == 2
    assert "default" not in spec["properties"]["database"]["properties"]["pooler"]


def test_an_unbounded_string_is_refused() -> None:
    class Unbounded(ApiModel):
        """A model with an unbounded string."""

        name: str = Field(description="no maxLength")

    with pytest.raises(SchemaError, match="string without maxLength"):
        openapi_schema(Unbounded)


def test_an_unbounded_list_is_refused() -> None:
    class Unbounded(ApiModel):
        """A model with an unbounded list."""

        names: list[int] = Field(description="no maxItems")

    with pytest.raises(SchemaError, match="list without maxItems"):
        openapi_schema(Unbounded)
