"""Operator-wide image settings (builders.images): a registry mirror and per-image overrides reach every
container the operator writes, a resource's own image field still wins, and a bad setting is refused naming
the flag."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_operator import cli
from mlflow_operator.builders.images import (
    DEFAULT_IMAGES,
    REFERENCE,
    ImageSettingError,
    mirrored,
    operator_images,
)
from mlflow_operator.render import render_documents

ROOT = Path(__file__).resolve().parents[2]
MIRROR = "mirror.example.com:5000"
DIGEST = "sha256:" + "ab" * 32


def examples() -> list[Any]:
    return [doc for path in sorted((ROOT / "examples").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """(object name, container name, image) of every container and init container in every pod template."""
    for obj in objects:
        spec = obj.get("spec") or {}
        template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template")
        if template is None:
            continue
        pod = template["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield obj["metadata"]["name"], container["name"], container["image"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("ghcr.io/mlflow-operator/pgbouncer:1.24", f"{MIRROR}/mlflow-operator/pgbouncer:1.24"),
        ("docker.io/library/postgres:16", f"{MIRROR}/library/postgres:16"),
        ("postgres:16", f"{MIRROR}/library/postgres:16"),  # Docker Hub's short form
        ("quay.io/org/exporter@" + DIGEST, f"{MIRROR}/org/exporter@{DIGEST}"),
        ("localhost/traefik:3.6.12", f"{MIRROR}/traefik:3.6.12"),
        ("registry:5000/team/app:1", f"{MIRROR}/team/app:1"),
    ],
)
def test_a_mirror_replaces_the_registry_host_and_keeps_path_tag_and_digest(reference: str, expected: str) -> None:
    assert mirrored(reference, MIRROR) == expected
    assert mirrored(reference, MIRROR + "/") == expected


def test_a_mirror_with_a_path_prefixes_it() -> None:
    assert mirrored("ghcr.io/a/b:1", "harbor.internal/cache") == "harbor.internal/cache/a/b:1"


def test_overrides_apply_after_the_mirror_and_accept_digests() -> None:
    images = operator_images(MIRROR, {"pgbouncer": f"internal/pgbouncer@{DIGEST}"})
    assert images.pgbouncer == f"internal/pgbouncer@{DIGEST}"
    assert images.postgres == f"{MIRROR}/library/postgres:{{version}}"
    assert operator_images() == DEFAULT_IMAGES


@pytest.mark.parametrize(
    ("registry", "overrides", "named"),
    [
        ("mirror example", {}, "--image-registry"),
        ("https://mirror.example.com", {}, "--image-registry"),
        (None, {"postgresql": "postgres:16"}, "--image postgresql: unknown image"),
        (None, {"modelServer": "Bad Image"}, "--image modelServer"),
        (None, {"modelServer": "repo/app@sha256:short"}, "--image modelServer"),
    ],
)
def test_bad_settings_are_refused_naming_the_flag(registry: str | None, overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ImageSettingError, match=named):
        operator_images(registry, overrides)


def test_every_default_is_a_valid_reference() -> None:
    for name, reference in vars(DEFAULT_IMAGES).items():
        assert REFERENCE.fullmatch(reference), name


def test_a_mirror_reaches_every_container_of_every_example() -> None:
    rendered = render_documents(examples(), model_version=3, images=operator_images(MIRROR))
    seen = list(containers(rendered.objects))
    kinds = {obj["kind"] for obj in rendered.objects}
    assert {"Deployment", "StatefulSet", "Job", "CronJob"} <= kinds, kinds
    assert len(seen) >= 8, seen
    assert [c for c in seen if not c[2].startswith(f"{MIRROR}/")] == []


def test_a_resources_own_image_fields_win_over_operator_settings() -> None:
    documents = copy.deepcopy(examples())
    own = {
        "TrackingServer": "team/mlflow:custom",
        "ModelDeployment": "team/serving:custom",
    }
    for doc in documents:
        if doc["kind"] == "TrackingServer":
            doc["spec"]["image"] = own["TrackingServer"]
            doc["spec"]["database"]["managed"]["image"] = "team/postgres:custom"
            doc["spec"]["database"].setdefault("pooler", {}).update(
                {"image": "team/pgbouncer:custom", "exporterImage": f"team/exporter@{DIGEST}"}
            )
        if doc["kind"] == "ModelDeployment":
            doc["spec"].setdefault("runtime", {})["image"] = own["ModelDeployment"]
    rendered = render_documents(documents, model_version=3, images=operator_images(MIRROR))
    images = {image for _, _, image in containers(rendered.objects)}
    assert images == {
        "team/mlflow:custom",
        "team/postgres:custom",
        "team/pgbouncer:custom",
        f"team/exporter@{DIGEST}",
        "team/serving:custom",
    }


def test_render_takes_the_operators_image_flags(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(ROOT / "examples" / "tracking-server.yaml")
    assert cli.main(["render", "-f", example, "--image-registry", MIRROR, "--image", "pgbouncer=pgb:1"]) == 0
    images = {image for _, _, image in containers(list(yaml.safe_load_all(capsys.readouterr().out)))}
    assert "pgb:1" in images and f"{MIRROR}/library/postgres:15" in images, images  # the example pins 15
    assert cli.main(["render", "-f", example, "--image", "pgbouncr=pgb:1"]) == 2
    assert "--image pgbouncr: unknown image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["render", "-f", example, "--image", "no-equals-sign"])
