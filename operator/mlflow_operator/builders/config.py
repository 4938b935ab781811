"""Configuration files rendered from jinja2 templates. Values reach INI only through escaping filters."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import jinja2

# PgBouncer settings a spec may influence. Anything else is refused, as CloudNativePG's Pooler does:
# a typo or an injected key never reaches the config.
PGBOUNCER_ALLOWED_SETTINGS = frozenset(
    {
        "listen_addr",
        "listen_port",
        "unix_socket_dir",
        "auth_type",
        "auth_file",
        "pool_mode",
        "default_pool_size",
        "min_pool_size",
        "reserve_pool_size",
        "max_client_conn",
        "max_db_connections",
        "server_tls_sslmode",
        "ignore_startup_parameters",
        "server_reset_query",
        "server_check_query",
        "server_idle_timeout",
        "server_lifetime",
        "query_wait_timeout",
        "client_idle_timeout",
        "logfile",
        "pidfile",
        "log_connections",
        "log_disconnections",
        "stats_users",
        "admin_users",
        "application_name_add_host",
        "server_login_retry",
        "server_connect_timeout",
    }
)


class UnsafeConfigValue(ValueError):
    """A value that cannot be written into a config file without changing its structure."""


def ini_value(value: object) -> str:
    """One INI value: newlines stripped (they would start a new key), surrounding space trimmed."""
    text = str(value).replace("\r", " ").replace("\n", " ").strip()
    return text


def libpq_value(value: object) -> str:
    """A libpq connection-string value: quoted, with quotes and backslashes escaped."""
    text = ini_value(value)
    if text and all(c.isalnum() or c in "._-" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def userlist_line(username: str, password: str) -> str:
    """A PgBouncer auth_file line: both fields double-quoted, inner quotes doubled."""
    for part in (username, password):
        if "\n" in part or "\r" in part:
            raise UnsafeConfigValue("user names and passwords in userlist.txt cannot contain newlines")
    return '"{}" "{}"\n'.format(username.replace('"', '""'), password.replace('"', '""'))


_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("mlflow_operator.builders", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # INI, not HTML: escaping is done by the ini/libpq filters on every value
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_environment.filters["ini"] = ini_value
_environment.filters["libpq"] = libpq_value


@dataclass(frozen=True)
class PgBouncerConfig:
    """Everything pgbouncer.ini says. Listen and server addresses differ between a pod and a local test."""

    database: str
    server_host: str
    server_port: int
    settings: Mapping[str, object] = field(default_factory=dict)
    # PgBouncer logs into Postgres as this user (its password from auth_file) whoever the client is: clients
    # then have a login of their own, which a rotation of the database password leaves alone.
    server_user: str | None = None


def render_pgbouncer_ini(config: PgBouncerConfig) -> str:
    unknown = set(config.settings) - PGBOUNCER_ALLOWED_SETTINGS
    if unknown:
        raise UnsafeConfigValue(f"PgBouncer settings not allowed: {sorted(unknown)}")
    connection: dict[str, object] = {"host": config.server_host, "port": config.server_port, "dbname": config.database}
    if config.server_user is not None:
        connection["user"] = config.server_user
    return _environment.get_template("pgbouncer.ini.j2").render(
        database=config.database, connection=connection, settings=dict(config.settings)
    )


GC_SCRIPT = "safe_gc.py"


def gc_script() -> str:
    """The gc Job's script, verbatim: Python, so not rendered by jinja2 (its braces are code, and the Job
    takes its settings from env and argv)."""
    return resources.files("mlflow_operator.builders").joinpath("templates", GC_SCRIPT).read_text()


def content_hash(*parts: str) -> str:
    """A short stable hash of config contents, put in pod templates so a change rolls the pods."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
