"""Registry events: signature verification against MLflow's own delivery code, the event -> resources mapping,
the webhook plan, the polling policy, and the receiver (aiohttp) against a fake runtime."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mlflow_operator import metrics
from mlflow_operator.handlers import registry_events as receiver
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import registry_events as events
from mlflow_operator.logic.modeldeployment import resolution_due

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SECRET = "s3cret-signing-key"
SERVER = events.Source("trackingservers", "ml", "mlflow")


def mlflow_delivery(monkeypatch: pytest.MonkeyPatch, secret: str, model: str = "fraud") -> tuple[dict[str, str], bytes]:
    """What MLflow's own delivery code sends for an alias set on `model`: its headers and body."""
    from mlflow.entities.webhook import Webhook, WebhookEvent, WebhookStatus  # noqa: PLC0415
    from mlflow.webhooks import delivery  # noqa: PLC0415

    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    sent: dict[str, Any] = {}

    class Capture:
        def post(self, url: str, data: bytes, headers: dict[str, str], timeout: float) -> None:
            sent.update(url=url, data=data, headers=headers)

    webhook = Webhook(
        webhook_id="w1",
        name="op",
        url="https://127.0.0.1/registry-events/ml/trackingservers/mlflow",
        events=[WebhookEvent("model_version_alias", "created")],
        creation_timestamp=0,
        last_updated_timestamp=0,
        status=WebhookStatus.ACTIVE,
        secret=secret,
    )
    payload = {"name": model, "alias": "champion", "version": "3"}
    event = WebhookEvent("model_version_alias", "created")
    delivery._send_webhook_request(webhook, cast(Any, payload), event, cast(Any, Capture()))
    return sent["headers"], sent["data"]


class Headers(dict[str, str]):
    """Case-insensitive like aiohttp's and requests' header mappings."""

    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


def verify(headers: dict[str, str], body: bytes, secrets: tuple[str, ...] = (SECRET,), now: float | None = None) -> Any:
    sent = int(headers[events.TIMESTAMP_HEADER])
    return events.verify_delivery(Headers(headers), body, secrets, sent if now is None else now)


# ------------------------------------------------------------------------------------------- signatures


def test_a_delivery_signed_by_mlflow_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, body = mlflow_delivery(monkeypatch, SECRET)
    event = verify(headers, body)
    assert event == events.RegistryEvent("model_version_alias", "created", "fraud", headers[events.DELIVERY_ID_HEADER])
    assert event.type == "model_version_alias.created"
    assert (
        events.sign(SECRET, headers[events.DELIVERY_ID_HEADER], headers[events.TIMESTAMP_HEADER], body.decode())
        == (headers[events.SIGNATURE_HEADER])
    )


def test_tampered_forged_or_unsigned_deliveries_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, body = mlflow_delivery(monkeypatch, SECRET)
    tampered = body.replace(b'"fraud"', b'"churn"')
    assert verify(headers, tampered).reason == events.BAD_SIGNATURE
    assert verify(headers, body, secrets=("another-secret",)).reason == events.BAD_SIGNATURE
    later = {**headers, events.TIMESTAMP_HEADER: str(int(headers[events.TIMESTAMP_HEADER]) + 1)}
    assert verify(later, body).reason == events.BAD_SIGNATURE  # the timestamp is signed too
    unsigned = {k: v for k, v in headers.items() if k != events.SIGNATURE_HEADER}
    refused = verify(unsigned, body)
    assert refused.reason == events.BAD_SIGNATURE and "unsigned" in refused.detail
    assert SECRET not in refused.detail


def test_a_delivery_outside_the_replay_window_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, body = mlflow_delivery(monkeypatch, SECRET)
    sent = int(headers[events.TIMESTAMP_HEADER])
    assert isinstance(verify(headers, body, now=sent + events.REPLAY_WINDOW_SECONDS), events.RegistryEvent)
    assert verify(headers, body, now=sent + events.REPLAY_WINDOW_SECONDS + 1).reason == events.STALE
    assert verify(headers, body, now=sent - events.REPLAY_WINDOW_SECONDS - 1).reason == events.STALE


def test_any_of_several_secrets_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, body = mlflow_delivery(monkeypatch, SECRET)
    assert isinstance(verify(headers, body, secrets=("old", SECRET)), events.RegistryEvent)
    assert verify(headers, body, secrets=("", "old")).reason == events.BAD_SIGNATURE


def test_a_signed_body_without_a_model_is_malformed() -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {}})
    headers = {
        events.DELIVERY_ID_HEADER: "d1",
        events.TIMESTAMP_HEADER: "1000",
        events.SIGNATURE_HEADER: events.sign(SECRET, "d1", "1000", body),
    }
    assert verify(headers, body.encode()).reason == events.MALFORMED
    oversized = b"x" * (events.MAX_BODY_BYTES + 1)
    assert verify(headers, oversized).reason == events.MALFORMED


# ------------------------------------------------------------------------------------- sources and targets


def follower(kind: str, name: str, model: str, namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    model_spec = {"modelName": model} if kind == "RegisteredModel" else {"model": {"registeredModel": model}}
    connection = spec or {"trackingServerRef": {"name": "mlflow"}}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {**model_spec, **connection},
    }


def test_paths_name_their_source() -> None:
    assert events.source_from_path(SERVER.path) == SERVER
    secret = events.Source("secrets", "ml", "hook")
    assert events.source_from_path("/registry-events/ml/secrets/hook") == secret
    for bad in ("/registry-events/ml/trackingservers", "/registry-events/ml/pods/x", "/other/ml/secrets/x", "/"):
        assert events.source_from_path(bad) is None
    assert (
        events.receiver_url("http://op.svc:8443/", SERVER)
        == "http://op.svc:8443/registry-events/ml/trackingservers/mlflow"
    )


def test_an_event_targets_the_followers_of_its_model_through_its_source() -> None:
    external: dict[str, Any] = {"trackingUri": "https://mlflow.example", "registryEvents": {"secret": {"name": "hook"}}}
    bodies = [
        follower("ModelDeployment", "fraud", "fraud"),
        follower("ModelDeployment", "fraud-shadow", "fraud"),
        follower("ModelDeployment", "churn", "churn"),
        follower("ModelDeployment", "elsewhere", "fraud", namespace="other"),
        follower("ModelDeployment", "other-server", "fraud", trackingServerRef={"name": "mlflow-2"}),
        follower("ModelDeployment", "external", "fraud", **external),
        follower("ModelDeployment", "external-polling", "fraud", trackingUri="https://mlflow.example"),
    ]
    assert events.targets(SERVER, "fraud", "ModelDeployment", bodies) == [
        ("fraud", "uid-fraud"),
        ("fraud-shadow", "uid-fraud-shadow"),
    ]
    hook = events.Source("secrets", "ml", "hook")
    assert events.targets(hook, "fraud", "ModelDeployment", bodies) == [("external", "uid-external")]
    assert events.source_of(bodies[-1]) is None
    registered = [follower("RegisteredModel", "fraud-model", "fraud"), follower("RegisteredModel", "churn", "x")]
    del registered[1]["spec"]["modelName"]  # the registry name defaults to metadata.name
    assert events.targets(SERVER, "fraud", "RegisteredModel", registered) == [("fraud-model", "uid-fraud-model")]
    assert events.targets(SERVER, "churn", "RegisteredModel", registered) == [("churn", "uid-churn")]


# ----------------------------------------------------------------------------------------------- the plan


def spec(secret: str = SECRET, url: str = "http://op/registry-events/ml/trackingservers/mlflow") -> events.WebhookSpec:
    return events.WebhookSpec("mlflow-operator-ml-mlflow", url, events.WEBHOOK_EVENTS, secret)


def existing(webhook_id: str, desired: events.WebhookSpec, status: str = "ACTIVE") -> dict[str, Any]:
    return {"webhook_id": webhook_id, "name": desired.name, "description": desired.description, "status": status}


def test_the_webhook_is_created_kept_or_updated_by_its_config_digest() -> None:
    desired = spec()
    assert events.plan_webhook([], desired) == events.WebhookPlan(True, None, None, ())
    others = [{"webhook_id": "x", "name": "someone-elses", "description": desired.description}]
    assert events.plan_webhook(others, desired).create
    assert events.plan_webhook([existing("a", desired)], desired) == events.WebhookPlan(False, None, "a", ())
    for changed in (spec(secret="new"), spec(url="http://elsewhere/x")):
        assert changed.digest != desired.digest
        assert events.plan_webhook([existing("a", desired)], changed) == events.WebhookPlan(False, "a", "a", ())
    disabled = existing("a", desired, status="DISABLED")
    assert events.plan_webhook([disabled], desired).update_id == "a"


def test_duplicates_are_removed_keeping_a_current_one() -> None:
    desired = spec()
    stale = existing("a", spec(secret="old"))
    plan = events.plan_webhook([stale, existing("b", desired)], desired)
    assert plan == events.WebhookPlan(False, None, "b", ("a",))


# -------------------------------------------------------------------------------------------- polling


def test_events_lengthen_the_poll_never_shorten_or_stop_it() -> None:
    assert events.poll_seconds(60, receiving=False, events_poll_interval=300) == 60
    assert events.poll_seconds(60, receiving=True, events_poll_interval=300) == 300
    assert events.poll_seconds(600, receiving=True, events_poll_interval=300) == 600
    status, reason, _ = events.event_condition(SERVER, True, NOW, NOW, 300)
    assert (status, reason) == ("True", "Receiving")
    assert events.event_condition(SERVER, True, None, NOW, 60)[:2] == ("False", "NoDelivery")
    assert events.event_condition(SERVER, False, NOW, NOW, 60)[:2] == ("False", "NotConfigured")
    assert events.event_condition(None, True, None, NOW, 60)[:2] == ("False", "NotConfigured")
    # A source whose deliveries stopped (a webhook broken or switched off) stops counting as delivering.
    stale = NOW + events.RECEIVING_WINDOW + timedelta(seconds=1)
    assert events.delivering(NOW, NOW + events.RECEIVING_WINDOW) and not events.delivering(NOW, stale)
    assert events.event_condition(SERVER, True, NOW, stale, 60)[:2] == ("False", "NoDelivery")


def test_an_event_since_the_last_answer_makes_the_resolution_due() -> None:
    from mlflow_operator.api.modeldeployment import ModelDeploymentSpec  # noqa: PLC0415
    from mlflow_operator.logic.modeldeployment import resolved  # noqa: PLC0415

    md = ModelDeploymentSpec.model_validate(
        {"trackingServerRef": {"name": "mlflow"}, "model": {"registeredModel": "fraud", "alias": "champion"}}
    )
    previous = resolved(md, NOW, 3, "READY", "s3://b/m", "run")
    soon = NOW + timedelta(seconds=5)
    assert not resolution_due(md, previous, soon, 5.0, 300.0)
    assert resolution_due(md, previous, soon, 5.0, 300.0, event_at=NOW + timedelta(seconds=1))
    assert not resolution_due(md, previous, soon, 5.0, 300.0, event_at=NOW - timedelta(seconds=1))
    assert not resolution_due(md, previous, NOW + timedelta(seconds=120), 5.0, 300.0)  # lengthened from 60 s
    assert resolution_due(md, previous, NOW + timedelta(seconds=300), 5.0, 300.0)


# ------------------------------------------------------------------------------------------- the receiver


class FakeStatus:
    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets
        self.reads = 0

    async def read_secret(self, name: str, namespace: str) -> dict[str, str] | None:
        self.reads += 1
        return self.secrets.get(f"{namespace}/{name}")


def fake_runtime(
    objects: dict[str, list[dict[str, Any]]], secrets: dict[str, dict[str, str]]
) -> tuple[Runtime, list[tuple[str, str, str]]]:
    woken: list[tuple[str, str, str]] = []
    rt = Runtime(client=cast(Any, None), status=cast(Any, FakeStatus(secrets)), now=lambda: NOW)
    rt.objects = lambda kind: objects.get(kind, [])
    rt.wake = lambda kind, namespace, name: woken.append((kind, namespace, name))
    rt.events_url = "http://receiver"
    return rt, woken


def post(rt: Runtime, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        async with TestClient(TestServer(receiver.receiver_app(rt))) as client:
            response = await client.post(path, data=body, headers=headers)
            return response.status, await response.json()

    return asyncio.run(run())


def counted(name: str, **labels: str) -> float:
    return metrics.sample(name, labels) or 0.0


def test_the_receiver_wakes_the_followers_and_refuses_forgeries(monkeypatch: pytest.MonkeyPatch) -> None:
    tracking_server = {"metadata": {"name": "mlflow", "namespace": "ml", "uid": "ts"}}
    objects = {
        "TrackingServer": [tracking_server],
        "ModelDeployment": [follower("ModelDeployment", "fraud", "fraud"), follower("ModelDeployment", "c", "churn")],
        "RegisteredModel": [follower("RegisteredModel", "fraud-model", "fraud")],
    }
    rt, woken = fake_runtime(objects, {"ml/mlflow-registry-events": {"webhook-secret": SECRET}})
    headers, body = mlflow_delivery(monkeypatch, SECRET)
    before = counted("mlflow_operator_registry_events_rejected_total", reason="bad_signature")
    assert post(rt, SERVER.path, headers, body.replace(b"fraud", b"churn")) == (401, {"error": "bad_signature"})
    assert counted("mlflow_operator_registry_events_rejected_total", reason="bad_signature") == before + 1
    assert woken == [] and rt.deliveries.last_delivery(SERVER) is None

    assert post(rt, SERVER.path, headers, body) == (200, {"woken": 2})
    assert sorted(woken) == [("ModelDeployment", "ml", "fraud"), ("RegisteredModel", "ml", "fraud-model")]
    assert rt.deliveries.last_delivery(SERVER) == NOW
    assert receiver.last_event("ModelDeployment", "uid-fraud") == NOW
    assert receiver.last_event("ModelDeployment", "uid-c") is None

    # A path naming no TrackingServer the operator knows reads no Secret.
    reads = cast(FakeStatus, rt.status).reads
    unknown = events.Source("trackingservers", "ml", "nobody").path
    assert post(rt, unknown, headers, body) == (404, {"error": "unknown_source"})
    assert cast(FakeStatus, rt.status).reads == reads


def test_follower_condition_and_poll_follow_the_deliveries() -> None:
    body = follower("ModelDeployment", "fraud", "fraud")
    rt, _ = fake_runtime({}, {})
    condition, poll = receiver.follower_events(rt, body, 60.0)
    assert (condition.status, condition.reason, poll) == ("False", "NoDelivery", 60.0)
    rt.deliveries.record(SERVER, NOW)
    condition, poll = receiver.follower_events(rt, body, 60.0)
    assert (condition.status, condition.reason, poll) == ("True", "Receiving", 300.0)
    rt.now = lambda: NOW + events.RECEIVING_WINDOW + timedelta(minutes=1)
    condition, poll = receiver.follower_events(rt, body, 60.0)
    assert (condition.reason, poll) == ("NoDelivery", 60.0)  # nothing for too long: the poll is its own again
    rt.events_url = None
    condition, poll = receiver.follower_events(rt, body, 60.0)
    assert (condition.reason, poll) == ("NotConfigured", 60.0)


def test_a_secret_changed_since_it_was_cached_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver caches each source's secrets; a delivery they refuse re-reads them (at most every
    SECRET_REREAD_SECONDS, zero here), so a new webhook secret is honoured at once."""
    monkeypatch.setattr(receiver, "SECRET_REREAD_SECONDS", 0.0)
    tracking_server = {"metadata": {"name": "mlflow", "namespace": "ml", "uid": "ts"}}
    secrets = {"ml/mlflow-registry-events": {"webhook-secret": SECRET}}
    rt, _ = fake_runtime({"TrackingServer": [tracking_server]}, secrets)
    old_headers, old_body = mlflow_delivery(monkeypatch, SECRET)
    new_headers, new_body = mlflow_delivery(monkeypatch, "rotated")

    async def run() -> list[int]:
        async with TestClient(TestServer(receiver.receiver_app(rt))) as client:
            statuses = [(await client.post(SERVER.path, data=old_body, headers=old_headers)).status]
            secrets["ml/mlflow-registry-events"] = {"webhook-secret": "rotated"}
            statuses.append((await client.post(SERVER.path, data=new_body, headers=new_headers)).status)
            statuses.append((await client.post(SERVER.path, data=old_body, headers=old_headers)).status)
            return statuses

    assert asyncio.run(run()) == [200, 200, 401]
    assert cast(FakeStatus, rt.status).reads == 3  # the first read, then one per refused delivery
