"""Files the install artifacts share with the repository stay in sync (no tools needed; the chart itself is
rendered and checked by tests/integration/test_packaging.py)."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlflow-operator"


def test_chart_crds_are_exact_copies_of_crds() -> None:
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml"}
    shipped = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(shipped) == sorted(generated), "charts/mlflow-operator/crds/ has other files than crds/"
    stale = [name for name in generated if shipped[name] != generated[name]]
    assert not stale, f"copy crds/{{{','.join(stale)}}} to charts/mlflow-operator/crds/ (run `make chart`)"


def test_chart_metadata_and_values_schema() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert sorted(values) == sorted(set(schema["properties"]) - {"global"}), "values.yaml and its schema differ"


def test_image_dependencies_are_pinned_and_are_what_the_tests_run() -> None:
    """The operator image installs pyproject.toml's dependencies; .venv (make deps) installs the same file.
    Each is pinned with ==, and the version the tests import is the pinned one."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([0-9][A-Za-z0-9.]*)", requirement)
        assert match, f"{requirement!r}: the image needs every dependency pinned with =="
        name, version = match.group(1), match.group(3)
        assert metadata.version(name) == version, f"{name}: .venv has {metadata.version(name)}, image pins {version}"
