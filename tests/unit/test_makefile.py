"""The pre-commit hooks run Makefile targets that exist, and `make help` lists every target."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def targets() -> set[str]:
    return set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_pre_commit_hooks_run_existing_make_targets() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert hooks
    for hook in hooks:
        program, *wanted = hook["entry"].split()
        assert program == "make" and wanted and set(wanted) <= targets(), hook["entry"]
        assert hook["pass_filenames"] is False  # the targets check the whole tree


def test_every_target_has_a_help_line() -> None:
    documented = set(re.findall(r"^([a-z0-9-]+):.*## ", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert targets() == documented
