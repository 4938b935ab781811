"""What every reconciler shares at run time: API clients, the clock and the operator-wide image defaults.
Created at operator start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient

from mlflow_operator.adapters.kube import Kube, KubeStatus
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images
from mlflow_operator.logic.registry_events import Deliveries


def utcnow() -> datetime:
    return datetime.now(UTC)


def _no_wake(kind: str, namespace: str, name: str) -> None:
    return None


def _no_objects(kind: str) -> list[dict[str, Any]]:
    return []


@dataclass
class Runtime:
    client: AsyncClient
    status: KubeStatus
    now: Callable[[], datetime] = utcnow
    # Reconcile another resource soon: (kind, namespace, name). Set by the controllers' wiring.
    wake: Callable[[str, str, str], None] = _no_wake
    # The latest body of every watched resource of a kind (the controllers' cache: no API call).
    objects: Callable[[str], list[dict[str, Any]]] = _no_objects
    # The images children get when their resource names none (--image-registry, --image).
    images: Images = DEFAULT_IMAGES
    # Registry events: the URL tracking servers deliver webhooks to (the operator's receiver, reached through
    # its Service; None: no receiver, every resource polls), and which sources have delivered lately.
    events_url: str | None = None
    # The CA the receiver's certificate is signed by (PEM): tracking servers trust it. None over plain HTTP.
    events_ca: str | None = None
    deliveries: Deliveries = field(default_factory=Deliveries)

    def kube(self, controller: str) -> Kube:
        return Kube(self.client, controller)


_runtime: Runtime | None = None


def start_runtime(images: Images = DEFAULT_IMAGES) -> Runtime:
    global _runtime  # noqa: PLW0603 - one process-wide runtime, set once at start-up
    client = AsyncClient()
    _runtime = Runtime(client=client, status=KubeStatus(client), images=images)
    return _runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator runtime is not started")
    return _runtime
