"""RegisteredModel reconciler."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.kinds import REGISTERED_MODEL
from mlflow_operator.handlers.reconcile import reconcile_skeleton
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond

CONDITIONS = ("Synced", cond.READY)


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    # Reconciliation of the children comes with this kind's own issue; until then the resource
    # reports that it was seen and validated.
    await reconcile_skeleton(rt, REGISTERED_MODEL, CONDITIONS, body)
    return None
