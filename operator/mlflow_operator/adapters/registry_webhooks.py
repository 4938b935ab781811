"""MLflow's webhook API (MLflow 3.3+), called with a TrackingServer's admin credentials: the operator keeps one
webhook per TrackingServer (logic.registry_events.plan_webhook decides what to change).

Blocking calls run in a thread, bounded like ModelRegistry's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflow_operator.adapters.registry import bounded_call, translate_error
from mlflow_operator.adapters.registry_store import RegistryEndpoint, rest_call
from mlflow_operator.logic.registry_events import WebhookPlan, WebhookSpec

WEBHOOKS = "/api/2.0/mlflow/webhooks"
PAGE_SIZE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class DeliveryTest:
    """MLflow's answer to "send this webhook a test event": did the receiver accept it."""

    success: bool
    detail: str  # the receiver's status or the connection error, for a condition message


class RegistryWebhooks:
    def __init__(self, endpoint: RegistryEndpoint) -> None:
        self.endpoint = endpoint

    def _call(self, method: str, path: str, what: str, body: dict[str, Any] | None = None, params: Any = None) -> Any:
        try:
            return rest_call(self.endpoint, method, path, body=body, params=params)
        except Exception as error:
            raise translate_error(error, what, self.endpoint.tracking_uri) from error

    def all(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"max_results": PAGE_SIZE} | ({"page_token": token} if token else {})
            page = self._call("GET", WEBHOOKS, "listing webhooks", params=params)
            found += page.get("webhooks") or []
            token = page.get("next_page_token")
            if not token:
                return found

    def apply(self, desired: WebhookSpec, plan: WebhookPlan) -> str:
        """Carry out `plan`; the id of the webhook that stays."""
        body = {
            "name": desired.name,
            "url": desired.url,
            "events": desired.events_json(),
            "description": desired.description,
            "secret": desired.secret,
            "status": "ACTIVE",
        }
        for extra in plan.delete_ids:
            self.delete(extra)
        if plan.create:
            created = self._call("POST", WEBHOOKS, f"creating webhook {desired.name}", body)
            return str(created["webhook"]["webhook_id"])
        assert plan.keep_id is not None
        if plan.update_id is not None:
            self._call("PATCH", f"{WEBHOOKS}/{plan.update_id}", f"updating webhook {desired.name}", body)
        return plan.keep_id

    def delete(self, webhook_id: str) -> None:
        self._call("DELETE", f"{WEBHOOKS}/{webhook_id}", f"deleting webhook {webhook_id}")

    def test(self, webhook_id: str) -> DeliveryTest:
        """Ask MLflow to deliver a test event now: proves the whole path (MLflow's settings, the network, the
        receiver's verification) end to end. The test event names MLflow's example model, which no resource
        follows: it wakes nothing."""
        answer = self._call("POST", f"{WEBHOOKS}/{webhook_id}/test", f"testing webhook {webhook_id}", {})
        result = answer.get("result") or {}
        if result.get("success"):
            return DeliveryTest(True, f"HTTP {result.get('response_status')}")
        detail = result.get("error_message") or f"HTTP {result.get('response_status')}: {result.get('response_body')}"
        return DeliveryTest(False, str(detail)[:300])

    # --- async twins ---

    async def _bounded(self, what: str, call: Callable[..., T], *args: Any) -> T:
        return await bounded_call(self.endpoint.tracking_uri, self.endpoint.call_timeout, what, call, *args)

    async def all_async(self) -> list[dict[str, Any]]:
        return await self._bounded("listing webhooks", self.all)

    async def apply_async(self, desired: WebhookSpec, plan: WebhookPlan) -> str:
        return await self._bounded(f"registering webhook {desired.name}", self.apply, desired, plan)

    async def delete_async(self, webhook_id: str) -> None:
        await self._bounded(f"deleting webhook {webhook_id}", self.delete, webhook_id)

    async def test_async(self, webhook_id: str) -> DeliveryTest:
        return await self._bounded(f"testing webhook {webhook_id}", self.test, webhook_id)
