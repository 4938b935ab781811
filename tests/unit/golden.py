"""Golden files (tests/unit/golden/*.yaml): rendered text compared with the checked-in file, which
`UPDATE_GOLDEN=1 make unit` rewrites after an intended change (review the diff)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

GOLDEN = Path(__file__).parent / "golden"


class NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_objects(objects: list[dict[str, Any]]) -> str:
    """Rendered objects as YAML documents, in their own key order, with no anchors or aliases."""
    return yaml.dump_all(objects, Dumper=NoAliasDumper, sort_keys=False, width=120)


def assert_matches_golden(name: str, text: str) -> None:
    """text equals golden/NAME; with UPDATE_GOLDEN set, golden/NAME is rewritten first."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} changed: review, then UPDATE_GOLDEN=1"
