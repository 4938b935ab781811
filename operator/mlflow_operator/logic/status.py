"""Status bookkeeping shared by every kind."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def changed_fields(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs: an idle resync produces an empty patch."""
    current = current or {}
    return {key: value for key, value in desired.items() if current.get(key) != value}


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float:
    """Seconds in a duration as the API writes them (api.common.DURATION_PATTERN): 30s, 5m, 1h30m, 7d."""
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)
