"""A new model version seen by a RegisteredModel or ModelDeployment wakes its TrackingServer's safety check."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.handlers.registry_access import wake_tracking_server
from mlflow_operator.handlers.runtime import Runtime


def spec(**connection: Any) -> ModelDeploymentSpec:
    model = {"registeredModel": "fraud", "alias": "champion"}
    return ModelDeploymentSpec.model_validate({"model": model, **connection})


def test_a_tracking_server_reference_wakes_that_server_and_a_uri_wakes_nothing() -> None:
    woken: list[tuple[str, str, str]] = []
    rt = Runtime(client=None, status=None, wake=lambda *key: woken.append(key))  # type: ignore[arg-type]
    wake_tracking_server(rt, spec(trackingServerRef={"name": "mlflow"}), "team-a")
    wake_tracking_server(rt, spec(trackingUri="http://mlflow.example:5000"), "team-a")
    assert woken == [("TrackingServer", "team-a", "mlflow")]
