"""Status bookkeeping shared by every kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def changed_fields(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs: an idle resync produces an empty patch."""
    current = current or {}
    return {key: value for key, value in desired.items() if current.get(key) != value}
