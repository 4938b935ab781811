"""Replica-ratio router: no router object. The entry Service selects the pods of both tracks, so traffic is
split by the number of ready pods each has, which approximates the weight.

The canary gets round(total x weight / 100) replicas and the stable the rest, so that in a steady step the
two add up to the spec's replicas. A track with a share above 0 gets at least one replica, on top of the
other's: a step of 5% on 2 replicas runs 2 stable pods and 1 canary pod (an effective 33%), and status says
so (`weights` gives the split actually achieved, and the rollout reports it as approximate). Scaling a
track to 0 replicas is the only exact 0%.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_operator.api.traffic import Track, Weights
from mlflow_operator.builders.routers.base import Obj, RouteTarget


def round_half_up(value: float) -> int:
    # Python's round() rounds halves to even: 2.5 -> 2 but 3.5 -> 4. Weights need the same rule both ways.
    return int(value + 0.5)


def canary_replicas(total: int, weight: int) -> int:
    if total <= 0 or weight <= 0:
        return 0
    return max(1, round_half_up(total * weight / 100))


def stable_replicas(total: int, stable_share: int) -> int:
    """The complement of the canary's count for the same split, so that the two add up to `total`."""
    if total <= 0 or stable_share <= 0:
        return 0
    return max(1, total - round_half_up(total * (100 - stable_share) / 100))


def split(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary weight in a steady step."""
    return stable_replicas(total, 100 - weight), canary_replicas(total, weight)


def effective_weight(stable: int, canary: int) -> int:
    """Percent of ready pods on the canary: what a Service's round robin gives it."""
    if stable + canary == 0:
        return 0
    return round_half_up(100 * canary / (stable + canary))


@dataclass(frozen=True)
class ReplicaRatioRouter:
    approximate = True
    entry_selects_canary = True

    def objects(self, target: RouteTarget, weights: Weights) -> list[Obj]:
        return []

    def replicas(self, total: int, size_percent: int, track: Track) -> int:
        if track == "canary":
            return canary_replicas(total, size_percent)
        return stable_replicas(total, size_percent)

    def weights(self, requested: Weights, stable_replicas: int, canary_replicas: int) -> Weights:
        if not requested.canary_available:
            return Weights(0, False)
        return Weights(effective_weight(stable_replicas, canary_replicas), True)
