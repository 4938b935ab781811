"""Retry delays: one formula for every dependency that can be down (API server, registry, bucket)."""

from __future__ import annotations


def exponential_backoff(failures: int, *, base: float, cap: float = 300.0) -> float:
    """Seconds before retrying after `failures` consecutive failures (1 for the first): base, 2*base, ...,
    capped, so a broken dependency is polled at most every `cap` seconds and recovery needs no user."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))
