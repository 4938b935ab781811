from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlflow_operator.logic.conditions import (
    ConditionUpdate,
    apply_updates,
    find,
    initial_unknown,
    is_true,
    set_condition,
    summarize_ready,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_first_sight_sets_transition_time_and_generation() -> None:
    result = set_condition([], ConditionUpdate("Ready", "Unknown", "Reconciling", "starting"), 3, T0)
    assert result == [
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "Reconciling",
            "message": "starting",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = set_condition([], ConditionUpdate("Ready", "False", "Waiting", "a"), 1, T0)
    same_status = set_condition(first, ConditionUpdate("Ready", "False", "StillWaiting", "b"), 2, T1)
    assert same_status[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same_status[0]["reason"] == "StillWaiting"
    assert same_status[0]["observedGeneration"] == 2
    flipped = set_condition(same_status, ConditionUpdate("Ready", "True", "Ready"), 2, T1)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_other_conditions_keep_their_place_and_input_is_not_mutated() -> None:
    start = apply_updates([], initial_unknown(["A", "B", "C"], "Pending", ""), 1, T0)
    snapshot = [dict(c) for c in start]
    result = set_condition(start, ConditionUpdate("B", "True", "Done"), 1, T1)
    assert [c["type"] for c in result] == ["A", "B", "C"]
    assert start == snapshot
    assert is_true(result, "B") and not is_true(result, "A")
    assert find(result, "missing") is None


def test_ready_names_the_first_condition_that_is_not_true() -> None:
    conditions = apply_updates(
        [],
        [
            ConditionUpdate("DatabaseReady", "True", "Ready"),
            ConditionUpdate("PoolerReady", "False", "PodsNotReady", "0/2 ready"),
        ],
        1,
        T0,
    )
    ready = summarize_ready(conditions, ["DatabaseReady", "PoolerReady"])
    assert (ready.status, ready.reason) == ("False", "PodsNotReady")
    assert "PoolerReady" in ready.message
    assert summarize_ready(conditions, ["DatabaseReady"]).status == "True"
    assert summarize_ready(conditions, ["Migrated"]).status == "Unknown"
