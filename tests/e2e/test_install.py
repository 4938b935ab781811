"""Both installs on a real API server: `kubectl apply -k manifests/` and `helm install charts/mlflow-operator`.

Each applies cleanly, its operator pod is admitted under Pod Security "restricted", and it grants exactly
the operator's permissions (tests/integration/packaging.py OPERATOR_PERMISSIONS). Everything we ship, and
every object the operator renders for the examples, passes `kubectl apply --dry-run=server` (admission,
CEL rules, schemas of this Kubernetes version). Running the operator with only the chart's permissions is
tests/e2e/test_rbac_operator.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from mlflow_operator.render import render_documents
from tests.integration.packaging import (
    CHART,
    EXAMPLES,
    OPERATOR_PERMISSIONS,
    documents,
    gateway_api_crds,
    helm,
    helm_template,
    kustomize_manifests,
    rbac_violations,
    render_example,
    rule_permissions,
)
from tests.kube import ROOT, Kubectl, eventually
from tests.pod_options import examples_with_every_pod_option

NAMESPACE = "mlflow-operator"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@pytest.fixture
def install_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace that enforces Pod Security "restricted", outside the e2e operator's mlflow-e2e-* glob."""
    name = f"mlflow-install-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    kubectl.run("label", "namespace", name, RESTRICTED)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def test_kustomize_install_applies_and_its_pod_is_admitted(kubectl: Kubectl, crds: None) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "manifests"))
    try:
        labels = kubectl.get("namespace", NAMESPACE)["metadata"]["labels"]  # type: ignore[index]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        deployment = kubectl.get("deployment", "mlflow-operator", NAMESPACE)
        assert deployment is not None and deployment["spec"]["strategy"]["type"] == "Recreate"
        # The namespace enforces "restricted": a pod exists only if its template complies.
        pods = eventually(
            lambda: kubectl.run("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split(),
            what="operator pod admitted under Pod Security restricted",
        )
        assert len(pods) == 1
        role = kubectl.get("clusterrole", "mlflow-operator")
        assert role is not None and rbac_violations([role]) == []
        assert rule_permissions(role["rules"]) == OPERATOR_PERMISSIONS
        assert kubectl.get("service", "mlflow-operator-metrics", NAMESPACE) is not None
        assert kubectl.get("networkpolicy", "mlflow-operator", NAMESPACE) is not None
    finally:
        kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_helm_install_runs_the_operator_deployment(
    kubectl: Kubectl, kubeconfig: str, crds: None, install_namespace: str
) -> None:
    release = f"rel-{install_namespace[-8:]}"
    fullname = f"{release}-mlflow-operator"
    # --wait: the Deployment becomes available (kwok's pods, or your cluster's real ones).
    helm(kubeconfig, "install", release, str(CHART), "--namespace", install_namespace, "--wait", "--timeout", "3m")
    try:
        deployment = kubectl.get("deployment", fullname, install_namespace)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert deployment["status"].get("availableReplicas") == 1
        pods = kubectl.run("get", "pods", "-n", install_namespace, "-o", "name").stdout.split()
        assert len(pods) == 1  # admitted under "restricted"
        role = kubectl.get("clusterrole", fullname)
        assert role is not None and rule_permissions(role["rules"]) == OPERATOR_PERMISSIONS
        binding = kubectl.get("clusterrolebinding", fullname)
        assert binding is not None and binding["subjects"] == [
            {"kind": "ServiceAccount", "name": fullname, "namespace": install_namespace}
        ]
        assert kubectl.get("serviceaccount", fullname, install_namespace) is not None
        service = kubectl.get("service", f"{fullname}-metrics", install_namespace)
        assert service is not None and service["spec"]["ports"][0]["name"] == "metrics"
        status = json.loads(helm(kubeconfig, "status", release, "-n", install_namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        helm(kubeconfig, "uninstall", release, "--namespace", install_namespace, "--wait")
    assert kubectl.get("clusterrole", fullname) is None


def dry_run(kubectl: Kubectl, objects: list[dict[str, Any]], what: str) -> None:
    """Server-side apply in dry-run mode, as the operator applies: admission, schemas and CEL all run."""
    result = kubectl.run(
        "apply", "--server-side", "--force-conflicts", "--field-manager=mlflow-dry-run", "--dry-run=server",
        "-f", "-", stdin=yaml.safe_dump_all(objects), check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{what}: {result.stderr}"
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


def test_everything_we_ship_passes_server_dry_run(kubectl: Kubectl, crds: None, install_namespace: str) -> None:
    ns = install_namespace
    for crd in gateway_api_crds():  # the HTTPRoute a ModelDeployment renders
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")

    chart_crds = sorted((CHART / "crds").glob("*.yaml"))
    dry_run(kubectl, [doc for path in chart_crds for doc in documents(path.read_text())], "chart CRDs")
    dry_run(kubectl, documents(helm_template(namespace=ns)), "chart, default values")
    namespaced = {"watchNamespaces": [ns], "metrics": {"port": 9191}}
    dry_run(kubectl, documents(helm_template(namespaced, release="scoped", namespace=ns)), "chart, watchNamespaces")

    # manifests/ into this namespace (the Namespace object itself is applied for real by the kustomize test).
    kustomized = []
    for doc in documents(kustomize_manifests()):
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            continue
        if doc["metadata"].get("namespace") == NAMESPACE:
            doc["metadata"]["namespace"] = ns
        for subject in doc.get("subjects") or []:
            subject["namespace"] = ns
        doc["metadata"]["name"] = f"dry-{doc['metadata']['name']}"  # not to clash with the kustomize test
        if "roleRef" in doc:
            doc["roleRef"]["name"] = f"dry-{doc['roleRef']['name']}"
        kustomized.append(doc)
    dry_run(kubectl, kustomized, "manifests/")

    for example in EXAMPLES:
        docs = documents(example.read_text())
        for doc in docs:
            doc["metadata"]["namespace"] = ns
        dry_run(kubectl, docs, example.name)
        rendered = documents(render_example(example, namespace=ns))
        if rendered:  # a RegisteredModel renders no Kubernetes objects
            dry_run(kubectl, rendered, f"objects rendered for {example.name}")


def test_every_pod_option_is_admitted_and_so_is_every_pod_rendered_from_it(
    kubectl: Kubectl, crds: None, install_namespace: str
) -> None:
    """spec.pod with every option: the CRDs admit the resources, and the core/v1 API server admits every
    object the operator renders from them (the bounded subsets write what a Pod spec expects)."""
    for crd in gateway_api_crds():
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    resources = examples_with_every_pod_option()
    for doc in resources:
        doc["metadata"]["namespace"] = install_namespace
    dry_run(kubectl, resources, "examples with every pod option")
    objects = render_documents(resources, model_version=3).objects
    assert sum(1 for obj in objects if "affinity" in str(obj)) >= 6
    dry_run(kubectl, objects, "objects rendered with every pod option")
