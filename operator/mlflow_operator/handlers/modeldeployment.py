"""ModelDeployment reconciler."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.kinds import MODEL_DEPLOYMENT
from mlflow_operator.handlers.reconcile import reconcile_skeleton
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import conditions as cond

CONDITIONS = ("ModelResolved", "Available", "Progressing", cond.READY)


async def reconcile(rt: Runtime, body: dict[str, Any]) -> float | None:
    # Reconciliation of the children comes with this kind's own issue; until then the resource
    # reports that it was seen and validated.
    await reconcile_skeleton(rt, MODEL_DEPLOYMENT, CONDITIONS, body)
    return None
