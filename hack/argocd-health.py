#!/usr/bin/env python3
"""Writes docs/argocd/argocd-cm.yaml, the Argo CD health checks of the mlflow-operator kinds, from their sources.

Argo CD runs each health check as one self-contained Lua script (no `require`), yet every kind's starts the
same way. So the sources are docs/argocd/health-prelude.lua, that common start, and docs/argocd/health-<kind>.lua,
a kind's header comment and the rest of its check; the shipped script of a kind is its header, the prelude's
code (its own header comment is about the file, not shipped) and the kind's code, in that order.
tests/unit/test_argocd_health.py fails when argocd-cm.yaml is not what the sources compose.

Usage: hack/argocd-health.py [--check]   (re)write docs/argocd/argocd-cm.yaml, or only compare it

Stdlib only, like hack/build-images.py: `make generate` runs it before any virtualenv exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

ARGOCD = Path(__file__).resolve().parent.parent / "docs" / "argocd"
ARGOCD_CM = ARGOCD / "argocd-cm.yaml"
KINDS = ("TrackingServer", "RegisteredModel", "ModelDeployment")
HEADER = """\
# Argo CD health checks for the mlflow-operator kinds: merge into the argocd-cm ConfigMap (namespace argocd).
# GENERATED from health-*.lua by hack/argocd-health.py (`make argocd`): edit those, not this file.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def data_key(kind: str) -> str:
    """The argocd-cm key of kind's health check."""
    return f"resource.customizations.health.mlflow.operator.dev_{kind}"


def split_header(source: str) -> tuple[str, str]:
    """A Lua source's leading comment lines, and the rest of it."""
    lines = source.splitlines(keepends=True)
    count = 0
    while count < len(lines) and lines[count].startswith("--"):
        count += 1
    return "".join(lines[:count]), "".join(lines[count:])


def compose(prelude: str, kind_source: str) -> str:
    """The script Argo CD runs for a kind: the kind's header comment, the prelude's code, the kind's code."""
    header, code = split_header(kind_source)
    return header + split_header(prelude)[1] + code


def health_script(kind: str, sources: Path = ARGOCD) -> str:
    """kind's script composed from the sources in sources."""
    return compose((sources / "health-prelude.lua").read_text(), (sources / f"health-{kind.lower()}.lua").read_text())


def render_argocd_cm(scripts: dict[str, str]) -> str:
    """argocd-cm.yaml with each kind's script (kind -> script) as a literal block, in the order given."""
    text = HEADER
    for kind, script in scripts.items():
        # `|` keeps exactly one final newline: a script must end with one, or it would not read back unchanged.
        if not script.endswith("\n") or script.endswith("\n\n"):
            raise ValueError(f"the {kind} script must end with exactly one newline")
        text += f"  {data_key(kind)}: |\n"
        text += "".join(f"    {line}" if line != "\n" else line for line in script.splitlines(keepends=True))
    return text


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    text = render_argocd_cm({kind: health_script(kind) for kind in KINDS})
    if ARGOCD_CM.exists() and ARGOCD_CM.read_text() == text:
        return 0
    if argv:
        print("docs/argocd/argocd-cm.yaml is stale or hand-edited: run `make argocd`", file=sys.stderr)
        return 1
    ARGOCD_CM.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
