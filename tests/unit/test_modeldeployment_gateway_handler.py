"""The ModelDeployment handler's Gateway reads against a fake of the Kubernetes API: whether the parent
Gateways' class can mirror, and TrafficRouted from the route's status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from mlflow_operator.adapters.kube import Kube
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import TrackPlan, Weights
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.handlers import modeldeployment as handler
from mlflow_operator.handlers.runtime import Runtime

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
GATEWAY_API = "gateway.networking.k8s.io/v1"
Key = tuple[str, str, str | None, str]


class FakeKube:
    """GETs answered from a dict of objects; every other call fails the test."""

    def __init__(self, objects: dict[Key, dict[str, Any]]) -> None:
        self.objects = objects
        self.gets: list[Key] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        self.gets.append((api_version, kind, namespace, name))
        return self.objects.get((api_version, kind, namespace, name))


def spec(**routing: Any) -> ModelDeploymentSpec:
    parent = {"name": "mlflow-gateway", "namespace": "gateway-system"}
    return ModelDeploymentSpec.model_validate(
        {
            "trackingUri": "http://mlflow:5000",
            "model": {"registeredModel": "fraud", "alias": "champion"},
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
            "trafficRouting": {"gatewayAPI": {"parentRefs": [parent], **routing}},
        }
    )


def gateway_objects(features: list[str] | None) -> dict[Key, dict[str, Any]]:
    gateway = {"spec": {"gatewayClassName": "traefik"}}
    gateway_class: dict[str, Any] = {"status": {}}
    if features is not None:
        gateway_class["status"]["supportedFeatures"] = [{"name": name} for name in features]
    return {
        (GATEWAY_API, "Gateway", "gateway-system", "mlflow-gateway"): gateway,
        (GATEWAY_API, "GatewayClass", None, "traefik"): gateway_class,
    }


def a_pass(kube: FakeKube, md_spec: ModelDeploymentSpec) -> handler.Pass:
    body = {"metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"}}
    return handler.Pass(cast(Runtime, None), cast(Kube, kube), body, md_spec, NOW)


def can_mirror(
    objects: dict[Key, dict[str, Any]], md_spec: ModelDeploymentSpec, canary_available: bool = True
) -> tuple[bool, FakeKube]:
    kube = FakeKube(objects)
    return asyncio.run(handler.gateways_can_mirror(a_pass(kube, md_spec), canary_available)), kube


def test_mirroring_follows_the_gateway_class_features() -> None:
    mirroring = spec(mirrorPercent=10)
    assert can_mirror(gateway_objects(["HTTPRoute", "HTTPRouteRequestMirror"]), mirroring)[0] is True
    assert can_mirror(gateway_objects(["HTTPRoute"]), mirroring)[0] is False  # Traefik 3.6
    assert can_mirror(gateway_objects(None), mirroring)[0] is True  # publishes nothing: trusted
    assert can_mirror({}, mirroring)[0] is True  # no Gateway found: its route status will say why


def test_no_mirror_asked_means_no_gateway_read() -> None:
    supported, kube = can_mirror(gateway_objects(["HTTPRoute"]), spec())
    assert supported is True and kube.gets == []
    # No canary with ready pods: no mirror would be written, so nothing is read either.
    supported, kube = can_mirror(gateway_objects(["HTTPRoute"]), spec(mirrorPercent=10), canary_available=False)
    assert supported is True and kube.gets == []


def inputs(md_spec: ModelDeploymentSpec, tracks: tuple[TrackPlan, ...]) -> build.ModelDeploymentInputs:
    weights = Weights(20, canary_available=True)
    return build.ModelDeploymentInputs("fraud", "ml", md_spec, "http://mlflow:5000", None, tracks, weights, False)


def test_traffic_routed_reads_the_routes_status() -> None:
    refused = {
        "parentRef": {"name": "mlflow-gateway", "namespace": "gateway-system"},
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NoMatchingParent", "message": "no listener"}],
    }
    route = {"status": {"parents": [refused]}}
    kube = FakeKube({(GATEWAY_API, "HTTPRoute", "ml", "fraud"): route})
    tracks = (TrackPlan("stable", 1), TrackPlan("canary", 2))
    update = asyncio.run(handler.route_status(a_pass(kube, spec(mirrorPercent=10)), inputs(spec(), tracks)))
    assert update is not None
    assert (update.type, update.status, update.reason) == ("TrafficRouted", "False", "NoMatchingParent")
    assert update.message == "Gateway gateway-system/mlflow-gateway: no listener"


def test_no_route_status_before_a_version_runs_or_without_a_gateway() -> None:
    kube = FakeKube({})
    assert asyncio.run(handler.route_status(a_pass(kube, spec()), inputs(spec(), ()))) is None
    plain = ModelDeploymentSpec.model_validate(
        {"trackingUri": "http://mlflow:5000", "model": {"registeredModel": "fraud", "version": 1}}
    )
    tracks = (TrackPlan("stable", 1),)
    assert asyncio.run(handler.route_status(a_pass(kube, plain), inputs(plain, tracks))) is None
    assert kube.gets == []
