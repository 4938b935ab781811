"""The example TrackingServer, as the operator renders it, serving the real MLflow client.

Postgres <- PgBouncer (the rendered pgbouncer.ini and userlist.txt) <- `mlflow server` (the rendered argv and
env, basic auth from the rendered basic_auth.ini) -> MinIO (artifacts, proxied by the server). The schema is
migrated by the rendered migration Job's command, straight on Postgres. tests/integration/rendered.py does the
only rewrites: addresses, mount paths and Secret values. The plane is tests/integration/tracking_plane.py's;
MinIO is the session's (tests/integration/conftest.py).
"""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlflow_operator.builders.trackingserver import PROMETHEUS_DIR, Credentials, get_tracking_deployment
from tests.integration.dataplane import (
    HOST,
    RUN_DATA_SCRIPT,
    Postgres,
    assert_run_data,
    free_port,
    run_checked,
    server_venv,
    wait_for,
)
from tests.integration.s3_servers import S3Server
from tests.integration.tracking_plane import (
    EXPERIMENT_SCRIPT_HEAD,
    Plane,
    rendered_plane,
    run_client,
    tracking_inputs,
)

HOSTILE_PASSWORD = "p@ss:w/rd%\"' ;#\\ x"

# Runs in the server's virtualenv (the full mlflow package); prints what it read back as one JSON line.
CLIENT_SCRIPT = (
    EXPERIMENT_SCRIPT_HEAD
    + """\
import pandas as pd

"""
    + RUN_DATA_SCRIPT
    + """

with mlflow.start_run(experiment_id=experiment_id) as run:
    log_run_data(workdir, "hello from the rendered server\\n")
    # Pinned requirements: inferring them would load the model in yet another process.
    info = mlflow.pyfunc.log_model(
        name="model", python_model=AddN(10), registered_model_name=params["model"],
        pip_requirements=["mlflow==" + mlflow.__version__],
    )
run_id = run.info.run_id
downloaded = client.download_artifacts(run_id, "notes/hello.txt", str(workdir / "download"))
registered = client.get_registered_model(params["model"])
version = client.get_model_version(params["model"], info.registered_model_version)
found = client.search_model_versions(f"name='{params['model']}'")
loaded = mlflow.pyfunc.load_model(f"models:/{params['model']}/{version.version}")
print(json.dumps({
    "experiment_id": experiment_id,
    "run_id": run_id,
    "model_id": info.model_id,
    "artifact_location": client.get_experiment(experiment_id).artifact_location,
    **read_run_data(client, run_id, downloaded),
    "registered_name": registered.name,
    "version": version.version,
    "version_status": version.status,
    "version_run_id": version.run_id,
    "version_source": version.source,
    "found_versions": sorted((v.name, v.version) for v in found),
    "prediction": loaded.predict(pd.DataFrame({"x": [1, 2]})).tolist(),
}))
"""
)

# The hostile-password test needs only the database: runs and params, no artifacts or models.
DATABASE_SCRIPT = """\
import json, os
import mlflow
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])
experiment_id = mlflow.create_experiment(params["experiment"])
with mlflow.start_run(experiment_id=experiment_id) as run:
    mlflow.log_param("password", "hostile")
    mlflow.log_metric("ok", 1.0)
read = MlflowClient().get_run(run.info.run_id)
print(json.dumps({"params": read.data.params, "metrics": read.data.metrics}))
"""


def http_get(url: str, credentials: Credentials | None = None, *, host: str | None = None) -> tuple[int, str, str]:
    """Status, Content-Type and body of a GET, with basic auth when credentials are given and the Host
    header a client of the Service (or an attacker) would send."""
    headers = {"Host": host} if host else {}
    if credentials is not None:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def pgbouncer_servers(plane: Plane) -> int:
    """Server connections PgBouncer holds, from its admin console through the exporter's rendered
    connection string (stats_users lets the database user in)."""
    uri = plane.secrets[(plane.inputs.names.pooler_auth, "exporter-connection-string")]
    psql = plane.postgres.bin_dir / "psql"
    # The console speaks the simple query protocol only; -X skips any psqlrc.
    output = run_checked([str(psql), uri, "-X", "-tA", "-c", "SHOW SERVERS"], what="SHOW SERVERS", timeout=30)
    return len([line for line in output.splitlines() if line.strip()])


def bucket_objects(plane: Plane) -> dict[str, bytes]:
    client = plane.s3.client()
    listing = client.list_objects_v2(Bucket=plane.bucket)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    return {key: client.get_object(Bucket=plane.bucket, Key=key)["Body"].read() for key in keys}


def set_role_password(postgres: Postgres, password: str) -> None:
    """ALTER ROLE with the password as a standard SQL literal (quotes doubled, backslashes literal)."""
    literal = "'" + password.replace("'", "''") + "'"
    postgres.psql(f"ALTER ROLE {postgres.user} PASSWORD {literal}")
    postgres.password = password


# --- tests ----------------------------------------------------------------------------------------------------


def test_example_tracking_server_serves_the_mlflow_client(minio: S3Server, tmp_path: Path) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, postgres.password))
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            with postgres.sample_connections() as sampler:
                read = run_client(plane, CLIENT_SCRIPT, {"experiment": "rendered", "model": "add-ten"})
            print(f"peak Postgres connections: {sampler.peak}; objects: {sorted(bucket_objects(plane))}")
            assert_tracking_and_registry(read)
            assert_artifacts_in_bucket(plane, read)
            assert_auth_and_metrics(plane)
            assert_metrics_sidecar_needs_no_credentials(plane, tmp_path / "prometheus")
            assert_allowed_hosts(plane)
            assert_pooled_connections(plane, sampler.peak)


def assert_tracking_and_registry(read: dict[str, Any]) -> None:
    assert_run_data(read, "hello from the rendered server\n")
    # Proxied artifacts: the client knows only the server; the server holds the S3 credentials.
    assert read["artifact_location"] == f"mlflow-artifacts:/{read['experiment_id']}"
    assert read["registered_name"] == "add-ten"
    assert (read["version"], read["version_status"], read["version_run_id"]) == ("1", "READY", read["run_id"])
    assert read["version_source"] == f"models:/{read['model_id']}"
    assert read["found_versions"] == [["add-ten", "1"]]
    assert read["prediction"] == [11, 12]


def assert_artifacts_in_bucket(plane: Plane, read: dict[str, Any]) -> None:
    """The server wrote the objects under artifacts.s3.prefix, runs and logged models apart."""
    objects = bucket_objects(plane)
    prefix = f"{plane.inputs.spec.artifacts.s3.prefix}/{read['experiment_id']}"
    assert all(key.startswith(prefix + "/") for key in objects), sorted(objects)
    assert objects[f"{prefix}/{read['run_id']}/artifacts/notes/hello.txt"] == b"hello from the rendered server\n"
    model = f"{prefix}/models/{read['model_id']}/artifacts"
    assert {f"{model}/MLmodel", f"{model}/python_model.pkl"} <= set(objects), sorted(objects)


def assert_auth_and_metrics(plane: Plane) -> None:
    admin = plane.inputs.admin_credentials
    assert admin is not None
    url = plane.server.url
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_get(api)[0] == 401
    assert http_get(api, Credentials(admin.username, admin.password + "-wrong"))[0] == 401
    assert http_get(api, admin)[0] == 200
    assert http_get(f"{url}/health")[0] == 200  # probes need no credentials
    status, content_type, body = http_get(f"{url}/metrics", admin)
    assert (status, content_type.split(";")[0]) == (200, "text/plain"), body[:500]
    assert "# TYPE mlflow_http_request_total counter" in body, body[:2000]
    assert 'mlflow_http_request_total{method="POST",status="200"}' in body, body[:2000]
    # Basic auth guards /metrics too: a scrape without credentials is refused.
    assert http_get(f"{url}/metrics")[0] == 401


def assert_metrics_sidecar_needs_no_credentials(plane: Plane, prometheus_dir: Path) -> None:
    """The rendered metrics sidecar, on the server's multiprocess files: the request counters without
    credentials, where the server's own /metrics wants an admin's."""
    deployment = get_tracking_deployment(plane.inputs)
    (sidecar,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "metrics"]
    assert sidecar["command"][0] == "python", sidecar["command"]
    port = free_port()
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] == PROMETHEUS_DIR  # where the server's --expose-prometheus writes
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(prometheus_dir), "METRICS_PORT": str(port), "METRICS_ADDRESS": HOST}
    argv = [str(server_venv() / "bin" / "python"), *sidecar["command"][1:]]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://{HOST}:{port}/metrics"

    def answering() -> bool:
        try:
            return http_get(url)[0] == 200
        except urllib.error.URLError:  # not listening yet
            return False

    try:
        assert wait_for(answering, timeout=30), process.poll()
        status, _, body = http_get(url)
        assert status == 200 and 'mlflow_http_request_total{method="POST",status="200"}' in body, body[:2000]
    finally:
        process.terminate()
        process.wait(timeout=10)


def assert_allowed_hosts(plane: Plane) -> None:
    """The rendered allowed hosts are in force under gunicorn: the Service name passes, others do not."""
    admin = plane.inputs.admin_credentials
    api = f"{plane.server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    service = f"{plane.inputs.name}.{plane.inputs.namespace}.svc:5000"
    assert http_get(api, admin, host=service)[0] == 200
    assert http_get(api, admin, host="attacker.example:5000")[0] == 403


def assert_pooled_connections(plane: Plane, peak: int) -> None:
    """Postgres saw no more connections than PgBouncer's pool, and every one of them is PgBouncer's."""
    pooler = plane.inputs.spec.database.pooler
    assert 1 <= peak <= min(pooler.default_pool_size, pooler.max_db_connections), peak
    # Idle now: the counts settle once logins finish (server_idle_timeout is far away).
    assert wait_for(lambda: plane.postgres.server_connections() == pgbouncer_servers(plane), timeout=10), (
        plane.postgres.server_connections(),
        pgbouncer_servers(plane),
    )


def test_hostile_database_password_works_through_rendered_uris_and_userlist(minio: S3Server, tmp_path: Path) -> None:
    bucket = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        set_role_password(postgres, HOSTILE_PASSWORD)
        assert_password_checked(postgres, HOSTILE_PASSWORD)
        inputs = tracking_inputs(minio, bucket, Credentials(postgres.user, HOSTILE_PASSWORD))
        # The migration (direct URI), PgBouncer (userlist.txt, both ways) and the server's start-up
        # (pooled URI; basic_auth.ini's database_uri) all used the password to get this far.
        with rendered_plane(postgres, inputs, minio, bucket, tmp_path) as plane:
            read = run_client(plane, DATABASE_SCRIPT, {"experiment": "hostile"})
            assert read == {"params": {"password": "hostile"}, "metrics": {"ok": 1.0}}
            # The admin's credentials are checked against the auth store, through PgBouncer.
            api = f"{plane.server.url}/api/2.0/mlflow/experiments/search?max_results=1"
            assert http_get(api, plane.inputs.admin_credentials)[0] == 200
            assert pgbouncer_servers(plane) >= 1  # the exporter's connection string carries the password too


def assert_password_checked(postgres: Postgres, password: str) -> None:
    """The role has exactly this password, and Postgres checks it (scram-sha-256, not trust)."""
    argv = [str(postgres.bin_dir / "psql"), "-h", postgres.host, "-p", str(postgres.port), "-U", postgres.user]
    argv += ["-d", postgres.dbname, "-X", "-tA", "-c", "SELECT 1"]
    for attempt, expected in ((password, 0), (password[:-1], 2)):
        result = subprocess.run(
            argv, env={"PGPASSWORD": attempt}, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == expected, result.stderr
