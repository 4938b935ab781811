"""The images hack/build-images.py builds, run from their OCI archives as a pod would run them (runc, the
image's own UID, read-only root, no capabilities; see containers.py), without a node or a registry.

The archives come from `hack/build-images.py build`: a no-op when they are cached, a cold build takes
~10 min on 2 cores. PostgreSQL, PgBouncer and the exporter run from the StatefulSet and the Deployment the
operator renders for examples/tracking-server.yaml: their args, env, mounts and UIDs as rendered.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_operator.builders.common import Obj
from mlflow_operator.builders.trackingserver import (
    Credentials,
    Names,
    TrackingServerInputs,
    get_migration_job,
    get_pgbouncer_configmap,
    get_pgbouncer_deployment,
    get_pooler_auth_secret,
    get_postgres_statefulset,
)
from tests.integration import containers, rendered
from tests.integration.containers import Container, Mount, Pod, Runtime, Unpacked
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 3600  # a cold build of all six images: ~10 min here, far more on a loaded machine
NAMESPACE = "images"


bi = load_script("build_images", ROOT / "hack" / "build-images.py")


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    """{image name: archive}, from the manifest the build writes (what a node imports)."""
    subprocess.run([sys.executable, str(ROOT / "hack" / "build-images.py"), "build"], check=True, timeout=BUILD_TIMEOUT)
    manifest = bi.cache_dir() / "images" / "manifest.tsv"
    by_ref = dict(reversed(line.split("\t")) for line in manifest.read_text().splitlines())
    return {name: Path(by_ref[bi.load_image(name).ref]) for name in bi.image_names()}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with containers.runtime(tmp_path_factory.mktemp("runc")) as rt:
        yield rt


@pytest.fixture(scope="module")
def image(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Unpacked]:
    unpacked: dict[str, Unpacked] = {}

    def get(name: str) -> Unpacked:
        if name not in unpacked:
            unpacked[name] = containers.unpack(archives[name], tmp_path_factory.mktemp(name))
        return unpacked[name]

    return get


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """One network namespace for every container here; the Postgres Service name resolves to loopback."""
    hosts = tmp_path_factory.mktemp("pod") / "hosts"
    with containers.network_namespace(f"images-test-{os.getpid()}") as netns:
        postgres_host = rendered.database_address(inputs())[0]
        hosts.write_text(f"127.0.0.1\tlocalhost {postgres_host}\n")
        yield Pod(netns, hosts)


def run_command(
    runtime: Runtime, pod: Pod, image: Unpacked, name: str, command: list[str] | None, args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A one-off container of `image` as its own user with an emptyDir at /tmp, as the pods have."""
    uid = int(image.config.user.split(":")[0])
    argv = containers.process_args(image.config, command, args)
    spec = containers.runtime_spec(
        image.config, image.rootfs, argv, {}, [Mount("/tmp", runtime.empty_dir(uid))], pod, uid
    )
    return containers.run(runtime, f"{name}-{secrets.token_hex(3)}", spec)


def output(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


# --- Python images ------------------------------------------------------------------------------------------


def test_mlflow_server_runs_mlflow_and_has_the_drivers(
    runtime: Runtime, pod: Pod, image: Callable[[str], Unpacked]
) -> None:
    server = image("mlflow-server")
    assert server.config.user == "10001:10001" and "HOME=/tmp" in server.config.env
    assert "version 3.17.2" in output(run_command(runtime, pod, server, "mlflow-version", ["mlflow", "--version"]))
    imports = "import psycopg2, boto3, gunicorn, prometheus_flask_exporter, flask_wtf; print(psycopg2.__version__)"
    assert output(run_command(runtime, pod, server, "mlflow-imports", ["python", "-c", imports])).startswith("2.9.13")


def test_model_server_imports_the_flavours_and_the_scoring_server(
    runtime: Runtime, pod: Pod, image: Callable[[str], Unpacked]
) -> None:
    model = image("mlflow-model-server")
    code = (
        "import sklearn, pandas, pyarrow, scipy, skops, mlflow, mlflow.pyfunc.scoring_server;"
        "from sklearn.linear_model import LinearRegression; LinearRegression().fit([[0], [1]], [0, 1]);"
        "print(mlflow.__version__, sklearn.__version__, pandas.__version__, pyarrow.__version__)"
    )
    assert output(run_command(runtime, pod, model, "model-imports", ["python", "-c", code])).split() == [
        "3.17.2", "1.9.1", "3.1.1", "25.0.1",
    ]  # fmt: skip
    # The image's default command's program is there too.
    assert "uvicorn" in output(run_command(runtime, pod, model, "model-uvicorn", ["uvicorn", "--version"]))


def test_operator_image_runs_the_cli(runtime: Runtime, pod: Pod, image: Callable[[str], Unpacked]) -> None:
    operator = image("operator")
    # As the chart runs it: command [mlflow-operator], its own args.
    text = output(run_command(runtime, pod, operator, "operator-help", ["mlflow-operator"], ["--help"]))
    assert "run" in text and "crds" in text
    text = output(run_command(runtime, pod, operator, "operator-run-help", None, ["run", "--help"]))
    assert "--all-namespaces" in text


# --- PostgreSQL, PgBouncer and the exporter, as rendered ----------------------------------------------------


def inputs() -> TrackingServerInputs:
    spec = rendered.example_spec(s3_endpoint="http://s3.invalid:9000", bucket="unused")
    database, admin = Credentials("mlflow", PASSWORD), Credentials("admin", ADMIN_PASSWORD)
    return TrackingServerInputs("mlflow", NAMESPACE, spec, spec.version, database, admin)


PASSWORD = secrets.token_urlsafe(18)
ADMIN_PASSWORD = secrets.token_urlsafe(18)


def only_container(obj: Obj, name: str) -> Obj:
    (container,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return dict(container)


def resolved_env(container: Obj, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_values[(ref["name"], ref["key"])]
    return env


def pod_uid(obj: Obj) -> int:
    security = obj["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsUser"] == security["fsGroup"]
    return int(security["runAsUser"])


def fs_group_volume(path: Path, gid: int) -> Path:
    """A new volume as the kubelet hands it over with fsGroup."""
    path.mkdir()
    containers.kubelet_fs_group(path, gid)
    return path


@dataclass
class Postgres:
    runtime: Runtime
    pod: Pod
    image: Unpacked
    statefulset: Obj
    data: Path
    starts: int = 0

    def start(self, password: str = PASSWORD) -> Container:
        """A new pod on the volume, with `password` in the database Secret."""
        container = only_container(self.statefulset, "postgres")
        secret = {**database_secret_values(self.statefulset), (Names("mlflow").database_secret, "password"): password}
        env = resolved_env(container, secret)
        uid = pod_uid(self.statefulset)
        # The PVC, and the emptyDirs for /tmp and the socket directory (new ones: a new pod).
        sources = {"data": self.data, "tmp": self.runtime.empty_dir(uid), "run": self.runtime.empty_dir(uid)}
        volumes = [Mount(m["mountPath"], sources[m["name"]]) for m in container["volumeMounts"]]
        argv = containers.process_args(self.image.config, container.get("command"), container["args"])
        spec = containers.runtime_spec(self.image.config, self.image.rootfs, argv, env, volumes, self.pod, uid)
        self.starts += 1
        return containers.start(self.runtime, f"postgres-{self.starts}", spec)


def database_secret_values(statefulset: Obj) -> dict[tuple[str, str], str]:
    container = only_container(statefulset, "postgres")
    credentials = inputs().database_credentials
    values = {}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            values[(ref["name"], ref["key"])] = getattr(credentials, ref["key"])
    return values


def psql(
    pod: Pod, password: str, sql: str, port: int = 5432, database: str = "mlflow"
) -> subprocess.CompletedProcess[str]:
    """The host's psql, as a client on the pod network (TCP: the password is checked)."""
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return containers.in_netns(
        pod.netns, "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "-d", database, "-Atc", sql, env=env
    )


def wait_ready(container: Container, probe: list[str], timeout: float = 120) -> None:
    """Until the rendered readiness probe's command succeeds in the container."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.exec(*probe).returncode == 0:
            return
        assert container.status() == "running", f"exited before ready:\n{container.logs()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout} s:\n{container.logs()[-4000:]}")


@pytest.fixture(scope="module")
def postgres(
    runtime: Runtime, pod: Pod, image: Callable[[str], Unpacked], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Postgres]:
    statefulset = get_postgres_statefulset("mlflow", NAMESPACE, inputs().spec, PASSWORD)
    data = fs_group_volume(tmp_path_factory.mktemp("pvc") / "data", pod_uid(statefulset))
    yield Postgres(runtime, pod, image("postgres"), statefulset, data)


def test_postgres_initialises_an_empty_volume_then_restarts_on_it(postgres: Postgres) -> None:
    container_spec = only_container(postgres.statefulset, "postgres")
    probe = container_spec["readinessProbe"]["exec"]["command"]

    first = postgres.start()
    wait_ready(first, probe)
    assert "initialising /var/lib/postgresql/data/pgdata" in first.logs()
    assert output(psql(postgres.pod, PASSWORD, "select current_user, current_database()")).strip() == "mlflow|mlflow"
    wrong = psql(postgres.pod, "not-the-password", "select 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    # The rendered `-c` args are in effect.
    assert output(psql(postgres.pod, PASSWORD, "show shared_buffers")).strip() == "256MB"
    assert output(psql(postgres.pod, PASSWORD, "create table kept (x int); insert into kept values (42)"))
    assert (postgres.data / "pgdata" / "PG_VERSION").read_text().strip() == "15"
    first.stop("SIGINT")  # the image's STOPSIGNAL: fast shutdown

    # A new pod mounts the volume again: the kubelet makes PGDATA group-writable, which postgres refuses.
    containers.kubelet_fs_group(postgres.data, pod_uid(postgres.statefulset))
    second = postgres.start()
    wait_ready(second, probe)
    assert stat.S_IMODE((postgres.data / "pgdata").stat().st_mode) & 0o077 == 0  # what postgres requires
    assert output(psql(postgres.pod, PASSWORD, "select x from kept")).strip() == "42"
    assert "initialising" not in second.logs().split("database system is shut down")[-1]
    # Nothing but the volume and the emptyDirs was written: the root filesystem is read-only.
    assert "Read-only file system" in second.exec("touch", "/etc/x").stderr
    assert second.exec("id", "-u").stdout.strip() == "999"
    second.stop("SIGINT")


def test_postgres_takes_a_rotated_password_at_its_next_start(postgres: Postgres) -> None:
    """The database Secret is the source of truth: a pod started with a rotated password sets it before
    serving (the old one is refused, the data stays), and a start with an unchanged one does no extra work."""
    probe = only_container(postgres.statefulset, "postgres")["readinessProbe"]["exec"]["command"]
    rotated = secrets.token_urlsafe(18)
    for password, old in ((rotated, PASSWORD), (PASSWORD, rotated)):  # there and back: later tests use PASSWORD
        containers.kubelet_fs_group(postgres.data, pod_uid(postgres.statefulset))
        container = postgres.start(password)
        wait_ready(container, probe)
        assert "setting the password of mlflow from POSTGRES_PASSWORD" in container.logs()
        assert output(psql(postgres.pod, password, "select x from kept")).strip() == "42"
        refused = psql(postgres.pod, old, "select 1")
        assert refused.returncode != 0 and "password authentication failed" in refused.stderr
        container.stop("SIGINT")
    containers.kubelet_fs_group(postgres.data, pod_uid(postgres.statefulset))
    unchanged = postgres.start(PASSWORD)
    wait_ready(unchanged, probe)
    assert "setting the password" not in unchanged.logs()
    unchanged.stop("SIGINT")


@pytest.fixture(scope="module")
def running_postgres(postgres: Postgres) -> Iterator[Container]:
    container = postgres.start()
    wait_ready(container, only_container(postgres.statefulset, "postgres")["readinessProbe"]["exec"]["command"])
    yield container
    container.stop("SIGINT")


def versions(runtime: Runtime, pod: Pod, image: Unpacked, name: str, args: list[str]) -> str:
    return output(run_command(runtime, pod, image, name, None, args))


def test_pgbouncer_and_exporter_serve_the_rendered_pooler(
    runtime: Runtime,
    pod: Pod,
    image: Callable[[str], Unpacked],
    running_postgres: Container,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pgbouncer, exporter = image("pgbouncer"), image("pgbouncer-exporter")
    assert versions(runtime, pod, pgbouncer, "pgbouncer-version", ["--version"]).startswith("PgBouncer 1.24.")
    assert "0.10.2" in versions(runtime, pod, exporter, "exporter-version", ["--version"])
    # 0.10.2 takes the connection string only as a flag (v0.11.0 also from the env the operator renders:
    # the image's entrypoint bridges that) and serves on the port the operator renders, 9127, by default.
    help_text = versions(runtime, pod, exporter, "exporter-help", ["--help"])
    assert "--pgBouncer.connectionString" in help_text and "--web.listen-address=:9127" in help_text

    deployment = get_pgbouncer_deployment(inputs())
    config_dir, auth_dir = pooler_volumes(tmp_path_factory.mktemp("pooler"))
    uid = pod_uid(deployment)
    pooler = start_rendered(runtime, pod, pgbouncer, deployment, "pgbouncer", uid, {
        "config": config_dir, "auth": auth_dir,
    })  # fmt: skip
    wait_listening(pod, 6432, pooler)
    # Through PgBouncer (transaction pool) to Postgres, with the rendered userlist.
    assert output(psql(pod, PASSWORD, "select 40 + 2", port=6432)).strip() == "42"

    metrics_exporter = start_rendered(runtime, pod, exporter, deployment, "exporter", uid, {})
    wait_listening(pod, 9127, metrics_exporter)
    metrics = containers.in_netns(pod.netns, "curl", "-fsS", "http://127.0.0.1:9127/metrics").stdout
    assert "pgbouncer_up 1" in metrics, metrics[-2000:]
    # The password went through a file on the container's /dev/shm, not the world-readable argv.
    assert PASSWORD not in metrics_exporter.exec("cat", "/proc/1/cmdline").stdout
    assert 'pgbouncer_databases_current_connections{database="mlflow"' in metrics or "pgbouncer_pools" in metrics
    metrics_exporter.stop("SIGTERM")
    pooler.stop("SIGINT")


def pooler_volumes(root: Path) -> tuple[Path, Path]:
    """The ConfigMap and the Secret as files (an empty auth/ in the config dir is the nested mount point)."""
    config_dir, auth_dir = root / "config", root / "auth"
    (config_dir / "auth").mkdir(parents=True)
    auth_dir.mkdir()
    configmap, secret = get_pgbouncer_configmap(inputs()), get_pooler_auth_secret(inputs())
    (config_dir / "pgbouncer.ini").write_text(configmap["data"]["pgbouncer.ini"])
    (auth_dir / "userlist.txt").write_text(secret["stringData"]["userlist.txt"])
    for path in (config_dir, config_dir / "pgbouncer.ini", auth_dir, auth_dir / "userlist.txt"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return config_dir, auth_dir


def start_rendered(
    runtime: Runtime, pod: Pod, image: Unpacked, deployment: Obj, name: str, uid: int, volumes: dict[str, Path]
) -> Container:
    container = only_container(deployment, name)
    secret = get_pooler_auth_secret(inputs())
    values = {(secret["metadata"]["name"], key): value for key, value in secret["stringData"].items()}
    mounts = [
        Mount(m["mountPath"], volumes[m["name"]], m.get("readOnly", False)) for m in container.get("volumeMounts", [])
    ]
    argv = containers.process_args(image.config, container.get("command"), container.get("args"))
    env = resolved_env(container, values)
    spec = containers.runtime_spec(image.config, image.rootfs, argv, env, mounts, pod, uid)
    return containers.start(runtime, f"{name}-{secrets.token_hex(3)}", spec)


def wait_listening(pod: Pod, port: int, container: Container, timeout: float = 60) -> None:
    """The rendered tcpSocket probe: a connection to the port is accepted."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if containers.in_netns(pod.netns, sys.executable, "-c", probe).returncode == 0:
            return
        assert container.status() == "running", f"exited:\n{container.logs()[-4000:]}"
        time.sleep(0.3)
    raise AssertionError(f"port {port} not listening after {timeout} s:\n{container.logs()[-4000:]}")


def test_mlflow_image_creates_the_schema_and_runs_the_migration_job(
    runtime: Runtime, pod: Pod, image: Callable[[str], Unpacked], running_postgres: Container
) -> None:
    """From the mlflow-server image as UID 10001 on a read-only root, against the Postgres container: the
    schema a first server start creates, then the rendered migration Job's container (`mlflow db upgrade
    $(MLFLOW_DIRECT_URI)`; MLflow's migrations start from that schema, not from an empty database)."""
    server = image("mlflow-server")
    job = get_migration_job(inputs(), inputs().spec.version)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    values = rendered.rendered_secrets(inputs())
    env, uid = resolved_env(container, values), pod_uid(job)
    mounts = [Mount(m["mountPath"], runtime.empty_dir(uid)) for m in container["volumeMounts"]]

    def run_in_job_pod(name: str, argv: list[str]) -> str:
        spec = containers.runtime_spec(server.config, server.rootfs, argv, env, mounts, pod, uid)
        return output(containers.run(runtime, f"{name}-{secrets.token_hex(3)}", spec))

    create = "import os; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as S; "
    create += "S(os.environ['MLFLOW_DIRECT_URI'], '/tmp/artifacts')"
    run_in_job_pod("schema", ["python", "-c", create])
    head = output(psql(pod, PASSWORD, "select version_num from alembic_version")).strip()
    assert head
    run_in_job_pod("migrate", rendered.container_argv(container, values))
    assert output(psql(pod, PASSWORD, "select version_num from alembic_version")).strip() == head
    assert output(psql(pod, PASSWORD, "select name from experiments")).strip() == "Default"
