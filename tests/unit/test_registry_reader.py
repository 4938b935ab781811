"""Least privilege for model servers (logic.registry_reader, builders): reader names, when the MLflow user
must be set up again, and what the pods get."""

from __future__ import annotations

from typing import Any

from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import TrackPlan
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.logic.registry_reader import (
    ReaderGrant,
    grant_needed,
    password_revision,
    reader_of,
    reader_username,
)

V1 = ("models:/m-1", "run1")
V2 = ("models:/m-2", "run2")


def test_a_readers_name_says_whose_it_is_and_nothing_else_passes_for_one() -> None:
    username = reader_username("ml", "fraud")
    assert username == "modeldeployment/ml/fraud"
    assert reader_of(username, "ml") == "fraud"
    assert reader_of(username, "other") is None
    assert reader_of("admin", "ml") is None
    assert reader_of("modeldeployment/ml/", "ml") is None
    assert reader_of("modeldeployment/ml/a/b", "ml") is None


def test_the_revision_names_a_password_without_revealing_it() -> None:
    revision = password_revision("s3cret")
    assert revision == password_revision("s3cret") != password_revision("s3cret2")
    assert "s3cret" not in revision and len(revision) == 16


def test_a_grant_is_set_up_once_then_only_for_what_is_new() -> None:
    first = ReaderGrant("r1", "fraud", frozenset({V1}))
    assert grant_needed(None, first) == first
    assert grant_needed(first, first) is None
    assert grant_needed(first, ReaderGrant("r1", "fraud", frozenset())) is None  # nothing resolved this pass
    # A canary's version from another run: the first stays granted (the stable still serves it).
    assert grant_needed(first, ReaderGrant("r1", "fraud", frozenset({V2}))) == ReaderGrant(
        "r1", "fraud", frozenset({V1, V2})
    )


def test_a_new_password_or_model_sets_the_reader_up_again_from_scratch() -> None:
    first = ReaderGrant("r1", "fraud", frozenset({V1}))
    rotated = ReaderGrant("r2", "fraud", frozenset({V1}))
    assert grant_needed(first, rotated) == rotated
    moved = ReaderGrant("r1", "churn", frozenset({V2}))
    assert grant_needed(first, moved) == moved


def model_deployment(**inputs: Any) -> list[dict[str, Any]]:
    spec = ModelDeploymentSpec.model_validate(
        {"trackingServerRef": {"name": "mlflow"}, "model": {"registeredModel": "fraud", "version": 3}}
    )
    plans = (TrackPlan("stable", 3),)
    return build.all_objects(
        build.ModelDeploymentInputs("fraud", "ml", spec, "http://mlflow:5000", tracks=plans, **inputs)
    )


def pod_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def test_the_pods_read_the_readers_secret_and_roll_when_its_password_changes() -> None:
    reader = RegistryCredentials(
        name=build.Names("fraud").registry_reader, username_key="username", password_key="password"
    )
    first = pod_of(model_deployment(credentials=reader, credentials_revision="aaaa"))
    rotated = pod_of(model_deployment(credentials=reader, credentials_revision="bbbb"))
    assert first["metadata"]["annotations"][build.CREDENTIALS_REVISION_ANNOTATION] == "aaaa"
    assert rotated["metadata"]["annotations"][build.CREDENTIALS_REVISION_ANNOTATION] == "bbbb"
    refs = {
        env["name"]: env["valueFrom"]["secretKeyRef"]["name"]
        for container in [*first["spec"]["initContainers"], *first["spec"]["containers"]]
        for env in container.get("env", [])
        if "valueFrom" in env and "secretKeyRef" in env["valueFrom"]
    }
    assert refs == {
        "MLFLOW_TRACKING_USERNAME": "fraud-registry-reader",
        "MLFLOW_TRACKING_PASSWORD": "fraud-registry-reader",
    }
    without = pod_of(model_deployment())
    assert build.CREDENTIALS_REVISION_ANNOTATION not in without["metadata"]["annotations"]


def test_the_readers_secret_is_owned_by_its_model_deployment_and_holds_only_its_credentials() -> None:
    secret = build.get_reader_secret("fraud", "ml", "modeldeployment/ml/fraud", "pw")
    assert secret["metadata"]["name"] == "fraud-registry-reader" and secret["metadata"]["namespace"] == "ml"
    assert secret["stringData"] == {"username": "modeldeployment/ml/fraud", "password": "pw"}
