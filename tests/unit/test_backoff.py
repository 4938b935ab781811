"""Retry schedules: a failure seen again before its retry is due is not a new failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlflow_operator.logic.backoff import after_failure, exponential_backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_delays_double_up_to_the_cap() -> None:
    assert [exponential_backoff(n, base=10) for n in (1, 2, 3, 6, 7)] == [10, 20, 40, 300, 300]


def test_passes_before_the_retry_neither_count_nor_move_it() -> None:
    first = after_failure(None, T0, base=10)
    assert (first.failures, first.delay(T0)) == (1, 10)
    # Woken by its own status write, a child event and a resync, all within the 10 s: the same failure.
    for seconds in (0.4, 0.7, 7.3):
        again = after_failure(first, T0 + timedelta(seconds=seconds), base=10)
        assert again == first
        assert again.delay(T0 + timedelta(seconds=seconds)) == 10 - seconds
    second = after_failure(first, T0 + timedelta(seconds=10), base=10)
    assert (second.failures, second.delay(T0 + timedelta(seconds=10))) == (2, 20)
