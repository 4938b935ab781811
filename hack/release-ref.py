#!/usr/bin/env python3
"""The reference the release workflow pushes an image to: the image's own name and tag (images/<dir>/image.toml
`ref`) under the release registry, e.g. `ghcr.io/OWNER`. Images whose default is upstream's (docker.io's
postgres, quay.io's pgbouncer-exporter) are published under the same name beside ours: a cluster without
access to those registries sets them with the chart's `childImages.overrides`.

Usage: hack/release-ref.py DIR REGISTRY   ->  REGISTRY/NAME:TAG
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

IMAGES = Path(__file__).resolve().parent.parent / "images"


def release_ref(ref: str, registry: str) -> str:
    """`registry/name:tag` for an image reference `host/path/name:tag`."""
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"{ref!r} has no tag")
    name = repository.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{name}:{tag}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory, registry = argv
    definition = tomllib.loads((IMAGES / directory / "image.toml").read_text())
    print(release_ref(definition["ref"], registry))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
