"""The CRDs' OpenAPI schemas as generated from the models, and a walk over every node of one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mlflow_operator.api import KINDS
from mlflow_operator.api.crd import crd_for


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for info in KINDS:
        yield info.kind, crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
