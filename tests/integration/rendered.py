"""What the operator renders for a TrackingServer, turned into inputs for local processes.

Only addresses and mount paths are rewritten: Service host names and container ports become 127.0.0.1 and
free ports, files mounted from Secrets become temp files, and secretKeyRef values come from the Secrets the
builders render (with their URIs pointed at the local processes) or, for Secrets the user provides, from
the local services. Every other byte is used as rendered, so a setting a real component rejects fails the
test instead of being papered over here.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders.common import Obj
from mlflow_operator.builders.config import render_pgbouncer_ini
from mlflow_operator.builders.trackingserver import (
    ENCRYPTION_KEY,
    PGBOUNCER_PORT,
    WEBHOOK_SECRET_KEY,
    TrackingServerInputs,
    backend_uris,
    desired_pooler,
    desired_server,
    get_database_endpoint,
    get_pgbouncer_config,
    get_pooler_auth_secret,
    pooled_login,
    pooler_endpoint,
    postgres_uri,
    tracking_server_args,
    tracking_server_env,
)
from mlflow_operator.handlers.registry_events import new_encryption_key

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "tracking-server.yaml"
HOST = "127.0.0.1"

Address = tuple[str, int]
# (Secret name, key) -> value: what a secretKeyRef resolves to locally.
SecretValues = dict[tuple[str, str], str]
# Kubernetes expands $(NAME) in command and args from the container's env; $$ is a literal $.
_DEPENDENT_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def example_document(kind: str) -> dict[str, Any]:
    """The first document of `kind` in examples/tracking-server.yaml."""
    for document in yaml.safe_load_all(EXAMPLE.read_text()):
        if document and document.get("kind") == kind:
            return dict(document)
    raise LookupError(f"no {kind} in {EXAMPLE}")


def example_spec(*, s3_endpoint: str, bucket: str) -> TrackingServerSpec:
    """The example TrackingServer's spec with its bucket on a local S3 server; nothing else changed."""
    spec = copy.deepcopy(example_document("TrackingServer")["spec"])
    spec["artifacts"]["s3"].update(endpoint=s3_endpoint, bucket=bucket)
    return TrackingServerSpec.model_validate(spec)


def relocate(text: str, rendered: Address, local: Address) -> str:
    """text with the one URI authority `@host:port/` naming `rendered` pointed at `local`.

    The password sits before the `@` percent-encoded, so it cannot contain the pattern; exactly one match
    proves nothing but the address changes."""
    old, new = f"@{rendered[0]}:{rendered[1]}/", f"@{local[0]}:{local[1]}/"
    if text.count(old) != 1:
        raise ValueError(f"expected exactly one {old!r} in the rendered text")
    return text.replace(old, new)


# --- addresses ----------------------------------------------------------------------------------------------


def database_address(inputs: TrackingServerInputs) -> Address:
    """The Postgres Service the rendered config names."""
    endpoint = get_database_endpoint(inputs.name, inputs.namespace, inputs.spec)
    return endpoint.host, endpoint.port


def pooler_address(inputs: TrackingServerInputs) -> Address:
    """The PgBouncer Service the rendered server config names."""
    return pooler_endpoint(inputs.name, inputs.namespace, inputs.spec)


def local_uri(inputs: TrackingServerInputs, key: str, rendered_at: Address, local: Address) -> str:
    """backend_uris(inputs)[key] for a local process, built by postgres_uri() as the operator builds it,
    and checked to differ from the rendered URI in the address only."""
    rendered = backend_uris(inputs)[key]
    parts = urlsplit(rendered)
    database = unquote(parts.path.lstrip("/"))
    ssl_mode = parse_qs(parts.query)["sslmode"][0]
    login = pooled_login(inputs) if key == "pooled-uri" else inputs.database_credentials
    uri = postgres_uri(login, local[0], local[1], database, ssl_mode)
    if uri != relocate(rendered, rendered_at, local):
        raise AssertionError(f"the local {key} differs from the rendered one beyond the address")
    return uri


# --- PgBouncer ------------------------------------------------------------------------------------------------


# Keys the harness would set for itself that the rendered values serve locally too (empty: no unix socket
# on a read-only root, log to stderr, no pid file): they stay as rendered.
PGBOUNCER_KEPT_AS_RENDERED = ("unix_socket_dir", "logfile", "pidfile")
# What the harness rewrites in [pgbouncer]: the listen address and port, and the mounted userlist's path.
PGBOUNCER_RELOCATED = ("listen_addr", "listen_port", "auth_file")


@dataclass(frozen=True)
class PgBouncerFiles:
    """pgbouncer.ini and userlist.txt as rendered, plus harness overrides: the [databases] entry pointed at
    the local Postgres, and the rendered values of keys the harness would otherwise set."""

    ini: str
    userlist: str
    overrides: dict[str, dict[str, str]]


def ini_items(text: str) -> dict[tuple[str, str], str]:
    """{(section, key): value} of an INI text; comments and blank lines skipped."""
    items: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        header = re.fullmatch(r"\[([^\]]+)\]", stripped)
        if header:
            section = header.group(1).strip()
        elif "=" in stripped and not stripped.startswith((";", "#")):
            key, value = stripped.split("=", 1)
            items[(section, key.strip())] = value.strip()
    return items


def pgbouncer_files(inputs: TrackingServerInputs, postgres: Address) -> PgBouncerFiles:
    """The ConfigMap's pgbouncer.ini and the Secret's userlist.txt. The [databases] entry is rendered a second
    time by the same template with the local Postgres as server, so its quoting is the operator's too."""
    config = get_pgbouncer_config(inputs)
    ini = render_pgbouncer_ini(config)
    local = ini_items(render_pgbouncer_ini(replace(config, server_host=postgres[0], server_port=postgres[1])))
    kept = {key: ini_items(ini)[("pgbouncer", key)] for key in PGBOUNCER_KEPT_AS_RENDERED}
    return PgBouncerFiles(
        ini=ini,
        userlist=get_pooler_auth_secret(inputs)["stringData"]["userlist.txt"],
        overrides={"databases": {config.database: local[("databases", config.database)]}, "pgbouncer": kept},
    )


def pgbouncer_changes(rendered: str, effective: str) -> set[tuple[str, str]]:
    """(section, key) pairs whose value differs between two pgbouncer.ini texts, or that only one has."""
    before, after = ini_items(rendered), ini_items(effective)
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


# --- Secrets ----------------------------------------------------------------------------------------------------


def rendered_secrets(inputs: TrackingServerInputs) -> SecretValues:
    """Every key of every Secret the operator renders for the pooler and the server."""
    values: SecretValues = {}
    for obj in [*desired_pooler(inputs), *desired_server(inputs)]:
        if obj["kind"] == "Secret":
            values.update({(obj["metadata"]["name"], key): value for key, value in obj["stringData"].items()})
    return values


def local_secrets(
    inputs: TrackingServerInputs, *, postgres: Address, pgbouncer: Address, s3_keys: tuple[str, str]
) -> SecretValues:
    """The rendered Secrets with every URI pointed at the local processes, plus the user's S3 Secret
    (spec.artifacts.s3.credentialsSecret) holding the local S3 server's keys."""
    names = inputs.names
    values = rendered_secrets(inputs)
    values[(names.backend_secret, "pooled-uri")] = local_uri(inputs, "pooled-uri", pooler_address(inputs), pgbouncer)
    values[(names.backend_secret, "direct-uri")] = local_uri(inputs, "direct-uri", database_address(inputs), postgres)
    exporter = (names.pooler_auth, "exporter-connection-string")
    values[exporter] = relocate(values[exporter], (HOST, PGBOUNCER_PORT), pgbouncer)  # a sidecar: localhost
    auth = (names.auth_config, "basic_auth.ini")
    if auth in values:
        values[auth] = relocate(values[auth], pooler_address(inputs), pgbouncer)
    # The registry-events Secret the handler generates once: a signing secret and MLflow's Fernet key.
    values[(names.registry_events_secret, WEBHOOK_SECRET_KEY)] = secrets.token_urlsafe(24)
    values[(names.registry_events_secret, ENCRYPTION_KEY)] = new_encryption_key()
    credentials = inputs.spec.artifacts.s3.credentials_secret
    if credentials is not None:
        values[(credentials.name, credentials.access_key_id_key)] = s3_keys[0]
        values[(credentials.name, credentials.secret_access_key_key)] = s3_keys[1]
    return values


def resolve_env(env: Sequence[Obj], secrets: SecretValues, paths: Mapping[str, str] | None = None) -> dict[str, str]:
    """A rendered container env as plain variables: literal values as rendered, except those in `paths`
    (mount paths and HOME, which become local temp paths); secretKeyRef values from `secrets`."""
    paths = dict(paths or {})
    resolved: dict[str, str] = {}
    for variable in env:
        name = variable["name"]
        if "value" in variable:
            resolved[name] = paths.pop(name, variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            resolved[name] = secrets[(ref["name"], ref["key"])]
    if paths:
        raise ValueError(f"path overrides for variables the operator does not render: {sorted(paths)}")
    return resolved


def expand_dependent_vars(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """argv as the kubelet runs it: $(NAME) replaced by a defined variable, unknown ones kept, $$ -> $."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return [_DEPENDENT_VAR.sub(substitute, arg) for arg in argv]


def write_configmap_mounts(pod_spec: Obj, container: Obj, configmaps: Sequence[Obj], directory: Path) -> dict[str, str]:
    """The container's ConfigMap volumes written as the kubelet projects them (one file per key) into
    directory/<volume>/, read-only; returns mount path -> local directory."""
    by_name = {configmap["metadata"]["name"]: configmap for configmap in configmaps}
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    mounts: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        source = volumes.get(mount["name"], {}).get("configMap")  # a claim template's volume is not listed
        if source is None:
            continue
        local = directory / mount["name"]
        local.mkdir(parents=True)
        for key, text in by_name[source["name"]]["data"].items():
            (local / key).write_text(text)
            (local / key).chmod(0o444)
        mounts[mount["mountPath"]] = str(local)
    return mounts


def relocate_mounts(argv: Sequence[str], mounts: Mapping[str, str]) -> list[str]:
    """argv with each argument under a mount path pointed at the local directory holding that mount."""

    def relocate(arg: str) -> str:
        for mount_path, local in mounts.items():
            root = mount_path.rstrip("/")
            if arg == root or arg.startswith(root + "/"):
                return local + arg[len(root) :]
        return arg

    return [relocate(arg) for arg in argv]


def container_argv(container: Obj, secrets: SecretValues) -> list[str]:
    """A Job container's command with its env's $(VAR) references expanded."""
    return expand_dependent_vars(container["command"], resolve_env(container["env"], secrets))


# --- the tracking server ----------------------------------------------------------------------------------------


def server_argv(inputs: TrackingServerInputs, port: int, prometheus_dir: Path) -> list[str]:
    """tracking_server_args() listening on 127.0.0.1:port, its Prometheus directory a local one."""
    argv = tracking_server_args(inputs)
    rewrites = {"--host": HOST, "--port": str(port), "--expose-prometheus": str(prometheus_dir)}
    for option, value in rewrites.items():
        index = argv.index(option)  # ValueError if the operator stops rendering it: the test must notice
        argv[index + 1] = value
    return argv


def server_env(
    inputs: TrackingServerInputs, secrets: SecretValues, *, home: Path, auth_config: Path | None
) -> dict[str, str]:
    """tracking_server_env() resolved; HOME and the mounted basic_auth.ini become local paths."""
    paths = {"HOME": str(home)}
    if auth_config is not None:
        paths["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    return resolve_env(tracking_server_env(inputs), secrets, paths)


def write_auth_config(inputs: TrackingServerInputs, secrets: SecretValues, directory: Path) -> Path:
    """The auth-config Secret's basic_auth.ini (database_uri on the local PgBouncer), as the pod mounts it."""
    path = directory / "basic_auth.ini"
    path.write_text(secrets[(inputs.names.auth_config, "basic_auth.ini")])
    path.chmod(0o600)
    return path
