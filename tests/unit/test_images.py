"""images/<name>/image.toml is each image's one definition: the offline build (hack/build-images.py) and the
Dockerfile both come from it, and it names the images the operator and the chart deploy by default.
The images themselves are built and run by tests/integration/test_images.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_operator.api.trackingserver import DEFAULT_MLFLOW_VERSION, DEFAULT_POSTGRES_VERSION
from mlflow_operator.builders import modeldeployment, trackingserver
from mlflow_operator.builders.images import DEFAULT_IMAGES, with_version
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["mlflow-model-server", "mlflow-server", "operator", "pgbouncer", "pgbouncer-exporter", "postgres"]


bi = load_script("build_images", ROOT / "hack" / "build-images.py")


def image(name: str) -> object:
    return bi.load_image(name)


def test_every_image_directory_has_a_definition() -> None:
    assert bi.image_names() == NAMES
    assert sorted(p.name for p in (ROOT / "images").iterdir() if p.is_dir()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_dockerfile_is_what_the_definition_renders(name: str) -> None:
    definition = bi.load_image(name)
    committed = (definition.directory / "Dockerfile").read_text()
    assert committed == bi.render_dockerfile(definition), f"images/{name}/Dockerfile is stale: run `make dockerfiles`"


def test_references_are_the_operators_and_the_charts_defaults() -> None:
    refs = {name: bi.load_image(name).ref for name in NAMES}
    assert refs["mlflow-server"] == with_version(DEFAULT_IMAGES.mlflow_server, DEFAULT_MLFLOW_VERSION)
    assert refs["mlflow-model-server"] == DEFAULT_IMAGES.model_server
    assert refs["postgres"] == with_version(DEFAULT_IMAGES.postgres, DEFAULT_POSTGRES_VERSION)
    assert refs["pgbouncer"] == DEFAULT_IMAGES.pgbouncer
    chart = yaml.safe_load((ROOT / "charts" / "mlflow-operator" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "mlflow-operator" / "values.yaml").read_text())
    assert refs["operator"] == f"{values['image']['repository']}:{chart['appVersion']}"


def test_the_exporter_is_upstreams_repository_at_the_version_debian_packages() -> None:
    """v0.11.0 (the builders' default) is not buildable offline; the image says which version it holds."""
    exporter = bi.load_image("pgbouncer-exporter")
    assert exporter.repository == DEFAULT_IMAGES.pgbouncer_exporter.rsplit(":", 1)[0]
    assert exporter.tag == "v0.10.2" and exporter.suite == "trixie"


def test_mlflow_images_install_the_mlflow_their_tag_names() -> None:
    for name in ("mlflow-server", "mlflow-model-server"):
        definition = bi.load_image(name)
        requirements = (definition.directory / definition.python.requirements).read_text()
        assert f"mlflow=={definition.tag}\n" in requirements
        assert definition.tag == DEFAULT_MLFLOW_VERSION


def test_postgres_package_and_path_match_the_tag() -> None:
    postgres = bi.load_image("postgres")
    assert f"postgresql-{postgres.tag}" in postgres.packages
    assert postgres.config.env["PATH"].startswith(f"/usr/lib/postgresql/{postgres.tag}/bin:")
    assert postgres.config.env["PGDATA"] == "/var/lib/postgresql/data"


@pytest.mark.parametrize(
    ("name", "uid"),
    [
        ("mlflow-server", trackingserver.APP_UID),
        ("mlflow-model-server", modeldeployment.APP_UID),
        ("operator", 10001),
        ("pgbouncer", trackingserver.APP_UID),
        ("pgbouncer-exporter", trackingserver.APP_UID),
        ("postgres", trackingserver.POSTGRES_UID),
    ],
)
def test_image_user_is_the_uid_the_pods_run_as(name: str, uid: int) -> None:
    definition = bi.load_image(name)
    assert definition.user.uid == uid
    assert definition.config.user == f"{uid}:{uid}"


def test_pgbouncer_entrypoint_takes_the_operators_args() -> None:
    """The operator renders only args (the ini path) for PgBouncer and nothing for the exporter."""
    pgbouncer = bi.load_image("pgbouncer")
    assert pgbouncer.config.entrypoint == ("pgbouncer",)
    assert bi.load_image("pgbouncer-exporter").config.entrypoint


def test_hash_changes_with_any_input() -> None:
    files = [("images/a/image.toml", b"ref = 1"), ("images/a/requirements.txt", b"mlflow==1")]
    sources = bi.apt_sources("bookworm")
    base = bi.content_hash(b"script", files, sources)
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert bi.content_hash(b"script", list(reversed(files)), sources) == base  # order of discovery is irrelevant
    assert bi.content_hash(b"script 2", files, sources) != base
    assert bi.content_hash(b"script", [files[0], ("images/a/requirements.txt", b"mlflow==2")], sources) != base
    assert bi.content_hash(b"script", files, bi.apt_sources("trixie")) != base
    # A byte moved from one file's content to its name is another input.
    assert bi.content_hash(b"script", [("ab", b"c")], sources) != bi.content_hash(b"script", [("a", b"bc")], sources)


def test_input_files_cover_requirements_entrypoint_and_sources() -> None:
    names = {name: {str(p.relative_to(ROOT)) for p in bi.input_files(bi.load_image(name))} for name in NAMES}
    assert "images/mlflow-server/requirements.txt" in names["mlflow-server"]
    assert "images/postgres/docker-entrypoint.sh" in names["postgres"]
    sources = {"pyproject.toml", "README.md", "operator/mlflow_operator/builders/trackingserver/server.py"}
    assert sources <= names["operator"]
    assert not any("__pycache__" in path or ".egg-info" in path for path in names["operator"])
    assert all(f"images/{name}/image.toml" in files for name, files in names.items())


def test_archive_path_and_manifest_line() -> None:
    server = bi.load_image("mlflow-server")
    archive = bi.archive_path(Path("/cache"), server, "0123456789abcdef")
    assert archive == Path("/cache/images/mlflow-server-0123456789abcdef.oci.tar")
    assert bi.manifest_text([(archive, server.ref)]) == f"{archive}\tghcr.io/mlflow-operator/mlflow-server:3.17.2\n"
    assert bi.import_command(archive, "docker.io/library/postgres:15") == [
        "ctr", "-n", "k8s.io", "images", "import", "--base-name", "docker.io/library/postgres", str(archive),
    ]  # fmt: skip


def test_mmdebstrap_command_installs_the_packages_user_and_files_in_order() -> None:
    postgres = bi.load_image("postgres")
    command = bi.mmdebstrap_command(postgres, Path("/w/rootfs.tar"))
    assert command[:2] == ["mmdebstrap", "--variant=essential"]
    assert "--include=postgresql-15,barman-cli-cloud" in command
    assert command[-5:] == ["bookworm", "/w/rootfs.tar", *bi.apt_sources("bookworm")]
    essential = [c for c in command if c.startswith("--essential-hook=")]
    # The user and postgresql-common's config exist before the packages' postinst runs.
    assert "postgres:x:999:999::/var/lib/postgresql:/bin/bash" in essential[0]
    assert "createcluster.d/no-main-cluster.conf" in essential[1]
    assert any("docker-entrypoint.sh" in c for c in command if c.startswith("--customize-hook="))


def test_pip_in_the_chroot_sees_the_image_env_and_the_host_ca_only() -> None:
    server = bi.load_image("mlflow-server")
    hooks = bi.python_hooks(server)
    pip = next(h for h in hooks if "pip install" in h)
    assert "env -i" in pip and "PIP_CERT=/tmp/host-ca-certificates.crt" in pip and "HOME=/tmp" in pip
    assert "-r /tmp/requirements.txt" in pip
    assert "PIP_FIND_LINKS" not in pip  # the host's wheel directory does not exist in the chroot
    assert hooks[-1].startswith("rm -rf") and "host-ca-certificates.crt" in hooks[-1]


def test_umoci_config_carries_the_image_config() -> None:
    postgres = bi.load_image("postgres")
    command = bi.umoci_config_command(postgres, Path("/w/oci"))
    assert command[3] == "/w/oci:15"
    assert "--config.entrypoint=docker-entrypoint.sh" in command and "--config.cmd=postgres" in command
    assert "--config.env=PGDATA=/var/lib/postgresql/data" in command
    assert command[command.index("--config.user") + 1] == "999:999"
    assert command[command.index("--config.stopsignal") + 1] == "SIGINT"
    assert "--config.exposedports=5432/tcp" in command


def test_a_variant_repins_one_requirement_and_takes_the_tag(tmp_path: Path) -> None:
    base = bi.load_image("mlflow-server")
    text = (base.directory / "requirements.txt").read_text()
    repinned = bi.repin(text, ["MLflow==3.18.0"])
    changed = [(a, b) for a, b in zip(text.splitlines(), repinned.splitlines(), strict=True) if a != b]
    assert changed == [("mlflow==3.17.2", "MLflow==3.18.0")]
    with pytest.raises(SystemExit, match="exactly one"):
        bi.repin(text, ["not-a-requirement==1"])
    variant = bi.variant_image(base, "3.18.0", tmp_path / "requirements.txt")
    assert variant.ref == "ghcr.io/mlflow-operator/mlflow-server:3.18.0"
    assert variant.name == "mlflow-server-3.18.0"  # its own archive name: the base's stale-archive cleanup skips it
    assert variant.directory / variant.python.requirements == tmp_path / "requirements.txt"
    assert variant.packages == base.packages and variant.config == base.config
