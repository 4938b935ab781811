"""The pod of a rendered model Deployment, its containers run as local processes from the model server's venv.

What runs is the operator's: each container's `command` and `env` exactly as
builders.modeldeployment renders them, in the virtualenv hack/install-deps.sh installs from
images/mlflow-model-server/requirements.txt (what the image installs). Only what a pod provides
differently from this machine is substituted, each in one place below:

- volume mounts: every mountPath (the `models` emptyDir at /models, the `tmp` emptyDir at /tmp) becomes a
  local directory, wherever a command argument or a literal env value is exactly that path (so HOME=/tmp
  becomes the local tmp dir, `--dst-path /models` and `__pyfunc_model_path__=/models` the local models dir);
- `--host 0.0.0.0` becomes 127.0.0.1 (only loopback may receive traffic here) and `--port <containerPort>`
  a free port; the probes' named port resolves to that port; the metrics port (its env variable) another
  free port;
- `--app-dir` (where the image installs the scoring app, a `[[files]]` entry of its image.toml) becomes the
  directory of that file in the repository;
- env from a Secret (valueFrom.secretKeyRef) comes from the test's values for that Secret and key;
- the image: its PATH (the venv's bin first, then the image's), its ENV lines that the rendered env
  does not set (IMAGE_ENV), its WORKDIR (/tmp, i.e. the tmp volume); nothing else of this machine's
  environment leaks in;
- the main container runs as PID 1 of its own PID namespace (`unshare --pid --fork`), as in a container,
  so SIGTERM and exit codes behave as in the pod (a PID 1 ignores signals it has no handler for).

Kubernetes' $(VAR) expansion of the command is applied as the kubelet does. The containers run as this
machine's user, not UID 10001, and the read-only mounts and root filesystem are not enforced; tests check
instead that the models directory is left untouched by the containers that mount it read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_operator.builders.common import Obj
from mlflow_operator.builders.modeldeployment import METRICS_PORT_ENV, ModelDeploymentInputs, all_objects
from tests.integration.dataplane import (
    HOST,
    DataplaneError,
    Process,
    free_port,
    image_venv,
    option_value,
    run_checked,
    server_env,
    wait_for,
    with_option,
)
from tests.integration.rendered import REPO_ROOT, SecretValues, expand_dependent_vars, resolve_env

MODEL_SERVER_IMAGE = "mlflow-model-server"  # images/<this>
# The image's env (images/mlflow-model-server/image.toml, the Dockerfile's ENV lines) as the base of every
# container's environment; the rendered env is applied over it. Its HOME and __pyfunc_model_path__ are
# rendered by the operator too. PATH: the image's with its venv's bin replaced by the local venv's.
_IMAGE = tomllib.loads((REPO_ROOT / "images" / MODEL_SERVER_IMAGE / "image.toml").read_text())
_VENV_BIN = f"{_IMAGE['python']['venv']}/bin:"
IMAGE_ENV = {k: v for k, v in _IMAGE["config"]["env"].items() if k not in ("PATH", "HOME", "__pyfunc_model_path__")}
IMAGE_PATH = _IMAGE["config"]["env"]["PATH"].removeprefix(_VENV_BIN)
IMAGE_WORKDIR = _IMAGE["config"]["workdir"]
# Where the image puts each of its own files' directories -> that directory in the repository.
IMAGE_FILE_DIRS = {
    str(Path(f["dest"]).parent): str(REPO_ROOT / "images" / MODEL_SERVER_IMAGE) for f in _IMAGE.get("files", [])
}
ANY_ADDRESS = "0.0.0.0"


def model_server_venv() -> Path:
    """The installed model server virtualenv, or a DataplaneError telling to run `make deps`."""
    return image_venv(MODEL_SERVER_IMAGE)


def run_model_python(code: str, *, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """A script with the model server virtualenv's interpreter (full mlflow, scikit-learn); returns stdout."""
    python = str(model_server_venv() / "bin" / "python")
    return run_checked([python, "-c", code], what="python (model server venv)", timeout=timeout, env=server_env(env))


def rendered_deployment(inputs: ModelDeploymentInputs, version: int) -> Obj:
    """The Deployment of one version among everything the operator renders for these inputs."""
    name = inputs.names.deployment(version)
    found = [obj for obj in all_objects(inputs) if obj["kind"] == "Deployment" and obj["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one Deployment {name}, rendered {len(found)}")
    return found[0]


@dataclass(frozen=True)
class ContainerResult:
    """An init container run to completion."""

    name: str
    returncode: int
    output: str  # stdout and stderr, interleaved as the kubelet's log would hold them
    seconds: float

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ModelPod:
    """One rendered Deployment's pod template: its init containers and its server, run locally.

    workdir holds a directory per (emptyDir) volume and the containers' logs. close() stops the server.
    """

    def __init__(self, deployment: Obj, workdir: Path, *, secrets: SecretValues | None = None):
        self.deployment = deployment
        self.pod_spec: Obj = deployment["spec"]["template"]["spec"]
        self.workdir = workdir
        self.secrets: SecretValues = dict(secrets or {})
        self.venv = model_server_venv()
        self.port = free_port()
        self.metrics_port = free_port()
        self.volumes: dict[str, Path] = {}
        for volume in self.pod_spec["volumes"]:
            if set(volume) != {"name", "emptyDir"}:
                raise ValueError(f"only emptyDir volumes run locally: {volume}")
            self.volumes[volume["name"]] = workdir / "volumes" / volume["name"]
            self.volumes[volume["name"]].mkdir(parents=True)
        self.server: Process | None = None

    # --- the rendered pod -------------------------------------------------------------------------------------

    @property
    def init_containers(self) -> list[Obj]:
        return list(self.pod_spec["initContainers"])

    @property
    def server_container(self) -> Obj:
        (container,) = self.pod_spec["containers"]
        return dict(container)

    def container(self, name: str) -> Obj:
        for container in [*self.init_containers, *self.pod_spec["containers"]]:
            if container["name"] == name:
                return dict(container)
        raise LookupError(f"no container {name} in {self.deployment['metadata']['name']}")

    @property
    def termination_grace_seconds(self) -> int:
        return int(self.pod_spec["terminationGracePeriodSeconds"])

    @property
    def pre_stop_seconds(self) -> int:
        """The preStop sleep, which the kubelet counts against the grace period before it sends SIGTERM."""
        pre_stop = self.server_container.get("lifecycle", {}).get("preStop", {})
        return int(pre_stop.get("sleep", {}).get("seconds", 0))

    def mount_dir(self, container: Obj, mount_path: str) -> Path:
        """The local directory of the volume `container` mounts at mount_path."""
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == mount_path:
                return self.volumes[mount["name"]]
        raise LookupError(f"{container['name']} mounts nothing at {mount_path}")

    def _mounts(self, container: Obj) -> dict[str, str]:
        return {mount["mountPath"]: str(self.volumes[mount["name"]]) for mount in container.get("volumeMounts", [])}

    # --- substitutions (see the module docstring) -----------------------------------------------------------

    def env(self, container: Obj) -> dict[str, str]:
        """The image's environment, then the container's rendered env with mount paths made local and
        Secret values from self.secrets."""
        mounts = self._mounts(container)
        local_paths = {
            item["name"]: mounts[item["value"]]
            for item in container.get("env", [])
            if "value" in item and item["value"] in mounts
        }
        try:
            rendered = resolve_env(container.get("env", []), self.secrets, local_paths)
        except KeyError as exc:
            raise DataplaneError(f"{container['name']}: no test value for the Secret key {exc}") from exc
        if METRICS_PORT_ENV in rendered:
            rendered[METRICS_PORT_ENV] = str(self.metrics_port)
        return {"PATH": f"{self.venv / 'bin'}:{IMAGE_PATH}", **IMAGE_ENV, **rendered}

    def argv(self, container: Obj) -> list[str]:
        """The rendered command, $(VAR)-expanded, its program from the venv, mount paths and the server's
        address made local."""
        mounts = self._mounts(container)
        argv = [mounts.get(arg, arg) for arg in expand_dependent_vars(container["command"], self.env(container))]
        program = shutil.which(argv[0], path=str(self.venv / "bin"))
        if program is None:
            raise DataplaneError(f"{container['name']}: {argv[0]} is not in the model server venv {self.venv}")
        argv[0] = program
        if option_value(argv, "--host") is not None:
            if option_value(argv, "--host") != ANY_ADDRESS:
                raise ValueError(f"{container['name']} listens on {option_value(argv, '--host')}, not {ANY_ADDRESS}")
            argv = with_option(argv, "--host", HOST)
        if option_value(argv, "--port") is not None:
            declared = {str(port["containerPort"]) for port in container.get("ports", [])}
            if option_value(argv, "--port") not in declared:
                raise ValueError(f"{container['name']} listens on a port it does not declare: {declared}")
            argv = with_option(argv, "--port", str(self.port))
        app_dir = option_value(argv, "--app-dir")
        if app_dir is not None:
            argv = with_option(argv, "--app-dir", IMAGE_FILE_DIRS[app_dir])
        return argv

    def cwd(self, container: Obj) -> Path:
        return self.mount_dir(container, container.get("workingDir", IMAGE_WORKDIR))

    def probe_path(self, probe: str) -> str:
        """The path of the server's readinessProbe, livenessProbe or startupProbe (httpGet on its port)."""
        container = self.server_container
        http_get = container[probe]["httpGet"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        probed = str(ports.get(http_get["port"], http_get["port"]))
        if probed != option_value(container["command"], "--port"):
            raise ValueError(f"{probe} probes port {http_get['port']}, where the server does not listen")
        return str(http_get["path"])

    # --- running -------------------------------------------------------------------------------------------------

    def run_init(self, name: str, *, timeout: float = 600) -> ContainerResult:
        """Runs one init container to completion."""
        container = self.container(name)
        if container not in self.init_containers:
            raise ValueError(f"{name} is not an init container")
        started = time.monotonic()
        try:
            result = subprocess.run(
                self.argv(container), env=self.env(container), cwd=self.cwd(container), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise DataplaneError(f"{name}: did not finish within {timeout:.0f} s") from exc
        (self.workdir / f"{name}.log").write_text(result.stdout)
        return ContainerResult(name, result.returncode, result.stdout, time.monotonic() - started)

    def run_init_containers(self, *, timeout: float = 600) -> list[ContainerResult]:
        """The init containers in order, stopping at the first that fails (as the kubelet does)."""
        results: list[ContainerResult] = []
        for container in self.init_containers:
            results.append(self.run_init(container["name"], timeout=timeout))
            if not results[-1].succeeded:
                break
        return results

    def start_server(self) -> Process:
        container = self.server_container
        argv = self.argv(container)
        # PID 1 of a new PID namespace, like a container's process; --kill-child: it dies with unshare.
        if os.geteuid() != 0:
            argv = ["unshare", "--user", "--map-current-user", "--pid", "--fork", "--kill-child", "--", *argv]
        else:
            argv = ["unshare", "--pid", "--fork", "--kill-child", "--", *argv]
        self.server = Process(
            container["name"], argv, self.workdir / f"{container['name']}.log", cwd=self.cwd(container),
            env=self.env(container),
        )  # fmt: skip
        self.server.start()
        return self.server

    def wait_ready(self, *, timeout: float = 300) -> None:
        """Until the readiness probe's path answers 200 (what makes the kubelet mark the pod ready)."""
        if self.server is None:
            raise DataplaneError("the server is not started")
        path = self.probe_path("readinessProbe")
        self.server.wait_ready(lambda: self._answers(path), timeout=timeout, what=f"ready (GET {path})")

    def _answers(self, path: str) -> bool:
        try:
            return self.get(path, timeout=2).status == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def get(self, path: str, *, timeout: float = 10) -> Response:
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, payload: Any, *, timeout: float = 60) -> Response:
        body = json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"}, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
        *, timeout: float = 10,
    ) -> Response:  # fmt: skip
        """Any status is a Response; only a connection failure raises (OSError)."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Response(int(response.status), response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read())

    def container_pid(self) -> int:
        """The server's PID (on this machine) of the process that is PID 1 in its namespace."""
        if self.server is None or self.server.pid is None:
            raise DataplaneError("the server is not started")
        unshare = self.server.pid
        children: list[str] = []

        def forked() -> bool:
            nonlocal children
            path = Path(f"/proc/{unshare}/task/{unshare}/children")
            children = path.read_text().split() if path.exists() else []
            return bool(children)

        if not wait_for(forked, timeout=10, interval=0.05):
            raise self.server.failure("unshare forked no child")
        return int(children[0])

    def terminate_server(self, *, timeout: float) -> tuple[int | None, float]:
        """SIGTERM to the server's PID 1, as the kubelet sends after the preStop hook; returns its exit code
        (None if it still ran after timeout) and the seconds it took."""
        if self.server is None:
            raise DataplaneError("the server is not started")
        pid = self.container_pid()
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        code = self.server.wait(timeout)
        return code, time.monotonic() - started

    def server_log(self) -> str:
        if self.server is None:
            return "(server not started)"
        return self.server.log_path.read_text(errors="replace") if self.server.log_path.exists() else "(no log)"

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(signal.SIGKILL, timeout=10)
