"""Gateway API router: one HTTPRoute (gateway.networking.k8s.io/v1) named after the ModelDeployment.

Rules, in the order Gateway API's precedence also gives them (a header match is more specific than the
same path alone):
1. with `headerMatch`, requests carrying the header go to the canary (A/B testing);
2. every other request is split between the stable and canary Services by weight; with `mirrorPercent`, a
   RequestMirror filter copies that percent of them to the canary (shadow traffic; responses are dropped).
   The filter's `percent` field is part of Gateway API since v1.2 (GEP-3171); older implementations mirror
   everything.
The mirror is left out when the Gateway's class cannot mirror (RouteTarget.mirror_supported). Both header
rule and mirror exist only while the canary has ready pods, and the canary backendRef always
exists (its Service selects the stable version when there is no canary), so the route stays valid and
never sends a request to a Service without endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_operator.api.modeldeployment import GatewayAPIRouting, ParentRef
from mlflow_operator.api.traffic import Track, Weights
from mlflow_operator.builders.routers.base import Obj, RouteTarget

GATEWAY_GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GATEWAY_GROUP}/v1"
ROOT_PATH = {"type": "PathPrefix", "value": "/"}


@dataclass(frozen=True)
class GatewayAPIRouter:
    routing: GatewayAPIRouting

    approximate = False
    entry_selects_canary = False

    def objects(self, target: RouteTarget, weights: Weights) -> list[Obj]:
        return [self.http_route(target, weights)]

    def replicas(self, total: int, size_percent: int, track: Track) -> int:
        # Weights are exact whatever the replica counts: a track runs at full size, so that the weight a
        # step sets never lands on too few pods.
        return total if size_percent > 0 else 0

    def weights(self, requested: Weights, stable_replicas: int, canary_replicas: int) -> Weights:
        return requested

    def http_route(self, target: RouteTarget, weights: Weights) -> Obj:
        rules = []
        if self.routing.header_match is not None and weights.canary_available:
            rules.append(self._header_rule(target))
        rules.append(self._weighted_rule(target, weights))
        spec: Obj = {"parentRefs": [_parent_ref(ref) for ref in self.routing.parent_refs]}
        if self.routing.hostnames:
            spec["hostnames"] = list(self.routing.hostnames)
        spec["rules"] = rules
        return {
            "apiVersion": API_VERSION,
            "kind": "HTTPRoute",
            "metadata": {"name": target.name, "namespace": target.namespace, "labels": dict(target.labels)},
            "spec": spec,
        }

    def _header_rule(self, target: RouteTarget) -> Obj:
        header = self.routing.header_match
        assert header is not None
        return {
            "matches": [
                {"path": ROOT_PATH, "headers": [{"type": "Exact", "name": header.name, "value": header.value}]}
            ],
            "backendRefs": [_backend(target.canary_service, target.port)],
        }

    def _weighted_rule(self, target: RouteTarget, weights: Weights) -> Obj:
        rule: Obj = {
            "matches": [{"path": ROOT_PATH}],
            "backendRefs": [
                {**_backend(target.stable_service, target.port), "weight": weights.stable},
                {**_backend(target.canary_service, target.port), "weight": weights.canary},
            ],
        }
        percent = self.routing.mirror_percent
        if percent is not None and weights.canary_available and target.mirror_supported:
            mirror = {"backendRef": _backend(target.canary_service, target.port), "percent": percent}
            rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
        return rule


def _backend(service: str, port: int) -> Obj:
    return {"name": service, "port": port}


def _parent_ref(ref: ParentRef) -> Obj:
    parent: Obj = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
    if ref.namespace:
        parent["namespace"] = ref.namespace
    if ref.section_name:
        parent["sectionName"] = ref.section_name
    return parent
