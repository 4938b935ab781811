"""Validate a spec with the same models that generated the CRD, and explain failures by field path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Invalid:
    """A spec the API server admitted but the operator refuses; message names each field."""

    message: str


@dataclass(frozen=True)
class Valid(Generic[M]):
    spec: M


def _field_path(location: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def explain(error: ValidationError, limit: int = 5) -> str:
    problems = [f"{_field_path(tuple(e['loc']))}: {e['msg']}" for e in error.errors()]
    extra = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + extra


def validate_spec(model: type[M], spec: dict[str, Any] | Any) -> Valid[M] | Invalid:
    try:
        return Valid(model.model_validate(dict(spec or {})))
    except ValidationError as error:
        return Invalid(explain(error))
