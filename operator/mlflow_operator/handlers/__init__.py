"""kopf wiring: watch events feed one Controller per kind; children's events wake their owner.

Importing this package registers the handlers with kopf.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kopf

from mlflow_operator.api import GROUP, KINDS, VERSION
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images
from mlflow_operator.builders.trackingserver import COMPONENT_GC
from mlflow_operator.handlers import (
    modeldeployment,
    operator_settings,
    registeredmodel,
    trackingserver,
)
from mlflow_operator.handlers.controller import Controller
from mlflow_operator.handlers.receiver_tls import ReceiverService, TlsSettings
from mlflow_operator.handlers.runtime import Runtime, runtime, start_runtime

RESYNC_SECONDS = 60.0
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlflow-operator"}
# Children whose status changes should wake their owner (readiness of pods, Jobs finishing).
WATCHED_CHILDREN = (("apps", "v1", "deployments"), ("apps", "v1", "statefulsets"), ("batch", "v1", "jobs"))

ReconcileFn = Callable[[Runtime, dict[str, Any]], Awaitable[float | None]]
RECONCILERS: dict[str, ReconcileFn] = {
    "TrackingServer": trackingserver.reconcile,
    "RegisteredModel": registeredmodel.reconcile,
    "ModelDeployment": modeldeployment.reconcile,
}


def _bind(fn: ReconcileFn) -> Callable[[dict[str, Any]], Awaitable[float | None]]:
    async def bound(body: dict[str, Any]) -> float | None:
        return await fn(runtime(), body)

    return bound


# RegisteredModels resync on their own spec.resyncInterval (the reconcile returns it): a global tick would
# poll every registry more often than its owner asked.
OWN_RESYNC = {"RegisteredModel"}


def _resync_for(kind: str, seconds: float) -> float | None:
    return None if kind in OWN_RESYNC else seconds


CONTROLLERS = {kind: Controller(kind, _bind(fn), _resync_for(kind, RESYNC_SECONDS)) for kind, fn in RECONCILERS.items()}
# What the handler.memo registry does not hold: a deleted ModelDeployment's rollout series.
CONTROLLERS["ModelDeployment"].forget = modeldeployment.forget


def _register(plural: str, kind: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural, id=f"watch-{plural}")
    def _watched(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        CONTROLLERS[kind].observe(event.get("type"), dict(body))


for _info in KINDS:
    _register(_info.plural, _info.kind)


def _owner_key(body: kopf.Body) -> tuple[str, tuple[str, str]] | None:
    metadata = body.get("metadata", {})
    for reference in metadata.get("ownerReferences") or []:
        if reference.get("apiVersion", "").startswith(f"{GROUP}/") and reference.get("kind") in CONTROLLERS:
            return reference["kind"], (metadata["namespace"], reference["name"])
    # gc Jobs are owned by the CronJob, not the TrackingServer: their labels name it (GarbageCollected).
    labels = metadata.get("labels") or {}
    if labels.get("app.kubernetes.io/component") == COMPONENT_GC and labels.get("app.kubernetes.io/instance"):
        return "TrackingServer", (metadata["namespace"], labels["app.kubernetes.io/instance"])
    return None


for _group, _version, _plural in WATCHED_CHILDREN:

    @kopf.on.event(_group, _version, _plural, labels=MANAGED_BY, id=f"children-{_plural}")
    def _child_changed(body: kopf.Body, **_: Any) -> None:
        owner = _owner_key(body)
        if owner is not None:
            CONTROLLERS[owner[0]].enqueue(owner[1])


@dataclass
class StartupSettings:
    """What the runtime is started with (set by configure, read at kopf's startup)."""

    images: Images = DEFAULT_IMAGES
    # The registry-events receiver: where it listens, and the URL tracking servers deliver to (both, or none).
    events_listen: tuple[str, int] | None = None
    events_url: str | None = None
    events_tls: TlsSettings | None = None  # None: plain HTTP
    receiver: ReceiverService | None = None


STARTUP = StartupSettings()


def configure(
    resync_seconds: float,
    prometheus_address: str | None = None,
    images: Images = DEFAULT_IMAGES,
    events_listen: tuple[str, int] | None = None,
    events_url: str | None = None,
    events_tls: TlsSettings | None = None,
) -> None:
    """Set before the operator starts (the CLI's --resync-seconds, --prometheus-address, --image-registry,
    --image, --registry-events-address and --registry-events-url)."""
    for kind, controller in CONTROLLERS.items():
        controller.resync_seconds = _resync_for(kind, resync_seconds)
    modeldeployment.DEFAULTS.prometheus_address = prometheus_address
    STARTUP.images = images
    STARTUP.events_listen, STARTUP.events_url, STARTUP.events_tls = events_listen, events_url, events_tls


@kopf.on.startup()
async def _start(**_: Any) -> None:
    rt = start_runtime(STARTUP.images)
    rt.wake = lambda kind, namespace, name: CONTROLLERS[kind].enqueue((namespace, name))
    rt.objects = lambda kind: list(CONTROLLERS[kind].objects.values())
    if STARTUP.events_listen is not None and STARTUP.events_url is not None:
        STARTUP.receiver = ReceiverService(rt, STARTUP.events_listen, STARTUP.events_url, STARTUP.events_tls)
        await STARTUP.receiver.start()
    for controller in CONTROLLERS.values():
        controller.start()


@kopf.on.cleanup()
async def _stop(**_: Any) -> None:
    for controller in CONTROLLERS.values():
        await controller.stop()
    if STARTUP.receiver is not None:
        await STARTUP.receiver.stop()
    await runtime().client.close()


__all__ = ["CONTROLLERS", "configure", "modeldeployment", "operator_settings", "registeredmodel", "trackingserver"]
