"""Reference docs cannot rot: docs/api.md is what the models generate, and every condition reason the
operator can report is explained in docs/operations.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mlflow_operator import cli
from mlflow_operator.api.docs import api_reference
from mlflow_operator.api.kinds import KINDS
from tests.kube import ROOT

PACKAGE = ROOT / "operator" / "mlflow_operator"
API_DOC = ROOT / "docs" / "api.md"
OPERATIONS = ROOT / "docs" / "operations.md"
# Calls whose argument at this index (or keyword `reason`) is a condition reason.
REASON_ARGUMENT = {
    "ConditionUpdate": 2,
    "SecretProblem": 0,
    "Readiness": 1,
    "LifecycleDecision": 1,
    "lifecycle_failure": 0,
    "sync_failure": 0,
    "initial_unknown": 1,
}
EVENT_ONLY = {"DriftCorrected"}  # REASON_* constants used for Events, documented in their own paragraph


def _string_constants(tree: ast.AST) -> dict[str, str]:
    constants = {}
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return constants


def collect_reasons() -> dict[str, set[str]]:
    """reason -> files: REASON_* constants, `reason = "..."` of error classes, and reason arguments of
    ConditionUpdate and friends (string literals, or names of string constants of the same module)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        constants = _string_constants(tree)
        where = str(path.relative_to(PACKAGE))
        for name, value in constants.items():
            if name.startswith("REASON_") or name == "reason":
                found.setdefault(value, set()).add(where)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called not in REASON_ARGUMENT:
                continue
            index = REASON_ARGUMENT[called]
            argument = node.args[index] if len(node.args) > index else None
            argument = argument or next((k.value for k in node.keywords if k.arg == "reason"), None)
            reason: str | None = None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                reason = argument.value
            elif isinstance(argument, ast.Name):
                reason = constants.get(argument.id)
            if reason is not None:
                found.setdefault(reason, set()).add(where)
    return found


def documented_reasons() -> set[str]:
    text = OPERATIONS.read_text()
    section = text.split("## Troubleshooting by condition reason", 1)[1]
    reasons = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4:
            reasons.update(re.findall(r"`([A-Za-z0-9]+)`", cells[1]))
    return reasons


def test_the_collector_finds_reasons_of_every_kind() -> None:
    reasons = collect_reasons()
    for expected in ("InvalidSpec", "Migrating", "DowngradeRefused", "SecretNotFound", "RegistryUnavailable", "Paused"):
        assert expected in reasons
    assert "TrackingServerNotReady" in reasons  # a SecretProblem literal
    assert "PodsNotReady" in reasons  # a Readiness literal


def test_every_condition_reason_is_documented_in_operations_md() -> None:
    documented = documented_reasons()
    missing = {
        reason: sorted(files) for reason, files in collect_reasons().items() if reason not in documented | EVENT_ONLY
    }
    assert not missing, f"add these reasons to the troubleshooting table of docs/operations.md: {missing}"


def test_event_only_reasons_are_mentioned() -> None:
    text = OPERATIONS.read_text()
    for reason in EVENT_ONLY | {"CleanupAbandoned"}:
        assert f"`{reason}`" in text


def test_api_md_is_up_to_date() -> None:
    assert API_DOC.read_text() == api_reference(), "docs/api.md is stale or hand-edited: run 'make docs'"


def test_api_md_lists_every_field_of_every_kind() -> None:
    text = api_reference()
    for info in KINDS:
        for model, section in ((info.spec_model, "spec"), (info.status_model, "status")):
            for field in model.model_fields.values():
                assert f"`{section}.{field.alias}`" in text, (info.kind, section, field.alias)
    assert "CEL: exactly one of managed or external must be set" in text
    assert "`spec.strategy.canary.steps[].setWeight`" in text


def test_docs_command_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "api.md"
    assert cli.main(["docs", "-o", str(target)]) == 0
    assert target.read_text() == api_reference()
