"""The release workflow (.github/workflows/release.yml, linted by `make workflows`): it builds every image
directory the tests build, from the Dockerfiles they check, and pushes each under its own name and tag."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.scripts import load_script

ROOT = Path(__file__).parents[2]
release_ref = load_script("release_ref", ROOT / "hack" / "release-ref.py").release_ref


def workflow() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    return loaded


def test_every_image_directory_is_released() -> None:
    jobs = workflow()["jobs"]
    assert isinstance(jobs, dict)
    matrix = jobs["images"]["strategy"]["matrix"]["image"]
    assert sorted(matrix) == sorted(p.name for p in (ROOT / "images").iterdir() if (p / "image.toml").exists())


@pytest.mark.parametrize(
    ("ref", "pushed"),
    [
        ("ghcr.io/mlflow-operator/mlflow-server:3.17.2", "ghcr.io/acme/mlflow-server:3.17.2"),
        ("docker.io/library/postgres:15", "ghcr.io/acme/postgres:15"),
        ("quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2", "ghcr.io/acme/pgbouncer-exporter:v0.10.2"),
        ("localhost:5000/team/app:1", "ghcr.io/acme/app:1"),
    ],
)
def test_images_are_pushed_under_their_own_name_and_tag(ref: str, pushed: str) -> None:
    assert release_ref(ref, "ghcr.io/acme/") == pushed


def test_a_reference_without_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="no tag"):
        release_ref("localhost:5000/team/app", "ghcr.io/acme")
