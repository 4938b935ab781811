"""Registry events: MLflow's model-registry webhooks as wake-ups for the resources that follow a model.

MLflow (3.3+) POSTs a JSON event to each registered webhook when a model version is created, an alias is set
or deleted, or a version tag changes, signed the Standard Webhooks way: HMAC-SHA256 over
"<delivery id>.<unix timestamp>.<body>" with the webhook's secret, sent as "v1,<base64>" with the id and the
timestamp in their own headers. Delivery is at most once (a few retries, then dropped), so an event only
wakes a resource early: the reconcile still reads the registry, and polling stays the safety net.

Everything here is pure: the receiver (handlers.registry_events) does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mlflow_operator.logic.conditions import Status

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# A delivery older (or further in the future) than this is refused: a captured request cannot be replayed
# later. MLflow signs when it sends, and retries re-sign, so only clock skew needs room.
REPLAY_WINDOW_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024  # MLflow's payloads are a few hundred bytes; a larger body is not MLflow's

# The events that change what a RegisteredModel or a ModelDeployment would see: (entity, action) as MLflow's
# REST API spells them. A new version (a RegisteredModel's version list), an alias set or deleted (a
# ModelDeployment follows an alias), a version tag set or deleted (a RegisteredModel's declared tags).
WEBHOOK_EVENTS: tuple[tuple[str, str], ...] = (
    ("MODEL_VERSION", "CREATED"),
    ("MODEL_VERSION_ALIAS", "CREATED"),
    ("MODEL_VERSION_ALIAS", "DELETED"),
    ("MODEL_VERSION_TAG", "SET"),
    ("MODEL_VERSION_TAG", "DELETED"),
)

# Why a delivery was refused: the metric's label values, and the word in the log line.
BAD_SIGNATURE, STALE, MALFORMED, UNKNOWN_SOURCE, UNKNOWN_MODEL = (
    "bad_signature",
    "stale",
    "malformed",
    "unknown_source",
    "unknown_model",
)


@dataclass(frozen=True)
class RegistryEvent:
    """One verified delivery: what happened to which registered model."""

    entity: str  # model_version_alias, model_version, ...
    action: str  # created, deleted, set
    model: str  # the registered model's name
    delivery_id: str

    @property
    def type(self) -> str:
        return f"{self.entity}.{self.action}"


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of the reasons above
    detail: str  # for the log: never a secret nor a signature


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The signature MLflow sends for this delivery (mlflow.webhooks.delivery._generate_hmac_signature)."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_delivery(
    headers: Mapping[str, str], body: bytes, secrets: Iterable[str], now_unix: float
) -> RegistryEvent | Rejected:
    """A delivery MLflow signed with one of `secrets` (more than one while a secret is being replaced), sent
    within the replay window, carrying a registered model's name; else why not. `headers` must be looked up
    case-insensitively (aiohttp's and requests' mappings are)."""
    delivery_id = headers.get(DELIVERY_ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signatures = headers.get(SIGNATURE_HEADER, "").split()
    if not delivery_id or not timestamp or not signatures:
        return Rejected(BAD_SIGNATURE, "unsigned: a signature, timestamp or delivery id header is missing")
    if len(body) > MAX_BODY_BYTES:
        return Rejected(MALFORMED, f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        text = body.decode()
        sent = int(timestamp)
    except (UnicodeDecodeError, ValueError):
        return Rejected(MALFORMED, "timestamp or body not readable")
    expected = {sign(secret, delivery_id, timestamp, text) for secret in secrets if secret}
    if not any(hmac.compare_digest(given, wanted) for given in signatures for wanted in expected):
        return Rejected(BAD_SIGNATURE, f"signature does not match (delivery {delivery_id[:64]})")
    if abs(now_unix - sent) > REPLAY_WINDOW_SECONDS:
        return Rejected(STALE, f"sent {int(now_unix - sent)}s ago, outside the {REPLAY_WINDOW_SECONDS}s window")
    return parse_event(text, delivery_id)


def parse_event(text: str, delivery_id: str) -> RegistryEvent | Rejected:
    try:
        payload = json.loads(text)
    except ValueError:
        return Rejected(MALFORMED, "body is not JSON")
    if not isinstance(payload, dict):
        return Rejected(MALFORMED, "body is not a JSON object")
    data = payload.get("data")
    model = data.get("name") if isinstance(data, dict) else None
    entity, action = payload.get("entity"), payload.get("action")
    if not isinstance(model, str) or not model or not isinstance(entity, str) or not isinstance(action, str):
        return Rejected(MALFORMED, "no entity, action or data.name")
    return RegistryEvent(entity[:64], action[:64], model, delivery_id)


# ------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Who sends a delivery, from the receiver's path: a TrackingServer the operator registered a webhook
    with, or a Secret a user configured on an external registry's webhook (spec.registryEvents.secret)."""

    kind: Literal["trackingservers", "secrets"]
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"{RECEIVER_PATH_PREFIX}/{self.namespace}/{self.kind}/{self.name}"


RECEIVER_PATH_PREFIX = "/registry-events"


def source_from_path(path: str) -> Source | None:
    parts = path.removeprefix(RECEIVER_PATH_PREFIX).strip("/").split("/")
    if len(parts) != 3 or not path.startswith(RECEIVER_PATH_PREFIX + "/") or not all(parts):
        return None
    namespace, kind, name = parts
    if kind == "trackingservers":
        return Source("trackingservers", namespace, name)
    if kind == "secrets":
        return Source("secrets", namespace, name)
    return None


def receiver_url(base_url: str, source: Source) -> str:
    return base_url.rstrip("/") + source.path


def source_of(body: Mapping[str, Any]) -> Source | None:
    """Where a RegisteredModel's or ModelDeployment's events come from: its TrackingServer, or the Secret its
    spec.registryEvents names for an external trackingUri (None: it has no event source and polls only)."""
    spec = body.get("spec") or {}
    namespace = body["metadata"]["namespace"]
    ref = spec.get("trackingServerRef") or {}
    if ref.get("name"):
        return Source("trackingservers", namespace, ref["name"])
    secret = (spec.get("registryEvents") or {}).get("secret") or {}
    if spec.get("trackingUri") and secret.get("name"):
        return Source("secrets", namespace, secret["name"])
    return None


def followed_model(kind: str, body: Mapping[str, Any]) -> str | None:
    """The registered model a resource follows: a RegisteredModel's spec.modelName (else its metadata.name, as
    logic.registeredmodel.desired_model names it), a ModelDeployment's spec.model.registeredModel."""
    spec = body.get("spec") or {}
    if kind == "RegisteredModel":
        return str(spec.get("modelName") or body["metadata"]["name"])
    return (spec.get("model") or {}).get("registeredModel")


def targets(source: Source, model: str, kind: str, bodies: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(name, uid) of the resources of `kind` that follow `model` through `source`."""
    return sorted(
        (body["metadata"]["name"], body["metadata"].get("uid", ""))
        for body in bodies
        if body["metadata"].get("namespace") == source.namespace
        and source_of(body) == source
        and followed_model(kind, body) == model
    )


# ------------------------------------------------------------------------------------------ registration


@dataclass(frozen=True)
class WebhookSpec:
    """The one webhook the operator keeps in a TrackingServer's MLflow. MLflow never returns a webhook's
    secret, so the description carries a digest of the URL, the events and the secret: a webhook whose digest
    differs is updated, one that matches is left alone (an idle pass writes nothing)."""

    name: str
    url: str
    events: tuple[tuple[str, str], ...]
    secret: str

    @property
    def digest(self) -> str:
        material = json.dumps([self.url, self.events, self.secret])
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    @property
    def description(self) -> str:
        return f"Managed by mlflow-operator: wakes what follows these models. config {self.digest}"

    def events_json(self) -> list[dict[str, str]]:
        return [{"entity": entity, "action": action} for entity, action in self.events]


def webhook_name(namespace: str, name: str) -> str:
    return f"mlflow-operator-{namespace}-{name}"


@dataclass(frozen=True)
class WebhookPlan:
    create: bool
    update_id: str | None  # the kept webhook, when it needs an update
    keep_id: str | None  # the webhook that stays (after create: unknown until MLflow answers)
    delete_ids: tuple[str, ...]  # duplicates by name: "exactly one webhook per TrackingServer"


def plan_webhook(existing: Iterable[Mapping[str, Any]], desired: WebhookSpec) -> WebhookPlan:
    """Create, update or keep the webhook named desired.name, found among `existing` (MLflow's list)."""
    mine = [w for w in existing if w.get("name") == desired.name]
    if not mine:
        return WebhookPlan(create=True, update_id=None, keep_id=None, delete_ids=())
    # Keep one whose config is current if there is one, so a duplicate left by a crash is the one removed.
    mine.sort(key=lambda w: (desired.digest not in (w.get("description") or ""), str(w.get("webhook_id"))))
    kept, extra = mine[0], tuple(str(w["webhook_id"]) for w in mine[1:])
    current = desired.digest in (kept.get("description") or "") and (kept.get("status") or "ACTIVE") == "ACTIVE"
    kept_id = str(kept["webhook_id"])
    return WebhookPlan(create=False, update_id=None if current else kept_id, keep_id=kept_id, delete_ids=extra)


# ------------------------------------------------------------------------------------------ polling


# A source counts as delivering while its last verified delivery is this recent. The operator's own webhooks are
# tested every 10 minutes, so they stay fresh while they work; an external MLflow's webhook is known to work
# only while events arrive. A webhook that broke or was switched off then stops lengthening the poll.
RECEIVING_WINDOW = timedelta(minutes=15)


def delivering(last: datetime | None, now: datetime) -> bool:
    return last is not None and now - last <= RECEIVING_WINDOW


def event_condition(
    source: Source | None, configured: bool, last: datetime | None, now: datetime, poll: float
) -> tuple[Status, str, str]:
    """The RegistryEvents condition of a RegisteredModel or ModelDeployment: (status, reason, message)."""
    every = f"the registry is read every {poll:g}s"
    if not configured:
        return "False", "NotConfigured", f"the operator runs no registry-events receiver: {every}"
    if source is None:
        return "False", "NotConfigured", f"trackingUri without spec.registryEvents.secret: {every}"
    if not delivering(last, now):
        window = int(RECEIVING_WINDOW.total_seconds() // 60)
        return "False", "NoDelivery", f"no verified delivery from {source.path} in {window} min: {every}"
    return "True", "Receiving", f"events from {source.path} wake this resource; {every} as a fallback"


def poll_seconds(poll_interval: float, receiving: bool, events_poll_interval: float) -> float:
    """How long a resource waits before reading the registry again: its own interval, lengthened to
    `events_poll_interval` while events arrive (never shorter than its own, and never off: a missed event is
    still picked up by the next poll)."""
    return max(poll_interval, events_poll_interval) if receiving else poll_interval


@dataclass
class Deliveries:
    """When each source last sent a verified delivery (a test delivery included): what tells a resource its
    events flow. In memory: after a restart a source counts as receiving again at its next delivery (a
    TrackingServer's webhook is tested again at the operator's first pass)."""

    last: dict[Source, datetime] = field(default_factory=dict)

    def record(self, source: Source, at: datetime) -> None:
        self.last[source] = at

    def last_delivery(self, source: Source) -> datetime | None:
        return self.last.get(source)

    def forget(self, source: Source) -> None:
        self.last.pop(source, None)
