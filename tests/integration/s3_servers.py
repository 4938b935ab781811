"""Real S3 servers for the integration tests: moto's server mode and MinIO, as local processes.

Each server listens on 127.0.0.1 on a free port, keeps its state in a temporary directory and is stopped by
the test session. A server that does not start is an error, never a skip. MinIO comes from
hack/build-binaries.sh (built once from the Go module proxy, cached by version); moto from the project's
virtualenv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_operator.adapters.s3 import S3Endpoint, make_client
from tests.integration.dataplane import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"
CACHE = Path(os.environ.get("MLFLOW_OPERATOR_CACHE", Path.home() / ".cache" / "mlflow-operator"))
STARTUP_TIMEOUT = 60.0
BUILD_TIMEOUT = 1800.0  # a cold MinIO build on 2 cores, module downloads included
STOP_TIMEOUT = 10.0


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago; nothing here binds it again)."""
    return free_port()


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def minio_binary() -> Path:
    """The cached MinIO binary, built with hack/build-binaries.sh if it is not there yet."""
    binary = CACHE / "bin" / f"minio-{pinned_versions()['MINIO_VERSION']}" / "minio"
    if not binary.exists():
        subprocess.run([str(HACK / "build-binaries.sh"), "minio"], check=True, timeout=BUILD_TIMEOUT)
    return binary


def unique_bucket_name(prefix: str = "lifecycle") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class S3Server:
    """A running S3 server and the credentials it accepts."""

    name: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # How it was started, for restart(): the same command on the same port (MinIO keeps its data on disk;
    # moto keeps everything in memory, so a restarted moto is empty).
    command: list[str] | None = None
    env: dict[str, str] | None = None
    health_url: str | None = None

    def endpoint(self, bucket: str) -> S3Endpoint:
        return S3Endpoint(
            bucket,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

    def client(self) -> Any:
        """A plain boto3 client, for what the tests do behind the operator's back."""
        return make_client(self.endpoint("unused"))

    def create_bucket(self) -> str:
        bucket = unique_bucket_name()
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def restart(self) -> None:
        """Start the stopped server again with the same command, on the same port, and wait until it serves."""
        if self.command is None or self.health_url is None:
            raise RuntimeError(f"{self.name} was not started with a recorded command")
        self.stop()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        _wait_until_serving(self, self.health_url)

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT, kill_wait=STOP_TIMEOUT)


def _wait_until_serving(server: S3Server, health_url: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Until health_url answers without a server error (MinIO answers 503 while it initialises); fail with
    the server's log if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(health_url, timeout=2):
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return  # it answered: the server is up, whatever it thinks of an anonymous request
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer on {health_url} within {timeout:.0f} s:\n{server.log_tail()}")


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@contextmanager
def _serving(server: S3Server, health_url: str) -> Iterator[None]:
    """Waits until the just-spawned server answers on health_url (kept for restart), and stops it when the
    block ends, however it ends."""
    server.health_url = health_url
    try:
        _wait_until_serving(server, health_url)
        yield
    finally:
        server.stop()


@contextmanager
def moto_server(workdir: Path) -> Iterator[S3Server]:
    """moto in server mode: stores lifecycle rules (it does not expire anything); accepts any credentials."""
    port = free_port()
    log_path = workdir / "moto.log"
    moto = Path(sys.executable).parent / "moto_server"
    command = [str(moto), "-H", "127.0.0.1", "-p", str(port)]
    process = _spawn(command, log_path)
    server = S3Server("moto", f"http://127.0.0.1:{port}", "testing", "testing", process, log_path, command)
    with _serving(server, f"{server.endpoint_url}/"):
        yield server


@contextmanager
def minio_server(workdir: Path) -> Iterator[S3Server]:
    """MinIO with a single drive in workdir; the console listens too (it cannot be turned off by flag)."""
    binary = minio_binary()
    port, console_port = free_port(), free_port()
    user, password = "mlflow-operator", "mlflow-operator-secret"
    env = os.environ | {
        "MINIO_ROOT_USER": user,
        "MINIO_ROOT_PASSWORD": password,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }
    command = [
        str(binary),
        "server",
        str(workdir / "data"),
        "--address",
        f"127.0.0.1:{port}",
        "--console-address",
        f"127.0.0.1:{console_port}",
        "--certs-dir",
        str(workdir / "certs"),  # not ~/.minio
    ]
    log_path = workdir / "minio.log"
    process = _spawn(command, log_path, env)
    server = S3Server("minio", f"http://127.0.0.1:{port}", user, password, process, log_path, command, env)
    with _serving(server, f"{server.endpoint_url}/minio/health/ready"):
        yield server
