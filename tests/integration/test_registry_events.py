"""Registry events end to end on this machine: a real `mlflow server` (sqlite backend, MLflow's webhook
settings as the operator renders them, plain HTTP allowed for the loopback receiver) delivers its model-registry
webhooks to the operator's real receiver (handlers.registry_events.start_receiver), which the operator's
server_webhook registered through MLflow's REST API. Only the Kubernetes side is faked: a Runtime whose object
cache is a dict, whose Secrets a FakeStatus holds, and whose wake() records what it was asked to wake.

What it proves: exactly one webhook per TrackingServer, kept without writes while current, updated in place for
a new secret, duplicates removed; MLflow's test delivery and its real deliveries verify; an alias move wakes the
ModelDeployments (and RegisteredModels) following that model and nothing else, within seconds; a delivery
signed with another secret is refused and wakes nothing; the webhook survives a restart of MLflow and
deliveries resume after it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiohttp
import pytest
from aiohttp import web

from mlflow_operator import metrics
from mlflow_operator.builders.trackingserver import REGISTRY_URL_ANNOTATION, Names
from mlflow_operator.builders.trackingserver.secrets import WEBHOOK_SECRET_KEY
from mlflow_operator.handlers import registry_events as receiver
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import registry_events as events
from mlflow_operator.logic.conditions import ConditionUpdate
from tests.integration.dataplane import HOST, free_port, server_venv
from tests.integration.registry_server import RegistryServer, sqlite_registry

NAMESPACE, SERVER_NAME = "ml", "mlflow"
SOURCE = events.Source("trackingservers", NAMESPACE, SERVER_NAME)
WEBHOOK_NAME = events.webhook_name(NAMESPACE, SERVER_NAME)
EVENTS_SECRET = f"{NAMESPACE}/{Names(SERVER_NAME).registry_events_secret}"  # FakeStatus's key: namespace/name
WEBHOOKS = "/api/2.0/mlflow/webhooks"
REJECTED = "mlflow_operator_registry_events_rejected_total"
WAKE_TIMEOUT = 10.0  # seconds from the REST call to the wake-up: generous on 2 busy cores
QUIET = 3.0  # how long "nothing was woken" is watched for
# MLflow caches the webhook list per event type (MLFLOW_WEBHOOK_CACHE_TTL, 1 s here): a changed webhook is
# what deliveries use once this has passed.
CACHE_TTL = 1.0
Woken = tuple[str, str, str]


def webhook_env() -> dict[str, str]:
    """MLflow's webhook settings: the operator renders the encryption key; the rest lets MLflow deliver to a
    plain-HTTP receiver on loopback, and re-read its webhooks every second."""
    return {
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": receiver.new_encryption_key(),
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": str(int(CACHE_TTL)),
    }


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server_venv()
    with sqlite_registry(tmp_path_factory.mktemp("registry-events"), env=webhook_env()) as server:
        yield server


@pytest.fixture(scope="module")
def receiver_port() -> int:
    """One port for the module: the receiver's URL is part of the webhook's config digest."""
    return free_port()


# ----------------------------------------------------------------------------------------- the fake cluster


class FakeStatus:
    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        return self.secrets.get(f"{namespace}/{name}")


def follower(kind: str, name: str, model: str) -> dict[str, Any]:
    """A ModelDeployment following `model`'s alias "a", or a RegisteredModel named `model` in the registry
    (spec.modelName, left out when it is metadata.name), both through the TrackingServer ml/mlflow."""
    if kind == "RegisteredModel":
        model_spec: dict[str, Any] = {"modelName": model} if model != name else {}
    else:
        model_spec = {"model": {"registeredModel": model, "alias": "a"}}
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{kind}-{name}"},
        "spec": {"trackingServerRef": {"name": SERVER_NAME}, **model_spec},
    }


@dataclass
class Operator:
    """What the operator holds while the receiver runs: its runtime, and what the receiver woke (with when)."""

    rt: Runtime
    tracking_server: dict[str, Any]
    secrets: dict[str, dict[str, str]]
    url: str
    port: int
    runner: web.AppRunner | None = None
    woken: list[tuple[Woken, float]] = field(default_factory=list)

    def set_secret(self, secret: str) -> None:
        self.secrets[EVENTS_SECRET] = {WEBHOOK_SECRET_KEY: secret}

    async def register(self, secret: str) -> ConditionUpdate:
        """server_webhook as a TrackingServer's reconcile calls it: enabled, available, with its secret."""
        return await receiver.server_webhook(self.rt, self.tracking_server, True, True, secret)

    async def start_receiver(self) -> None:
        self.runner = await receiver.start_receiver(self.rt, HOST, self.port)

    async def stop_receiver(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart_receiver(self) -> None:
        """As after an operator restart: the receiver reads its Secrets afresh."""
        await self.stop_receiver()
        await self.start_receiver()

    def woken_names(self) -> list[Woken]:
        return [name for name, _ in self.woken]

    def forget_deliveries(self) -> None:
        """As after an operator restart: no delivery seen yet, so the next pass goes to MLflow again."""
        self.rt.deliveries.forget(SOURCE)


@asynccontextmanager
async def operator(mlflow_url: str, port: int, secret: str) -> AsyncIterator[Operator]:
    """The receiver on 127.0.0.1:port for a TrackingServer ml/mlflow at mlflow_url, its registry-events Secret
    holding `secret`; model fraud is followed by a ModelDeployment and a RegisteredModel (spec.modelName), model
    churn by a ModelDeployment and a RegisteredModel (metadata.name)."""
    tracking_server = {
        "metadata": {
            "name": SERVER_NAME,
            "namespace": NAMESPACE,
            "uid": "ts-uid",
            "annotations": {REGISTRY_URL_ANNOTATION: mlflow_url},
        },
        "spec": {},
    }
    objects = {
        "TrackingServer": [tracking_server],
        "ModelDeployment": [
            follower("ModelDeployment", "fraud", "fraud"),
            follower("ModelDeployment", "churn", "churn"),
        ],
        "RegisteredModel": [
            follower("RegisteredModel", "fraud-model", "fraud"),
            follower("RegisteredModel", "churn", "churn"),
        ],
    }
    store: dict[str, dict[str, str]] = {}
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(store)))
    rt.objects = lambda kind: objects.get(kind, [])
    rt.events_url = f"http://{HOST}:{port}"
    op = Operator(rt, tracking_server, store, rt.events_url, port)
    op.set_secret(secret)
    rt.wake = lambda kind, namespace, name: op.woken.append(((kind, namespace, name), time.monotonic()))
    await op.start_receiver()
    try:
        yield op
    finally:
        await op.stop_receiver()


# ------------------------------------------------------------------------------------------- MLflow's REST


async def rest(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(method, url + path, json=body) as response,
    ):
        text = await response.text()
        assert response.status == 200, f"{method} {path}: HTTP {response.status}: {text[:500]}"
        answer: dict[str, Any] = json.loads(text or "{}")
        return answer


async def webhooks_named(url: str, name: str = WEBHOOK_NAME) -> list[dict[str, Any]]:
    listed = await rest(url, "GET", WEBHOOKS + "?max_results=100")
    return [webhook for webhook in listed.get("webhooks") or [] if webhook["name"] == name]


async def the_webhook(url: str) -> dict[str, Any]:
    found = await webhooks_named(url)
    assert len(found) == 1, found
    return found[0]


async def new_version(url: str, model: str) -> str:
    """A new version of `model` (created first if need be); its version number."""
    models = await rest(url, "GET", f"/api/2.0/mlflow/registered-models/search?filter=name%3D%27{model}%27")
    if not models.get("registered_models"):
        await rest(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": model})
    body = {"name": model, "source": f"s3://bucket/{model}/{uuid.uuid4().hex}"}
    created = await rest(url, "POST", "/api/2.0/mlflow/model-versions/create", body)
    return str(created["model_version"]["version"])


async def set_alias(url: str, model: str, alias: str, version: str) -> None:
    body = {"name": model, "alias": alias, "version": version}
    await rest(url, "POST", "/api/2.0/mlflow/registered-models/alias", body)


async def eventually(check: Callable[[], bool], within: float = WAKE_TIMEOUT) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


FRAUD: Woken = ("ModelDeployment", NAMESPACE, "fraud")
FRAUD_MODEL: Woken = ("RegisteredModel", NAMESPACE, "fraud-model")
CHURN: Woken = ("ModelDeployment", NAMESPACE, "churn")
CHURN_MODEL: Woken = ("RegisteredModel", NAMESPACE, "churn")


VERSION_CREATED, ALIAS_SET = "model_version.created", "model_version_alias.created"
T = TypeVar("T")


def delivered(event_type: str) -> float:
    """Verified deliveries of one event type so far (this process)."""
    return metrics.sample(f"{metrics.PREFIX}_registry_events_total", {"type": event_type}) or 0.0


async def delivered_wake(op: Operator, change: Awaitable[T], event_type: str, expect: Woken = FRAUD) -> tuple[T, float]:
    """Make a change in MLflow and wait until its delivery (of `event_type`) has been verified and has woken
    `expect`: the change's result, and the seconds from the start of its REST call to the wake-up. Every change
    a test makes is waited for this way, so no delivery is still on its way when the next step (or test) starts.
    """
    op.woken.clear()
    before = delivered(event_type)
    started = time.monotonic()
    result = await change
    arrived = await eventually(lambda: delivered(event_type) > before and expect in op.woken_names())
    assert arrived, f"no {event_type} delivery woke {expect} within {WAKE_TIMEOUT:.0f}s: {op.woken_names()}"
    return result, next(at for name, at in op.woken if name == expect) - started


def rejected(reason: str) -> float:
    return metrics.sample(REJECTED, {"reason": reason}) or 0.0


def receiving(condition: ConditionUpdate) -> bool:
    return (condition.status, condition.reason) == ("True", "Receiving")


@asynccontextmanager
async def registered_operator(mlflow_url: str, port: int) -> AsyncIterator[tuple[Operator, str]]:
    """The operator with its webhook registered in MLflow and verified (Receiving), and the webhook's secret."""
    secret = secrets.token_urlsafe(24)
    async with operator(mlflow_url, port, secret) as op:
        assert receiving(await op.register(secret))
        yield op, secret


# -------------------------------------------------------------------------------------------------- tests


def test_exactly_one_webhook_is_registered_verified_kept_and_updated_in_place(
    mlflow: RegistryServer, receiver_port: int
) -> None:
    async def scenario() -> None:
        secret = secrets.token_urlsafe(24)
        async with operator(mlflow.url, receiver_port, secret) as op:
            condition = await op.register(secret)
            assert receiving(condition), condition
            assert events.receiver_url(op.url, SOURCE) in condition.message
            first_delivery = op.rt.deliveries.last_delivery(SOURCE)
            assert first_delivery is not None  # MLflow's test delivery reached the receiver and verified
            assert op.woken == []  # it names MLflow's example model, which nothing follows
            webhook = await the_webhook(mlflow.url)
            assert webhook["url"] == events.receiver_url(op.url, SOURCE)
            assert webhook["status"] == "ACTIVE"
            assert {(e["entity"], e["action"]) for e in webhook["events"]} == set(events.WEBHOOK_EVENTS)
            assert "secret" not in webhook or not webhook["secret"]  # MLflow never returns it

            # Again, verified moments ago: nothing is asked of MLflow (no test delivery either).
            assert receiving(await op.register(secret))
            assert op.rt.deliveries.last_delivery(SOURCE) == first_delivery
            assert await the_webhook(mlflow.url) == webhook

            # Again after an operator restart (no delivery seen): MLflow is read and tested, nothing written.
            op.forget_deliveries()
            assert receiving(await op.register(secret))
            assert op.rt.deliveries.last_delivery(SOURCE) is not None
            assert await the_webhook(mlflow.url) == webhook  # same id, same last_updated_timestamp

            # A new secret (the Secret was replaced): the same webhook is updated, then tested with it. The
            # operator restarts in between: a running receiver reads a Secret at most every
            # SECRET_CACHE_SECONDS (30 s), and until then refuses what MLflow signs with the new secret, its
            # test delivery included (DeliveryFailing for that pass; the next pass recovers).
            rotated = secrets.token_urlsafe(24)
            op.set_secret(rotated)
            await op.restart_receiver()
            op.forget_deliveries()
            condition = await op.register(rotated)
            assert receiving(condition), condition
            updated = await the_webhook(mlflow.url)
            assert updated["webhook_id"] == webhook["webhook_id"]
            assert updated["description"] != webhook["description"]  # the config digest changed
            desired = events.WebhookSpec(WEBHOOK_NAME, webhook["url"], events.WEBHOOK_EVENTS, rotated)
            assert desired.digest in updated["description"]

    asyncio.run(scenario())


def test_an_alias_move_wakes_what_follows_that_model_within_seconds(mlflow: RegistryServer, receiver_port: int) -> None:
    async def scenario() -> None:
        async with registered_operator(mlflow.url, receiver_port) as (op, _):
            await asyncio.sleep(CACHE_TTL + 0.2)  # MLflow delivers with the webhook as just registered
            version, created = await delivered_wake(op, new_version(mlflow.url, "fraud"), VERSION_CREATED)
            assert sorted(op.woken_names()) == [FRAUD, FRAUD_MODEL]
            _, moved = await delivered_wake(op, set_alias(mlflow.url, "fraud", "champion", version), ALIAS_SET)
            assert sorted(op.woken_names()) == [FRAUD, FRAUD_MODEL]  # not churn's follower
            await asyncio.sleep(QUIET)  # nothing else arrives: one event, one wake-up per follower
            assert sorted(op.woken_names()) == [FRAUD, FRAUD_MODEL], op.woken_names()
            print(f"\nwake-up after a version was created: {created:.3f}s, after an alias move: {moved:.3f}s")
            assert created < WAKE_TIMEOUT and moved < WAKE_TIMEOUT

            # The other model's followers, and only them.
            churn, _ = await delivered_wake(op, new_version(mlflow.url, "churn"), VERSION_CREATED, CHURN)
            alias = set_alias(mlflow.url, "churn", "champion", churn)
            _, moved_churn = await delivered_wake(op, alias, ALIAS_SET, CHURN)
            assert sorted(op.woken_names()) == [CHURN, CHURN_MODEL]
            print(f"wake-up of churn's follower after its alias move: {moved_churn:.3f}s")
            assert receiver.last_event("ModelDeployment", "uid-ModelDeployment-churn") is not None

    asyncio.run(scenario())


def signed_request(secret: str, model: str) -> tuple[dict[str, str], bytes]:
    """A delivery as MLflow would send it for an alias set on `model`, signed with `secret`."""
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"name": model, "alias": "champion", "version": "1"},
        }
    )
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        events.DELIVERY_ID_HEADER: delivery_id,
        events.TIMESTAMP_HEADER: timestamp,
        events.SIGNATURE_HEADER: events.sign(secret, delivery_id, timestamp, body),
    }
    return headers, body.encode()


async def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def test_a_delivery_signed_with_another_secret_is_refused_and_wakes_nothing(
    mlflow: RegistryServer, receiver_port: int
) -> None:
    async def scenario() -> None:
        async with registered_operator(mlflow.url, receiver_port) as (op, secret):
            target = events.receiver_url(op.url, SOURCE)

            # A forged request: the right shape, the wrong key.
            before = rejected(events.BAD_SIGNATURE)
            assert await post(target, *signed_request("not-the-secret", "fraud")) == (401, {"error": "bad_signature"})
            assert rejected(events.BAD_SIGNATURE) == before + 1
            # The same request with the right key is accepted: the refusal was the signature's.
            assert await post(target, *signed_request(secret, "fraud")) == (200, {"woken": 2})
            assert sorted(op.woken_names()) == [FRAUD, FRAUD_MODEL]
            op.woken.clear()

            # MLflow's own delivery, signed with a secret the receiver no longer holds (its Secret was replaced
            # behind MLflow's back and the operator restarted before re-registering): refused.
            op.set_secret(secrets.token_urlsafe(24))
            await op.restart_receiver()
            await asyncio.sleep(CACHE_TTL + 0.2)
            before = rejected(events.BAD_SIGNATURE)
            version = await new_version(mlflow.url, "fraud")
            await set_alias(mlflow.url, "fraud", "champion", version)
            # Two deliveries (the version, the alias), each refused once: MLflow retries only 429 and 5xx.
            assert await eventually(lambda: rejected(events.BAD_SIGNATURE) >= before + 2)
            await asyncio.sleep(QUIET)
            assert rejected(events.BAD_SIGNATURE) == before + 2
            assert op.woken == []

    asyncio.run(scenario())


def test_the_webhook_survives_a_restart_of_mlflow_and_deliveries_resume(
    mlflow: RegistryServer, receiver_port: int
) -> None:
    async def scenario() -> None:
        async with registered_operator(mlflow.url, receiver_port) as (op, secret):
            webhook = await the_webhook(mlflow.url)
            await asyncio.sleep(CACHE_TTL + 0.2)
            version, _ = await delivered_wake(op, new_version(mlflow.url, "fraud"), VERSION_CREATED)

            await asyncio.to_thread(mlflow.stop)
            # While MLflow is down, a pass that must ask it (no delivery seen) says so, and keeps polling.
            op.forget_deliveries()
            down = await op.register(secret)
            assert (down.status, down.reason) == ("False", "RegistrationFailed"), down
            await asyncio.to_thread(mlflow.start)

            assert await the_webhook(mlflow.url) == webhook  # kept in MLflow's database, same id
            _, moved = await delivered_wake(op, set_alias(mlflow.url, "fraud", "after-restart", version), ALIAS_SET)
            print(f"\nwake-up after an alias move, MLflow restarted: {moved:.3f}s")
            assert moved < WAKE_TIMEOUT
            op.forget_deliveries()  # a pass that asks the restarted MLflow: nothing to change, tested again
            assert receiving(await op.register(secret))
            assert await the_webhook(mlflow.url) == webhook

    asyncio.run(scenario())


def test_a_duplicate_webhook_of_the_same_name_is_removed(mlflow: RegistryServer, receiver_port: int) -> None:
    async def scenario() -> None:
        async with registered_operator(mlflow.url, receiver_port) as (op, secret):
            kept = await the_webhook(mlflow.url)
            # A second one by hand (or left by a crash between create and list): same name, another secret.
            duplicate = {
                "name": WEBHOOK_NAME,
                "url": events.receiver_url(op.url, SOURCE),
                "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"}],
                "secret": secrets.token_urlsafe(24),
                "description": "made by hand",
                "status": "ACTIVE",
            }
            created = await rest(mlflow.url, "POST", WEBHOOKS, duplicate)
            assert len(await webhooks_named(mlflow.url)) == 2

            op.forget_deliveries()  # the next pass that asks MLflow (an operator restart, or the re-test)
            assert receiving(await op.register(secret))
            assert await the_webhook(mlflow.url) == kept  # the current one stays, untouched
            assert created["webhook"]["webhook_id"] != kept["webhook_id"]

            # Deliveries now come from the kept webhook alone: the duplicate (another secret) would have been
            # refused, and each follower is woken once per event.
            await asyncio.sleep(CACHE_TTL + 0.2)
            before = rejected(events.BAD_SIGNATURE)
            version, _ = await delivered_wake(op, new_version(mlflow.url, "fraud"), VERSION_CREATED)
            await delivered_wake(op, set_alias(mlflow.url, "fraud", "dedup", version), ALIAS_SET)
            await asyncio.sleep(QUIET)
            assert sorted(op.woken_names()) == [FRAUD, FRAUD_MODEL], op.woken_names()
            assert rejected(events.BAD_SIGNATURE) == before

    asyncio.run(scenario())
