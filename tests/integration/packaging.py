"""The install artifacts as a user gets them: the Helm chart rendered by helm, manifests/ by kubectl kustomize,
the objects the operator renders for examples/, and the tools that check them (helm, kubeconform, checkov).

The tools are built or installed on first use by the same scripts as `make deps` / `make binaries`, and cached
outside the repo by version (hack/versions.env).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.integration.s3_servers import CACHE, pinned_versions
from tests.kube import ROOT, find_kubectl, run_cli

CHART = ROOT / "charts" / "mlflow-operator"
MANIFESTS = ROOT / "manifests"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BUILD_TIMEOUT = 1800.0
Obj = dict[str, Any]

# What the operator uses, and nothing else: (apiGroup, resource) -> verbs. The chart, manifests/
# and the e2e test that runs the operator with exactly these permissions all check against this table.
OPERATOR_PERMISSIONS: dict[tuple[str, str], set[str]] = {
    **{
        ("mlflow.operator.dev", kind): {"get", "list", "watch", "patch", "update"}
        for kind in ("trackingservers", "registeredmodels", "modeldeployments")
    },
    **{
        ("mlflow.operator.dev", f"{kind}/status"): {"get", "patch", "update"}
        for kind in ("trackingservers", "registeredmodels", "modeldeployments")
    },
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "secrets"): {"get", "create", "patch"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "serviceaccounts"): {"get", "create", "patch"},
    ("", "services"): {"get", "create", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("", "persistentvolumeclaims"): {"get"},  # a retained database volume takes its backup location back
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("batch", "cronjobs"): {"get", "create", "patch", "delete"},  # delete: spec.retention removed
    ("policy", "poddisruptionbudgets"): {"get", "list", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create", "patch"},
    ("networking.k8s.io", "ingresses"): {"get", "create", "patch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "gateways"): {"get"},
    ("gateway.networking.k8s.io", "gatewayclasses"): {"get"},
}
# Cluster-scoped: what a namespaced install (watchNamespaces) still grants cluster-wide.
CLUSTER_PERMISSIONS = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    # Parent Gateways live in other namespaces than the routes; GatewayClasses are cluster-scoped.
    ("gateway.networking.k8s.io", "gateways"): {"get"},
    ("gateway.networking.k8s.io", "gatewayclasses"): {"get"},
}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}
FORBIDDEN_RESOURCES = {"*", "pods/exec", "pods/attach", "pods/portforward", "nodes/proxy"}


def tool_binary(name: str, version_key: str, binary: str) -> Path:
    """$CACHE/bin/<name>-<pinned version>/<binary>, built by `hack/build-binaries.sh <name>` on first use."""
    path = CACHE / "bin" / f"{name}-{pinned_versions()[version_key]}" / binary
    if not path.exists():
        subprocess.run([str(ROOT / "hack" / "build-binaries.sh"), name], check=True, timeout=BUILD_TIMEOUT)
    return path


def helm_binary() -> Path:
    return tool_binary("helm", "HELM_VERSION", "helm")


def kubeconform_binary() -> Path:
    return tool_binary("kubeconform", "KUBECONFORM_VERSION", "kubeconform")


def checkov_binary() -> Path:
    """checkov from its own virtualenv (hack/install-deps.sh), never from .venv."""
    path = CACHE / "venvs" / f"checkov-{pinned_versions()['CHECKOV_VERSION']}" / "bin" / "checkov"
    if not (path.parent.parent / ".installed").exists():
        subprocess.run([str(ROOT / "hack" / "install-deps.sh")], check=True, timeout=BUILD_TIMEOUT)
    return path


def gateway_api_crds() -> list[Path]:
    directory = CACHE / "bin" / f"gateway-api-{pinned_versions()['GATEWAY_API_VERSION']}"
    if not (directory / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        subprocess.run([str(ROOT / "hack" / "build-binaries.sh"), "gateway-api"], check=True, timeout=600)
    return sorted(directory.glob("*.yaml"))


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(
    values: Mapping[str, Any] | None = None, release: str = "mlflow-operator", namespace: str = "mlflow-operator"
) -> str:
    """`helm template` of the chart; values go through a values file, as users pass them."""
    args = [str(helm_binary()), "template", release, str(CHART), "--namespace", namespace]
    return run_cli([*args, "--values", "-"], "helm template", stdin=yaml.safe_dump(dict(values or {}))).stdout


def helm(kubeconfig: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The helm CLI against a cluster."""
    command = [str(helm_binary()), "--kubeconfig", kubeconfig, *args]
    return run_cli(command, f"helm {' '.join(args)}", check=check, timeout=timeout)


def kustomize_manifests() -> str:
    result = subprocess.run(
        [find_kubectl(), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


def render_example(path: Path, namespace: str = "demo") -> str:
    """Every object the operator creates for an example, from its own builders (`mlflow-operator render`);
    a ModelDeployment that follows an alias is rendered as if the alias resolved to version 1."""
    binary = Path(sys.executable).parent / "mlflow-operator"
    command = [str(binary), "render", "-f", str(path), "-n", namespace, "--model-version", "1"]
    return run_cli(command, f"mlflow-operator render -f {path}").stdout


def rule_permissions(rules: Iterable[Obj]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, merged over the rules (the order and grouping of rules is free)."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def rbac_violations(objects: Iterable[Obj]) -> list[str]:
    """Wildcards, and the verbs and subresources that amount to privilege escalation, in any Role."""
    found = []
    for obj in objects:
        if obj.get("kind") not in ("Role", "ClusterRole"):
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj.get("aggregationRule"):
            found.append(f"{where}: aggregationRule")
        for rule in obj.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                if any("*" in str(value) for value in rule.get(key) or []):
                    found.append(f"{where}: wildcard in {key}: {rule[key]}")
            if bad := FORBIDDEN_VERBS & set(rule.get("verbs") or []):
                found.append(f"{where}: verbs {sorted(bad)}")
            if bad := FORBIDDEN_RESOURCES & set(rule.get("resources") or []):
                found.append(f"{where}: resources {sorted(bad)}")
    return found
