"""PgBouncer in front of the database: its configuration, Deployment (with the exporter), Service and
NetworkPolicy.
"""

from __future__ import annotations

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders.common import (
    CONFIG_HASH_ANNOTATION,
    Obj,
    container_security_context,
    labels,
    metadata,
    network_policy,
    pod_disruption_budget,
    pod_security_context,
    resources,
    secret_env,
    selector,
    service,
    topology_spread,
)
from mlflow_operator.builders.config import (
    PgBouncerConfig,
    content_hash,
    render_pgbouncer_ini,
)
from mlflow_operator.builders.pod import workload
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_GC,
    COMPONENT_POOLER,
    COMPONENT_SERVER,
    EXPORTER_PORT,
    PGBOUNCER_PORT,
    POOLER_RESOURCES,
    Names,
    TrackingServerInputs,
    get_database_endpoint,
)
from mlflow_operator.builders.trackingserver.secrets import get_pooler_auth_secret


def pgbouncer_settings(
    spec: TrackingServerSpec, auth_file: str, listen_addr: str, listen_port: int, ssl_mode: str, stats_user: str
) -> dict[str, object]:
    pooler = spec.database.pooler
    settings: dict[str, object] = {
        "listen_addr": listen_addr,
        "listen_port": listen_port,
        "unix_socket_dir": "",  # read-only root filesystem; TCP only
        "auth_type": "scram-sha-256",
        "auth_file": auth_file,
        "pool_mode": pooler.mode,
        "default_pool_size": pooler.default_pool_size,
        "max_client_conn": pooler.max_client_conn,
        "max_db_connections": pooler.max_db_connections,
        # Clients that queue longer than this get an error instead of hanging forever.
        "query_wait_timeout": 120,
        # After a restart of Postgres, reconnect within a second rather than after the default 15 s pause
        # after a failed login, while clients wait (a fresh PgBouncer completes a client's login only
        # with a server connection).
        "server_login_retry": 1,
        "server_connect_timeout": 5,
        "server_idle_timeout": 600,
        "server_lifetime": 3600,
        "ignore_startup_parameters": "extra_float_digits",
        "stats_users": stats_user,
        "logfile": "",
        "pidfile": "",
        "server_tls_sslmode": ssl_mode,
    }
    if pooler.mode == "session":
        settings["server_reset_query"] = "DISCARD ALL"
    return settings


def get_pgbouncer_config(inputs: TrackingServerInputs) -> PgBouncerConfig:
    endpoint = get_database_endpoint(inputs.name, inputs.namespace, inputs.spec)
    settings = pgbouncer_settings(
        inputs.spec,
        "/etc/pgbouncer/auth/userlist.txt",
        "0.0.0.0",
        PGBOUNCER_PORT,
        endpoint.ssl_mode,
        inputs.database_credentials.username,
    )
    return PgBouncerConfig(
        database=endpoint.database,
        server_host=endpoint.host,
        server_port=endpoint.port,
        settings=settings,
        server_user=inputs.database_credentials.username,
    )


def get_pgbouncer_configmap(inputs: TrackingServerInputs) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inputs.names.pooler, inputs.namespace, labels(inputs.name, COMPONENT_POOLER)),
        "data": {"pgbouncer.ini": render_pgbouncer_ini(get_pgbouncer_config(inputs))},
    }


def get_pgbouncer_deployment(inputs: TrackingServerInputs) -> Obj:
    name, namespace, spec = inputs.name, inputs.namespace, inputs.spec
    names = inputs.names
    pooler = spec.database.pooler
    match = selector(name, COMPONENT_POOLER)
    ini = render_pgbouncer_ini(get_pgbouncer_config(inputs))
    auth = get_pooler_auth_secret(inputs)["stringData"]["userlist.txt"]
    containers = [
        {
            "name": "pgbouncer",
            "image": pooler.image or inputs.images.pgbouncer,
            "args": ["/etc/pgbouncer/pgbouncer.ini"],
            "ports": [{"name": "pgbouncer", "containerPort": PGBOUNCER_PORT}],
            "readinessProbe": {"tcpSocket": {"port": "pgbouncer"}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": "pgbouncer"}, "periodSeconds": 20, "failureThreshold": 6},
            # PgBouncer stops accepting new clients on SIGINT and lets running transactions finish.
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            "resources": resources(pooler.resources, POOLER_RESOURCES),
            "securityContext": container_security_context(),
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/pgbouncer", "readOnly": True},
                {"name": "auth", "mountPath": "/etc/pgbouncer/auth", "readOnly": True},
            ],
        }
    ]
    if spec.metrics is None or spec.metrics.enabled:
        containers.append(
            {
                "name": "exporter",
                "image": pooler.exporter_image or inputs.images.pgbouncer_exporter,
                # The connection string carries the password: it comes from the pooler's Secret, not the spec.
                "env": [
                    secret_env("PGBOUNCER_EXPORTER_CONNECTION_STRING", names.pooler_auth, "exporter-connection-string")
                ],
                "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
                # TCP only: an HTTP scrape would query PgBouncer on every probe.
                "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10},
                "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 20, "failureThreshold": 6},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": container_security_context(),
            }
        )
    return workload(
        "Deployment",
        metadata(names.pooler, namespace, labels(name, COMPONENT_POOLER)),
        {
            "replicas": pooler.replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {
                    "labels": labels(name, COMPONENT_POOLER),
                    "annotations": {CONFIG_HASH_ANNOTATION: content_hash(ini, auth)},
                },
                "spec": {
                    "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
                    "securityContext": pod_security_context(APP_UID),
                    "terminationGracePeriodSeconds": 60,
                    "topologySpreadConstraints": topology_spread(match),
                    "containers": containers,
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.pooler}},
                        {"name": "auth", "secret": {"secretName": names.pooler_auth}},
                    ],
                },
            },
        },
        spec.pod,
    )


def get_pgbouncer_service(name: str, namespace: str) -> Obj:
    meta = metadata(Names(name).pooler, namespace, labels(name, COMPONENT_POOLER))
    return service(meta, selector(name, COMPONENT_POOLER), "pgbouncer", PGBOUNCER_PORT)


def get_pgbouncer_network_policy(name: str, namespace: str) -> Obj:
    """Only the tracking server (and its gc job) reach the pooler."""
    return network_policy(
        Names(name).pooler, namespace, name, COMPONENT_POOLER, PGBOUNCER_PORT, [COMPONENT_SERVER, COMPONENT_GC]
    )


def desired_pooler(inputs: TrackingServerInputs) -> list[Obj]:
    if not inputs.spec.database.pooler.enabled:
        return []
    name, namespace = inputs.name, inputs.namespace
    return [
        get_pooler_auth_secret(inputs),
        get_pgbouncer_configmap(inputs),
        get_pgbouncer_deployment(inputs),
        get_pgbouncer_service(name, namespace),
        pod_disruption_budget(
            inputs.names.pooler, namespace, labels(name, COMPONENT_POOLER), selector(name, COMPONENT_POOLER)
        ),
        get_pgbouncer_network_policy(name, namespace),
    ]
