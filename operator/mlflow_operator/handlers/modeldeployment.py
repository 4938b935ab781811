"""ModelDeployment handlers."""

from __future__ import annotations

from typing import Any

import kopf

from mlflow_operator.api import GROUP, VERSION
from mlflow_operator.api.kinds import MODEL_DEPLOYMENT
from mlflow_operator.handlers.reconcile import reconcile_skeleton
from mlflow_operator.logic import conditions as cond

CONDITIONS = ("ModelResolved", "Available", "Progressing", cond.READY)


@kopf.on.resume(GROUP, VERSION, MODEL_DEPLOYMENT.plural)
@kopf.on.create(GROUP, VERSION, MODEL_DEPLOYMENT.plural)
@kopf.on.update(GROUP, VERSION, MODEL_DEPLOYMENT.plural)
def reconcile(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    # Reconciliation of the children comes with this kind's own issue; until then the resource
    # reports that it was seen and validated.
    reconcile_skeleton(MODEL_DEPLOYMENT, CONDITIONS, body, spec, status, meta, patch)
