"""The ModelDeployment's model server pod against real components: the init containers and the server the
operator renders, run as local processes from the model server image's venv (tests/integration/model_server.py)
against a real MLflow tracking server with basic auth and its artifact proxy (--serve-artifacts).

Models are logged and registered with the real MLflow client from the same venv (scikit-learn is there), so
their predictions computed at logging time are what "the model gives locally".
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import TrackPlan
from mlflow_operator.builders import analysis as queries
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.builders.common import Obj
from mlflow_operator.builders.images import MLFLOW_VERSION
from tests.integration.dataplane import HOST, Postgres, option_value, server_venv, wait_for
from tests.integration.model_server import (
    ContainerResult,
    ModelPod,
    model_server_venv,
    rendered_deployment,
    run_model_python,
)
from tests.integration.registry_server import Admin, RegistryServer, migrated_server, new_admin

INSTANCE = "fraud"
NAMESPACE = "ml"
SECRET = "mlflow-credentials"  # the ModelDeployment's credentialsSecret: username and password keys
SKLEARN_MODEL = "house-prices"
BROKEN_LOAD_MODEL = "needs-feature-store"
MISSING_FLAVOUR_MODEL = "needs-missing-library"
SLOW_MODEL = "slow-echo"
CORRUPTED_MODEL = "house-prices-corrupted"
SLOW_TIMEOUT = 2  # seconds: the slow model's request timeout, set in its runtime.env
LOAD_ERROR = "feature store unreachable: cannot load the embeddings"
MISSING_MODULE = "flavour_not_in_this_image"

# Logs and registers the models the tests serve (one run each) and prints, as JSON, their versions, where
# their artifacts are, and for the scikit-learn model a frame with the predictions it gives here.
LOG_MODELS_SCRIPT = """\
import json, os, tempfile

import mlflow
import pandas as pd
from sklearn.linear_model import LinearRegression

params = json.loads(os.environ["TEST_PARAMS"])
mlflow.set_experiment("model-server")
# Pinned requirements: inferring them would load each model in yet another process.
requirements = ["mlflow==" + mlflow.__version__]
out = {}


def record(key, info):
    out[key] = {
        "version": int(info.registered_model_version),
        "model_id": info.model_id,
        "artifact_location": mlflow.get_logged_model(info.model_id).artifact_location,
    }


train = pd.DataFrame({"rooms": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "age": [30.0, 12.0, 7.0, 50.0, 3.0, 21.0]})
price = 3.5 * train["rooms"] - 0.25 * train["age"] + 10 + pd.Series([0.3, -0.2, 0.1, 0.4, -0.5, 0.2])
regression = LinearRegression().fit(train, price)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        regression, name="model", input_example=train.head(2), registered_model_name=params["sklearn"],
        pip_requirements=requirements + ["scikit-learn"],
    )
record("sklearn", info)
frame = pd.DataFrame({"rooms": [2.5, 7.0, 0.0], "age": [40.0, 1.0, 18.0]})
out["sklearn"]["frame"] = {"columns": list(frame.columns), "data": frame.values.tolist()}
out["sklearn"]["predictions"] = regression.predict(frame).tolist()
# The same model again, under another name: the test corrupts its stored artifact.
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        regression, name="model", registered_model_name=params["corrupted"], pip_requirements=requirements,
    )
record("corrupted", info)


class NeedsFeatureStore(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError(params["load_error"] + " (model " + params["broken_load"] + ")")

    def predict(self, context, model_input, params=None):
        return model_input


with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="model", python_model=NeedsFeatureStore(), registered_model_name=params["broken_load"],
        pip_requirements=requirements,
    )
record("broken_load", info)

# A model of a flavour whose library the image lacks: its MLmodel names a loader module that is not installed.
data = os.path.join(tempfile.mkdtemp(), "weights.bin")
with open(data, "wb") as handle:
    handle.write(b"weights")
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="model", loader_module=params["missing_module"], data_path=data,
        registered_model_name=params["missing_flavour"], pip_requirements=requirements,
    )
record("missing_flavour", info)


class SlowEcho(mlflow.pyfunc.PythonModel):
    # Touches the files named in `marker` when a request starts, then takes `seconds`: an in-flight request.
    def predict(self, context, model_input, params=None):
        import pathlib, time

        for marker in model_input["marker"]:
            if marker:
                pathlib.Path(marker).touch()
        time.sleep(float(model_input["seconds"].max()))
        return (model_input["seconds"] + params["offset"]).tolist()


# An input example with params: check-model predicts it with them.
example = (pd.DataFrame({"seconds": [0.0], "marker": [""]}), {"offset": 0.5})
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="model", python_model=SlowEcho(), input_example=example, registered_model_name=params["slow"],
        pip_requirements=requirements,
    )
record("slow", info)
print(json.dumps(out))
"""


@dataclass
class Registry:
    server: RegistryServer
    admin: Admin
    logs: Path
    artifacts: Path  # the server's --artifacts-destination

    def stored(self, artifact_location: str) -> Path:
        """Where the server keeps the artifacts of mlflow-artifacts:/<path>."""
        return self.artifacts / artifact_location.removeprefix("mlflow-artifacts:/")

    @property
    def secrets(self) -> dict[tuple[str, str], str]:
        """The credentialsSecret as the user would create it, holding the admin's credentials."""
        return {(SECRET, "username"): self.admin.username, (SECRET, "password"): self.admin.password}


@pytest.fixture(scope="module")
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Postgres and `mlflow server --serve-artifacts` with MLflow's basic-auth app."""
    # Fail fast, with "run `make deps`", before anything starts.
    model_server_venv()
    server_venv()
    logs = tmp_path_factory.mktemp("model-server-logs")
    artifacts = tmp_path_factory.mktemp("model-server-artifacts")
    failed_before = request.session.testsfailed
    with ExitStack() as stack:
        postgres = stack.enter_context(Postgres(log_dir=logs))
        admin = new_admin()
        server = migrated_server(postgres, "models", artifacts, logs, admin=admin)
        stack.callback(server.stop)
        yield Registry(server, admin, logs, artifacts)
        if request.session.testsfailed > failed_before:
            print(server.log_tail())


@pytest.fixture(scope="module")
def models(registry: Registry) -> dict[str, Any]:
    """The registered models, logged by an authenticated client: version, artifact_location (and more)."""
    env = {
        "MLFLOW_TRACKING_URI": registry.server.url,
        "MLFLOW_TRACKING_USERNAME": registry.admin.username,
        "MLFLOW_TRACKING_PASSWORD": registry.admin.password,
        "TEST_PARAMS": json_params(),
    }
    result: dict[str, Any] = json.loads(run_model_python(LOG_MODELS_SCRIPT, env=env).strip().splitlines()[-1])
    return result


def json_params() -> str:
    return json.dumps(
        {
            "sklearn": SKLEARN_MODEL,
            "broken_load": BROKEN_LOAD_MODEL,
            "missing_flavour": MISSING_FLAVOUR_MODEL,
            "slow": SLOW_MODEL,
            "corrupted": CORRUPTED_MODEL,
            "load_error": LOAD_ERROR,
            "missing_module": MISSING_MODULE,
        }
    )


def render(
    registry: Registry, model: str, version: int, *, credentials: bool = True, env: dict[str, str] | None = None
) -> Obj:
    """The Deployment the operator renders for a ModelDeployment pinned to model/version, its registry the
    test server, reached with the credentialsSecret (or without credentials); env: its runtime.env."""
    spec: dict[str, Any] = {"trackingUri": registry.server.url, "model": {"registeredModel": model, "version": version}}
    if env:
        spec["runtime"] = {"env": [{"name": name, "value": value} for name, value in env.items()]}
    secret = None
    if credentials:
        spec["credentialsSecret"] = {"name": SECRET}
        secret = RegistryCredentials(name=SECRET)
    typed = ModelDeploymentSpec.model_validate(spec)
    plans = (TrackPlan("stable", version),)
    inputs = build.ModelDeploymentInputs(INSTANCE, NAMESPACE, typed, registry.server.url, secret, plans)
    return rendered_deployment(inputs, version)


def new_pod(
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
    model: str,
    version: int,
    *,
    credentials: bool = True,
    env: dict[str, str] | None = None,
) -> ModelPod:
    deployment = render(registry, model, version, credentials=credentials, env=env)
    return ModelPod(deployment, tmp_path_factory.mktemp(f"pod-{model}-v{version}"), secrets=registry.secrets)


def models_dir(pod: ModelPod) -> Path:
    return pod.mount_dir(pod.container("fetch-model"), build.MODEL_DIR)


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under directory: its content's sha256 and its mtime."""
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def outputs(results: list[ContainerResult]) -> str:
    return "\n".join(
        f"--- {r.name} exited {r.returncode} after {r.seconds:.1f} s:\n{r.output[-3000:]}" for r in results
    )


@dataclass
class Served:
    pod: ModelPod
    fetch: ContainerResult
    check: ContainerResult
    fetched: dict[str, tuple[str, int]]  # the models dir after fetch-model


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, registry: Registry, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The scikit-learn model's pod: init containers run, server ready."""
    pod = new_pod(registry, tmp_path_factory, SKLEARN_MODEL, models["sklearn"]["version"])
    failed_before = request.session.testsfailed
    try:
        fetch = pod.run_init("fetch-model")
        assert fetch.succeeded, outputs([fetch])
        fetched = snapshot(models_dir(pod))
        check = pod.run_init("check-model")
        assert check.succeeded, outputs([fetch, check])
        pod.start_server()
        pod.wait_ready()
        yield Served(pod, fetch, check, fetched)
        if request.session.testsfailed > failed_before:
            print(pod.server_log()[-4000:])
    finally:
        pod.close()


def test_fetch_model_downloads_the_version_through_the_artifact_proxy(served: Served, models: dict[str, Any]) -> None:
    model = models["sklearn"]
    # Its artifacts are behind the tracking server's proxy: the pod reached them over HTTP, with credentials.
    assert model["artifact_location"].startswith("mlflow-artifacts:/")
    assert served.fetch.succeeded
    mlmodel = (models_dir(served.pod) / "MLmodel").read_text()
    assert f"model_id: {model['model_id']}" in mlmodel
    assert "sklearn:" in mlmodel


def test_check_model_loads_the_model_and_answers_its_input_example(served: Served) -> None:
    assert served.check.succeeded
    assert "model loaded and answered its input example" in served.check.output


def test_probes_and_version_answer(served: Served) -> None:
    pod = served.pod
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = pod.probe_path(probe)
        assert pod.get(path).status == 200, f"{probe} GET {path}"
    version = pod.get("/version")
    assert (version.status, version.body.decode()) == (200, MLFLOW_VERSION)


def test_invocations_return_the_models_own_predictions(served: Served, models: dict[str, Any]) -> None:
    model = models["sklearn"]
    response = served.pod.post_json("/invocations", {"dataframe_split": model["frame"]})
    assert response.status == 200, response.body
    assert response.json()["predictions"] == model["predictions"]
    assert len(set(model["predictions"])) == len(model["predictions"])  # not a constant


def test_invocations_enforce_the_logged_signature(served: Served, models: dict[str, Any]) -> None:
    frame = models["sklearn"]["frame"]
    without_age = {"columns": ["rooms"], "data": [[row[0]] for row in frame["data"]]}
    response = served.pod.post_json("/invocations", {"dataframe_split": without_age})
    assert response.status == 400
    assert "age" in response.body.decode()


def test_models_dir_is_left_as_fetched(served: Served) -> None:
    """check-model and the server mount the models read-only: they must not need to write there."""
    assert snapshot(models_dir(served.pod)) == served.fetched
    assert served.fetched  # fetched something


@pytest.mark.parametrize(
    ("key", "model", "expected"),
    [
        ("broken_load", BROKEN_LOAD_MODEL, f"RuntimeError: {LOAD_ERROR}"),
        ("missing_flavour", MISSING_FLAVOUR_MODEL, f"No module named '{MISSING_MODULE}'"),
    ],
)
def test_check_model_refuses_a_model_that_cannot_load(
    registry: Registry,
    models: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    key: str,
    model: str,
    expected: str,
) -> None:
    pod = new_pod(registry, tmp_path_factory, model, models[key]["version"])
    results = pod.run_init_containers()
    assert [(r.name, r.succeeded) for r in results] == [("fetch-model", True), ("check-model", False)], outputs(results)
    assert expected in results[-1].output, outputs(results)


def test_check_model_refuses_a_corrupted_artifact(
    registry: Registry, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = models["corrupted"]
    stored = registry.stored(model["artifact_location"]) / "model.skops"
    stored.write_bytes(stored.read_bytes()[:200])  # truncated, as an interrupted upload leaves it
    pod = new_pod(registry, tmp_path_factory, CORRUPTED_MODEL, model["version"])
    results = pod.run_init_containers()
    assert [(r.name, r.succeeded) for r in results] == [("fetch-model", True), ("check-model", False)], outputs(results)
    assert "BadZipFile" in results[-1].output, outputs(results)


# After test_models_dir_is_left_as_fetched: this rewrites the served pod's model files (same contents).
def test_fetch_model_runs_again_over_its_own_download(served: Served) -> None:
    """Init containers run again in the same emptyDir when the pod's sandbox is recreated (a node reboot):
    fetch-model must succeed over a complete download, and check-model after it."""
    pod = served.pod
    results = [pod.run_init("fetch-model"), pod.run_init("check-model")]
    assert all(r.succeeded for r in results), outputs(results)
    contents = {path: digest for path, (digest, _) in snapshot(models_dir(pod)).items()}
    assert contents == {path: digest for path, (digest, _) in served.fetched.items()}


def test_fetch_model_fails_for_a_version_that_does_not_exist(
    registry: Registry, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    version = models["sklearn"]["version"] + 41
    pod = new_pod(registry, tmp_path_factory, SKLEARN_MODEL, version)
    results = pod.run_init_containers()
    assert [(r.name, r.succeeded) for r in results] == [("fetch-model", False)], outputs(results)
    assert "RESOURCE_DOES_NOT_EXIST" in results[0].output, outputs(results)
    assert not any(models_dir(pod).iterdir())


def test_fetch_model_without_credentials_is_refused(
    registry: Registry, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    pod = new_pod(registry, tmp_path_factory, SKLEARN_MODEL, models["sklearn"]["version"], credentials=False)
    assert "MLFLOW_TRACKING_PASSWORD" not in pod.env(pod.container("fetch-model"))
    results = pod.run_init_containers()
    assert [(r.name, r.succeeded) for r in results] == [("fetch-model", False)], outputs(results)
    assert "401" in results[0].output, outputs(results)


@dataclass
class SlowServed:
    pod: ModelPod
    results: list[ContainerResult]


@pytest.fixture(scope="module")
def slow_served(
    request: pytest.FixtureRequest, registry: Registry, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlowServed]:
    """The slow model's pod, its request timeout set by the user (runtime.env overrides the operator's)."""
    env = {"MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(SLOW_TIMEOUT)}
    pod = new_pod(registry, tmp_path_factory, SLOW_MODEL, models["slow"]["version"], env=env)
    failed_before = request.session.testsfailed
    try:
        results = pod.run_init_containers()
        assert all(r.succeeded for r in results), outputs(results)
        pod.start_server()
        pod.wait_ready()
        yield SlowServed(pod, results)
        if request.session.testsfailed > failed_before:
            print(pod.server_log()[-4000:])
    finally:
        pod.close()


def slow_request(seconds: float, marker: Path | str = "") -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["seconds", "marker"], "data": [[seconds, str(marker)]]}}


def test_check_model_predicts_the_input_example_with_its_params(slow_served: SlowServed) -> None:
    check = slow_served.results[-1]
    assert check.name == "check-model"
    assert "model loaded and answered its input example: [0.5]" in check.output, check.output


def test_the_request_timeout_is_the_scoring_servers(slow_served: SlowServed) -> None:
    pod = slow_served.pod
    env = pod.env(pod.server_container)
    assert env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == str(SLOW_TIMEOUT)  # the user's value, in place
    quick = pod.post_json("/invocations", slow_request(0.1))
    assert (quick.status, quick.json()) == (200, {"predictions": [0.6]})
    late = pod.post_json("/invocations", slow_request(SLOW_TIMEOUT + 2))
    assert late.status == 504, late.body


def test_rendered_variables_are_mlflows(slow_served: SlowServed) -> None:
    """Every MLFLOW_ variable the operator sets is one the image's MLflow reads, and the model path variable
    is the scoring app's."""
    script = (
        "import json, mlflow.environment_variables as v\n"
        "from mlflow.pyfunc import scoring_server\n"
        "names = [x.name for x in vars(v).values() if isinstance(x, v._EnvironmentVariable)]\n"
        "print(json.dumps({'names': names, 'model_path': scoring_server._SERVER_MODEL_PATH}))\n"
    )
    known = json.loads(run_model_python(script).strip().splitlines()[-1])
    pod = slow_served.pod
    rendered = {item["name"] for c in [*pod.init_containers, pod.server_container] for item in c["env"]}
    mlflow_vars = {name for name in rendered if name.startswith("MLFLOW_")}
    assert mlflow_vars >= {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"}
    assert mlflow_vars <= set(known["names"])
    assert known["model_path"] == build.MODEL_PATH_ENV
    assert build.MODEL_PATH_ENV in rendered


def scraped(pod: ModelPod) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The server's metrics port, scraped: {(series name, labels): value}."""
    with urllib.request.urlopen(f"http://{HOST}:{pod.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_request_metrics_count_answers_and_model_errors_on_their_own_port(
    slow_served: SlowServed, models: dict[str, Any]
) -> None:
    pod = slow_served.pod
    identity = {"model_deployment": INSTANCE, "model_deployment_namespace": NAMESPACE}
    identity["model_version"] = str(models["slow"]["version"])

    def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, frozenset({**identity, **labels}.items())

    answered = series(queries.REQUESTS, path="/invocations", method="POST", code="200")
    refused = series(queries.REQUESTS, path="/invocations", method="POST", code="400")
    model_errors = series(queries.PREDICTION_ERRORS)
    timed = series(queries.LATENCY_BUCKETS.removesuffix("_bucket") + "_count", path="/invocations")
    before = scraped(pod)
    assert pod.post_json("/invocations", slow_request(0)).status == 200
    # The model raises (it cannot create the marker file): MLflow answers 400, the server counts a model error.
    crashed = pod.post_json("/invocations", slow_request(0, "/nonexistent-directory/marker"))
    assert crashed.status == 400, crashed.body
    # Input the signature refuses is a 400 too, but not a model error.
    refused_input = pod.post_json("/invocations", {"dataframe_split": {"columns": ["seconds"], "data": [[0]]}})
    assert refused_input.status == 400, refused_input.body
    after = scraped(pod)
    assert after[answered] - before.get(answered, 0) == 1
    assert after[refused] - before.get(refused, 0) == 2
    assert after[model_errors] - before.get(model_errors, 0) == 1
    assert after[timed] - before.get(timed, 0) == 3
    # The probes' port does not serve metrics, and the metrics port is not the probes'.
    assert pod.get("/metrics").status == 404
    assert str(pod.metrics_port) != option_value(pod.argv(pod.server_container), "--port")


# Last: it stops the slow model's server.
def test_sigterm_drains_the_in_flight_request_and_exits_0_within_the_grace_period(
    slow_served: SlowServed, tmp_path: Path
) -> None:
    pod = slow_served.pod
    marker = tmp_path / "request-started"
    answers: list[Any] = []
    request = threading.Thread(target=lambda: answers.append(pod.post_json("/invocations", slow_request(1.5, marker))))
    request.start()
    assert wait_for(marker.exists, timeout=30), "the request never reached the model"
    # The kubelet runs the preStop sleep first, within the same grace period, then sends SIGTERM.
    budget = pod.termination_grace_seconds - pod.pre_stop_seconds
    code, seconds = pod.terminate_server(timeout=budget)
    request.join(timeout=30)
    log = pod.server_log()[-3000:]
    assert code == 0, log
    assert seconds < budget
    assert [(answer.status, answer.json()) for answer in answers] == [(200, {"predictions": [2.0]})], log
