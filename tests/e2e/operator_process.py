"""The operator as the e2e tests run it: its console script as a subprocess on a cluster's kubeconfig."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.dataplane import free_port, stop_process
from tests.kube import eventually

# Short by default, so the tests see idle resyncs happen (and write nothing).
RESYNC_SECONDS = 5


@dataclass
class OperatorProcess:
    """The operator as users run it: the console script, as a subprocess."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    metrics_port: int | None = None  # /metrics on 127.0.0.1

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log_tail(4000)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        eventually(healthy, timeout=timeout, what="operator liveness endpoint")

    def stop(self) -> int:
        """SIGTERM, as Kubernetes does; kopf finishes in-flight work and exits."""
        stop_process(self.process, 30)
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a node dies."""
        self.process.kill()
        self.process.wait(timeout=10)


# The session operator gives children their images from this mirror (kwok runs no image, so none needs to
# exist there): the e2e tests see an operator-wide setting reach every child through a real API server.
IMAGE_MIRROR = "mirror.e2e.example:5000"


def start_operator(
    kubeconfig: str,
    namespaces: str,
    log_path: Path,
    metrics_port: int | None = None,
    *,
    resync_seconds: float = RESYNC_SECONDS,
    image_registry: str | None = IMAGE_MIRROR,
    healthy: bool = True,
) -> OperatorProcess:
    """The operator's console script. Metrics are always served on loopback (a free port unless
    `metrics_port` is given), never on the operator's default 0.0.0.0:9090; default images come from
    `image_registry` (the operator's own default when None); with `healthy`, returns once its liveness
    endpoint answers."""
    port = free_port()
    metrics_port = metrics_port or free_port()
    binary = Path(sys.executable).parent / "mlflow-operator"
    argv = [
        str(binary),
        "run",
        "--namespace",
        namespaces,
        "--liveness",
        f"http://127.0.0.1:{port}/healthz",
        "--log-format",
        "text",
        "--verbose",
        # Short by default, so the tests see idle resyncs happen (and write nothing).
        "--resync-seconds",
        str(resync_seconds),
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
    ]
    if image_registry is not None:
        argv += ["--image-registry", image_registry]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=log, stderr=subprocess.STDOUT
        )
    operator = OperatorProcess(process, log_path, port, metrics_port)
    if healthy:
        operator.wait_healthy()
    return operator
