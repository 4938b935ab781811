"""Traffic routers: one module per router behind one small interface, as in Argo Rollouts.

A router turns the rollout's weights into what splits traffic, and says how many replicas each track
runs and what split traffic really gets:
- `gatewayapi`: an HTTPRoute (gateway.networking.k8s.io/v1) with weighted backendRefs, an optional header
  match to the canary (A/B) and optional mirroring (shadow). Exact; every track runs at full size.
- `replicaratio`: no router object; the entry Service selects both tracks and the split follows the replica
  counts. Approximate, and said to be in status.
- no `trafficRouting` (no canary strategy): the entry Service selects the stable version only; a new version
  takes all traffic at once when it becomes stable.

`router_for(spec)` picks one. Routers are pure: spec and weights in, objects and numbers out.
"""

from __future__ import annotations

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import Track, Weights
from mlflow_operator.builders.routers.base import Obj, Router, RouteTarget
from mlflow_operator.builders.routers.gatewayapi import GatewayAPIRouter
from mlflow_operator.builders.routers.replicaratio import ReplicaRatioRouter


class StableOnlyRouter:
    """No router: every track runs at full size and only the stable one gets traffic."""

    approximate = False
    entry_selects_canary = False

    def objects(self, target: RouteTarget, weights: Weights) -> list[Obj]:
        return []

    def replicas(self, total: int, size_percent: int, track: Track) -> int:
        return total if size_percent > 0 else 0

    def weights(self, requested: Weights, stable_replicas: int, canary_replicas: int) -> Weights:
        return Weights(0, requested.canary_available)


def router_for(spec: ModelDeploymentSpec) -> Router:
    routing = spec.traffic_routing
    if routing is not None and routing.gateway_api is not None:
        return GatewayAPIRouter(routing.gateway_api)
    if routing is not None and routing.replica_ratio is not None:
        return ReplicaRatioRouter()
    return StableOnlyRouter()


__all__ = [
    "GatewayAPIRouter",
    "ReplicaRatioRouter",
    "RouteTarget",
    "Router",
    "StableOnlyRouter",
    "router_for",
]
