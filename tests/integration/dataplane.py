"""The data plane of a TrackingServer as local processes on 127.0.0.1: Postgres, PgBouncer, `mlflow server`.

Pod IPs are fake in the test cluster, so integration tests and benchmarks run the same programs here,
configured from what the operator renders (pgbouncer.ini, userlist.txt, the server's argv and env).
Every wait is bounded; every process logs to a file whose tail is put into the error when it fails to
start, and `log_tails()` gathers them for a failing test. Postgres and PgBouncer refuse to run as root, so
as root they run as the `postgres` system user that Debian's package creates.

The MLflow server runs from its own virtualenv, installed by `make deps` from exactly the image's
requirements file (images/mlflow-server/requirements.txt), so the tests run what the image ships; the
model server's (images/mlflow-model-server) likewise, see image_venv().
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_REQUIREMENTS = REPO_ROOT / "images" / "mlflow-server" / "requirements.txt"
HOST = "127.0.0.1"
SERVICE_USER = "postgres"
LOG_TAIL_LINES = 60
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class DataplaneError(RuntimeError):
    """A data-plane process could not be found, started or used; the message says what to do."""


# --- locating the programs ------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("MLFLOW_OPERATOR_CACHE") or Path.home() / ".cache" / "mlflow-operator")


def image_requirements(image: str) -> Path:
    """images/<image>/requirements.txt: what the image installs, and what its test virtualenv installs."""
    return REPO_ROOT / "images" / image / "requirements.txt"


def _venv_path(image: str, requirements: Path) -> Path:
    # hack/install-deps.sh's image_venv(): keyed by the first 16 hex of the requirements file's sha256.
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    return cache_dir() / "venvs" / f"{image}-{digest}"


def image_venv_path(image: str) -> Path:
    """Where hack/install-deps.sh installs images/<image>/requirements.txt (installed or not)."""
    return _venv_path(image, image_requirements(image))


def image_venv(image: str) -> Path:
    """The installed virtualenv of images/<image>, or a DataplaneError telling to run `make deps`."""
    venv = image_venv_path(image)
    if not (venv / ".installed").is_file():
        raise DataplaneError(
            f"the {image} virtualenv {venv} is missing or incomplete "
            f"(for {image_requirements(image).relative_to(REPO_ROOT)}): run `make deps`"
        )
    return venv


def server_venv_path(requirements: Path = SERVER_REQUIREMENTS) -> Path:
    """Where hack/install-deps.sh installs the server: keyed by the first 16 hex of the file's sha256."""
    return _venv_path("mlflow-server", requirements)


def server_venv() -> Path:
    """The installed server virtualenv, or a DataplaneError telling to run `make deps`."""
    return image_venv("mlflow-server")


def postgres_bin_dir() -> Path:
    """Debian's server binaries, /usr/lib/postgresql/<major>/bin, of the newest installed major."""
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "postgres").is_file()]
    if not candidates:
        raise DataplaneError("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: run `make deps`")
    return max(candidates, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def pgbouncer_binary() -> Path:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        raise DataplaneError("pgbouncer not found: run `make deps`")
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- processes --------------------------------------------------------------------------------------------


def _running_as_root() -> bool:
    return os.geteuid() == 0


def as_service_user(argv: Sequence[str]) -> list[str]:
    """argv run as the `postgres` user when we are root (Postgres and PgBouncer refuse root), else as is."""
    if not _running_as_root():
        return list(argv)
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise DataplaneError(f"no `{SERVICE_USER}` system user to run the database as: run `make deps`") from exc
    # setpriv execs (unlike runuser, which forks), so signals reach the program itself.
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--", *argv]


def service_dir(prefix: str) -> Path:
    """A fresh temp dir the service user may write in (sockets, data, pid files)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if _running_as_root():
        shutil.chown(path, user=SERVICE_USER, group=SERVICE_USER)
    return path


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(check: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Polls check() until it is true or timeout seconds passed; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(process: subprocess.Popen[bytes], grace: float, kill_wait: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds; its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=kill_wait)
    return process.returncode


class Process:
    """One program in its own process group, with stdout and stderr in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path, env: Mapping[str, str] | None = None
    ):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # A new session makes the process a group leader, so stop() also reaches its children
        # (`mlflow server` runs gunicorn as a child and does not forward signals to it).
        self._popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.cwd, env=self.env, start_new_session=True,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def failure(self, what: str) -> DataplaneError:
        """An error naming what went wrong, with the exit code and the log's tail."""
        code = self._popen.poll() if self._popen else None
        state = f"exited with {code}" if code is not None else "still running"
        return DataplaneError(f"{self.name}: {what} ({state}); log {self.log_path}:\n{tail(self.log_path)}")

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Waits until ready() or the process exits or timeout passes; raises with the log if not ready."""
        if not wait_for(lambda: not self.running or ready(), timeout=timeout) or not self.running:
            raise self.failure(f"not {what} within {timeout:.0f} s")

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def wait(self, timeout: float) -> int | None:
        """Waits up to timeout for the program to exit; returns its exit code, or None if it still runs."""
        if self._popen is None:
            raise DataplaneError(f"{self.name}: not started")
        with suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)
        return self._popen.poll()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> None:
        """Sends sig to the group, waits up to timeout, then kills whatever is left of the group."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._signal_group(sig)
            with suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        self._signal_group(signal.SIGKILL)  # children that outlived their parent
        self._popen.wait(10)
        if self._log:
            self._log.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        with suppress(ProcessLookupError):
            os.killpg(self._popen.pid, sig)


def run_checked(
    argv: Sequence[str], *, what: str, timeout: float, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Runs a short command to completion; returns stdout, raises with its output if it fails."""
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise DataplaneError(f"{what}: no answer within {timeout:.0f} s: {' '.join(argv)}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise DataplaneError(f"{what} failed with {result.returncode}: {' '.join(argv)}\n{output}")
    return result.stdout


class _Service:
    """Plumbing shared by the three services: start on enter; stop, then delete the work dir, on exit.

    Logs go to log_dir when one is given (a pytest tmp dir keeps them after the run), else to the work dir.
    """

    process: Process | None = None
    workdir: Path | None = None
    log_dir: Path | None = None
    stop_signal = signal.SIGTERM
    stop_timeout: float = 20

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(self.stop_signal, self.stop_timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Process:
        assert self.workdir is not None
        log_dir = self.log_dir or self.workdir
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name.replace(' ', '-')}.log"
        self.process = Process(name, argv, log_path, cwd=self.workdir, env=env)
        self.process.start()
        return self.process

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.process is None:
            return f"--- {type(self).__name__}: not started ---"
        return f"--- {self.process.name} ({self.process.log_path}) ---\n{tail(self.process.log_path, lines)}"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def log_tails(*services: _Service, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of each service's log, for a failing test's report."""
    return "\n".join(service.log_tail(lines) for service in services)


# --- Postgres -----------------------------------------------------------------------------------------------


class Postgres(_Service):
    """A throwaway cluster: initdb, one database, one scram-sha-256 password user, TCP on 127.0.0.1 only.

    The bootstrap superuser `postgres` is reachable only through the unix socket (trust), which the
    harness uses for setup and for counting connections; clients use host/port/user/password.
    """

    # Durability is worthless for a throwaway cluster and fsync dominates small-write latency; a benchmark
    # that wants production behaviour passes fsync=on etc. in settings, which take precedence.
    DEFAULT_SETTINGS: Mapping[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") would wait for clients to leave

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        user: str = "mlflow",
        dbname: str = "mlflow",
        log_dir: Path | None = None,
        start_timeout: float = 60,
        env: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
    ):
        """`env` is added to the server's (archive_command sees it); `data_dir` starts an existing cluster
        (a restored one: no initdb, no role or database created; its users are whatever it holds)."""
        for name in (user, dbname):
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not a plain lowercase SQL identifier: {name!r}")
        self.settings = {**self.DEFAULT_SETTINGS, **(settings or {})}
        self.host = HOST
        self.port = 0
        self.user = user
        self.password = secrets.token_hex(16)
        self.dbname = dbname
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.bin_dir = postgres_bin_dir()
        self.env = dict(env or {})
        self.existing_data = data_dir

    def uri(self, driver: str = "postgresql+psycopg2") -> str:
        """The direct (not pooled) SQLAlchemy URI: for migrations, which must not go through PgBouncer."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def start(self) -> None:
        self.workdir = service_dir("mlflow-dataplane-postgres-")
        self.port = free_port()
        if self.existing_data is None:
            self._initdb()
        options = {"listen_addresses": self.host, **self.settings}
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-k", str(self.workdir)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        env = {**os.environ, **self.env} if self.env else None
        process = self._spawn("postgres", as_service_user(argv), env)
        process.wait_ready(self._accepting, timeout=self.start_timeout, what="accepting connections")
        if self.existing_data is not None:
            return
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None
        return self.existing_data or self.workdir / "data"

    def _initdb(self) -> None:
        assert self.workdir is not None
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        argv += ["--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"]
        run_checked(as_service_user(argv), what="initdb", timeout=120, cwd=self.workdir)

    def _accepting(self) -> bool:
        argv = [str(self.bin_dir / "pg_isready"), "-q", "-h", str(self.workdir), "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0

    def psql(self, sql: str, *, dbname: str = "postgres", timeout: float = 30) -> str:
        """Runs SQL as the superuser over the unix socket; returns unaligned, tuples-only output."""
        argv = [str(self.bin_dir / "psql"), "-h", str(self.workdir), "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", dbname, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return run_checked(argv, what="psql", timeout=timeout).strip()

    def server_version(self) -> str:
        return self.psql("SHOW server_version")

    def server_connections(self) -> int:
        """Backend connections of the application user right now (PgBouncer's server connections)."""
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{self.user}' AND backend_type = 'client backend'"
        return int(self.psql(sql))

    @contextmanager
    def sample_connections(self, interval: float = 0.05) -> Iterator[ConnectionSampler]:
        """Counts server_connections() in the background for the duration of the block; see .peak."""
        sampler = ConnectionSampler(self.server_connections, interval)
        sampler.start()
        try:
            yield sampler
        finally:
            sampler.stop()


class ConnectionSampler:
    """Polls a counter in a thread and keeps the peak; an error while polling is raised by stop()."""

    def __init__(self, count: Callable[[], int], interval: float):
        self._count = count
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sampler", daemon=True)
        self._error: Exception | None = None
        self.peak = 0
        self.samples = 0

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(30)
        self._sample()
        if self._error is not None:
            raise DataplaneError(f"counting connections failed: {self._error}") from self._error

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, self._count())
            self.samples += 1
        except Exception as exc:
            self._error = exc

    def _run(self) -> None:
        while not self._stopped.wait(self._interval) and self._error is None:
            self._sample()


# --- PgBouncer ----------------------------------------------------------------------------------------------


def set_ini_values(text: str, section: str, values: Mapping[str, str]) -> str:
    """pgbouncer.ini text with `key = value` set in [section]: replaced where the key exists, else appended
    at the end of the section (a missing section is added). Everything else, comments included, is kept."""
    lines = text.splitlines()
    pending = dict(values)
    current: str | None = None
    section_end: int | None = None  # index after the last line of the target section
    out: list[str] = []
    for line in lines:
        header = re.fullmatch(r"\s*\[([^\]]+)\]\s*", line)
        if header:
            if current == section:
                section_end = len(out)
            current = header.group(1).strip()
        elif current == section:
            key = line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith((";", "#")) and key in pending:
                out.append(f"{key} = {pending.pop(key)}")
                continue
        out.append(line)
    if current == section:
        section_end = len(out)
    while section_end and not out[section_end - 1].strip():  # keep the blank line before the next section
        section_end -= 1
    added = [f"{key} = {value}" for key, value in pending.items()]
    if section_end is None:
        out += ["", f"[{section}]", *added]
    else:
        out[section_end:section_end] = added
    return "\n".join(out) + "\n"


class PgBouncer(_Service):
    """PgBouncer from pgbouncer.ini and userlist.txt texts, as the operator's ConfigMap and Secret mount them.

    The harness owns where it listens and where its files live, so in [pgbouncer] it sets listen_addr,
    listen_port, auth_file, unix_socket_dir, pidfile and logfile (to stderr, which is the log file here).
    `overrides` sets further keys per section, e.g. {"databases": {"mlflow": "host=127.0.0.1 port=N
    dbname=mlflow"}} to point a rendered config, which names a Kubernetes Service, at the local Postgres.
    """

    stop_signal = signal.SIGTERM  # immediate shutdown; SIGINT ("safe") would wait for clients to leave

    def __init__(
        self,
        ini: str,
        userlist: str,
        *,
        overrides: Mapping[str, Mapping[str, str]] | None = None,
        log_dir: Path | None = None,
        start_timeout: float = 30,
    ):
        self.ini = ini
        self.userlist = userlist
        self.overrides = overrides or {}
        self.log_dir = log_dir
        self.host = HOST
        self.port = 0
        self.start_timeout = start_timeout
        self.binary = pgbouncer_binary()

    @property
    def config_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pgbouncer.ini"

    def start(self) -> None:
        self.workdir = service_dir("mlflow-dataplane-pgbouncer-")
        self.port = free_port()
        userlist_path = self.workdir / "userlist.txt"
        self._write_private(userlist_path, self.userlist)
        local = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "auth_file": str(userlist_path),
            "unix_socket_dir": str(self.workdir),
            "pidfile": "",
            "logfile": "",
        }
        text = set_ini_values(self.ini, "pgbouncer", {**local, **self.overrides.get("pgbouncer", {})})
        for section, values in self.overrides.items():
            if section != "pgbouncer":
                text = set_ini_values(text, section, values)
        self._write_private(self.config_path, text)
        argv = as_service_user([str(self.binary), str(self.config_path)])
        process = self._spawn("pgbouncer", argv)
        process.wait_ready(self._accepting, timeout=self.start_timeout, what="accepting connections")

    def _write_private(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if _running_as_root():
            shutil.chown(path, user=SERVICE_USER, group=SERVICE_USER)

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False


# --- MLflow -------------------------------------------------------------------------------------------------


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for programs of the server virtualenv: ours without the project venv's marks,
    telemetry off (this machine may reach package registries only), then extra."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra or {})
    return env


def run_mlflow(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """`mlflow ARGS` from the server virtualenv to completion, e.g. run_mlflow(["db", "upgrade", uri])."""
    return run_checked(
        [str(server_venv() / "bin" / "mlflow"), *args], what="mlflow", timeout=timeout, env=server_env(env)
    )


def run_server_python(code: str, *, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    """Runs a Python script with the server virtualenv's interpreter (the full mlflow package); returns stdout."""
    python = str(server_venv() / "bin" / "python")
    return run_checked([python, "-c", code], what="python (server venv)", timeout=timeout, env=server_env(env))


# The run a client script logs and reads back to show that a tracking server works end to end: the harness's
# own test and the rendered server's check the same one. The script (mlflow and pathlib imported) includes
# RUN_DATA_SCRIPT, calls log_run_data(workdir, text) inside its run, downloads notes/hello.txt and prints
# read_run_data(client, run_id, downloaded) among its JSON's fields; assert_run_data checks those.
RUN_DATA_SCRIPT = """\
def log_run_data(workdir, text):
    note = workdir / "hello.txt"
    note.write_text(text)
    mlflow.log_params({"alpha": "0.5", "optimizer": "adam"})
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        mlflow.log_metric("loss", loss, step=step)
    mlflow.log_artifact(str(note), artifact_path="notes")


def read_run_data(client, run_id, downloaded):
    read = client.get_run(run_id)
    return {
        "params": read.data.params,
        "latest_loss": read.data.metrics["loss"],
        "loss_history": [[m.step, m.value] for m in client.get_metric_history(run_id, "loss")],
        "artifacts": [f.path for f in client.list_artifacts(run_id, "notes")],
        "downloaded": pathlib.Path(downloaded).read_text(),
    }
"""


def assert_run_data(read: Mapping[str, Any], text: str) -> None:
    """The fields read_run_data printed hold what log_run_data(workdir, text) logged."""
    assert read["params"] == {"alpha": "0.5", "optimizer": "adam"}
    assert read["latest_loss"] == 0.25
    assert sorted(read["loss_history"]) == [[0, 0.9], [1, 0.5], [2, 0.25]]
    assert read["artifacts"] == ["notes/hello.txt"]
    assert read["downloaded"] == text


def option_value(argv: Sequence[str], option: str) -> str | None:
    """The value of `--option VALUE` or `--option=VALUE` in argv, or None."""
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def with_option(argv: Sequence[str], option: str, value: str) -> list[str]:
    """argv with `option` set to value: replaced where present, else appended. For pointing a rendered
    argv (container port, Service host names) at local processes."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == option and i + 1 < len(out):
            out[i + 1] = value
            return out
        if arg.startswith(option + "="):
            out[i] = f"{option}={value}"
            return out
    return [*out, option, value]


class MlflowServer(_Service):
    """`mlflow server ...` from the server virtualenv, ready once GET /health answers 200.

    argv starts with "mlflow", "server" and must carry --host 127.0.0.1 and --port, which give the URL.
    Stopping sends SIGTERM to the whole process group (gunicorn's arbiter and workers too), then SIGKILL.
    """

    stop_timeout: float = 15

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        start_timeout: float = 180,
    ):
        if list(argv[:2]) != ["mlflow", "server"]:
            raise ValueError(f"argv must start with `mlflow server`: {argv!r}")
        host, port = option_value(argv, "--host"), option_value(argv, "--port")
        if host != HOST or port is None:
            raise ValueError(f"argv must listen on --host {HOST} with an explicit --port: {argv!r}")
        self.argv = list(argv)
        self.env = dict(env or {})
        self.url = f"http://{host}:{port}"
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.venv = server_venv()

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mlflow-dataplane-server-"))
        argv = [str(self.venv / "bin" / "mlflow"), *self.argv[1:]]
        # HOME is private, like the pod's emptyDir: whatever the server writes there (gunicorn >= 26 puts a
        # control socket in ~/.gunicorn) cannot collide with another server or leak into the user's home.
        process = self._spawn("mlflow server", argv, env=server_env({"HOME": str(self.workdir), **self.env}))
        process.wait_ready(self._healthy, timeout=self.start_timeout, what="healthy (GET /health)")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False
