"""`mlflow-operator render`: golden output over the examples, placeholders for secrets, aliases, refusals.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 make unit`, and review the diff.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_operator import cli
from mlflow_operator.render import COMPUTED, GENERATED, RenderError, render_documents, to_yaml
from tests.kube import ROOT
from tests.unit.golden import assert_matches_golden

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text()))


def all_examples() -> list[Any]:
    return [doc for path in EXAMPLES for doc in load(path)]


def rendered_text(documents: list[Any], **options: Any) -> str:
    result = render_documents(documents, namespace="ml", **options)
    return "".join(f"# {note}\n" for note in result.notes) + to_yaml(result.objects)


CASES: dict[str, tuple[Callable[[], list[Any]], dict[str, Any]]] = {
    **{path.stem: (functools.partial(load, path), {}) for path in EXAMPLES},
    "model-deployment-version-7": (lambda: load(ROOT / "examples" / "model-deployment.yaml"), {"model_version": 7}),
    "all-examples": (all_examples, {"model_version": 7}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden_files(case: str) -> None:
    documents, options = CASES[case]
    assert_matches_golden(f"render-{case}.yaml", rendered_text(documents(), **options))


def test_every_example_is_covered() -> None:
    assert {path.stem for path in EXAMPLES} <= set(CASES)


def test_no_secret_value_is_rendered_and_no_owner_references() -> None:
    result = render_documents(all_examples(), model_version=3)
    secrets = [obj for obj in result.objects if obj["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {
        "mlflow-db",
        "mlflow-admin",
        "fraud-registry-reader",
        "mlflow-pgbouncer-client",
        "mlflow-registry-events",
        "mlflow-pgbouncer-auth",
        "mlflow-backend",
        "mlflow-auth-config",
    }
    for secret in secrets:
        for key, value in secret["stringData"].items():
            usernames = ("mlflow", "admin", "tracking-server", "modeldeployment/default/fraud")
            assert value == GENERATED or (key == "username" and value in usernames), (secret, key)
    text = to_yaml(result.objects)
    assert "ownerReferences" not in text
    assert "%3Cgenerated" not in text  # no URI built from the placeholder survives outside a redacted Secret
    hashes = re.findall(r"mlflow.operator.dev/config-hash: (.*)", text)
    assert hashes and set(hashes) == {COMPUTED}


def test_model_deployment_with_a_tracking_server_in_the_same_input_gets_its_own_reader_not_the_admin() -> None:
    result = render_documents(all_examples(), model_version=3)
    deployment = next(o for o in result.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "fraud-v3")
    env = {
        item["name"]: item
        for container in deployment["spec"]["template"]["spec"]["initContainers"]
        for item in container.get("env", [])
    }
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.default.svc:5000"
    reader = {"name": "fraud-registry-reader", "key": "password"}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == reader
    secret = next(o for o in result.objects if o["kind"] == "Secret" and o["metadata"]["name"] == reader["name"])
    assert secret["stringData"] == {"username": "modeldeployment/default/fraud", "password": GENERATED}


def test_an_alias_without_model_version_renders_only_what_needs_no_version() -> None:
    result = render_documents(load(ROOT / "examples" / "model-deployment.yaml"))
    assert [o["kind"] for o in result.objects] == ["ServiceAccount"]
    assert any("--model-version" in note for note in result.notes)
    pinned = [
        {
            "apiVersion": "mlflow.operator.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "pinned", "namespace": "team"},
            "spec": {"trackingUri": "http://mlflow.example:5000", "model": {"registeredModel": "m", "version": 4}},
        }
    ]
    names = [o["metadata"]["name"] for o in render_documents(pinned).objects]
    assert "pinned-v4" in names and "pinned-stable" in names
    assert {o["metadata"]["namespace"] for o in render_documents(pinned).objects} == {"team"}


def test_registered_model_renders_nothing_and_says_so() -> None:
    result = render_documents(load(ROOT / "examples" / "registered-model.yaml"))
    assert result.objects == []
    assert "nothing in the cluster" in result.notes[0]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"kind": "TrackingServer", "spec": {"replicas": 0}}, "spec.replicas"),
        (
            {"kind": "ModelDeployment", "spec": {"trackingUri": "http://x:5000", "model": {"registeredModel": "m"}}},
            "spec.model",
        ),
        ({"kind": "RegisteredModel", "spec": {"trackingUri": "http://x:5000", "bogus": 1}}, "spec.bogus"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    doc = {"apiVersion": "mlflow.operator.dev/v1alpha1", "metadata": {"name": "x"}, **doc}
    with pytest.raises(RenderError, match=re.escape(field)):
        render_documents([doc])


def test_cli_exit_codes_and_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", str(ROOT / "examples" / "tracking-server.yaml")]) == 0
    out, err = capsys.readouterr()
    assert [d["kind"] for d in yaml.safe_load_all(out)].count("Deployment") == 2
    assert "skipped" in err and GENERATED in err

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mlflow.operator.dev/v1alpha1\nkind: TrackingServer\nmetadata: {name: x}\nspec: {workers: 0}\n"
    )
    assert cli.main(["render", "-f", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "spec.workers" in err

    assert cli.main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_help_says_owner_references_are_not_rendered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    assert "Owner references" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"id": "expire-all", "expiration": {"days": 30}}, 'rules[0].expiration (rule "expire-all")'),
        ({"id": "exp5", "filter": {"prefix": "mlflow/5/"}, "expiration": {"days": 30}}, "covers experiment 5"),
        (
            {"id": "cold", "transitions": [{"days": 90, "storageClass": "DEEP_ARCHIVE"}]},
            'rules[0].transitions[0].storageClass (rule "cold")',
        ),
    ],
)
def test_rules_that_would_delete_models_exit_2_naming_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: dict[str, Any], expected: str
) -> None:
    """The operator withholds these rules; render refuses them as it refuses other invalid specs."""
    docs = list(yaml.safe_load_all((ROOT / "examples" / "tracking-server.yaml").read_text()))
    server = next(d for d in docs if d["kind"] == "TrackingServer")
    server["spec"]["artifacts"]["lifecycle"] = {"rules": [rule]}
    path = tmp_path / "ts.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert cli.main(["render", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and expected in err and "would delete registered model artifacts" in err
