"""TrafficRouted from a route's status, mirroring gated by the GatewayClass, and Ready when a Gateway refuses."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.modeldeployment import GatewayAPIRouting
from mlflow_operator.api.traffic import Weights
from mlflow_operator.builders.routers import RouteTarget
from mlflow_operator.builders.routers.gatewayapi import GatewayAPIRouter
from mlflow_operator.logic import gateway_route
from mlflow_operator.logic.conditions import ConditionUpdate
from mlflow_operator.logic.modeldeployment import ready_condition
from mlflow_operator.logic.rollout_report import AVAILABLE

GATEWAY = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "mlflow-gateway"}


def parent(namespace: str = "gateway-system", **conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "parentRef": {**GATEWAY, "namespace": namespace},
        "controllerName": "traefik.io/gateway-controller",
        "conditions": [
            {"type": kind, "status": status, "reason": reason, "message": message}
            for kind, (status, reason, message) in conditions.items()
        ],
    }


ACCEPTED = parent(Accepted=("True", "Accepted", ""), ResolvedRefs=("True", "ResolvedRefs", ""))


def test_a_route_every_gateway_accepted_is_routed() -> None:
    update = gateway_route.route_condition({"status": {"parents": [ACCEPTED]}}, False, True)
    assert (update.status, update.reason) == ("True", "Accepted")
    assert "gateway-system/mlflow-gateway" in update.message


def test_a_refusal_carries_the_gateways_reason_and_message_and_makes_ready_false() -> None:
    refused = parent(
        Accepted=("False", "NotAllowedByListeners", "no listener admits routes from namespace ml"),
        ResolvedRefs=("True", "ResolvedRefs", ""),
    )
    update = gateway_route.route_condition({"status": {"parents": [ACCEPTED, refused]}}, False, True)
    assert (update.status, update.reason) == ("False", "NotAllowedByListeners")
    assert update.message == "Gateway gateway-system/mlflow-gateway: no listener admits routes from namespace ml"
    serving = ConditionUpdate(AVAILABLE, "True", "Available", "version 3 serves")
    ready = ready_condition([serving], update)
    assert (ready.status, ready.reason, ready.message) == ("False", update.reason, update.message)
    unresolved = parent(ResolvedRefs=("False", "BackendNotFound", ""))
    assert gateway_route.route_condition({"status": {"parents": [unresolved]}}, False, True).reason == "BackendNotFound"


def test_no_status_yet_is_unknown_and_does_not_block_ready() -> None:
    routes: tuple[dict[str, Any] | None, ...] = (None, {}, {"status": {"parents": []}})
    for route in routes:
        update = gateway_route.route_condition(route, False, True)
        assert (update.status, update.reason) == ("Unknown", "Pending")
    serving = ConditionUpdate(AVAILABLE, "True", "Available", "version 3 serves")
    pending = gateway_route.route_condition(None, False, True)
    assert ready_condition([serving], pending).status == "True"


def test_a_mirror_left_out_is_reported_without_blocking_ready() -> None:
    update = gateway_route.route_condition({"status": {"parents": [ACCEPTED]}}, True, False)
    assert (update.status, update.reason) == ("False", "MirrorUnsupported")
    assert "mirrorPercent" in update.message and "HTTPRouteRequestMirror" in update.message
    serving = ConditionUpdate(AVAILABLE, "True", "Available", "version 3 serves")
    assert ready_condition([serving], update).status == "True"
    # A mirror not wanted right now (no canary) is no problem.
    assert gateway_route.route_condition({"status": {"parents": [ACCEPTED]}}, False, False).status == "True"


def test_supported_features_of_both_api_generations() -> None:
    named = {"status": {"supportedFeatures": [{"name": "Gateway"}, {"name": "HTTPRouteRequestMirror"}]}}
    assert gateway_route.supported_features(named) == frozenset({"Gateway", "HTTPRouteRequestMirror"})
    plain = {"status": {"supportedFeatures": ["HTTPRoute"]}}
    assert gateway_route.supported_features(plain) == frozenset({"HTTPRoute"})
    assert gateway_route.supported_features({"status": {}}) is None
    assert gateway_route.supported_features(None) is None


def test_mirroring_needs_every_class_to_support_it() -> None:
    can, cannot = frozenset({"HTTPRouteRequestMirror"}), frozenset({"HTTPRoute"})
    assert gateway_route.mirror_supported([can, None])
    assert not gateway_route.mirror_supported([can, cannot])
    assert gateway_route.mirror_supported([])


def test_the_router_leaves_the_mirror_out_where_it_is_not_supported() -> None:
    routing = GatewayAPIRouting.model_validate({"parentRefs": [{"name": "gw"}], "mirrorPercent": 20})
    router = GatewayAPIRouter(routing)
    live = Weights(10, canary_available=True)
    for supported, filters in ((True, True), (False, False)):
        target = RouteTarget("fraud", "ml", {}, "fraud-stable", "fraud-canary", 80, mirror_supported=supported)
        (route,) = router.objects(target, live)
        assert ("filters" in route["spec"]["rules"][-1]) is filters
        weights = [ref["weight"] for ref in route["spec"]["rules"][-1]["backendRefs"]]
        assert weights == [90, 10]  # the split is written either way
