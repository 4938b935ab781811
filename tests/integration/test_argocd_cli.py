"""Argo CD's own code evaluates the shipped health checks: the Argo CD CLI (built from the Go module proxy at
ARGOCD_VERSION) runs `argocd admin settings resource-overrides health` with docs/argocd/argocd-cm.yaml on every
sample of tests/argocd_samples.py, and its verdict is the one the lupa evaluation claims.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.argocd import ARGOCD_CM, argocd_binary, cli_health, lua_health
from tests.argocd_samples import SAMPLES, Sample
from tests.integration.s3_servers import pinned_versions


def test_the_pinned_cli_is_what_runs() -> None:
    result = subprocess.run(
        [str(argocd_binary()), "version", "--client", "--short"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["argocd:", pinned_versions()["ARGOCD_VERSION"]]


@pytest.mark.parametrize("sample", SAMPLES, ids=[sample.id for sample in SAMPLES])
def test_argocd_agrees_with_the_lua(sample: Sample) -> None:
    verdict = cli_health(sample.obj)
    assert verdict == (sample.status, sample.message)
    assert verdict == lua_health(sample.obj)


def test_the_verdict_comes_from_the_scripts_in_argocd_cm(tmp_path: Path) -> None:
    """Not Argo CD's defaults: without our keys it has no verdict, and a changed script changes it."""
    sample = next(s for s in SAMPLES if s.id == "ModelDeployment-paused")
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    key = "resource.customizations.health.mlflow.operator.dev_ModelDeployment"

    del cm["data"][key]
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(cm))
    with pytest.raises(
        ValueError, match=r"Health script is not configured for 'mlflow\.operator\.dev/ModelDeployment'"
    ):
        cli_health(sample.obj, without)

    cm["data"][key] = 'return {status = "Degraded", message = "phase " .. obj.status.phase}\n'
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cm))
    assert cli_health(sample.obj, changed) == ("Degraded", "phase Paused")
