#!/usr/bin/env python3
"""Builds the images the operator deploys, and its own, without any container registry or Docker.

Each image is defined ONCE, in images/<name>/image.toml: its reference, Debian suite and packages, user,
Python virtualenv (a requirements file or the repository's own package), extra files and image config.
From that definition this script
  - builds the image offline: mmdebstrap --variant=essential (Debian packages from the apt mirror, pip from
    PyPI inside the chroot) -> one rootfs tarball -> umoci (one layer + the config) -> an OCI layout tarball;
  - renders images/<name>/Dockerfile (FROM debian:<suite>-slim, the same packages, user, venv and config), so
    a release that pushes with Docker ships the same image; tests/unit/test_images.py fails when a
    committed Dockerfile differs from what its image.toml renders.

Usage:
  hack/build-images.py build [NAME...]       build the missing archives (default: all), write the manifest
  hack/build-images.py dockerfiles [--check] (re)write images/*/Dockerfile, or only compare them
  hack/build-images.py manifest              print the manifest of the current definitions
  hack/build-images.py variant NAME TAG PIN...
                                             NAME's image with requirements re-pinned (PIN: pkg==version)
                                             and tagged TAG, e.g. `variant mlflow-server 3.18.0
                                             mlflow==3.18.0` for an upgrade test; cached like the others,
                                             listed in no manifest; prints `<archive>\t<reference>`

Output, the interface for whatever imports the images (e.g. a real node's containerd):
  $MLFLOW_OPERATOR_CACHE/images/<name>-<hash>.oci.tar   (cache default: ~/.cache/mlflow-operator)
      an OCI image layout tarball; <hash> = first 16 hex of a sha256 over this script, the image.toml and
      every file it names (requirements, entrypoint, the operator's sources), and the apt sources. The same
      inputs give the same path, so a second run with unchanged inputs builds nothing.
  $MLFLOW_OPERATOR_CACHE/images/manifest.tsv
      one line per image: `<archive path>\t<image reference>`, e.g.
      `/root/.cache/mlflow-operator/images/mlflow-server-0123456789abcdef.oci.tar\tghcr.io/mlflow-operator/mlflow-server:3.17.2`
      umoci records only the TAG in the archive (org.opencontainers.image.ref.name), so import with the
      reference's repository as the base name:
          ctr -n k8s.io images import --base-name ghcr.io/mlflow-operator/mlflow-server <archive>
      which yields exactly ghcr.io/mlflow-operator/mlflow-server:3.17.2 (import_command() below). The index
      also carries containerd's io.containerd.image.name = the full reference, so an import without
      --base-name (plain `ctr images import`, `kind load image-archive`) gives the same name.
Not covered by the hash: the apt mirror's and PyPI's state (Debian packages are not pinned by version, and
a requirements file pins what it pins). Delete the archive to rebuild from today's packages.

Needs root (mmdebstrap's root mode, chroot) and the apt packages mmdebstrap and umoci
(hack/install-deps.sh). Stdlib only: it runs before any virtualenv exists, like hack/localcluster.py.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
# Read once, at start: the hash must describe the code that runs, even if the file is edited mid-build.
SCRIPT_TEXT = Path(__file__).resolve().read_bytes()
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# PyPI is reached through a TLS-intercepting proxy whose CA is only in the host's bundle: pip in the chroot
# gets a copy for the install step only (it is deleted before the layer is made).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CHROOT_CA_BUNDLE = "/tmp/host-ca-certificates.crt"
# What the Dockerfile's `.dockerignore` keeps out of a source tree, and so the offline build too.
SOURCE_EXCLUDES = ("__pycache__", "*.egg-info", "*.pyc")
CONTAINERD_NAME = "io.containerd.image.name"
DOCKERFILE_HEADER = (
    "# GENERATED from image.toml by hack/build-images.py (`make dockerfiles`): edit image.toml, not this file."
)


# ------------------------------------------------------------------------------------------ definitions


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: str
    shell: str = "/usr/sbin/nologin"

    def passwd_line(self) -> str:
        return f"{self.name}:x:{self.uid}:{self.uid}::{self.home}:{self.shell}"

    def group_line(self) -> str:
        return f"{self.name}:x:{self.uid}:"


@dataclass(frozen=True)
class File:
    src: str  # relative to the image's directory
    dest: str
    mode: str
    before_packages: bool = False  # e.g. configuration a package's postinst reads


@dataclass(frozen=True)
class Python:
    venv: str
    requirements: str | None = None  # relative to the image's directory: pip install -r
    sources: tuple[str, ...] = ()  # relative to the repository root: copied to /src, pip install /src
    # certifi's bundle becomes a link to the system store, as Debian's own python3-certifi does: what a pod
    # mounts over /etc/ssl/certs/ca-certificates.crt (a private CA added) is then what requests and boto trust.
    certifi_system_store: bool = False


SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def certifi_link_command(venv: str) -> str:
    where = f"$({venv}/bin/python -c 'import certifi; print(certifi.where())')"
    return f'ln -sf {SYSTEM_CA_BUNDLE} "{where}"'


@dataclass(frozen=True)
class Config:
    user: str
    workdir: str
    env: dict[str, str]
    ports: tuple[int, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    stopsignal: str | None = None
    healthcheck: tuple[str, ...] = ()  # Dockerfile only: an OCI image config has no health check


@dataclass(frozen=True)
class Image:
    name: str
    directory: Path
    ref: str
    description: str
    suite: str
    packages: tuple[str, ...]
    user: User
    config: Config
    python: Python | None = None
    files: tuple[File, ...] = field(default=())

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def parse_image(name: str, directory: Path, data: dict[str, object]) -> Image:
    def table(key: str) -> dict[str, object]:
        value = data.get(key, {})
        assert isinstance(value, dict), f"{name}: {key} must be a table"
        return value

    config = dict(table("config"))
    python = table("python")
    files = data.get("files", [])
    assert isinstance(files, list)
    return Image(
        name=name,
        directory=directory,
        ref=str(data["ref"]),
        description=str(data["description"]).strip(),
        suite=str(data["suite"]),
        packages=tuple(str(p) for p in data["packages"]),  # type: ignore[attr-defined]
        user=User(**table("user")),  # type: ignore[arg-type]
        config=Config(
            user=str(config.pop("user")),
            workdir=str(config.pop("workdir")),
            env={str(k): str(v) for k, v in config.pop("env").items()},  # type: ignore[attr-defined]
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()},  # type: ignore[arg-type]
        ),
        python=Python(**{k: tuple(v) if isinstance(v, list) else v for k, v in python.items()}) if python else None,  # type: ignore[arg-type]
        files=tuple(File(**f) for f in files),
    )


def load_image(name: str, images_dir: Path = IMAGES_DIR) -> Image:
    directory = images_dir / name
    return parse_image(name, directory, tomllib.loads((directory / "image.toml").read_text()))


def image_names(images_dir: Path = IMAGES_DIR) -> list[str]:
    return sorted(path.parent.name for path in images_dir.glob("*/image.toml"))


# ------------------------------------------------------------------------------------------ the cache key


def excluded(path: Path) -> bool:
    return any(path.match(pattern) or any(p.match(pattern) for p in path.parents) for pattern in SOURCE_EXCLUDES)


def source_files(root: Path, sources: tuple[str, ...]) -> list[Path]:
    """The files of `sources` (files or directories under root) a build copies, sorted."""
    files: list[Path] = []
    for source in sources:
        path = root / source
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if not excluded(p.relative_to(root))]
    return files


def input_files(image: Image, root: Path = ROOT) -> list[Path]:
    """Every file whose content goes into the image (besides Debian and PyPI)."""
    files = [image.directory / "image.toml", *(image.directory / f.src for f in image.files)]
    if image.python and image.python.requirements:
        files.append(image.directory / image.python.requirements)
    if image.python:
        files += source_files(root, image.python.sources)
    return files


def apt_sources(suite: str) -> list[str]:
    return [
        f"deb {MIRROR} {suite} main",
        f"deb {MIRROR} {suite}-updates main",
        f"deb {SECURITY_MIRROR} {suite}-security main",
    ]


def content_hash(script_text: bytes, files: list[tuple[str, bytes]], sources: list[str]) -> str:
    digest = hashlib.sha256(script_text)
    for name, content in sorted(files):
        digest.update(f"\0{name}\0{len(content)}\0".encode())
        digest.update(content)
    digest.update("\0".join(sources).encode())
    return digest.hexdigest()[:16]


def image_hash(image: Image, root: Path = ROOT) -> str:
    files = [(str(p.relative_to(root)), p.read_bytes()) for p in input_files(image, root)]
    return content_hash(SCRIPT_TEXT, files, apt_sources(image.suite))


def archive_path(cache: Path, image: Image, digest: str) -> Path:
    return cache / "images" / f"{image.name}-{digest}.oci.tar"


def manifest_text(entries: list[tuple[Path, str]]) -> str:
    return "".join(f"{archive}\t{ref}\n" for archive, ref in entries)


def import_command(archive: Path, ref: str, namespace: str = "k8s.io") -> list[str]:
    return ["ctr", "-n", namespace, "images", "import", "--base-name", ref.rsplit(":", 1)[0], str(archive)]


# ------------------------------------------------------------------------------------------ the offline build


def sh(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def user_hook(user: User) -> str:
    # No `passwd` package (useradd) in the essential set: write the lines. Before the packages, so a
    # postinst that creates its user (postgresql-common: postgres) finds ours with our UID.
    return (
        f'echo {shlex.quote(user.group_line())} >> "$1/etc/group" && '
        f'echo {shlex.quote(user.passwd_line())} >> "$1/etc/passwd"'
    )


def file_hook(image: Image, file: File) -> str:
    dest = '"$1"' + shlex.quote(file.dest)
    parent = '"$1"' + shlex.quote(str(Path(file.dest).parent))
    return f"mkdir -p {parent} && cp {shlex.quote(str(image.directory / file.src))} {dest} && chmod {file.mode} {dest}"


def chroot_env(image: Image) -> list[str]:
    """The image's own environment for pip in the chroot (as Docker's RUN sees the ENV lines), plus the host CA."""
    ca = [f"{var}={CHROOT_CA_BUNDLE}" for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")]
    return ["env", "-i", *(f"{k}={v}" for k, v in image.config.env.items()), "PIP_DEFAULT_TIMEOUT=180", *ca]


def python_hooks(image: Image, root: Path = ROOT) -> list[str]:
    python = image.python
    if python is None:
        return []
    pip = [*chroot_env(image), f"{python.venv}/bin/pip", "install", "--no-cache-dir"]
    hooks = [
        f'cp {shlex.quote(str(HOST_CA_BUNDLE))} "$1"{CHROOT_CA_BUNDLE}',
        f'chroot "$1" python3 -m venv {python.venv}',
    ]
    if python.requirements:
        hooks.append(f'cp {shlex.quote(str(image.directory / python.requirements))} "$1/tmp/requirements.txt"')
        hooks.append('chroot "$1" ' + sh(*pip, "-r", "/tmp/requirements.txt"))
    if python.sources:
        excludes = " ".join(f"--exclude={shlex.quote(p)}" for p in SOURCE_EXCLUDES)
        pack = f"tar -C {shlex.quote(str(root))} {excludes} -cf - {sh(*python.sources)}"
        hooks.append(f'mkdir "$1/src" && {pack} | tar -C "$1/src" -xf -')
        hooks.append('chroot "$1" ' + sh(*pip, "/src"))
    if python.certifi_system_store:
        hooks.append('chroot "$1" sh -c ' + shlex.quote(certifi_link_command(python.venv)))
    hooks.append(f'rm -rf "$1"{CHROOT_CA_BUNDLE} "$1/tmp/requirements.txt" "$1/src" "$1/root/.cache"')
    return hooks


def mmdebstrap_command(image: Image, rootfs_tar: Path, root: Path = ROOT) -> list[str]:
    early = [file_hook(image, f) for f in image.files if f.before_packages]
    late = [file_hook(image, f) for f in image.files if not f.before_packages]
    customize = [
        *python_hooks(image, root),
        *late,
        # apt's state and caches are not needed at run time (no apt in the essential set anyway).
        'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/apt "$1"/tmp/*',
    ]
    return [
        "mmdebstrap",
        "--variant=essential",
        "--mode=root",
        f"--include={','.join(image.packages)}",
        "--format=tar",
        '--aptopt=Acquire::Retries "3"',
        # What a -slim base image leaves out too.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        # Keep what the packages put in /run, as a docker build does: postgresql-common's /run/postgresql
        # (2775 postgres) lets the image run without a volume there.
        "--skip=cleanup/run",
        f"--essential-hook={user_hook(image.user)}",
        *(f"--essential-hook={hook}" for hook in early),
        *(f"--customize-hook={hook}" for hook in customize),
        image.suite,
        str(rootfs_tar),
        *apt_sources(image.suite),
    ]


def umoci_config_command(image: Image, layout: Path) -> list[str]:
    config = image.config
    command = ["umoci", "config", "--image", f"{layout}:{image.tag}", "--architecture", "amd64", "--os", "linux"]
    command += [f"--config.env={k}={v}" for k, v in config.env.items()]
    command += ["--config.user", config.user, "--config.workingdir", config.workdir]
    command += [f"--config.exposedports={port}/tcp" for port in config.ports]
    command += [f"--config.entrypoint={word}" for word in config.entrypoint]
    command += [f"--config.cmd={word}" for word in config.cmd]
    if config.stopsignal:
        command += ["--config.stopsignal", config.stopsignal]
    return command


def run(command: list[str], log: str) -> None:
    print(f"[build-images] {log}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def build(image: Image, archive: Path) -> None:
    """mmdebstrap -> rootfs.tar -> umoci layout -> archive, written atomically next to its final name."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    # An interrupted build (SIGTERM skips the cleanup) leaves its work directory: gigabytes.
    # (tempfile's suffix: 8 of [a-z0-9_]; the exact pattern keeps pgbouncer off pgbouncer-exporter's.)
    leftover = re.compile(re.escape(f".work-{image.name}-") + r"[a-z0-9_]{8}")
    for path in archive.parent.iterdir():
        if leftover.fullmatch(path.name):
            shutil.rmtree(path)
    with tempfile.TemporaryDirectory(prefix=f".work-{image.name}-", dir=archive.parent) as work_dir:
        work = Path(work_dir)
        rootfs, layout = work / "rootfs.tar", work / "oci"
        start = time.monotonic()
        run(mmdebstrap_command(image, rootfs), f"{image.name}: mmdebstrap {image.suite} {' '.join(image.packages)}")
        debootstrapped = time.monotonic()
        run(["umoci", "init", "--layout", str(layout)], f"{image.name}: umoci")
        subprocess.run(["umoci", "new", "--image", f"{layout}:{image.tag}"], check=True)
        # The tarball becomes the layer as it is: no unpack/repack of a 1 GB tree.
        subprocess.run(["umoci", "raw", "add-layer", "--image", f"{layout}:{image.tag}", str(rootfs)], check=True)
        subprocess.run(umoci_config_command(image, layout), check=True)
        subprocess.run(["umoci", "gc", "--layout", str(layout)], check=True)
        name_image(layout / "index.json", image.ref)
        partial = work / "image.oci.tar"
        subprocess.run(["tar", "-C", str(layout), "-cf", str(partial), "."], check=True)
        partial.rename(archive)
        done = time.monotonic()
    print(
        f"[build-images] {image.name}: {archive} ({archive.stat().st_size / 1e6:.0f} MB; rootfs "
        f"{debootstrapped - start:.0f} s, umoci+tar {done - debootstrapped:.0f} s)",
        file=sys.stderr,
    )


def name_image(index: Path, ref: str) -> None:
    index.write_text(json.dumps(with_full_name(json.loads(index.read_text()), ref), separators=(",", ":")))


def with_full_name(index: dict[str, Any], ref: str) -> dict[str, Any]:
    """The OCI index with containerd's full-name annotation next to umoci's tag-only ref.name: importers
    that pass no --base-name (`kind load image-archive`, plain `ctr images import`) then name the image
    `ref` instead of leaving it nameless; with --base-name the result is the same name."""
    manifests = [{**m, "annotations": {**m.get("annotations", {}), CONTAINERD_NAME: ref}} for m in index["manifests"]]
    return {**index, "manifests": manifests}


def remove_stale(image: Image, keep: Path) -> None:
    """Older archives of the same image: each is hundreds of MB and nothing refers to it any more."""
    # The exact pattern: "pgbouncer-*" would also match pgbouncer-exporter's archives.
    pattern = re.compile(re.escape(image.name) + r"-[0-9a-f]{16}\.oci\.tar")
    for old in keep.parent.iterdir():
        if old != keep and pattern.fullmatch(old.name):
            old.unlink()


# ------------------------------------------------------------------------------------------ the Dockerfile


def dockerfile_list(words: tuple[str, ...]) -> str:
    return "[" + ", ".join('"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in words) + "]"


def dockerfile_copy_source(image: Image, source: str) -> str:
    """COPY source for a file of the image: the operator's context is the repository root."""
    if image.python and image.python.sources:
        return str((image.directory / source).relative_to(ROOT))
    return source


def render_dockerfile(image: Image) -> str:
    config, user = image.config, image.user
    lines = [*(f"# {line}".rstrip() for line in image.description.splitlines()), "#", DOCKERFILE_HEADER]
    lines += [f"FROM debian:{image.suite}-slim", ""]
    lines += ["ENV " + " \\\n    ".join(f"{k}={v}" for k, v in config.env.items()), ""]
    lines += [
        "# The user first, so a package's postinst that creates its user finds this one and its UID.",
        f"RUN groupadd --gid {user.uid} {user.name} \\",
        f"    && useradd --uid {user.uid} --gid {user.uid} --home-dir {user.home} --no-create-home "
        f"--shell {user.shell} {user.name}",
    ]
    for f in image.files:
        if f.before_packages:
            lines.append(f"COPY --chmod={f.mode} {dockerfile_copy_source(image, f.src)} {f.dest}")
    lines += [
        "RUN apt-get update \\",
        f"    && apt-get install -y --no-install-recommends {' '.join(image.packages)} \\",
        "    && rm -rf /var/lib/apt/lists/*",
    ]
    python = image.python
    if python and python.requirements:
        lines += [
            f"COPY {python.requirements} /tmp/requirements.txt",
            f"RUN python3 -m venv {python.venv} \\",
            f"    && {python.venv}/bin/pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt",
        ]
    if python and python.certifi_system_store:
        lines += [f"RUN {certifi_link_command(python.venv)}"]
    if python and python.sources:
        files = [s for s in python.sources if (ROOT / s).is_file()]
        lines += [f"COPY {' '.join(files)} /src/"]
        lines += [f"COPY {s} /src/{s}" for s in python.sources if s not in files]
        lines += [
            f"RUN python3 -m venv {python.venv} \\",
            f"    && {python.venv}/bin/pip install --no-cache-dir /src && rm -rf /src",
        ]
    for f in image.files:
        if not f.before_packages:
            lines.append(f"COPY --chmod={f.mode} {dockerfile_copy_source(image, f.src)} {f.dest}")
    lines += ["", f"WORKDIR {config.workdir}", f"USER {config.user}"]
    if config.ports:
        lines.append("EXPOSE " + " ".join(str(p) for p in config.ports))
    if config.stopsignal:
        lines.append(f"STOPSIGNAL {config.stopsignal}")
    if config.healthcheck:
        lines += [
            "HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \\",
            f"    CMD {dockerfile_list(config.healthcheck)}",
        ]
    if config.entrypoint:
        lines.append(f"ENTRYPOINT {dockerfile_list(config.entrypoint)}")
    if config.cmd:
        lines.append(f"CMD {dockerfile_list(config.cmd)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ commands


def cache_dir() -> Path:
    return Path(os.environ.get("MLFLOW_OPERATOR_CACHE", Path.home() / ".cache" / "mlflow-operator"))


def write_manifest(cache: Path, images: list[Image], digests: dict[str, str]) -> Path:
    entries = [(archive_path(cache, image, digests[image.name]), image.ref) for image in images]
    manifest = cache / "images" / "manifest.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest.with_suffix(".tsv.partial")
    partial.write_text(manifest_text([(a, r) for a, r in entries if a.exists()]))
    partial.rename(manifest)
    return manifest


@contextmanager
def build_lock(cache: Path) -> Iterator[None]:
    """One build at a time per cache: a second `make images` (another test session) waits, instead of
    building the same archive twice or deleting the first one's work directory as a leftover."""
    lock_path = cache / "images" / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def command_build(names: list[str]) -> int:
    cache = cache_dir()
    for tool in ("mmdebstrap", "umoci"):
        if shutil.which(tool) is None:
            sys.exit(f"[build-images] {tool} is missing: run hack/install-deps.sh")
    unknown = set(names) - set(image_names())
    if unknown:
        sys.exit(f"[build-images] no such image: {', '.join(sorted(unknown))} (images/*/image.toml)")
    with build_lock(cache):
        images = [load_image(n) for n in image_names()]
        # Hashed once, before building: hashing again for the manifest after an input was edited mid-build
        # (the README is one of the operator image's inputs) named an archive nobody built, and the manifest
        # silently dropped the operator image; the node then had no operator to run.
        digests = {image.name: image_hash(image) for image in images}
        build_missing(cache, [i for i in images if not names or i.name in names], digests)
        manifest = write_manifest(cache, images, digests)
    print(manifest)
    return 0


def build_missing(cache: Path, images: list[Image], digests: dict[str, str]) -> None:
    for image in images:
        archive = archive_path(cache, image, digests[image.name])
        if archive.exists():
            print(f"[build-images] {image.name}: cached {archive}", file=sys.stderr)
            continue
        build(image, archive)
        remove_stale(image, archive)


def repin(requirements: str, pins: list[str]) -> str:
    """The requirements with each `name==version` line of a pinned package replaced by its pin."""
    lines = requirements.splitlines()
    for pin in pins:
        name = pin.split("==", 1)[0].strip().lower()
        matches = [i for i, line in enumerate(lines) if line.split("==", 1)[0].strip().lower() == name]
        if "==" not in pin or len(matches) != 1:
            raise SystemExit(f"[build-images] {pin!r}: expected name==version for exactly one pinned requirement")
        lines[matches[0]] = pin
    return "\n".join(lines) + "\n"


def variant_image(base: Image, tag: str, requirements: Path) -> Image:
    """`base` under another tag (and archive name) that installs `requirements` instead of its own."""
    assert base.python is not None
    return replace(
        base,
        name=f"{base.name}-{tag}",
        ref=f"{base.repository}:{tag}",
        python=replace(base.python, requirements=str(requirements)),
    )


def command_variant(name: str, tag: str, pins: list[str]) -> int:
    base = load_image(name)
    if base.python is None or base.python.requirements is None:
        sys.exit(f"[build-images] {name} has no requirements file to re-pin")
    cache = cache_dir()
    text = repin((base.directory / base.python.requirements).read_text(), pins)
    # The requirements live in the cache, named by their content: the image hash covers them by path.
    requirements = cache / "images" / "variants" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
    requirements.parent.mkdir(parents=True, exist_ok=True)
    requirements.write_text(text)
    image = variant_image(base, tag, requirements)
    files = [
        (str(p.relative_to(ROOT)), p.read_bytes())
        for p in input_files(base)
        if p != base.directory / base.python.requirements
    ]
    digest = content_hash(SCRIPT_TEXT, [*files, ("requirements.txt", text.encode())], apt_sources(image.suite))
    archive = archive_path(cache, image, digest)
    with build_lock(cache):
        if archive.exists():
            print(f"[build-images] {image.name}: cached {archive}", file=sys.stderr)
        else:
            build(image, archive)
            remove_stale(image, archive)
    print(f"{archive}\t{image.ref}")
    return 0


def command_dockerfiles(check: bool) -> int:
    stale = []
    for name in image_names():
        image = load_image(name)
        path, text = image.directory / "Dockerfile", render_dockerfile(image)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not check:
            path.write_text(text)
    if check and stale:
        print(f"stale Dockerfiles (run `make dockerfiles`): {' '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def command_manifest() -> int:
    cache = cache_dir()
    images = [load_image(n) for n in image_names()]
    sys.stdout.write(manifest_text([(archive_path(cache, i, image_hash(i)), i.ref) for i in images]))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build").add_argument("names", nargs="*")
    commands.add_parser("dockerfiles").add_argument("--check", action="store_true")
    commands.add_parser("manifest")
    variant = commands.add_parser("variant")
    variant.add_argument("name")
    variant.add_argument("tag")
    variant.add_argument("pins", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "build":
        return command_build(args.names)
    if args.command == "dockerfiles":
        return command_dockerfiles(args.check)
    if args.command == "variant":
        return command_variant(args.name, args.tag, args.pins)
    return command_manifest()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
