"""The Secrets of a TrackingServer: the generated passwords (database, admin, the servers' PgBouncer login;
created once by the handler, changed only by a requested rotation), the backend URIs, PgBouncer's userlist and
MLflow's basic-auth configuration.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from mlflow_operator.api.trackingserver import Auth, TrackingServerSpec
from mlflow_operator.builders.common import (
    Obj,
    labels,
    metadata,
)
from mlflow_operator.builders.config import (
    userlist_line,
)
from mlflow_operator.builders.trackingserver.inputs import (
    COMPONENT_POOLER,
    COMPONENT_POSTGRES,
    COMPONENT_SERVER,
    DATABASE_USER,
    PGBOUNCER_PORT,
    POOLER_CLIENT_USER,
    Credentials,
    Names,
    TrackingServerInputs,
    backend_uris,
    pooled_login,
)


def _secret(name: str, namespace: str, component: str, instance: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, namespace, labels(instance, component)),
        "type": "Opaque",
        "stringData": data,
    }


def _login_secret(name: str, namespace: str, component: str, instance: str, username: str, password: str) -> Obj:
    """A generated login (username and password keys): the handler creates it once."""
    return _secret(name, namespace, component, instance, {"username": username, "password": password})


def get_database_secret(name: str, namespace: str, password: str) -> Obj:
    """The managed database's credentials: created once, retained by default; a rotation rewrites the password."""
    return _login_secret(Names(name).database_secret, namespace, COMPONENT_POSTGRES, name, DATABASE_USER, password)


def admin_secret_name(name: str, auth: Auth) -> str:
    """The Secret holding the MLflow admin credentials: the user's (auth.adminSecret) or the generated one."""
    return auth.admin_secret.name if auth.admin_secret else Names(name).admin_secret


def get_admin_secret(name: str, namespace: str, password: str) -> Obj:
    """Generated MLflow admin credentials for basic auth: created once; a rotation rewrites the password."""
    return _login_secret(Names(name).admin_secret, namespace, COMPONENT_SERVER, name, "admin", password)


def get_backend_secret(inputs: TrackingServerInputs) -> Obj:
    return _secret(inputs.names.backend_secret, inputs.namespace, COMPONENT_SERVER, inputs.name, backend_uris(inputs))


def get_pooler_client_secret(name: str, namespace: str, password: str) -> Obj:
    """The tracking servers' own PgBouncer login: created once, never overwritten (no rotation asks for it)."""
    return _login_secret(
        Names(name).pooler_client_secret, namespace, COMPONENT_POOLER, name, POOLER_CLIENT_USER, password
    )


# The registry-events Secret's keys: the HMAC key MLflow signs webhook deliveries to the operator with, and the
# Fernet key MLflow encrypts stored webhook secrets with (without a stable one, each server process makes up its
# own and cannot read the secrets another stored).
WEBHOOK_SECRET_KEY, ENCRYPTION_KEY = "webhook-secret", "encryption-key"
# The receiver's CA, copied in by the operator (and replaced when it changes): a Secret in the server's namespace
# the pods can mount, unlike the operator's own.
EVENTS_CA_KEY = "ca.crt"


def registry_events_enabled(spec: TrackingServerSpec) -> bool:
    return spec.registry_events is None or spec.registry_events.enabled


def get_registry_events_secret(name: str, namespace: str, webhook_secret: str, encryption_key: str) -> Obj:
    """Generated once, never rewritten: a new encryption key would make every stored webhook secret unreadable."""
    data = {WEBHOOK_SECRET_KEY: webhook_secret, ENCRYPTION_KEY: encryption_key}
    return _secret(Names(name).registry_events_secret, namespace, COMPONENT_SERVER, name, data)


def get_pooler_auth_secret(inputs: TrackingServerInputs) -> Obj:
    """PgBouncer's userlist: the database user (PgBouncer's own login to Postgres, and the exporter's stats
    login) and the servers' login, when they have one of their own."""
    credentials = inputs.database_credentials
    user, password = quote(credentials.username, safe=""), quote(credentials.password, safe="")
    exporter = f"postgres://{user}:{password}@127.0.0.1:{PGBOUNCER_PORT}/pgbouncer?sslmode=disable"
    logins = {credentials.username: credentials.password}
    client = pooled_login(inputs)
    logins.setdefault(client.username, client.password)
    userlist = "".join(userlist_line(username, secret) for username, secret in logins.items())
    return _secret(
        inputs.names.pooler_auth,
        inputs.namespace,
        COMPONENT_POOLER,
        inputs.name,
        {"userlist.txt": userlist, "exporter-connection-string": exporter},
    )


def render_auth_config(inputs: TrackingServerInputs) -> str:
    """basic_auth.ini for MLflow's basic-auth app; its users live in the same Postgres."""
    admin = inputs.admin_credentials
    if admin is None:
        raise ValueError("auth is enabled but no admin credentials were resolved")
    for value in (admin.username, admin.password):
        # configparser (which MLflow uses) splits on newlines and strips values: refuse what would not
        # survive instead of writing a config that authenticates with a different password.
        if "\n" in value or "\r" in value:
            raise ValueError("admin credentials cannot contain newlines")
        if value != value.strip() or not value:
            raise ValueError("admin credentials cannot be empty or start or end with whitespace")
    # MLflow reads the file with configparser's default interpolation, where a lone % is an error
    # ("'%' must be followed by '%' or '('") and the URI percent-encodes the database password: double it.
    database_uri, username, password = (
        value.replace("%", "%%") for value in (backend_uris(inputs)["pooled-uri"], admin.username, admin.password)
    )
    lines = [
        "[mlflow]",
        f"default_permission = {inputs.spec.auth.default_permission if inputs.spec.auth else 'READ'}",
        f"database_uri = {database_uri}",
        f"admin_username = {username}",
        f"admin_password = {password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # Every basic-authenticated request otherwise verifies the password hash (scrypt, tens of ms of CPU):
        # with 200 concurrent clients on the real node, 600 requests took 87-120 s on 4 sync workers.
        f"auth_cache_ttl_seconds = {inputs.spec.auth.credential_cache_seconds if inputs.spec.auth else 0}",
    ]
    return "\n".join(lines) + "\n"


def flask_secret_key(admin: Credentials) -> str:
    """MLFLOW_FLASK_SERVER_SECRET_KEY, which `mlflow server --app-name basic-auth` refuses to start without
    (it signs CSRF tokens, so every worker and replica needs the same one). Derived from the admin password
    with HMAC: stable across reconciles without storing another generated secret, unguessable without it."""
    return hmac.new(admin.password.encode(), b"mlflow-operator/flask-secret-key", hashlib.sha256).hexdigest()


def get_auth_config_secret(inputs: TrackingServerInputs) -> Obj:
    data = {"basic_auth.ini": render_auth_config(inputs)}
    if inputs.admin_credentials is not None:  # render_auth_config has refused it otherwise
        data["flask-secret-key"] = flask_secret_key(inputs.admin_credentials)
    return _secret(inputs.names.auth_config, inputs.namespace, COMPONENT_SERVER, inputs.name, data)
