"""What Argo CD shows for a mlflow-operator resource, from the health checks in docs/argocd/argocd-cm.yaml (as
hack/argocd-health.py composes them from docs/argocd/health-*.lua), two ways: the shipped Lua run by lupa
(Lua 5.1, the dialect of Argo CD's gopher-lua), and Argo CD's own code, the CLI's offline
evaluation (`argocd admin settings resource-overrides health OBJ --argocd-cm-path docs/argocd/argocd-cm.yaml`,
built from the Go module proxy by hack/build-binaries.sh at ARGOCD_VERSION). The CLI is the truth; lupa is
what the unit tests can afford on every run.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from lupa import lua51

from tests.integration.packaging import tool_binary
from tests.kube import ROOT, Kubectl
from tests.scripts import load_script

# The generator of argocd-cm.yaml: where the sources are, the kinds, the keys and how a script is composed.
argocd_health = load_script("argocd_health", ROOT / "hack" / "argocd-health.py")
ARGOCD_CM: Path = argocd_health.ARGOCD_CM
KINDS: tuple[str, ...] = argocd_health.KINDS
# The CLI prints exactly these two lines for a resource its scripts cover, anything else (e.g. "Health script is
# not configured for ...") is not a verdict. The status set is gitops-engine's HealthStatusCode.
CLI_VERDICT = re.compile(r"STATUS: (Healthy|Progressing|Degraded|Suspended|Missing|Unknown)\nMESSAGE: ([^\n]*)\n")


class Health(NamedTuple):
    status: str
    message: str


@functools.cache
def shipped_scripts() -> dict[str, str]:
    """argocd-cm.yaml's data: the health check of each kind, keyed as Argo CD reads them."""
    data: dict[str, str] = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    return data


def lua_health(obj: dict[str, Any]) -> Health:
    """The script for obj's kind as argocd-cm.yaml ships it, run by lupa with `obj` as Argo CD passes it."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(shipped_scripts()[argocd_health.data_key(obj["kind"])])
    return Health(str(result["status"]), str(result["message"]))


def argocd_binary() -> Path:
    return tool_binary("argocd", "ARGOCD_VERSION", "argocd")


def parse_cli_verdict(stdout: str) -> Health:
    found = CLI_VERDICT.fullmatch(stdout)
    if found is None:
        raise ValueError(f"not an Argo CD health verdict: {stdout!r}")
    return Health(found[1], found[2])


def cli_health(obj: dict[str, Any], argocd_cm: Path = ARGOCD_CM) -> Health:
    """Argo CD's verdict on obj with the health checks of argocd_cm, as the CLI prints it."""
    with tempfile.TemporaryDirectory(prefix="argocd-health-") as tmp:
        path = Path(tmp) / "object.yaml"
        path.write_text(yaml.safe_dump(obj))
        result = subprocess.run(
            [str(argocd_binary()), "admin", "settings", "resource-overrides", "health", str(path),
             "--argocd-cm-path", str(argocd_cm)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"argocd exited with {result.returncode}: {result.stderr[-2000:]}")
    return parse_cli_verdict(result.stdout)


def assert_argocd_health(obj: dict[str, Any], status: str, message: str | None = None) -> Health:
    """The CLI's verdict on obj is the Lua's, and the expected one."""
    cli, lua = cli_health(obj), lua_health(obj)
    assert cli == lua, f"Argo CD says {cli}, the lupa evaluation {lua}"
    assert cli.status == status, f"Argo CD says {cli} of {obj.get('status')}"
    if message is not None:
        assert cli.message == message, cli
    return cli


def assert_live_health(
    kubectl: Kubectl, kind: str, name: str, namespace: str, status: str, message: str | None = None
) -> Health:
    """The object as the API server has it now, which is what Argo CD reads, gets the expected verdict."""
    obj = kubectl.get(kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} not found"
    return assert_argocd_health(obj, status, message)
