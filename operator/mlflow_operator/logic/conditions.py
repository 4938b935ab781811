"""Kubernetes-style conditions as plain data.

lastTransitionTime changes only when status changes; reason, message and observedGeneration are updated
in place. Every function returns new lists, so the caller can compare before writing (idle resyncs write
nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
ConditionDict = dict[str, Any]

READY = "Ready"


@dataclass(frozen=True)
class ConditionUpdate:
    """What a reconcile concluded about one condition type."""

    type: str
    status: Status
    reason: str
    message: str = ""


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str) -> datetime:
    """An RFC 3339 time as the API server and rfc3339() write it (a trailing Z for UTC)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def find(conditions: Sequence[ConditionDict] | None, type_: str) -> ConditionDict | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[ConditionDict] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: Sequence[ConditionDict] | None, update: ConditionUpdate, generation: int | None, now: datetime
) -> list[ConditionDict]:
    """Return conditions with `update` applied; other types keep their place and content."""
    current = find(conditions, update.type)
    transitioned = current is None or current.get("status") != update.status
    new: ConditionDict = {
        "type": update.type,
        "status": update.status,
        "reason": update.reason,
        "message": update.message,
        "lastTransitionTime": rfc3339(now) if transitioned else current["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        new["observedGeneration"] = generation
    result = [dict(c) for c in conditions or () if c.get("type") != update.type]
    index = next((i for i, c in enumerate(conditions or ()) if c.get("type") == update.type), len(result))
    result.insert(index, new)
    return result


def apply_updates(
    conditions: Sequence[ConditionDict] | None,
    updates: Iterable[ConditionUpdate],
    generation: int | None,
    now: datetime,
) -> list[ConditionDict]:
    result = [dict(c) for c in conditions or ()]
    for update in updates:
        result = set_condition(result, update, generation, now)
    return result


def initial_unknown(types: Iterable[str], reason: str, message: str) -> list[ConditionUpdate]:
    """Conditions are set on first sight, as Unknown, so `kubectl wait` and dashboards see them at once."""
    return [ConditionUpdate(type_, "Unknown", reason, message) for type_ in types]


def summarize_ready(conditions: Sequence[ConditionDict], required: Sequence[str]) -> ConditionUpdate:
    """Ready is True only when every required condition is True; otherwise it names the first that is not."""
    for type_ in required:
        condition = find(conditions, type_)
        if condition is None:
            return ConditionUpdate(READY, "Unknown", "Pending", f"{type_} not yet observed")
        if condition["status"] != "True":
            status: Status = "False" if condition["status"] == "False" else "Unknown"
            return ConditionUpdate(READY, status, condition["reason"], f"{type_}: {condition.get('message', '')}")
    return ConditionUpdate(READY, "True", "Ready", "all conditions are met")


@dataclass(frozen=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transition_events(old: Sequence[ConditionDict] | None, new: Sequence[ConditionDict]) -> list[EventSpec]:
    """One Event per condition whose status or reason changed: Warning when it turned False, Normal when
    True. Message-only changes (progress counters) make no Event, so a slow rollout does not spam."""
    events = []
    for condition in new:
        before = find(old, condition["type"])
        if before is not None and (before["status"], before["reason"]) == (condition["status"], condition["reason"]):
            continue
        if condition["status"] == "Unknown":
            continue
        kind: Literal["Normal", "Warning"] = "Normal" if condition["status"] == "True" else "Warning"
        message = f"{condition['type']}={condition['status']}: {condition.get('message', '')}".rstrip(": ")
        events.append(EventSpec(kind, condition["reason"], message))
    return events
