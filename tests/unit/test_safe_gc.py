"""The gc Job's script (builders/templates/safe_gc.py), its pure part: what a registered version needs, and
which collectable resources that keeps. Loaded from the file the ConfigMap ships, without mlflow: the
script imports mlflow only where it does I/O. tests/integration/test_gc.py runs the whole script against a
real server, database and bucket."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "operator/mlflow_operator/builders/templates/safe_gc.py"


gc = load_script("safe_gc", SCRIPT)
RUN = "0123456789abcdef0123456789abcdef"
MODEL = "m-fedcba9876543210fedcba98765432"


def version(**fields: object) -> Any:
    defaults: dict[str, object] = {"source": "", "download_uri": "", "run_id": None, "model_id": None}
    return gc.version_dependencies("churn", "3", **{**defaults, **fields})


def test_a_runs_uri_source_names_its_run() -> None:
    needs = version(source=f"runs:/{RUN}/model", download_uri=f"runs:/{RUN}/model")
    assert needs.run_ids == {RUN} and needs.model_ids == frozenset() and needs.locations == ()


def test_a_models_uri_source_names_its_logged_model_but_not_a_registered_name() -> None:
    assert version(source=f"models:/{MODEL}").model_ids == {MODEL}
    for other in ("models:/churn/2", "models:/churn@champion", "s3://bucket/x"):
        assert version(source=other).model_ids == frozenset(), other


def test_ids_the_registry_stores_count_and_artifact_locations_are_kept() -> None:
    needs = version(source="mlflow-artifacts:/1/abc/artifacts/model", run_id=RUN, model_id=MODEL)
    assert needs.run_ids == {RUN} and needs.model_ids == {MODEL}
    assert needs.locations == ("mlflow-artifacts:/1/abc/artifacts/model",)


@pytest.mark.parametrize(
    ("location", "root", "inside"),
    [
        ("mlflow-artifacts:/1/abc/artifacts/model", "mlflow-artifacts:/1/abc/artifacts", True),
        ("mlflow-artifacts://mlflow.ns.svc:5000/1/abc/artifacts/m", "mlflow-artifacts:/1/abc/artifacts", True),
        ("mlflow-artifacts:/1/abc/artifacts", "mlflow-artifacts:/1/abc/artifacts/", True),
        ("mlflow-artifacts:/1/abcd/artifacts/model", "mlflow-artifacts:/1/abc", False),  # a sibling prefix
        ("mlflow-artifacts:/12/abc/artifacts", "mlflow-artifacts:/1", False),
        ("s3://bucket/mlflow/1/abc/artifacts/model", "s3://bucket/mlflow/1", True),
        ("s3://bucket/mlflow/1/abc", "", False),
    ],
)
def test_a_location_is_inside_a_root_only_on_path_boundaries(location: str, root: str, inside: bool) -> None:
    assert gc.inside(location, root) is inside


def collectable(kind: str, resource_id: str, experiment: str, location: str = "") -> object:
    return gc.Collectable(kind, resource_id, experiment, location)


def test_keepers_name_the_version_that_needs_each_resource_and_keep_its_experiment() -> None:
    run = collectable(gc.RUN, RUN, "7", f"mlflow-artifacts:/7/{RUN}/artifacts")
    unneeded_run = collectable(gc.RUN, "f" * 32, "7", f"mlflow-artifacts:/7/{'f' * 32}/artifacts")
    model = collectable(gc.LOGGED_MODEL, MODEL, "8", f"mlflow-artifacts:/8/models/{MODEL}/artifacts")
    experiment = collectable(gc.EXPERIMENT, "7", "7", "mlflow-artifacts:/7")
    unneeded_experiment = collectable(gc.EXPERIMENT, "9", "9", "mlflow-artifacts:/9")
    by_run = version(source=f"runs:/{RUN}/model")
    by_location = gc.version_dependencies("other", "1", f"mlflow-artifacts:/8/models/{MODEL}/artifacts", "", None, None)
    resources = [run, unneeded_run, model, experiment, unneeded_experiment]
    kept = gc.keepers(resources, [by_run, by_location])
    # The experiment of a kept run: collecting it would delete the run's row with it.
    assert kept == {run: by_run, model: by_location, experiment: by_run}
    assert gc.to_collect(resources, kept, gc.RUN) == ["f" * 32]
    assert gc.to_collect(resources, kept, gc.LOGGED_MODEL) == []  # empty: nothing, never "every one"
    assert gc.to_collect(resources, kept, gc.EXPERIMENT) == ["9"]
    assert str(by_run) == "model version 'churn' version 3"


def test_an_experiment_a_version_lives_in_is_kept_though_none_of_its_runs_is_collectable() -> None:
    experiment = collectable(gc.EXPERIMENT, "7", "7", "mlflow-artifacts:/7")
    needs = gc.Version("churn", "1", experiment_ids=frozenset({"7"}))
    assert gc.keepers([experiment], [needs]) == {experiment: needs}


# mlflow gc's --older-than regex (mlflow/cli/__init__.py, 3.17), which the script must parse alike.
@pytest.mark.parametrize(("older_than", "millis"), [("30d", 30 * 86_400_000), ("1h30m", 5_400_000), ("0.5s", 500)])
def test_older_than_is_parsed_as_mlflow_gc_parses_it(older_than: str, millis: int) -> None:
    assert gc.older_than_millis(older_than) == millis


@pytest.mark.parametrize("older_than", ["", "30m1h", "500ms", "1w"])
def test_an_older_than_mlflow_gc_refuses_is_refused(older_than: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(older_than))):
        gc.older_than_millis(older_than)
