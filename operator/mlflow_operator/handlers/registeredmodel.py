"""RegisteredModel handlers."""

from __future__ import annotations

from typing import Any

import kopf

from mlflow_operator.api import GROUP, VERSION
from mlflow_operator.api.kinds import REGISTERED_MODEL
from mlflow_operator.handlers.reconcile import reconcile_skeleton
from mlflow_operator.logic import conditions as cond

CONDITIONS = ("Synced", cond.READY)


@kopf.on.resume(GROUP, VERSION, REGISTERED_MODEL.plural)
@kopf.on.create(GROUP, VERSION, REGISTERED_MODEL.plural)
@kopf.on.update(GROUP, VERSION, REGISTERED_MODEL.plural)
def reconcile(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    # Reconciliation of the children comes with this kind's own issue; until then the resource
    # reports that it was seen and validated.
    reconcile_skeleton(REGISTERED_MODEL, CONDITIONS, body, spec, status, meta, patch)
