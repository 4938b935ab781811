"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema; the API server accepts only a structural subset of OpenAPI v3. This module
rewrites one into the other ($refs inlined, an optional field's anyOf-with-null made nullable, int-or-string
the only anyOf kept) and refuses schemas the API server would reject or
that leave a string, list or map unbounded.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from mlflow_operator.api.kinds import GROUP, KINDS, VERSION, KindInfo

Schema = dict[str, Any]

# JSON Schema keywords the API server does not accept in a structural schema, or that we never want.
_DROPPED_KEYS = {"title", "$defs", "discriminator", "examples"}


class SchemaError(ValueError):
    """The models produced a schema the API server would reject."""


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # pydantic wraps a $ref with siblings in allOf on older versions; unwrap a single-element allOf.
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # Field-level keys (description, json_schema_extra) win over the referenced model's.
        node = {**target, **node}
        if "x-kubernetes-validations" in target and "x-kubernetes-validations" in node:
            merged = target["x-kubernetes-validations"] + [
                rule for rule in node["x-kubernetes-validations"] if rule not in target["x-kubernetes-validations"]
            ]
            node["x-kubernetes-validations"] = merged
        return _resolve(node, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _rewrite_any_of(node: Schema) -> Schema:
    options = node.pop("anyOf")
    non_null = [option for option in options if option.get("type") != "null"]
    nullable = len(non_null) < len(options)
    types = sorted(option.get("type", "") for option in non_null)
    if len(non_null) == 1:
        merged = {**non_null[0], **node}
    elif types == ["integer", "string"]:
        # int-or-string (quantities): keep the string's constraints on the string branch.
        merged = {
            **node,
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
        for option in non_null:
            for key in ("pattern", "maxLength"):
                if key in option:
                    merged[key] = option[key]
    else:
        raise SchemaError(f"unsupported anyOf: {options}")
    if nullable:
        merged["nullable"] = True
    return merged


def _key_rules(property_names: Schema) -> list[dict[str, str]]:
    """Structural schemas have no propertyNames: express the key constraints as CEL instead."""
    rules = []
    if "maxLength" in property_names:
        limit = property_names["maxLength"]
        rules.append(
            {
                "rule": f"self.all(k, size(k) <= {limit})",
                "message": f"keys must be at most {limit} characters",
            }
        )
    if "pattern" in property_names:
        pattern = property_names["pattern"].replace("\\", "\\\\").replace("'", "\\'")
        rules.append(
            {
                "rule": f"self.all(k, k.matches('{pattern}'))",
                "message": f"keys must match {property_names['pattern']}",
            }
        )
    return rules


def _map_keys_as_cel(node: Schema) -> Schema:
    """Structural schemas have neither patternProperties nor propertyNames: move key rules to CEL."""
    if "patternProperties" in node:
        ((key_pattern, value_schema),) = node.pop("patternProperties").items()
        node["additionalProperties"] = value_schema
        node.setdefault("propertyNames", {})["pattern"] = key_pattern
    if "propertyNames" in node:
        rules = _key_rules(node.pop("propertyNames"))
        node["x-kubernetes-validations"] = rules + node.get("x-kubernetes-validations", [])
    return node


def _normalize(node: Schema) -> Schema:
    """Rewrite one node's own keywords (not its children) into what the API server accepts."""
    if "anyOf" in node:
        node = _rewrite_any_of(node)
    node = _map_keys_as_cel({key: value for key, value in node.items() if key not in _DROPPED_KEYS})
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    # Defaults: keep scalar defaults so the API server fills them (kubectl get shows them); drop object,
    # list and null defaults, which pydantic computes from factories and would freeze into the CRD.
    if "default" in node and (node["default"] is None or isinstance(node["default"], dict | list)):
        del node["default"]
    if node.get("type") == "object" and "properties" in node and not node["properties"]:
        del node["properties"]
    if "properties" in node and not node.get("required"):
        node.pop("required", None)
    return node


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _normalize(node)
    result: Schema = {}
    for key, value in node.items():
        if key == "properties":
            result[key] = {name: _structural(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf"):
            result[key] = _structural(value)
        else:
            result[key] = value
    if "type" not in result and not result.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"schema without a type: {node}")
    return result


def _check_bounds(node: Schema, path: str) -> None:
    """Every string, list and map carries a bound, or CEL cost estimation fails."""
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        raise SchemaError(f"{path}: string without maxLength")
    if kind == "array":
        if "maxItems" not in node:
            raise SchemaError(f"{path}: list without maxItems")
        _check_bounds(node["items"], f"{path}[]")
    if kind == "object":
        if "additionalProperties" in node:
            if "maxProperties" not in node:
                raise SchemaError(f"{path}: map without maxProperties")
            _check_bounds(node["additionalProperties"], f"{path}{{}}")
        for name, child in node.get("properties", {}).items():
            _check_bounds(child, f"{path}.{name}")


def _rename_dict_bounds(node: Any) -> Any:
    """pydantic emits maxItems/minItems for dict max_length; OpenAPI calls them maxProperties."""
    if isinstance(node, list):
        return [_rename_dict_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _rename_dict_bounds(value) for key, value in node.items()}
    if node.get("type") == "object" and "additionalProperties" in node:
        for old, new in (("maxItems", "maxProperties"), ("minItems", "minProperties")):
            if old in node:
                node[new] = node.pop(old)
    return node


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: Schema = _structural(_rename_dict_bounds(_resolve(raw, defs)))
    _check_bounds(schema, model.__name__)
    return schema


def crd_for(info: KindInfo) -> dict[str, Any]:
    spec_schema = openapi_schema(info.spec_model)
    status_schema = openapi_schema(info.status_model)
    root: Schema = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [rule.schema() for rule in info.name_rules()],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/part-of": "mlflow-operator"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in info.printer_columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd_yaml(info: KindInfo) -> str:
    header = "# Generated by `make crds` from operator/mlflow_operator/api. Do not edit.\n"
    return header + yaml.safe_dump(crd_for(info), sort_keys=False, width=120)


def crd_files() -> dict[str, str]:
    """File name -> YAML text for every kind, plus a kustomization so `kubectl apply -k` can include them."""
    files = {f"{GROUP}_{info.plural}.yaml": render_crd_yaml(info) for info in KINDS}
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": list(files)}
    files["kustomization.yaml"] = "# Generated by `make crds`. Do not edit.\n" + yaml.safe_dump(
        kustomization, sort_keys=False
    )
    return files
