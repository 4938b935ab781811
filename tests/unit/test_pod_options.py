"""`spec.pod` (api.pod, builders.pod): every option reaches every pod the operator writes for a resource,
the operator's own labels, variables and volumes stay in force, the pods stay within Pod Security
"restricted", and what would break the operator's pods is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlflow_operator.api.pod import PodOptions
from mlflow_operator.render import render_documents
from tests.pod_options import EVERY_POD_OPTION, examples_with_every_pod_option
from tests.unit.pod_security import containers, pod_specs, restricted_problems

WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob"}


def rendered() -> list[dict[str, Any]]:
    return render_documents(examples_with_every_pod_option(), model_version=3).objects


def test_every_workload_of_both_kinds_gets_every_option() -> None:
    objects = rendered()
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    names = {o["metadata"]["name"] for o in workloads}
    assert {"mlflow", "mlflow-pgbouncer", "mlflow-postgres", "mlflow-migrate-3-17-2", "mlflow-gc", "fraud-v3"} <= names
    for obj in workloads:
        ((meta, pod),) = pod_specs(obj)
        where = obj["metadata"]["name"]
        assert pod["nodeSelector"] == {"node-pool": "ml"}, where
        assert pod["tolerations"] == EVERY_POD_OPTION["tolerations"], where
        assert pod["affinity"] == EVERY_POD_OPTION["affinity"], where
        assert pod["priorityClassName"] == "ml-critical" and pod["imagePullSecrets"] == [{"name": "mirror-pull"}]
        (spread,) = pod["topologySpreadConstraints"]  # replaces the operator's default
        assert spread["topologyKey"] == "topology.kubernetes.io/zone", where
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] in ("mlflow", "fraud"), where
        assert meta["labels"]["team"] == "fraud" and meta["labels"]["app.kubernetes.io/managed-by"] == "mlflow-operator"
        assert meta["annotations"]["example.com/owner"] == "ml-platform", where
        assert {"corp-ca", "corp-secret", "scratch"} <= {v["name"] for v in pod["volumes"]}, where
        for container in containers(pod):
            names_in_order = [env["name"] for env in container["env"]]
            assert names_in_order[:3] == ["REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "EXTRA_TOKEN"], (
                where,
                container["name"],
            )
            assert container["envFrom"][-2:] == EVERY_POD_OPTION["envFrom"], (where, container["name"])
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["corp-ca"] == {"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}
            assert mounts["scratch"]["readOnly"] is False


def test_the_operators_own_pod_settings_stay_in_force() -> None:
    """Against the same resources without options: the user's env comes first (a container sees the
    operator's value of a name defined twice), the operator's labels, annotations, volumes stay as they were."""
    plain = examples_with_every_pod_option()
    for document in plain:
        document.get("spec", {}).pop("pod", None)
    before = {(o["kind"], o["metadata"]["name"]): o for o in render_documents(plain, model_version=3).objects}
    user_env = [{"name": e["name"], **{k: v for k, v in e.items() if k != "name"}} for e in EVERY_POD_OPTION["env"]]
    for obj in rendered():
        if obj["kind"] not in WORKLOADS:
            continue
        ((meta, pod),) = pod_specs(obj)
        ((old_meta, old_pod),) = pod_specs(before[(obj["kind"], obj["metadata"]["name"])])
        assert meta["labels"].items() >= old_meta["labels"].items()
        assert meta["annotations"].items() >= (old_meta.get("annotations") or {}).items()
        assert pod["volumes"][: len(old_pod.get("volumes", []))] == old_pod.get("volumes", [])
        for container, old in zip(containers(pod), containers(old_pod), strict=True):
            assert container["env"] == [*user_env, *old.get("env", [])], container["name"]
            assert container["volumeMounts"][: len(old.get("volumeMounts", []))] == old.get("volumeMounts", [])


def test_pods_with_every_option_stay_restricted() -> None:
    problems = [problem for obj in rendered() if obj["kind"] in WORKLOADS for problem in restricted_problems(obj)]
    assert problems == []


def test_service_accounts_get_the_annotations() -> None:
    accounts = {o["metadata"]["name"]: o for o in rendered() if o["kind"] == "ServiceAccount"}
    for name in ("mlflow", "fraud"):
        annotations = accounts[name]["metadata"].get("annotations") or {}
        assert annotations["eks.amazonaws.com/role-arn"].endswith(":role/mlflow"), name


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"labels": {"app.kubernetes.io/instance": "other"}}, "app.kubernetes.io/\\* labels select"),
        ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, "volume name is used by the operator"),
        ({"volumes": [{"name": "x"}]}, "exactly one of"),
        ({"volumes": [{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "exactly one of"),
        ({"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}, "every mount names a volume"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "exclusive"),
        ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of"),
        ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "hostPath"),
        ({"tolerations": [{"operator": "Sometimes"}]}, "operator"),
        ({"volumeMounts": [{"name": "x", "mountPath": "relative"}]}, "mountPath|mount_path"),
    ],
)
def test_options_that_would_break_the_pods_are_refused_naming_the_field(
    options: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        PodOptions.model_validate(options)
