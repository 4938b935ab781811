"""What the Gateway made of a ModelDeployment's HTTPRoute, and what the Gateway's class can do: pure decisions
over Gateway API status (a route's status.parents, a GatewayClass's status.supportedFeatures).

- TrafficRouted condition: True once every parent Gateway Accepted the route and ResolvedRefs; False with the
  Gateway's own reason and message when one refused it (a listener that does not admit the namespace, a
  backend it cannot resolve), which also makes Ready False: clients of the Gateway are not served; Unknown
  while no Gateway controller has written status (none installed, or not yet).
- Mirroring only where the class says it can: an implementation that does not support a filter may still
  accept the route and answer every request of that rule with HTTP 500 (Traefik 3.6 does exactly that for
  RequestMirror). Classes that publish no supportedFeatures (Gateway API before v1.2) are trusted. When the
  mirror is left out, TrafficRouted is False with reason MirrorUnsupported, but Ready is not affected: the
  split and header routing still work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlflow_operator.logic.conditions import ConditionUpdate

TRAFFIC_ROUTED = "TrafficRouted"
REASON_ACCEPTED = "Accepted"
REASON_PENDING = "Pending"
REASON_MIRROR_UNSUPPORTED = "MirrorUnsupported"
MIRROR_FEATURE = "HTTPRouteRequestMirror"
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")


def supported_features(gateway_class: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The class's supportedFeatures (objects with a name since Gateway API v1.2, plain strings before);
    None when it publishes none."""
    features = ((gateway_class or {}).get("status") or {}).get("supportedFeatures")
    if not features:
        return None
    return frozenset(str(f.get("name")) if isinstance(f, Mapping) else str(f) for f in features)


def mirror_supported(classes: Sequence[frozenset[str] | None]) -> bool:
    """Whether every parent Gateway's class can mirror (a class publishing nothing is trusted)."""
    return all(features is None or MIRROR_FEATURE in features for features in classes)


def route_condition(route: Mapping[str, Any] | None, mirror_wanted: bool, mirror_written: bool) -> ConditionUpdate:
    parents = ((route or {}).get("status") or {}).get("parents") or []
    for parent in parents:
        refused = _refusal(parent)
        if refused is not None:
            return refused
    if not parents:
        return ConditionUpdate(
            TRAFFIC_ROUTED, "Unknown", REASON_PENDING, "no Gateway controller has reported on the HTTPRoute yet"
        )
    gateways = ", ".join(_parent_name(parent) for parent in parents)
    if mirror_wanted and not mirror_written:
        return ConditionUpdate(
            TRAFFIC_ROUTED,
            "False",
            REASON_MIRROR_UNSUPPORTED,
            f"spec.trafficRouting.gatewayAPI.mirrorPercent: the GatewayClass of {gateways} does not list "
            f"{MIRROR_FEATURE} in status.supportedFeatures; the HTTPRoute splits and matches headers but does "
            "not mirror",
        )
    return ConditionUpdate(TRAFFIC_ROUTED, "True", REASON_ACCEPTED, f"HTTPRoute accepted by {gateways}")


def route_refused(update: ConditionUpdate | None) -> bool:
    """Whether the Gateway refused the route (clients of the Gateway are not served)."""
    return update is not None and update.status == "False" and update.reason != REASON_MIRROR_UNSUPPORTED


def _refusal(parent: Mapping[str, Any]) -> ConditionUpdate | None:
    for condition in parent.get("conditions") or []:
        if condition.get("type") in ROUTE_CONDITIONS and condition.get("status") == "False":
            message = f"Gateway {_parent_name(parent)}: {condition.get('message') or condition.get('reason')}"
            return ConditionUpdate(TRAFFIC_ROUTED, "False", str(condition.get("reason") or "Refused"), message[:1024])
    return None


def _parent_name(parent: Mapping[str, Any]) -> str:
    ref = parent.get("parentRef") or {}
    namespace = ref.get("namespace")
    return f"{namespace}/{ref.get('name')}" if namespace else str(ref.get("name"))
