"""The small interface every traffic router implements (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mlflow_operator.api.traffic import Track, Weights

Obj = dict[str, Any]


@dataclass(frozen=True)
class RouteTarget:
    """What a router sends traffic to: the ModelDeployment's two track Services."""

    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    stable_service: str = ""
    canary_service: str = ""
    port: int = 80
    # Whether the Gateway can mirror (logic.gateway_route.mirror_supported): without it a mirror filter would
    # not be ignored but could break the whole rule, so it is left out.
    mirror_supported: bool = True


class Router(Protocol):
    """A way to split traffic between the stable and the canary track."""

    @property
    def approximate(self) -> bool:
        """Whether the split is only approximated (status.weightApproximate)."""
        ...

    @property
    def entry_selects_canary(self) -> bool:
        """Whether the entry Service selects the pods of both tracks (else only the stable's)."""
        ...

    def objects(self, target: RouteTarget, weights: Weights) -> list[Obj]:
        """The router's own objects (e.g. an HTTPRoute); empty when it needs none."""
        ...

    def replicas(self, total: int, size_percent: int, track: Track) -> int:
        """Replicas of a track sized for `size_percent` of `total` (the spec's replicas)."""
        ...

    def weights(self, requested: Weights, stable_replicas: int, canary_replicas: int) -> Weights:
        """The split traffic actually gets, for status."""
        ...
