"""Retry delays: one formula for every dependency that can be down (API server, registry, bucket)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


def exponential_backoff(failures: int, *, base: float, cap: float = 300.0) -> float:
    """Seconds before retrying after `failures` consecutive failures (1 for the first): base, 2*base, ...,
    capped, so a broken dependency is polled at most every `cap` seconds and recovery needs no user."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class RetrySchedule:
    """Consecutive failures of one object and when to try again."""

    failures: int
    retry_at: datetime

    def delay(self, now: datetime) -> float:
        return max(0.0, (self.retry_at - now).total_seconds())


def after_failure(previous: RetrySchedule | None, now: datetime, *, base: float, cap: float = 300.0) -> RetrySchedule:
    """The schedule after a failed pass. A pass that fails before the scheduled retry (woken by its own
    status write, a child's event or a resync) is the same failure seen again: it neither counts nor moves
    the retry. Counting those made a 50 s bucket outage back off to 160 s after five passes in 8 s (the
    chaos tests measured 78-117 s to recover)."""
    if previous is not None and now < previous.retry_at:
        return previous
    failures = (previous.failures if previous is not None else 0) + 1
    return RetrySchedule(failures, now + timedelta(seconds=exponential_backoff(failures, base=base, cap=cap)))
