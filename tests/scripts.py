"""Programs of the repository (hack/*.py, the gc script the builders ship): loaded as modules, so tests can
call their pure functions (they are run by path, not imported: some have a dash in their name), or run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

HACK = Path(__file__).resolve().parents[1] / "hack"


def load_script(name: str, path: Path) -> ModuleType:
    """The file at path as module `name`, registered in sys.modules (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_hack(script: str, *args: str, timeout: float = 600) -> str:
    """hack/<script> run with this Python, always against the local cluster (KUBECONFIG unset): its stdout;
    a failure raises with its stderr's tail."""
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    result = subprocess.run(
        [sys.executable, str(HACK / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"hack/{script} {' '.join(args)} failed:\n{result.stderr[-6000:]}")
    return result.stdout
