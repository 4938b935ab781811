"""The rollout's traffic vocabulary, shared by the state machine (logic.rollout emits these as actions) and the
builders (which render them into Deployments and routes): declared once, here below both layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class TrackPlan:
    """Run `version` in the `track` role, sized for `size_percent` of the spec's replicas (only replicaRatio
    splits replicas; other routers run every track at full size). Level-triggered: every pass lists the
    tracks that must exist; every model-server Deployment of the ModelDeployment not listed is removed."""

    track: Track
    version: int
    size_percent: int = 100


@dataclass(frozen=True)
class Weights:
    """Percent of traffic for the canary. `canary_available` (the canary has ready pods) gates every way
    traffic can reach it: weight, header match and mirroring. Level-triggered."""

    canary: int = 0
    canary_available: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.canary <= 100:
            raise ValueError(f"canary weight must be within 0-100, not {self.canary}")

    @property
    def stable(self) -> int:
        return 100 - self.canary
