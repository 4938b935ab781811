"""Golden files pin every object a TrackingServer renders; hostile strings never change their structure.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 make unit`, and review the diff.
"""

from __future__ import annotations

import configparser
import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.builders import trackingserver as build
from mlflow_operator.builders.config import (
    GC_SCRIPT,
    PgBouncerConfig,
    UnsafeConfigValue,
    render_pgbouncer_ini,
    userlist_line,
)
from tests.unit.golden import assert_matches_golden, dump_objects
from tests.unit.pod_security import pod_specs, restricted_problems

ROOT = Path(__file__).resolve().parents[2]


def example_spec() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "examples" / "tracking-server.yaml").read_text())
    spec: dict[str, Any] = next(d for d in docs if d and d["kind"] == "TrackingServer")["spec"]
    return spec


CASES: dict[str, dict[str, Any]] = {
    "example": example_spec(),
    "external-no-pooler-ingress": {
        "replicas": 3,
        "workers": 4,
        "database": {
            "external": {
                "host": "pg.rds.example.com",
                "port": 5433,
                "database": "tracking",
                "sslMode": "verify-full",
                "credentialsSecret": {"name": "rds-credentials"},
            },
            "pooler": {"enabled": False},
        },
        "artifacts": {
            "s3": {
                "bucket": "ml-artifacts",
                "prefix": "team-a",
                "region": "eu-west-1",
                "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/mlflow"},
            }
        },
        "ingress": {"enabled": True, "host": "mlflow.example.com", "className": "nginx", "tlsSecretName": "mlflow-tls"},
        "metrics": {"enabled": False},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    },
    "external-session-pool-delete": {
        "database": {
            "external": {"host": "10.1.2.3", "credentialsSecret": {"name": "db", "usernameKey": "user"}},
            "pooler": {"mode": "session", "defaultPoolSize": 10, "maxDbConnections": 10, "replicas": 3},
        },
        "artifacts": {
            "s3": {
                "bucket": "artifacts",
                "endpoint": "http://minio.storage.svc:9000",
                "credentialsSecret": {"name": "s3"},
            }
        },
        "deletionPolicy": "Delete",
    },
}


def inputs_for(spec: dict[str, Any], password: str = "db-password") -> build.TrackingServerInputs:
    typed = TrackingServerSpec.model_validate(spec)
    return build.TrackingServerInputs(
        "mlflow",
        "ml",
        typed,
        typed.version,
        build.Credentials("mlflow", password),
        build.Credentials("admin", "admin-password"),
        pooler_credentials=build.Credentials(build.POOLER_CLIENT_USER, "pooler-password"),
    )


def render(case: str) -> str:
    objects = build.all_objects(inputs_for(CASES[case]), "db-password", "admin-password", "generated-key")
    return dump_objects(objects)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_match_golden_files(case: str) -> None:
    assert_matches_golden(f"trackingserver-{case}.yaml", render(case))


def test_every_pod_meets_pod_security_restricted() -> None:
    objects = [obj for spec in CASES.values() for obj in build.all_objects(inputs_for(spec), "p", "p", "k")]
    assert sum(len(pod_specs(obj)) for obj in objects) > len(CASES)  # several workloads per case were checked
    assert [problem for obj in objects for problem in restricted_problems(obj)] == []


def test_the_restricted_check_sees_init_containers_and_cronjobs() -> None:
    objects = build.all_objects(inputs_for(CASES["example"]), "p", "p", "k")
    cronjob = copy.deepcopy(next(obj for obj in objects if obj["kind"] == "CronJob"))
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["initContainers"] = [{"name": "init", "securityContext": {"allowPrivilegeEscalation": False}}]
    assert restricted_problems(cronjob) == [
        f"CronJob/{cronjob['metadata']['name']}: init keeps capabilities",
        f"CronJob/{cronjob['metadata']['name']}: init has a writable root",
    ]


def test_migration_goes_straight_to_postgres_and_the_server_through_the_pooler() -> None:
    uris = build.backend_uris(inputs_for(CASES["example"]))
    assert urlparse(uris["direct-uri"]).hostname == "mlflow-postgres-rw.ml.svc"
    assert urlparse(uris["pooled-uri"]).hostname == "mlflow-pgbouncer.ml.svc"
    assert uris["pooled-uri"].startswith("postgresql+psycopg2://")
    without_pooler = build.backend_uris(inputs_for(CASES["external-no-pooler-ingress"]))
    assert without_pooler["pooled-uri"] == without_pooler["direct-uri"]
    assert "sslmode=verify-full" in without_pooler["direct-uri"]


# mlflow gc's own --older-than regex (mlflow/cli/__init__.py, 3.17): d, h, m, s, each once, in that order.
# tests/integration/test_gc.py runs the real `mlflow gc` on these forms; this copy keeps the unit fast.
MLFLOW_GC_AGE = re.compile(r"^(([.\d]+?)d)?(([.\d]+?)h)?(([.\d]+?)m)?(([.\d]+?)s)?$")


@pytest.mark.parametrize(
    ("duration", "older_than"),
    [("30d", "30d"), ("1h30m", "1h30m"), ("30m1h", "1h30m"), ("90m", "1h30m"), ("1d1d", "2d"), ("500ms", "0.5s"),
     ("0s", "0s"), ("61s", "1m1s"), ("2h3ms", "2h0.003s")],
)  # fmt: skip
def test_gc_age_is_rendered_in_the_form_mlflow_gc_parses(duration: str, older_than: str) -> None:
    assert build.gc_older_than(duration) == older_than
    assert MLFLOW_GC_AGE.match(older_than)


def test_gc_jobs_carry_the_labels_the_trackingserver_lists_them_by() -> None:
    cronjob = build.get_gc_cronjob(inputs_for(CASES["example"]))
    assert cronjob is not None
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"] == cronjob["metadata"]["labels"]
    assert build.get_gc_cronjob(inputs_for(CASES["external-session-pool-delete"])) is None  # no retention


def test_gc_job_runs_the_script_from_its_configmap_read_only() -> None:
    inputs = inputs_for(CASES["example"])
    cronjob, configmap = build.get_gc_cronjob(inputs), build.get_gc_configmap(inputs)
    assert cronjob is not None and configmap is not None
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    script = configmap["data"][GC_SCRIPT]
    assert script == (ROOT / "operator/mlflow_operator/builders/templates" / GC_SCRIPT).read_text()
    assert container["command"] == ["python", f"/etc/mlflow-gc/{GC_SCRIPT}", "--older-than", "30d"]
    assert {"name": "script", "mountPath": "/etc/mlflow-gc", "readOnly": True} in container["volumeMounts"]
    assert {"name": "script", "configMap": {"name": configmap["metadata"]["name"]}} in pod["spec"]["volumes"]
    # The database password stays in the env, out of the command line.
    assert not any("BACKEND_STORE_URI" in arg for arg in container["command"])
    # The operator applies it with the CronJob, and owns it like every child.
    kinds = [(obj["kind"], obj["metadata"]["name"]) for obj in build.desired_server(inputs)]
    assert kinds.index(("ConfigMap", "mlflow-gc")) < kinds.index(("CronJob", "mlflow-gc"))
    assert build.get_gc_configmap(inputs_for(CASES["external-session-pool-delete"])) is None  # no retention


def test_postgres_max_connections_covers_every_pooler_replica() -> None:
    spec = TrackingServerSpec.model_validate(CASES["example"])
    assert int(build.postgres_parameters(spec)["max_connections"]) >= 2 * 50 + 1
    overridden = TrackingServerSpec.model_validate(
        {**CASES["example"], "database": {"managed": {"parameters": {"work_mem": "64MB"}}}}
    )
    assert build.postgres_parameters(overridden)["work_mem"] == "64MB"


def test_unknown_pgbouncer_settings_are_refused() -> None:
    with pytest.raises(UnsafeConfigValue, match="not allowed"):
        render_pgbouncer_ini(PgBouncerConfig("mlflow", "db", 5432, {"auth_query": "SELECT 1"}))


# ---- hostile strings: whatever users put in, the structure of what is rendered does not change

HOSTILE = st.text(alphabet=st.sampled_from([*"ab\"'\\:;#= @/%\n\r\t[]{}$", "é", "\u2028"]), min_size=1, max_size=40)


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@settings(max_examples=200, deadline=None)
@given(host=HOSTILE.filter(lambda s: not re.search(r"[\s/:]", s)), value=HOSTILE)
def test_pgbouncer_ini_keeps_its_keys_whatever_the_values(host: str, value: str) -> None:
    config = PgBouncerConfig("mlflow", host, 5432, {"server_tls_sslmode": value, "stats_users": value})
    parser = parse_ini(render_pgbouncer_ini(config))
    assert parser.sections() == ["databases", "pgbouncer"]
    assert list(parser["databases"]) == ["mlflow"]
    assert list(parser["pgbouncer"]) == ["server_tls_sslmode", "stats_users"]


@settings(max_examples=200, deadline=None)
@given(
    user=HOSTILE.filter(lambda s: "\n" not in s and "\r" not in s),
    password=HOSTILE.filter(lambda s: "\n" not in s and "\r" not in s),
)
def test_userlist_round_trips_any_credentials(user: str, password: str) -> None:
    line = userlist_line(user, password)
    assert line.count("\n") == 1 and line.endswith("\n")
    fields = re.fullmatch(r'"((?:[^"]|"")*)" "((?:[^"]|"")*)"\n', line)
    assert fields is not None
    assert (fields[1].replace('""', '"'), fields[2].replace('""', '"')) == (user, password)


def test_userlist_refuses_newlines() -> None:
    with pytest.raises(UnsafeConfigValue):
        userlist_line("user", "pass\nword")


@settings(max_examples=200, deadline=None)
@given(user=HOSTILE, password=HOSTILE)
def test_database_uris_round_trip_any_credentials(user: str, password: str) -> None:
    uri = build.postgres_uri(build.Credentials(user, password), "db.svc", 6432, "mlflow", "disable")
    parsed = urlparse(uri)
    assert (unquote(parsed.username or ""), unquote(parsed.password or "")) == (user, password)
    assert (parsed.hostname, parsed.port, parsed.path) == ("db.svc", 6432, "/mlflow")
    assert parse_qs(parsed.query) == {"sslmode": ["disable"], "connect_timeout": ["5"], "tcp_user_timeout": ["5000"]}


@settings(max_examples=100, deadline=None)
@given(password=HOSTILE)
def test_auth_config_keeps_its_keys_or_refuses(password: str) -> None:
    inputs = inputs_for(CASES["example"])
    inputs = build.TrackingServerInputs(
        inputs.name,
        inputs.namespace,
        inputs.spec,
        inputs.serving_version,
        inputs.database_credentials,
        build.Credentials("admin", password),
    )
    if "\n" in password or "\r" in password or password != password.strip():
        with pytest.raises(ValueError, match="admin credentials cannot"):
            build.render_auth_config(inputs)
        return
    # MLflow reads basic_auth.ini with configparser's defaults, % interpolation included.
    parser = configparser.ConfigParser()
    parser.read_string(build.render_auth_config(inputs))
    assert list(parser["mlflow"]) == [
        "default_permission",
        "database_uri",
        "admin_username",
        "admin_password",
        "authorization_function",
        "auth_cache_ttl_seconds",
    ]
    assert parser["mlflow"]["admin_password"] == password
    assert inputs.spec.auth is not None
    assert parser["mlflow"].getint("auth_cache_ttl_seconds") == inputs.spec.auth.credential_cache_seconds == 60


@settings(max_examples=50, deadline=None)
@given(annotation=HOSTILE, parameter=HOSTILE)
def test_user_strings_stay_single_values_in_objects(annotation: str, parameter: str) -> None:
    spec = {**CASES["external-no-pooler-ingress"]}
    spec["artifacts"] = {"s3": {"bucket": "b-1", "serviceAccountAnnotations": {"note": annotation}}}
    objects = build.all_objects(inputs_for(spec), "p", "p", "k")
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == {"note": annotation}
    managed = TrackingServerSpec.model_validate(
        {"database": {"managed": {"parameters": {"application_name": parameter}}}, "artifacts": spec["artifacts"]}
    )
    statefulset = build.get_postgres_statefulset("mlflow", "ml", managed, "pw")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index(f"application_name={parameter}") - 1] == "-c"


# ------------------------------------------------------------------------------------------ registry events


def server_pod(inputs: build.TrackingServerInputs) -> dict[str, Any]:
    deployment = next(o for o in build.desired_server(inputs) if o["kind"] == "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]
    return pod


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_registry_events_settings_follow_the_receiver() -> None:
    plain = inputs_for(CASES["example"])
    env = env_of(server_pod(plain))
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == {
        "secretKeyRef": {"name": "mlflow-registry-events", "key": "encryption-key"}
    }
    assert "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS" not in env  # no receiver: nothing may deliver to private addresses
    http = replace(plain, events_url="http://op.ops.svc:8443")
    assert env_of(server_pod(http))["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http"
    assert "initContainers" not in server_pod(http)["spec"]
    off = inputs_for({**CASES["example"], "registryEvents": {"enabled": False}})
    assert not [name for name in env_of(server_pod(off)) if name.startswith("MLFLOW_WEBHOOK")]
    assert "mlflow-registry-events" not in [o["metadata"]["name"] for o in build.all_objects(off, "p", "p", "k")]


def test_an_https_receiver_ca_is_added_to_what_the_server_trusts() -> None:
    https = replace(inputs_for(CASES["example"]), events_url="https://op.ops.svc:8443", events_ca="CA-1")
    pod = server_pod(https)
    assert env_of(pod)["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "https"
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == pod["spec"]["containers"][0]["image"]
    assert "/etc/ssl/certs/ca-certificates.crt" in init["command"][-1]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/ssl/certs/ca-certificates.crt"]["subPath"] == "bundle.crt"
    rolled = server_pod(replace(https, events_ca="CA-2"))
    hash_key = "mlflow.operator.dev/config-hash"
    assert rolled["metadata"]["annotations"][hash_key] != pod["metadata"]["annotations"][hash_key]
    deployment = next(o for o in build.desired_server(https) if o["kind"] == "Deployment")
    assert restricted_problems(deployment) == []
