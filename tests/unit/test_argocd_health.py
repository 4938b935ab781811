"""Argo CD health checks (docs/argocd/*.lua) run in Lua 5.1 (Argo CD's gopher-lua is 5.1) against sample
statuses; the argocd-cm snippet embeds exactly the .lua files.

SAMPLES (tests/argocd_samples.py) is data: tests/integration/test_argocd_cli.py asks the Argo CD CLI about each
of them too, and its verdict must be the one the Lua gives here.
"""

from __future__ import annotations

import pytest
import yaml

from tests.argocd import ARGOCD, KINDS, lua_health
from tests.argocd_samples import SAMPLES, Sample


def test_samples_cover_every_status_of_every_kind() -> None:
    assert len({sample.id for sample in SAMPLES}) == len(SAMPLES)
    statuses = {(sample.obj["kind"], sample.status) for sample in SAMPLES}
    for kind in KINDS:
        assert {"Progressing", "Healthy", "Degraded"} <= {status for k, status in statuses if k == kind}, kind
    assert ("ModelDeployment", "Suspended") in statuses


@pytest.mark.parametrize("sample", SAMPLES, ids=[sample.id for sample in SAMPLES])
def test_health(sample: Sample) -> None:
    assert lua_health(sample.obj) == (sample.status, sample.message)


def test_argocd_cm_snippet_embeds_the_lua_files_exactly() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert snippet["kind"] == "ConfigMap" and snippet["metadata"]["name"] == "argocd-cm"
    expected = {
        f"resource.customizations.health.mlflow.operator.dev_{kind}": (
            ARGOCD / f"health-{kind.lower()}.lua"
        ).read_text()
        for kind in KINDS
    }
    assert snippet["data"] == expected
    assert {path.name for path in ARGOCD.glob("*.lua")} == {f"health-{kind.lower()}.lua" for kind in KINDS}
