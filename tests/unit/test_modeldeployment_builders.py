"""Golden files pin every object a ModelDeployment renders; routers split traffic as documented.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 make unit`, and review the diff.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import TrackPlan, Weights
from mlflow_operator.builders import modeldeployment as build
from mlflow_operator.builders.images import MLFLOW_VERSION
from mlflow_operator.builders.routers import (
    GatewayAPIRouter,
    ReplicaRatioRouter,
    RouteTarget,
    StableOnlyRouter,
    replicaratio,
    router_for,
)
from mlflow_operator.logic import rollout
from mlflow_operator.logic.conditions import parse_time
from tests.unit.golden import GOLDEN, assert_matches_golden, dump_objects
from tests.unit.pod_security import containers, pod_specs, restricted_problems

GATEWAY_ROUTING = {
    "parentRefs": [{"name": "public-gateway", "namespace": "gateways", "sectionName": "https"}],
    "hostnames": ["fraud.example.com"],
    "headerMatch": {"name": "x-canary", "value": "always"},
    "mirrorPercent": 10,
}
ANALYSIS = {
    "interval": "30s",
    "metrics": [{"name": "error-rate", "query": 'errors{service="{{canary}}"}', "thresholdRange": {"max": 0.01}}],
}
STEPS = [{"setWeight": 20}, {"analysis": {"count": 3}}, {"setWeight": 50}, {"pause": {}}]


def case(
    spec: dict[str, Any],
    tracks: tuple[TrackPlan, ...],
    weights: Weights,
    credentials: RegistryCredentials | None = None,
    tracking_uri: str = "http://mlflow.ml.svc:5000",
) -> build.ModelDeploymentInputs:
    typed = ModelDeploymentSpec.model_validate(spec)
    return build.ModelDeploymentInputs("fraud", "ml", typed, tracking_uri, credentials, tracks, weights)


CASES: dict[str, build.ModelDeploymentInputs] = {
    # Mid-rollout at 20% behind an HTTPRoute with A/B header routing and 10% shadow traffic.
    "gatewayapi-header-mirror": case(
        {
            "trackingServerRef": {"name": "mlflow"},
            "model": {"registeredModel": "fraud", "alias": "champion"},
            "replicas": 2,
            "strategy": {"canary": {"steps": STEPS}},
            "trafficRouting": {"gatewayAPI": GATEWAY_ROUTING},
            "analysis": ANALYSIS,
            "promotion": {"setAlias": "production"},
        },
        (TrackPlan("stable", 3), TrackPlan("canary", 4)),
        Weights(20, canary_available=True),
        credentials=RegistryCredentials(name="mlflow-admin"),
    ),
    # Mid-rollout at 30% of 5 replicas, no router; a custom image, resources and env (HOME overridden).
    "replicaratio": case(
        {
            "trackingUri": "https://mlflow.example.com",
            "credentialsSecret": {"name": "mlflow-creds", "usernameKey": "user", "passwordKey": "pass"},
            "model": {"registeredModel": "fraud", "alias": "champion"},
            "replicas": 5,
            "runtime": {
                "image": "registry.example.com/ml/fraud-server:1.4",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
                "env": [{"name": "HOME", "value": "/tmp/home"}, {"name": "OMP_NUM_THREADS", "value": "2"}],
            },
            "strategy": {"canary": {"steps": STEPS}},
            "trafficRouting": {"replicaRatio": {}},
            "analysis": ANALYSIS,
        },
        (TrackPlan("stable", 3, 70), TrackPlan("canary", 4, 30)),
        Weights(30, canary_available=True),
        credentials=RegistryCredentials(name="mlflow-creds", username_key="user", password_key="pass"),
        tracking_uri="https://mlflow.example.com",
    ),
    # A pinned version, autoscaled, with a bearer token; nothing rolling out.
    "pinned-autoscaling": case(
        {
            "trackingUri": "https://mlflow.example.com",
            "credentialsSecret": {"name": "mlflow-token", "tokenKey": "token"},
            "model": {"registeredModel": "fraud", "version": 7},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70},
        },
        (TrackPlan("stable", 7),),
        Weights(),
        credentials=RegistryCredentials(name="mlflow-token", token_key="token"),
        tracking_uri="https://mlflow.example.com",
    ),
    # No strategy: version 2 starts at full size next to version 1 and takes over once ready.
    "no-strategy": case(
        {"trackingUri": "http://mlflow.ml.svc:5000", "model": {"registeredModel": "fraud", "alias": "champion"}},
        (TrackPlan("stable", 1), TrackPlan("canary", 2)),
        Weights(0, canary_available=False),
    ),
}


def render(inputs: build.ModelDeploymentInputs) -> str:
    return dump_objects(build.all_objects(inputs))


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_objects_match_golden_files(name: str) -> None:
    assert_matches_golden(f"modeldeployment-{name}.yaml", render(CASES[name]))


def test_every_pod_meets_pod_security_restricted() -> None:
    objects = [obj for inputs in CASES.values() for obj in build.all_objects(inputs)]
    assert [problem for obj in objects for problem in restricted_problems(obj)] == []
    for obj in objects:
        for _, pod in pod_specs(obj):
            for container in containers(pod):
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert {"/tmp", build.MODEL_DIR} <= mounts  # the only writable places


def test_env_names_are_unique_and_user_values_win() -> None:
    objects = build.all_objects(CASES["replicaratio"])
    pod = by_kind(objects, "Deployment")["fraud-v4"]["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        names = [item["name"] for item in container["env"]]
        assert len(names) == len(set(names)), container["name"]
        assert {"name": "HOME", "value": "/tmp/home"} in container["env"]


def test_pods_fetch_and_check_the_version_before_serving_it() -> None:
    deployment = by_kind(build.all_objects(CASES["gatewayapi-header-mirror"]), "Deployment")["fraud-v4"]
    pod = deployment["spec"]["template"]["spec"]
    fetch, check = pod["initContainers"]
    assert fetch["command"][-4:] == ["--artifact-uri", "models:/fraud/4", "--dst-path", "/models"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml.svc:5000"} in fetch["env"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    assert secrets == {
        "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-admin", "key": "username"},
        "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-admin", "key": "password"},
    }
    assert check["command"][:2] == ["python", "-c"] and "load_input_example" in check["command"][2]
    compile(check["command"][2], "check-model", "exec")  # the script is valid Python
    (server,) = pod["containers"]
    assert server["command"][-1] == build.SCORING_APP
    assert not any(e["name"].startswith("MLFLOW_TRACKING") for e in server["env"])  # the server needs no registry
    assert deployment["metadata"]["annotations"][build.TRACK_ANNOTATION] == "canary"


@pytest.mark.parametrize(("deadline", "seconds"), [(None, 600), ("90s", 90), ("1h30m", 5400), ("250ms", 1), ("0s", 1)])
def test_progress_deadline_bounds_how_long_pods_may_take(deadline: str | None, seconds: int) -> None:
    """spec.progressDeadline becomes the Deployment's deadline, in whole seconds, never 0 (the API refuses 0)."""
    spec = {"model": {"registeredModel": "fraud", "version": 4}, "trackingUri": "http://mlflow:5000"}
    if deadline is not None:
        spec["progressDeadline"] = deadline
    inputs = case(spec, (TrackPlan("stable", 4),), Weights())
    deployment = by_kind(build.all_objects(inputs), "Deployment")["fraud-v4"]
    assert deployment["spec"]["progressDeadlineSeconds"] == seconds


def test_a_token_replaces_username_and_password() -> None:
    fetch = by_kind(build.all_objects(CASES["pinned-autoscaling"]), "Deployment")["fraud-v7"]
    env = fetch["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert [e["name"] for e in env if "valueFrom" in e] == ["MLFLOW_TRACKING_TOKEN"]


def test_the_server_outlasts_a_proxys_idle_connections() -> None:
    """Traefik keeps idle backend connections 90 s: a server closing them sooner made the Gateway answer 502
    to an /invocations POST sent on one as it closed (seen in the real-pod canary test)."""
    command = build.server_command()
    keep_alive = int(command[command.index("--timeout-keep-alive") + 1])
    assert keep_alive > 600  # the longest default among Traefik (90 s), AWS ALB (60 s), Google's LBs (600 s)


def test_the_server_runs_what_mlflow_models_serve_runs() -> None:
    """The model path variable and the app are MLflow's (mlflow-skinny, the same release as the image): the
    image's app builds the app exactly as MLflow's app module does, only wrapped. Read from the sources,
    since importing the scoring server needs numpy."""
    package = importlib.util.find_spec("mlflow")
    assert package is not None and package.submodule_search_locations
    scoring = Path(next(iter(package.submodule_search_locations))) / "pyfunc" / "scoring_server"
    source = (scoring / "__init__.py").read_text()
    assert f'_SERVER_MODEL_PATH = "{build.MODEL_PATH_ENV}"' in source
    assert "uvicorn {' '.join(args)} mlflow.pyfunc.scoring_server.app:app" in source
    loads = "scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])"
    assert loads in (scoring / "app.py").read_text()
    image = Path(__file__).parents[2] / "images" / "mlflow-model-server"
    module = build.SCORING_APP.split(":")[0]
    serving = (image / f"{module}.py").read_text()
    assert loads in serving and "scoring_server.init(model)" in serving
    assert f'dest = "{build.SCORING_APP_DIR}/{module}.py"' in (image / "image.toml").read_text()
    requirements = (Path(__file__).parents[2] / "images" / "mlflow-model-server" / "requirements.txt").read_text()
    assert f"mlflow=={MLFLOW_VERSION}\n" in requirements
    assert all("==" in line for line in requirements.splitlines() if line and not line.startswith("#"))


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    objects = build.all_objects(CASES["pinned-autoscaling"])
    assert "replicas" not in by_kind(objects, "Deployment")["fraud-v7"]["spec"]
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["fraud-v7"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_replica_ratio_hpas_split_their_bounds_and_a_track_at_zero_has_none() -> None:
    autoscaling = CASES["pinned-autoscaling"].spec.autoscaling  # 2 to 10 replicas
    spec = CASES["replicaratio"].spec.model_copy(update={"replicas": None, "autoscaling": autoscaling})
    tracks = (TrackPlan("stable", 3, 70), TrackPlan("canary", 4, 30))
    objects = build.all_objects(build.ModelDeploymentInputs("fraud", "ml", spec, "http://x", None, tracks, Weights()))
    bounds = {
        name: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
        for name, h in by_kind(objects, "HorizontalPodAutoscaler").items()
    }
    assert bounds == {"fraud-v3": (1, 7), "fraud-v4": (1, 3)}
    idle = (TrackPlan("stable", 3, 100), TrackPlan("canary", 4, 0))
    objects = build.all_objects(build.ModelDeploymentInputs("fraud", "ml", spec, "http://x", None, idle, Weights()))
    assert set(by_kind(objects, "HorizontalPodAutoscaler")) == {"fraud-v3"}
    assert by_kind(objects, "Deployment")["fraud-v4"]["spec"]["replicas"] == 0


def test_services_select_versions_by_role() -> None:
    objects = build.all_objects(CASES["gatewayapi-header-mirror"])
    services = {
        name: svc["spec"]["selector"].get(build.VERSION_LABEL) for name, svc in by_kind(objects, "Service").items()
    }
    assert services == {"fraud-stable": "3", "fraud-canary": "4", "fraud": "3"}
    ratio = by_kind(build.all_objects(CASES["replicaratio"]), "Service")
    assert build.VERSION_LABEL not in ratio["fraud"]["spec"]["selector"]  # both tracks behind the entry Service
    single = by_kind(build.all_objects(CASES["pinned-autoscaling"]), "Service")
    assert single["fraud-canary"]["spec"]["selector"][build.VERSION_LABEL] == "7"  # no canary: the stable


def test_nothing_serves_before_a_version_is_resolved() -> None:
    inputs = build.ModelDeploymentInputs("fraud", "ml", CASES["replicaratio"].spec, "http://x")
    assert [obj["kind"] for obj in build.all_objects(inputs)] == ["ServiceAccount"]


def test_inputs_follow_the_rollouts_actions() -> None:
    """How the handler feeds the builder: ScaleTrack -> TrackPlan, SetWeights -> Weights."""
    spec = CASES["replicaratio"].spec
    state = rollout.rollout_state({"stableVersion": 3, "phase": "Succeeded"})
    observations = rollout.Observations(4, (rollout.TrackObservation(3, True, 5),))
    t = rollout.step(spec, state, observations, parse_time("2026-01-01T00:00:00Z"))
    tracks = tuple(TrackPlan(a.track, a.version, a.size_percent) for a in t.tracks)
    inputs = build.ModelDeploymentInputs(
        "fraud", "ml", spec, "http://x", None, tracks, Weights(t.weights.canary, t.weights.canary_available)
    )
    replicas = {
        d["metadata"]["name"]: d["spec"]["replicas"] for d in by_kind(build.all_objects(inputs), "Deployment").values()
    }
    assert replicas == {"fraud-v3": 5, "fraud-v4": 1}  # setWeight 20 of 5 replicas, the stable keeps its 5
    assert build.effective_weights(inputs) == Weights(0, False)  # no canary pod is ready yet


# --- routers ----------------------------------------------------------------------------------------------

TARGET = RouteTarget("fraud", "ml", {}, "fraud-stable", "fraud-canary", 80)


def gateway(**routing: Any) -> GatewayAPIRouter:
    spec = ModelDeploymentSpec.model_validate(
        {
            "trackingUri": "http://x",
            "model": {"registeredModel": "m", "version": 1},
            "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}], **routing}},
        }
    )
    router = router_for(spec)
    assert isinstance(router, GatewayAPIRouter)
    return router


@settings(max_examples=50, deadline=None)
@given(weight=st.integers(0, 100), available=st.booleans())
def test_route_weights_sum_to_100(weight: int, available: bool) -> None:
    (route,) = gateway(**GATEWAY_ROUTING).objects(TARGET, Weights(weight, available))
    weighted = route["spec"]["rules"][-1]["backendRefs"]
    assert [ref["name"] for ref in weighted] == ["fraud-stable", "fraud-canary"]
    assert sum(ref["weight"] for ref in weighted) == 100
    assert weighted[1]["weight"] == weight


def test_the_header_rule_comes_first_and_only_for_a_ready_canary() -> None:
    router = gateway(headerMatch={"name": "x-canary", "value": "always"})
    rules = router.http_route(TARGET, Weights(0, True))["spec"]["rules"]
    assert rules[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "always"}]
    assert rules[0]["backendRefs"] == [{"name": "fraud-canary", "port": 80}]
    assert rules[0]["matches"][0]["path"] == rules[1]["matches"][0]["path"]  # same path: the header wins
    assert len(router.http_route(TARGET, Weights(0, False))["spec"]["rules"]) == 1


def test_mirroring_copies_a_percent_to_a_ready_canary() -> None:
    router = gateway(mirrorPercent=25)
    rule = router.http_route(TARGET, Weights(0, True))["spec"]["rules"][-1]
    assert rule["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-canary", "port": 80}, "percent": 25}}
    ]
    assert "filters" not in router.http_route(TARGET, Weights(0, False))["spec"]["rules"][-1]


def test_parent_refs_and_hostnames_come_from_the_spec() -> None:
    route = gateway(**GATEWAY_ROUTING).http_route(TARGET, Weights())
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["metadata"]["name"] == "fraud"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public-gateway",
            "namespace": "gateways",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["hostnames"] == ["fraud.example.com"]


def test_router_choice_and_exactness() -> None:
    assert isinstance(router_for(CASES["replicaratio"].spec), ReplicaRatioRouter)
    assert isinstance(router_for(CASES["no-strategy"].spec), StableOnlyRouter)
    assert router_for(CASES["replicaratio"].spec).approximate
    assert not router_for(CASES["gatewayapi-header-mirror"].spec).approximate
    assert StableOnlyRouter().weights(Weights(30, True), 2, 2) == Weights(0, True)
    with pytest.raises(ValueError):
        Weights(101)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 50), weight=st.integers(0, 100))
def test_replica_split_rounding_bounds(total: int, weight: int) -> None:
    stable, canary = replicaratio.split(total, weight)
    assert (canary > 0) == (weight > 0) and (stable > 0) == (weight < 100)
    assert total <= stable + canary <= total + 1
    exact = total * weight / 100
    if 0.5 <= exact < total - 0.5:  # neither track raised to its minimum of one pod
        assert stable + canary == total and abs(canary - exact) <= 0.5
        effective = replicaratio.effective_weight(stable, canary)
        assert abs(effective - weight) <= 50 / total + 0.5
    router = ReplicaRatioRouter()
    assert router.replicas(total, weight, "canary") == canary
    assert router.replicas(total, 100 - weight, "stable") == stable


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 50), before=st.integers(0, 100), after=st.integers(0, 100))
def test_a_surge_never_shrinks_a_track_below_either_split(total: int, before: int, after: int) -> None:
    """While a weight changes, each track is sized for the larger of its two shares (logic.rollout)."""
    router = ReplicaRatioRouter()
    stable = router.replicas(total, 100 - min(before, after), "stable")
    canary = router.replicas(total, max(before, after), "canary")
    for weight in (before, after):
        steady_stable, steady_canary = replicaratio.split(total, weight)
        assert stable >= steady_stable and canary >= steady_canary


def test_replica_ratio_reports_the_split_it_achieves() -> None:
    router = ReplicaRatioRouter()
    assert replicaratio.split(2, 5) == (2, 1)  # the canary's one pod comes on top
    assert router.weights(Weights(5, True), *replicaratio.split(2, 5)) == Weights(33, True)
    assert router.weights(Weights(20, True), *replicaratio.split(10, 20)) == Weights(20, True)
    assert router.weights(Weights(20, False), 8, 2) == Weights(0, False)
    assert replicaratio.effective_weight(0, 0) == 0


def test_golden_files_have_no_stray_templates() -> None:
    for path in GOLDEN.glob("modeldeployment-*.yaml"):
        assert not re.search(r"\{\{.*\}\}", path.read_text().replace("{{canary}}", "")), path.name
