"""The Helm chart and the kustomize install, checked with the tools platform teams run on them.

helm (lint, template, values schema), kubeconform (every object against the JSON schemas of our Kubernetes
version and of our CRDs, generated offline by hack/kubeconform-schemas.py) and checkov (.checkov.yaml) over
the chart, manifests/, every object the operator renders for examples/, and the Dockerfiles. The chart and
manifests/ must grant the same permissions: exactly OPERATOR_PERMISSIONS. No cluster needed: the e2e tests
(tests/e2e/test_install.py, test_rbac_operator.py) install both and run the operator with those permissions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_operator import cli
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.traffic import TrackPlan
from mlflow_operator.builders.modeldeployment import METRICS_PORT, ModelDeploymentInputs, all_objects
from tests.integration.packaging import (
    CHART,
    CLUSTER_PERMISSIONS,
    EXAMPLES,
    OPERATOR_PERMISSIONS,
    Obj,
    checkov_binary,
    documents,
    gateway_api_crds,
    helm_binary,
    helm_template,
    kubeconform_binary,
    kustomize_manifests,
    rbac_violations,
    render_example,
    rule_permissions,
)
from tests.integration.s3_servers import pinned_versions
from tests.kube import ROOT

NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
EVERYTHING_ON = {
    "metrics": {"serviceMonitor": {"enabled": True}},
    "grafana": {"dashboards": {"enabled": True}},
    "modelServers": {"podMonitor": {"enabled": True}},
}
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, "namespaced": NAMESPACED, "everything-on": EVERYTHING_ON}


@pytest.fixture(scope="module")
def chart() -> dict[str, list[Obj]]:
    return {name: documents(helm_template(values)) for name, values in VARIANTS.items()}


@pytest.fixture(scope="module")
def manifests() -> list[Obj]:
    return documents(kustomize_manifests())


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {path.name: render_example(path) for path in EXAMPLES}


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


# --- helm ---------------------------------------------------------------------------------------------------


def test_helm_lint_strict() -> None:
    for values in VARIANTS.values():
        result = subprocess.run(
            [str(helm_binary()), "lint", "--strict", str(CHART), "--values", "-"],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"logFormat": "xml"}, "logFormat"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"replicas": 2}, "replicas"),  # one replica only: not a value at all
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"childImages": {"overrides": {"postgresql": "postgres:16"}}}, "postgresql"),
        ({"childImages": {"registry": "https://mirror.example.com"}}, "registry"),
    ],
)
def test_values_schema_refuses(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        helm_template(values)


# --- RBAC ---------------------------------------------------------------------------------------------------


def test_chart_and_manifests_grant_exactly_what_the_operator_uses(
    chart: dict[str, list[Obj]], manifests: list[Obj]
) -> None:
    from_chart = rule_permissions(one(chart["default"], "ClusterRole")["rules"])
    from_manifests = rule_permissions(one(manifests, "ClusterRole")["rules"])
    assert from_chart == OPERATOR_PERMISSIONS
    assert from_manifests == from_chart, "manifests/rbac.yaml and the chart's ClusterRole differ"
    binding = one(manifests, "ClusterRoleBinding")
    service_account = one(manifests, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["metadata"]["name"], "namespace": "mlflow-operator"}
    ]


def test_chart_and_manifests_install_the_same_crds(manifests: list[Obj]) -> None:
    shipped = [doc for path in sorted((CHART / "crds").glob("*.yaml")) for doc in documents(path.read_text())]
    by_name = {doc["metadata"]["name"]: doc for doc in shipped}
    assert {doc["metadata"]["name"]: doc for doc in kinds(manifests, "CustomResourceDefinition")} == by_name
    assert len(by_name) == 3


def test_watch_namespaces_grant_roles_there_and_little_cluster_wide(chart: dict[str, list[Obj]]) -> None:
    objects = chart["namespaced"]
    assert rule_permissions(one(objects, "ClusterRole")["rules"]) == CLUSTER_PERMISSIONS
    namespaced = {key: verbs for key, verbs in OPERATOR_PERMISSIONS.items() if key not in CLUSTER_PERMISSIONS}
    tls_roles = [r for r in kinds(objects, "Role") if r["metadata"]["name"].endswith("-registry-events-tls")]
    roles = {r["metadata"]["namespace"]: r for r in kinds(objects, "Role") if r not in tls_roles}
    assert sorted(roles) == ["team-a", "team-b"]
    for role in roles.values():
        assert rule_permissions(role["rules"]) == namespaced
    # The receiver's certificate Secret, in the operator's own namespace: that one Secret, and creating it.
    (tls_role,) = tls_roles
    assert tls_role["metadata"]["namespace"] == "mlflow-operator"
    assert tls_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [tls_role["metadata"]["name"]],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    bindings = kinds(objects, "RoleBinding") + kinds(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")["metadata"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_no_wildcards_or_escalation_anywhere(chart: dict[str, list[Obj]], manifests: list[Obj]) -> None:
    for name, objects in chart.items():
        assert rbac_violations(objects) == [], name
    assert rbac_violations(manifests) == []
    # The check itself catches what it must.
    bad = {
        "kind": "ClusterRole",
        "metadata": {"name": "x"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "*"]}],
    }
    assert len(rbac_violations([bad])) == 3


# --- the operator Deployment --------------------------------------------------------------------------------


def test_operator_deployment(chart: dict[str, list[Obj]], manifests: list[Obj]) -> None:
    deployment = one(chart["default"], "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["mlflow-operator"]
    assert container["args"] == [
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-address=0.0.0.0:9090",
        "--registry-events-address=0.0.0.0:8443",
        "--registry-events-url=https://mlflow-operator-registry-events.mlflow-operator.svc:8443",
        "--registry-events-tls-secret=mlflow-operator/mlflow-operator-registry-events-tls",
        "--registry-events-tls-issuer=operator",
        "--log-format=json",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "registry-events": 8443}
    # The flags parse, and the certificate names the Service the URL gives.
    tls, problem = cli.receiver_tls_settings(cli.build_parser().parse_args(container["args"]))
    assert problem is None and tls is not None and tls.issue
    assert "mlflow-operator-registry-events.mlflow-operator.svc" in tls.names
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Pod Security "restricted", plus a read-only root filesystem with /tmp writable.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    # The image runs as the UID the pod asks for.
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile

    service = one(chart["default"], "Service", "mlflow-operator-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    events = one(chart["default"], "Service", "mlflow-operator-registry-events")
    assert events["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    # manifests/ is the chart with default values, bar the labels Helm adds.
    kustomized = one(manifests, "Deployment")
    assert kustomized["spec"]["strategy"] == deployment["spec"]["strategy"]
    assert kustomized["spec"]["template"]["spec"] == pod
    for chart_service in (service, events):
        name = chart_service["metadata"]["name"]
        assert one(manifests, "Service", name)["spec"]["ports"] == chart_service["spec"]["ports"]
    policy = one(chart["default"], "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(manifests, "NetworkPolicy")["spec"]["ingress"] == policy["ingress"]
    assert one(manifests, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_metrics_port_and_namespaces_follow_values() -> None:
    objects = documents(helm_template({"metrics": {"port": 9191}, "watchNamespaces": ["ml"]}))
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-address=0.0.0.0:9191" in container["args"] and "--namespace=ml" in container["args"]
    assert one(objects, "Service", "mlflow-operator-metrics")["spec"]["ports"][0]["port"] == 9191
    off = documents(helm_template({"metrics": {"enabled": False}, "registryEvents": {"enabled": False}}))
    assert not kinds(off, "Service") and not kinds(off, "ServiceMonitor")
    args = one(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--metrics-address") for a in args)


def test_child_images_values_become_the_operators_image_flags() -> None:
    """An image mirror set once in the values reaches the operator's command line, which the operator parses
    into the images every child gets (tests/unit/test_image_settings.py follows them into the children)."""
    digest = "sha256:" + "cd" * 32
    values = {"childImages": {"registry": "mirror.example.com:5000", "overrides": {"pgbouncer": f"pgb@{digest}"}}}
    container = one(documents(helm_template(values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--image-registry=mirror.example.com:5000" in args and f"--image=pgbouncer=pgb@{digest}" in args, args
    images = cli.images_from(cli.build_parser().parse_args(args), "run")
    assert images is not None and images.pgbouncer == f"pgb@{digest}"
    assert images.mlflow_server == "mirror.example.com:5000/mlflow-operator/mlflow-server:{version}"
    default = one(documents(helm_template({})), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(arg.startswith("--image") for arg in default), default


def test_service_monitor_is_optional_and_scrapes_the_metrics_service(chart: dict[str, list[Obj]]) -> None:
    assert not kinds(chart["default"], "ServiceMonitor")
    monitor = one(chart["everything-on"], "ServiceMonitor")
    service = one(chart["everything-on"], "Service", "mlflow-operator-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}


def test_pod_monitor_is_optional_and_selects_the_model_servers_metrics_port(chart: dict[str, list[Obj]]) -> None:
    assert not kinds(chart["default"], "PodMonitor")
    monitor = one(chart["everything-on"], "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    pinned = {"trackingUri": "http://mlflow:5000", "model": {"registeredModel": "m", "version": 1}}
    spec = ModelDeploymentSpec.model_validate(pinned)
    inputs = ModelDeploymentInputs("m", "ml", spec, "http://mlflow:5000", tracks=(TrackPlan("stable", 1),))
    (deployment,) = [o for o in all_objects(inputs) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == METRICS_PORT
    namespaced = documents(helm_template({**NAMESPACED, "modelServers": {"podMonitor": {"enabled": True}}}))
    assert one(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_dashboards_config_maps(chart: dict[str, list[Obj]]) -> None:
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    maps = kinds(chart["everything-on"], "ConfigMap")
    assert not kinds(chart["default"], "ConfigMap")
    assert len(maps) == len(dashboards)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())


# --- what the operator renders ------------------------------------------------------------------------------


def test_rendered_workloads_mount_no_service_account_token(rendered: dict[str, str]) -> None:
    """Only the operator talks to the API server (checkov's CKV_K8S_38 is skipped for its sake)."""
    for name, text in rendered.items():
        objects = documents(text)
        accounts = {o["metadata"]["name"]: o for o in kinds(objects, "ServiceAccount")}
        for obj in objects:
            pod = pod_spec(obj)
            if pod is None:
                continue
            account = accounts.get(pod.get("serviceAccountName", ""), {})
            mounts = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
            assert mounts is False, f"{name}: {obj['kind']}/{obj['metadata']['name']} mounts a token"


def pod_spec(obj: Obj) -> Obj | None:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return template["spec"] if isinstance(template, dict) and "spec" in template else None


# --- kubeconform --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    crds = [*sorted((ROOT / "crds").glob("mlflow.operator.dev_*.yaml")), *gateway_api_crds()]
    out = tmp_path_factory.mktemp("schemas")
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "kubeconform-schemas.py"), str(out), *[f"--crd={c}" for c in crds]],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def kubeconform(location: str, folder: Path, *extra: str) -> dict[str, Any]:
    k8s = pinned_versions()["K8S_VERSION"].removeprefix("v")
    result = subprocess.run(
        [
            str(kubeconform_binary()),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            k8s,
            "-schema-location",
            location,
            *extra,
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = dict(json.loads(result.stdout))
    report["returncode"] = result.returncode
    return report


def test_kubeconform_everything_we_ship(
    schema_location: str, chart: dict[str, list[Obj]], rendered: dict[str, str], tmp_path: Path
) -> None:
    for name in VARIANTS:
        (tmp_path / f"chart-{name}.yaml").write_text(yaml.safe_dump_all(chart[name]))
    (tmp_path / "kustomize.yaml").write_text(kustomize_manifests())
    for name, text in rendered.items():
        (tmp_path / f"rendered-{name}").write_text(text)
    for path in [*EXAMPLES, *sorted((ROOT / "crds").glob("mlflow.operator.dev_*.yaml"))]:
        (tmp_path / f"{path.parent.name}-{path.name}").write_text(path.read_text())
    # No schema for ServiceMonitor and PodMonitor offline (the Prometheus Operator's CRDs): its shape is checked above.
    report = kubeconform(schema_location, tmp_path, "-skip", "ServiceMonitor,PodMonitor")
    problems = [r for r in report["resources"] if r["status"] not in ("statusValid", "statusSkipped")]
    assert problems == [] and report["returncode"] == 0, json.dumps(problems, indent=1)
    summary = report["summary"]
    assert summary["valid"] >= 60 and summary["skipped"] == 2, summary


def test_kubeconform_schemas_are_strict(schema_location: str, tmp_path: Path) -> None:
    """The control: an unknown field in a Deployment and in a TrackingServer, and a wrong type, are caught."""
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, colour: blue}\n"
        "spec: {replicas: two, selector: {}, template: {}}\n---\n"
        "apiVersion: mlflow.operator.dev/v1alpha1\nkind: TrackingServer\nmetadata: {name: y}\n"
        "spec: {version: '3.17.2', databse: {}}\n"
    )
    report = kubeconform(schema_location, tmp_path)
    messages = " ".join(r.get("msg", "") for r in report["resources"])
    assert report["summary"]["invalid"] == 2, report
    assert "colour" in messages and "replicas" in messages and "databse" in messages


# --- checkov ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report(
    chart: dict[str, list[Obj]], rendered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[dict[str, Any]]]:
    scan = tmp_path_factory.mktemp("checkov-input")
    for name in VARIANTS:
        (scan / f"chart-{name}.yaml").write_text(yaml.safe_dump_all(chart[name]))
    (scan / "kustomize.yaml").write_text(kustomize_manifests())
    for name, text in rendered.items():
        (scan / f"rendered-{name}").write_text(text)
    # checkov takes either -d or -f: the operator's Dockerfile joins the scanned folder (found by its name).
    # (The MLflow images' Dockerfiles have no HEALTHCHECK, CKV_DOCKER_2: their owners decide.)
    (scan / "operator-image").mkdir()
    (scan / "operator-image" / "Dockerfile").write_text((ROOT / "images" / "operator" / "Dockerfile").read_text())
    out = tmp_path_factory.mktemp("checkov-output")
    result = subprocess.run(
        [
            str(checkov_binary()),
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "-d",
            str(scan),
            "-o",
            "json",
            "--output-file-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    path = out / "results_json.json"
    assert path.exists(), f"checkov wrote no report (exit {result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(path.read_text())
    yield report if isinstance(report, list) else [report]


def test_checkov_finds_nothing(checkov_report: list[dict[str, Any]]) -> None:
    failed = {
        (check["check_id"], check["check_name"], Path(check["file_path"]).name, check["resource"])
        for run in checkov_report
        for check in run["results"]["failed_checks"]
    }
    assert failed == set(), "\n".join(map(str, sorted(failed)))
    by_framework = {run["check_type"]: run["summary"] for run in checkov_report}
    assert set(by_framework) == {"kubernetes", "dockerfile"}
    assert all(s["parsing_errors"] == 0 for s in by_framework.values())
    assert by_framework["dockerfile"]["resource_count"] == 1
    assert by_framework["kubernetes"]["passed"] > 500


def test_every_checkov_skip_says_why() -> None:
    text = (ROOT / ".checkov.yaml").read_text()
    config = yaml.safe_load(text)
    lines = text.splitlines()
    for check in config["skip-check"]:
        index = lines.index(f"  - {check}")
        reason = []
        for line in reversed(lines[:index]):
            if not line.startswith("  #"):
                break
            reason.append(line)
        assert len(" ".join(reason)) > 80, f"{check} is skipped without a reason"
    assert config.get("skip-download") is True  # offline: no calls to Prisma Cloud


# --- the image ----------------------------------------------------------------------------------------------


def test_operator_image_installs_the_pinned_package() -> None:
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    # Debian's python3 3.11, as the offline build (hack/build-images.py) and the tests' virtualenvs use.
    assert re.search(r"^FROM debian:bookworm-slim$", dockerfile, re.MULTILINE)
    assert "COPY pyproject.toml" in dockerfile and "pip install --no-cache-dir /src" in dockerfile
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
