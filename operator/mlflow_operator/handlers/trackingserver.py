"""TrackingServer handlers."""

from __future__ import annotations

from typing import Any

import kopf

from mlflow_operator.api import GROUP, VERSION
from mlflow_operator.api.kinds import TRACKING_SERVER
from mlflow_operator.handlers.reconcile import reconcile_skeleton
from mlflow_operator.logic import conditions as cond

CONDITIONS = ("DatabaseReady", "PoolerReady", "Migrated", "ArtifactsReady", "LifecycleApplied", cond.READY)


@kopf.on.resume(GROUP, VERSION, TRACKING_SERVER.plural)
@kopf.on.create(GROUP, VERSION, TRACKING_SERVER.plural)
@kopf.on.update(GROUP, VERSION, TRACKING_SERVER.plural)
def reconcile(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    # Reconciliation of the children comes with this kind's own issue; until then the resource
    # reports that it was seen and validated.
    reconcile_skeleton(TRACKING_SERVER, CONDITIONS, body, spec, status, meta, patch)
