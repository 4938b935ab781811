"""The images the operator deploys when a resource names none, and the operator-wide settings that change
them (the chart's `images` values -> `mlflow-operator run --image-registry/--image`): a registry mirror
rewrites every default's registry host at once (an air-gapped cluster, a pull-through cache); `--image
KEY=REFERENCE` replaces one default. A resource's own field (spec.image, database.managed.image,
database.pooler.image, database.pooler.exporterImage, runtime.image) still wins over both.

Pure: the handlers and `render` pass an Images value into the builders' inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

# A registry host, optional path, name, then a tag and/or a digest: `host[:port]/path/name[:tag][@sha256:hex]`.
# {version} may stand for the tag of the two images that follow a version field (MLflow and PostgreSQL).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"[A-Za-z0-9.-]+(?::[0-9]+)?"
_TAG = r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|\{version\})"
REFERENCE = re.compile(rf"^(?:{_REGISTRY}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@sha256:[a-f0-9]{{64}})?$")


# The MLflow of the model server image (images/mlflow-model-server/requirements.txt pins the same).
MLFLOW_VERSION = "3.17.2"


@dataclass(frozen=True)
class Images:
    """One image per component; `{version}` is filled in with the component's version field."""

    mlflow_server: str = "ghcr.io/mlflow-operator/mlflow-server:{version}"
    model_server: str = f"ghcr.io/mlflow-operator/mlflow-model-server:{MLFLOW_VERSION}"
    postgres: str = "docker.io/library/postgres:{version}"
    # PgBouncer 1.24 (Debian trixie, images/pgbouncer): protocol-level prepared statements behind a
    # transaction pool.
    pgbouncer: str = "ghcr.io/mlflow-operator/pgbouncer:1.24"
    pgbouncer_exporter: str = "quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2"


DEFAULT_IMAGES = Images()

# The --image keys, as the chart's values spell them.
IMAGE_KEYS: dict[str, str] = {
    "mlflowServer": "mlflow_server",
    "modelServer": "model_server",
    "postgres": "postgres",
    "pgbouncer": "pgbouncer",
    "pgbouncerExporter": "pgbouncer_exporter",
}


class ImageSettingError(ValueError):
    """An operator-wide image setting that cannot be used; the message names the setting."""


def mirrored(reference: str, registry: str) -> str:
    """`reference` pulled from `registry` instead of its own registry host (the path, tag and digest stay):
    ghcr.io/mlflow-operator/pgbouncer:1.24 with mirror.local:5000 -> mirror.local:5000/mlflow-operator/pgbouncer:1.24.
    A reference without a registry host is Docker Hub's (library/ for a single name)."""
    first, slash, rest = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        path = rest
    else:
        path = reference if slash else f"library/{reference}"
    return f"{registry.rstrip('/')}/{path}"


def operator_images(registry: str | None = None, overrides: Mapping[str, str] | None = None) -> Images:
    """The defaults with a mirror applied to each, then the per-key overrides (taken as given: an override
    names its registry itself)."""
    images = DEFAULT_IMAGES
    if registry:
        if not re.fullmatch(rf"{_REGISTRY}(?:/{_COMPONENT})*", registry.rstrip("/")):
            raise ImageSettingError(f"--image-registry: {registry!r} is not a registry host[:port][/path]")
        images = replace(images, **{f.name: mirrored(getattr(images, f.name), registry) for f in fields(images)})
    changes = {}
    for key, reference in (overrides or {}).items():
        if key not in IMAGE_KEYS:
            raise ImageSettingError(f"--image {key}: unknown image, expected one of {', '.join(IMAGE_KEYS)}")
        if not REFERENCE.fullmatch(reference):
            raise ImageSettingError(f"--image {key}: {reference!r} is not an image reference")
        changes[IMAGE_KEYS[key]] = reference
    return replace(images, **changes)


def with_version(template: str, version: str) -> str:
    return template.replace("{version}", version)
