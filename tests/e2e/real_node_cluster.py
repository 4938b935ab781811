"""A local cluster with the real node (hack/localcluster.py), and the versions of the clusters the e2e tests
ran on, which the test summary prints."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.kube import ROOT, Kubectl

VERSIONS: dict[str, str] = {}  # "server", "client": the e2e cluster's; "node": the real node's


@dataclass
class RealNodeCluster:
    """A local cluster with the real node (hack/localcluster.py's default), in its own state directory."""

    workdir: Path
    kubectl: Kubectl

    def localcluster(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        script = str(ROOT / "hack" / "localcluster.py")
        return subprocess.run(
            [sys.executable, script, *args, "--dir", str(self.workdir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        result = self.localcluster("up", "--node-images-only")  # the tests need no application image
        assert result.returncode == 0, f"real-node cluster did not start:\n{result.stderr[-4000:]}"
        assert result.stdout.strip().splitlines()[-1] == self.kubectl.kubeconfig

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.localcluster("down", timeout=300)


def record_real_node(kubectl: Kubectl) -> None:
    """The real node's runtime and kubelet versions, for the test summary."""
    info = json.loads(kubectl.run("get", "node", "realnode", "-o", "json").stdout)["status"]["nodeInfo"]
    VERSIONS["node"] = f"{info['containerRuntimeVersion']}, kubelet {info['kubeletVersion']}"
