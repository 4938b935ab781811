"""The plain install (`kubectl apply -k manifests/`) applies cleanly and passes Pod Security "restricted"."""

from __future__ import annotations

from tests.kube import ROOT, Kubectl, eventually

NAMESPACE = "mlflow-operator"


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
        verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}  # type: ignore[index]
        assert "*" not in verbs
    finally:
        kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
