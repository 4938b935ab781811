"""Argo CD health checks (docs/argocd/argocd-cm.yaml) run in Lua 5.1 (Argo CD's gopher-lua is 5.1) against
sample statuses; the argocd-cm snippet is exactly what hack/argocd-health.py composes from docs/argocd/health-*.lua.

SAMPLES (tests/argocd_samples.py) is data: tests/integration/test_argocd_cli.py asks the Argo CD CLI about each
of them too, and its verdict must be the one the Lua gives here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.argocd import ARGOCD_CM, KINDS, argocd_health, lua_health
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


def test_argocd_cm_is_what_the_sources_compose() -> None:
    """argocd-cm.yaml is generated: a hand edit, or a source edited without `make argocd`, fails here."""
    scripts = {kind: argocd_health.health_script(kind) for kind in KINDS}
    shipped = ARGOCD_CM.read_text()
    assert shipped == argocd_health.render_argocd_cm(scripts), "argocd-cm.yaml is stale: run `make argocd`"
    snippet = yaml.safe_load(shipped)
    assert snippet["kind"] == "ConfigMap" and snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"] == {argocd_health.data_key(kind): script for kind, script in scripts.items()}
    sources = {path.name for path in argocd_health.ARGOCD.glob("*.lua")}
    assert sources == {"health-prelude.lua", *(f"health-{kind.lower()}.lua" for kind in KINDS)}


def test_a_script_is_the_kinds_header_the_preludes_code_and_the_kinds_code() -> None:
    prelude = "-- about the prelude, not shipped\nlocal hs = {}\n"
    kind = "-- the kind's header\n-- shipped\nreturn hs\n"
    assert argocd_health.compose(prelude, kind) == "-- the kind's header\n-- shipped\nlocal hs = {}\nreturn hs\n"
    with pytest.raises(ValueError, match="exactly one newline"):
        argocd_health.render_argocd_cm({"TrackingServer": "return {}"})


def test_the_check_fails_on_a_stale_argocd_cm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "argocd-cm.yaml"
    stale.write_text(ARGOCD_CM.read_text().replace('"Degraded"', '"Healthy"'))
    monkeypatch.setattr(argocd_health, "ARGOCD_CM", stale)
    assert argocd_health.main(["--check"]) == 1
    assert argocd_health.main([]) == 0
    assert stale.read_text() == ARGOCD_CM.read_text()
    assert argocd_health.main(["--check"]) == 0
