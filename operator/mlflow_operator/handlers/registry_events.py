"""The registry-events receiver: an HTTP(S) endpoint in the operator that MLflow's webhooks POST to.

A delivery is verified (logic.registry_events.verify_delivery) against the secret of the source its path
names, then wakes the RegisteredModels and ModelDeployments that follow that model through that source: a
wake-up, never a decision (their reconcile reads the registry). What is refused is logged without the
secret or the signature, counted by reason, and answered with 401/400/404 (MLflow retries only 429 and 5xx).
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from mlflow_operator import metrics
from mlflow_operator.adapters.registry import RegistryError
from mlflow_operator.adapters.registry_webhooks import RegistryWebhooks
from mlflow_operator.api.common import RegistryEvents, WebhookSecret, duration_seconds
from mlflow_operator.api.kinds import MODEL_DEPLOYMENT, REGISTERED_MODEL, TRACKING_SERVER
from mlflow_operator.builders.trackingserver import Names
from mlflow_operator.builders.trackingserver.secrets import (
    EVENTS_CA_KEY,
    WEBHOOK_SECRET_KEY,
    get_registry_events_secret,
)
from mlflow_operator.handlers.memo import Memo
from mlflow_operator.handlers.reconcile import SecretProblem, generated_secret, new_password, read_secret_keys
from mlflow_operator.handlers.registry_access import tracking_server_registry
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import registry_events as events
from mlflow_operator.logic.conditions import ConditionUpdate

DEFAULT_EVENTS_POLL = str(RegistryEvents.model_fields["poll_interval"].default)
DEFAULT_WEBHOOK_SECRET_KEY = str(WebhookSecret.model_fields["key"].default)

logger = logging.getLogger("mlflow_operator.registry_events")
FOLLOWERS = (REGISTERED_MODEL.kind, MODEL_DEPLOYMENT.kind)
SECRET_CACHE_SECONDS = 30.0  # a burst of deliveries (or of forged requests) reads each Secret once
# A delivery the cached secrets refuse re-reads them when they are at least this old: a secret just changed
# (a new webhook secret, a TrackingServer just created) is honoured at once, and forged requests still cause
# at most one Secret read per source this often.
SECRET_REREAD_SECONDS = 2.0
SHUTDOWN_SECONDS = 5.0  # a delivery in flight at shutdown: MLflow retries it against the next operator
REGISTRY_EVENTS = "RegistryEvents"  # the condition type, on all three kinds
# When an event last woke each follower (by uid): its next pass reads the registry even before its poll is due.
_event_at: dict[str, Memo[datetime]] = {kind: Memo(kind) for kind in FOLLOWERS}


def last_event(kind: str, uid: str) -> datetime | None:
    return _event_at[kind].get(uid)


def follower_events(rt: Runtime, body: dict[str, Any], own_poll_seconds: float) -> tuple[ConditionUpdate, float]:
    """A RegisteredModel's or ModelDeployment's RegistryEvents condition, and how long it may wait before
    reading the registry again (longer while events arrive)."""
    settings = (body.get("spec") or {}).get("registryEvents") or {}
    events_poll = duration_seconds(settings.get("pollInterval") or DEFAULT_EVENTS_POLL)
    source = events.source_of(body)
    last = rt.deliveries.last_delivery(source) if source is not None else None
    configured = rt.events_url is not None
    now = rt.now()
    poll = events.poll_seconds(own_poll_seconds, configured and events.delivering(last, now), events_poll)
    status, reason, message = events.event_condition(source, configured, last, now, poll)
    return ConditionUpdate(REGISTRY_EVENTS, status, reason, message), poll


@dataclass
class SecretCache:
    """The secrets of each source, read from their Secrets at most every SECRET_CACHE_SECONDS."""

    entries: dict[events.Source, tuple[float, tuple[str, ...]]] = field(default_factory=dict)

    async def secrets(
        self, rt: Runtime, source: events.Source, max_age: float = SECRET_CACHE_SECONDS
    ) -> tuple[str, ...]:
        cached = self.entries.get(source)
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        values = await read_source_secrets(rt, source)
        self.entries[source] = (time.monotonic(), values)
        return values


async def read_source_secrets(rt: Runtime, source: events.Source) -> tuple[str, ...]:
    """The secrets a delivery from `source` may be signed with; none for a source nothing configures."""
    if source.kind == "trackingservers":
        if not any(_key(body) == (source.namespace, source.name) for body in rt.objects(TRACKING_SERVER.kind)):
            return ()
        name, keys = Names(source.name).registry_events_secret, {WEBHOOK_SECRET_KEY}
    else:
        name, keys = source.name, secret_keys_named(rt, source)
        if not keys:
            return ()
    values: list[str] = []
    for key in sorted(keys):
        try:
            found = await read_secret_keys(rt, source.namespace, name, "spec.registryEvents.secret", {key: "key"})
        except SecretProblem:
            continue
        values.append(found[key])
    return tuple(values)


def secret_keys_named(rt: Runtime, source: events.Source) -> set[str]:
    """The keys of Secret `source.name` that resources following models through it name."""
    keys: set[str] = set()
    for kind in FOLLOWERS:
        for body in rt.objects(kind):
            if events.source_of(body) == source:
                secret = ((body.get("spec") or {}).get("registryEvents") or {}).get("secret") or {}
                keys.add(secret.get("key") or DEFAULT_WEBHOOK_SECRET_KEY)
    return keys


def _key(body: dict[str, Any]) -> tuple[str, str]:
    return body["metadata"].get("namespace", ""), body["metadata"]["name"]


@dataclass
class Receiver:
    rt: Runtime
    cache: SecretCache = field(default_factory=SecretCache)

    async def handle(self, request: web.Request) -> web.Response:
        source = events.source_from_path(request.path)
        if source is None:
            return self._refuse(events.UNKNOWN_SOURCE, f"no source at {request.path[:200]}", 404)
        body = await request.content.read(events.MAX_BODY_BYTES + 1)
        verdict = await self.verify(source, request, body)
        if verdict is None:
            return self._refuse(events.UNKNOWN_SOURCE, f"{source.path}: no webhook is configured there", 404)
        if isinstance(verdict, events.Rejected):
            status = 400 if verdict.reason == events.MALFORMED else 401
            return self._refuse(verdict.reason, f"{source.path}: {verdict.detail}", status)
        self.rt.deliveries.record(source, self.rt.now())
        woken = self.wake(source, verdict)
        metrics.REGISTRY_EVENTS.labels(verdict.type).inc()
        if not woken:
            # MLflow's test deliveries name its example model: counted here, answered as accepted.
            metrics.REGISTRY_EVENTS_REJECTED.labels(events.UNKNOWN_MODEL).inc()
        logger.info("%s: %s for model %r woke %d resource(s)", source.path, verdict.type, verdict.model, woken)
        return web.json_response({"woken": woken})

    async def verify(
        self, source: events.Source, request: web.Request, body: bytes
    ) -> events.RegistryEvent | events.Rejected | None:
        """The delivery checked against the source's secrets, read again if the cached ones refuse it; None
        when nothing configures the source."""
        verdict: events.RegistryEvent | events.Rejected | None = None
        for max_age in (SECRET_CACHE_SECONDS, SECRET_REREAD_SECONDS):
            secrets = await self.cache.secrets(self.rt, source, max_age)
            verdict = events.verify_delivery(request.headers, body, secrets, time.time()) if secrets else None
            if isinstance(verdict, events.RegistryEvent) or (
                verdict is not None and verdict.reason != events.BAD_SIGNATURE
            ):
                return verdict
        return verdict

    def wake(self, source: events.Source, event: events.RegistryEvent) -> int:
        woken = 0
        for kind in FOLLOWERS:
            for name, uid in events.targets(source, event.model, kind, self.rt.objects(kind)):
                _event_at[kind].set(uid, self.rt.now())
                self.rt.wake(kind, source.namespace, name)
                metrics.REGISTRY_EVENT_WAKEUPS.labels(kind).inc()
                woken += 1
        return woken

    @staticmethod
    def _refuse(reason: str, detail: str, status: int) -> web.Response:
        metrics.REGISTRY_EVENTS_REJECTED.labels(reason).inc()
        logger.warning("registry event refused (%s): %s", reason, detail)
        return web.json_response({"error": reason}, status=status)


def receiver_app(rt: Runtime) -> web.Application:
    receiver = Receiver(rt)
    app = web.Application(client_max_size=events.MAX_BODY_BYTES + 1)
    app.router.add_post(events.RECEIVER_PATH_PREFIX + "/{namespace}/{kind}/{name}", receiver.handle)
    return app


async def start_receiver(rt: Runtime, host: str, port: int, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve the receiver on host:port (HTTPS with `tls`); stop it with `await runner.cleanup()`."""
    runner = web.AppRunner(receiver_app(rt), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return runner


# ------------------------------------------------------------------------------- a TrackingServer's webhook

# The webhook config each TrackingServer's MLflow was last verified with (a test delivery accepted), and when:
# an idle pass calls MLflow only to re-test now and then, so a receiver that stopped accepting shows up.
_verified: Memo[tuple[str, datetime]] = Memo(TRACKING_SERVER.kind)
RETEST_SECONDS = 600.0


REMOVED = "removed"


async def remove_webhook(rt: Runtime, body: dict[str, Any]) -> None:
    """Registry events switched off: the operator's webhook leaves MLflow (once per operator run; a failure is
    retried at the next pass, and deliveries that still arrive meanwhile only wake resources early)."""
    meta = body["metadata"]
    if (_verified.get(meta["uid"]) or ("", None))[0] == REMOVED:
        return
    name = events.webhook_name(meta["namespace"], meta["name"])
    try:
        webhooks = RegistryWebhooks((await tracking_server_registry(rt, body)).endpoint)
        for webhook in await webhooks.all_async():
            if webhook.get("name") == name:
                await webhooks.delete_async(str(webhook["webhook_id"]))
    except (SecretProblem, RegistryError) as problem:
        logger.warning("%s/%s: removing the registry webhook failed: %s", meta["namespace"], meta["name"], problem)
        return
    _verified.set(meta["uid"], (REMOVED, rt.now()))


def verified_lately(
    verified: tuple[str, datetime] | None, desired: events.WebhookSpec, last: datetime | None, now: datetime
) -> bool:
    """This webhook config passed a test delivery less than RETEST_SECONDS ago, and deliveries still arrive."""
    if verified is None or last is None or verified[0] != desired.digest:
        return False
    return (now - verified[1]).total_seconds() < RETEST_SECONDS


def new_encryption_key() -> str:
    """A Fernet key, as MLflow's MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY expects: 32 random bytes, urlsafe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


async def server_events_secret(rt: Runtime, body: dict[str, Any]) -> dict[str, str]:
    """The TrackingServer's generated registry-events Secret (created once; the server's env reads it), with the
    receiver's current CA copied in for the server pods to trust."""
    meta = body["metadata"]
    secret = get_registry_events_secret(meta["name"], meta["namespace"], new_password(), new_encryption_key())
    data = await generated_secret(rt, secret, owner=body) or {}
    if data and rt.events_ca is not None and data.get(EVENTS_CA_KEY) != rt.events_ca:
        await rt.status.patch_secret(secret["metadata"]["name"], meta["namespace"], {EVENTS_CA_KEY: rt.events_ca})
        data = {**data, EVENTS_CA_KEY: rt.events_ca}
    return data


async def server_webhook(
    rt: Runtime, body: dict[str, Any], enabled: bool, available: bool, webhook_secret: str | None
) -> ConditionUpdate:
    """Keep exactly one webhook to the receiver in the TrackingServer's MLflow, and report whether deliveries
    arrive (MLflow's test delivery, verified by the receiver like any other)."""
    meta = body["metadata"]
    source = events.Source("trackingservers", meta["namespace"], meta["name"])
    if not enabled:
        rt.deliveries.forget(source)
        if available:
            await remove_webhook(rt, body)
        return ConditionUpdate(REGISTRY_EVENTS, "False", "Disabled", "spec.registryEvents.enabled is false: polling")
    if rt.events_url is None:
        return ConditionUpdate(
            REGISTRY_EVENTS, "False", "NotConfigured", "the operator runs no registry-events receiver: polling"
        )
    if not available or not webhook_secret:
        return ConditionUpdate(REGISTRY_EVENTS, "Unknown", "WaitingForServer", "the webhook is registered once serving")
    desired = events.WebhookSpec(
        events.webhook_name(meta["namespace"], meta["name"]),
        events.receiver_url(rt.events_url, source),
        events.WEBHOOK_EVENTS,
        webhook_secret,
    )
    receiving = ConditionUpdate(REGISTRY_EVENTS, "True", "Receiving", f"MLflow delivers events to {desired.url}")
    if verified_lately(_verified.get(meta["uid"]), desired, rt.deliveries.last_delivery(source), rt.now()):
        return receiving
    try:
        webhooks = RegistryWebhooks((await tracking_server_registry(rt, body)).endpoint)
        webhook_id = await webhooks.apply_async(desired, events.plan_webhook(await webhooks.all_async(), desired))
        test = await webhooks.test_async(webhook_id)
    except (SecretProblem, RegistryError) as problem:
        rt.deliveries.forget(source)
        return ConditionUpdate(REGISTRY_EVENTS, "False", "RegistrationFailed", problem.message)
    if not test.success:
        rt.deliveries.forget(source)
        message = f"MLflow's test delivery to {desired.url} failed ({test.detail}): polling"
        return ConditionUpdate(REGISTRY_EVENTS, "False", "DeliveryFailing", message)
    _verified.set(meta["uid"], (desired.digest, rt.now()))
    return receiving
