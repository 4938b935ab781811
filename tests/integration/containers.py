"""Runs an image from its OCI archive roughly as a kubelet would, with no node: runc on the unpacked layer.

The archive's layer is unpacked into a rootfs (numeric owners, as containerd does), and a runc config is built
from the image config plus what a rendered container adds: command/args with Kubernetes' override rules,
env, mounts (emptyDirs as tmpfs, ConfigMaps/Secrets/PVCs as bind mounts), and the restricted security
context the operator renders (non-root UID, read-only root, no capabilities, no new privileges). Containers
share a network namespace made for the test, so they use the ports they use in a pod without taking the
host's, and "Service" names resolve through a mounted /etc/hosts. emptyDirs are host directories, mode 0777
with the fsGroup applied, as the kubelet makes them (not tmpfs: runc gives a tmpfs the mode of the directory
it covers).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNC_TIMEOUT = 60


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a runtime uses to start a container."""

    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    workdir: str


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path: a volume (PVC, emptyDir, ConfigMap or Secret files)."""

    destination: str
    source: Path
    readonly: bool = False


@dataclass(frozen=True)
class Unpacked:
    rootfs: Path
    config: ImageConfig


@dataclass(frozen=True)
class Pod:
    """What a container gets from its pod: a network namespace and /etc/hosts."""

    netns: Path
    hosts: Path


def kubelet_fs_group(volume: Path, gid: int) -> None:
    """What the kubelet does to a volume on every mount for the pod's fsGroup (SetVolumeOwnership): group
    gid, g+rw on everything, setgid and g+x on directories."""
    for path in [volume, *volume.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o660 | (0o2110 if path.is_dir() else 0))


@dataclass
class Runtime:
    state: Path  # runc --root: our containers only, apart from any containerd's
    bundles: Path
    started: list[str] = field(default_factory=list)

    def empty_dir(self, fs_group: int) -> Path:
        """An emptyDir as the kubelet makes it: a fresh host directory, mode 0777, then fsGroup."""
        path = Path(tempfile.mkdtemp(prefix="empty-dir-", dir=self.bundles))
        path.chmod(0o777)
        kubelet_fs_group(path, fs_group)
        return path

    def runc(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runc", "--root", str(self.state), *args], text=True, **kwargs)  # noqa: PLW1510 (callers pass check)


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def unpack(archive: Path, into: Path) -> Unpacked:
    """The image of an OCI archive holding one image (what hack/build-images.py writes)."""
    layout, rootfs = into / "layout", into / "rootfs"
    layout.mkdir(parents=True)
    rootfs.mkdir()
    subprocess.run(["tar", "-C", str(layout), "-xf", str(archive)], check=True)
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(_blob(layout, entry["digest"]).read_text())
    for layer in manifest["layers"]:
        assert layer["mediaType"].endswith("tar+gzip"), layer["mediaType"]
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-xzf", str(_blob(layout, layer["digest"]))], check=True
        )
    config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text())["config"]
    return Unpacked(rootfs, parse_image_config(config))


def parse_image_config(config: dict[str, Any]) -> ImageConfig:
    return ImageConfig(
        env=tuple(config.get("Env") or ()),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        user=config.get("User") or "0:0",
        workdir=config.get("WorkingDir") or "/",
    )


def process_args(image: ImageConfig, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """Kubernetes' rules: command replaces the entrypoint (and drops the image's cmd), args replace cmd."""
    if command is not None:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(image.cmd if args is None else args)]


def merged_env(image: ImageConfig, env: dict[str, str]) -> list[str]:
    """The image's env with the container's on top (same name: the container wins)."""
    merged = dict(item.split("=", 1) for item in image.env)
    merged.update(env)
    return [f"{key}={value}" for key, value in merged.items()]


def _mount(mount: Mount) -> dict[str, Any]:
    options = ["rbind", "nosuid", "nodev", "ro" if mount.readonly else "rw"]
    return {"destination": mount.destination, "type": "bind", "source": str(mount.source), "options": options}


def _base_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
        },
    ]


def runtime_spec(
    image: ImageConfig, rootfs: Path, argv: list[str], env: dict[str, str], mounts: Sequence[Mount], pod: Pod, uid: int
) -> dict[str, Any]:
    """An OCI runtime config for one container of a pod, with the operator's restricted security context."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid, "additionalGids": [uid]},  # runAsUser/runAsGroup/fsGroup
            "args": argv,
            "env": merged_env(image, env),
            "cwd": image.workdir,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "pod",
        "mounts": [
            *_base_mounts(),
            _mount(Mount("/etc/hosts", pod.hosts, readonly=True)),
            *(_mount(m) for m in mounts),
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": str(pod.netns)},
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
        },
    }


@dataclass
class Container:
    runtime: Runtime
    id: str
    log: Path

    def exec(self, *argv: str, timeout: float = RUNC_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.runtime.runc("exec", self.id, *argv, capture_output=True, timeout=timeout, check=False)

    def status(self) -> str:
        state = self.runtime.runc("state", self.id, capture_output=True, timeout=RUNC_TIMEOUT, check=False)
        return json.loads(state.stdout)["status"] if state.returncode == 0 else "gone"

    def stop(self, signal: str, timeout: float = 60) -> None:
        """Kubernetes' stop: the image's STOPSIGNAL, then SIGKILL when the grace period is over."""
        self.runtime.runc("kill", self.id, signal, capture_output=True, timeout=RUNC_TIMEOUT, check=False)
        deadline = time.monotonic() + timeout
        while self.status() == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        self.runtime.runc("delete", "--force", self.id, capture_output=True, timeout=RUNC_TIMEOUT, check=True)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _write_bundle(runtime: Runtime, name: str, spec: dict[str, Any]) -> Path:
    bundle = runtime.bundles / name
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def run(runtime: Runtime, name: str, spec: dict[str, Any], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a container to completion, capturing its output."""
    bundle = _write_bundle(runtime, name, spec)
    return runtime.runc(
        "run",
        "--bundle",
        str(bundle),
        name,
        capture_output=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def start(runtime: Runtime, name: str, spec: dict[str, Any]) -> Container:
    """Starts a container in the background; its stdout and stderr go to a log file."""
    bundle = _write_bundle(runtime, name, spec)
    log = runtime.bundles / f"{name}.log"
    with log.open("a") as out:
        runtime.runc(
            "run", "--detach", "--bundle", str(bundle), name,
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=RUNC_TIMEOUT, check=True,
        )  # fmt: skip
    runtime.started.append(name)
    return Container(runtime, name, log)


@contextmanager
def network_namespace(name: str) -> Iterator[Path]:
    """A network namespace with only loopback up: the pod network of these tests."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Path("/var/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextmanager
def runtime(root: Path) -> Iterator[Runtime]:
    """runc state of our own; every container still there at the end is removed."""
    rt = Runtime(state=root / "runc", bundles=root / "bundles")
    rt.bundles.mkdir(parents=True)
    try:
        yield rt
    finally:
        for name in rt.started:
            rt.runc("delete", "--force", name, capture_output=True, timeout=RUNC_TIMEOUT, check=False)


def in_netns(
    netns: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A host program in the pod's network namespace (a client on the pod network)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns.name, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
