"""The fuzz strategy of tests/e2e/test_fuzz.py, with many more examples, against validate_spec and the builders.

validate_spec never raises: it returns Valid or an Invalid that names the field. For a spec it accepts, the
builders either render objects the API server would accept (names, labels, annotations, resource names
checked here as the API server checks them) or raise ValueError where the handler turns it into a
condition (the pooler and server stages); everything else must not raise at all, or the handler's pass
fails and is retried with backoff forever.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_operator.api import KINDS
from mlflow_operator.api.crd import crd_for
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.api.traffic import TrackPlan, Weights
from mlflow_operator.builders import modeldeployment as md_build
from mlflow_operator.builders import trackingserver as ts_build
from mlflow_operator.logic import registeredmodel as rm_plan
from mlflow_operator.logic.validation import Invalid, Valid, validate_spec
from tests.strategies import FuzzCase, fuzz_cases, hostile_text, known_finding
from tests.unit.pod_security import containers, pod_specs

MODELS = {info.kind: info.spec_model for info in KINDS}
NAMESPACE = "ml-fuzz"
# metadata.name of a TrackingServer or ModelDeployment as the CRDs admit it: a DNS label of at most 40
# characters (dots were a finding of this test: the CRDs now refuse them, see test_dotted_names_...).
NAMES = st.one_of(
    st.sampled_from(["mlflow", "a", "n" * 40, "fraud-v2"]),
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z"),
)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def dns_label(value: str, limit: int = 63) -> bool:
    return len(value) <= limit and DNS_LABEL.fullmatch(value) is not None


def dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and DNS_SUBDOMAIN.fullmatch(value) is not None


def qualified_name(key: str) -> bool:
    """A label or annotation key, or a resource name: [prefix/]name, as the API server validates them."""
    prefix, _, name = key.rpartition("/")
    if prefix and not dns_subdomain(prefix):
        return False
    return 0 < len(name) <= 63 and QUALIFIED_NAME.fullmatch(name) is not None


STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
SUFFIXES = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
SUFFIXES.update({f"{p}i": 1024.0 ** (n + 1) for n, p in enumerate("KMGTPE")})


def resource_name(name: str) -> bool:
    """A container resource: a standard one, hugepages, or an extended resource with a domain prefix."""
    prefix, _, _ = name.rpartition("/")
    return name in STANDARD_RESOURCES or name.startswith("hugepages-") or bool(prefix and qualified_name(name))


def quantity(value: int | str) -> float:
    match = re.fullmatch(r"[+]?([0-9.]+)(?:[eE]([-+]?[0-9]+))?([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * 10.0 ** int(match[2] or 0) * SUFFIXES[match[3]]


def name_problems(kind: str, name: str) -> list[str]:
    if kind in ("Service", "StatefulSet") and not dns_label(name):
        return [f"{kind} name {name!r} is not a DNS label (<= 63, no dots)"]
    if kind == "Job" and len(name) > 63:  # its name is a label value of its pods
        return [f"Job name {name!r} is longer than 63"]
    if kind == "CronJob" and len(name) > 52:
        return [f"CronJob name {name!r} is longer than 52"]
    return [] if dns_subdomain(name) else [f"{kind} name {name!r} is not a DNS subdomain"]


def metadata_problems(where: str, meta: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in (meta.get("labels") or {}).items():
        if not qualified_name(key) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            problems.append(f"{where}: label {key!r}={value!r}")
    problems += [f"{where}: annotation key {key!r}" for key in meta.get("annotations") or {} if not qualified_name(key)]
    return problems


def object_problems(obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse in an object the operator applies (a subset, checked offline)."""
    kind, meta = obj["kind"], obj["metadata"]
    where = f"{kind}/{meta['name']}"
    problems = name_problems(kind, meta["name"]) + metadata_problems(where, meta)
    for template_meta, pod in pod_specs(obj):
        problems += metadata_problems(f"{where} pod template", template_meta)
        for container in containers(pod):
            requests = (container.get("resources") or {}).get("requests") or {}
            limits = (container.get("resources") or {}).get("limits") or {}
            problems += [
                f"{where}: container {container['name']} resource name {resource!r}"
                for resource in {**requests, **limits}
                if not resource_name(resource)
            ]
            problems += [
                f"{where}: container {container['name']} requests {resource} {requests[resource]!r} > limit {limit!r}"
                for resource, limit in limits.items()
                if resource in requests and resource_name(resource) and quantity(requests[resource]) > quantity(limit)
            ]
    selector = (obj.get("spec") or {}).get("selector")
    if isinstance(selector, dict):
        labels = selector.get("matchLabels", selector)
        problems += metadata_problems(f"{where} selector", {"labels": labels})
    for claim in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
        storage_class = claim["spec"].get("storageClassName")
        if storage_class is not None and not dns_subdomain(storage_class):
            problems.append(f"{where}: storageClassName {storage_class!r}")
    ingress_class = (obj.get("spec") or {}).get("ingressClassName") if kind == "Ingress" else None
    if ingress_class is not None and not dns_subdomain(ingress_class):
        problems.append(f"{where}: ingressClassName {ingress_class!r}")
    return problems


# --------------------------------------------------------------------------------------------- rendering


def render_tracking_server(name: str, spec: TrackingServerSpec, credentials: ts_build.Credentials) -> list[Any]:
    """What the TrackingServer handler renders, stage by stage, as it handles builder errors: the pooler and
    server stages may refuse a value with ValueError (reported as a condition); nothing else may raise."""
    inputs = ts_build.TrackingServerInputs(name, NAMESPACE, spec, spec.version, credentials, credentials)
    ts_build.tracking_url(name, NAMESPACE)
    objects = [ts_build.get_database_secret(name, NAMESPACE, "pw"), ts_build.get_admin_secret(name, NAMESPACE, "pw")]
    objects += ts_build.desired_database(name, NAMESPACE, spec, credentials.password)
    objects += [ts_build.get_backend_secret(inputs), ts_build.get_migration_job(inputs, spec.version)]
    for stage in (ts_build.desired_pooler, ts_build.desired_server):
        with contextlib.suppress(ValueError):  # the handler reports it (InvalidSecretValue), applies nothing
            objects += stage(inputs)
    return objects


def render_model_deployment(name: str, spec: ModelDeploymentSpec, version: int, weight: int) -> list[Any]:
    """Every object of a mid-rollout (stable and canary tracks) and of a settled one: must not raise."""
    objects = []
    for tracks in (
        (),
        (TrackPlan("stable", version),),
        (TrackPlan("stable", version), TrackPlan("canary", version + 1, weight)),
    ):
        inputs = md_build.ModelDeploymentInputs(
            name, NAMESPACE, spec, "http://mlflow.ml.svc:5000", None, tracks, Weights(weight, canary_available=True)
        )
        objects += md_build.all_objects(inputs)
        md_build.effective_weights(inputs)
    return objects


CREDENTIALS = st.one_of(
    st.just(ts_build.Credentials("mlflow", "db-password")),
    st.builds(ts_build.Credentials, hostile_text(20), hostile_text(20)),
)


@FUZZ
@given(
    case=fuzz_cases(),
    name=NAMES,
    credentials=CREDENTIALS,
    version=st.integers(1, 2**40),
    weight=st.integers(0, 100),
)
def test_validate_spec_and_builders_never_crash_on_fuzzed_specs(
    case: FuzzCase, name: str, credentials: ts_build.Credentials, version: int, weight: int
) -> None:
    result = validate_spec(MODELS[case.kind], case.spec)
    if isinstance(result, Invalid):
        assert result.message.startswith("spec"), result.message
        assert len(result.message) < 10_000
        return
    assert isinstance(result, Valid)
    spec: Any = result.spec
    if case.kind == "TrackingServer":
        objects = render_tracking_server(name, spec, credentials)
    elif case.kind == "ModelDeployment":
        objects = render_model_deployment(name, spec, version, weight)
    else:
        assert isinstance(spec, RegisteredModelSpec)
        desired = rm_plan.desired_model(spec, name)
        assert desired.name
        return
    problems = [problem for obj in objects if obj is not None for problem in object_problems(obj)]
    new = [problem for problem in problems if known_finding(problem) is None]
    assert not new, f"{case.describe()}\nname={name!r}\n" + "\n".join(new)


# Findings of this test, fixed: each reproducer is now refused by the models (InvalidSpec naming the
# field), and by the CRD at admission where a schema pattern can say it (tests/e2e/test_admission.py).
TS_BASE: dict[str, Any] = {"database": {"managed": {}}, "artifacts": {"s3": {"bucket": "mlflow-bucket"}}}
MD_BASE: dict[str, Any] = {"trackingUri": "http://127.0.0.1:1", "model": {"registeredModel": "fraud", "version": 1}}
FIXED: dict[str, tuple[str, dict[str, Any], str]] = {
    "resource-name": ("TrackingServer", {"resources": {"limits": {"gpu": "1"}}}, "spec.resources.limits.gpu"),
    "annotation-key": (
        "TrackingServer",
        {"artifacts": {"s3": {"bucket": "mlflow-bucket", "serviceAccountAnnotations": {"not a key": "v"}}}},
        "spec.artifacts.s3.serviceAccountAnnotations",
    ),
    "storage-class": (
        "TrackingServer",
        {"database": {"managed": {"storageClassName": "Fast SSD"}}},
        "spec.database.managed.storageClassName",
    ),
    "ingress-class": (
        "TrackingServer",
        {"ingress": {"enabled": True, "host": "mlflow.example.com", "className": "Not A Class"}},
        "spec.ingress.className",
    ),
    "requests-over-limits": (
        "TrackingServer",
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "spec.resources: Value error, requests.cpu (2) must not exceed limits.cpu (1)",
    ),
    "md-resource-name": (
        "ModelDeployment",
        {"runtime": {"resources": {"requests": {"gpu": 1}}}},
        "spec.runtime.resources.requests.gpu",
    ),
}


@pytest.mark.parametrize("finding", sorted(FIXED))
def test_fixed_findings_are_refused_naming_the_field(finding: str) -> None:
    kind, changes, field = FIXED[finding]
    result = validate_spec(MODELS[kind], {**(TS_BASE if kind == "TrackingServer" else MD_BASE), **changes})
    assert isinstance(result, Invalid), finding
    assert field in result.message, result.message


def test_requests_and_limits_compare_as_quantities() -> None:
    fits = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "1024Mi"}}}
    assert isinstance(validate_spec(MODELS["TrackingServer"], {**TS_BASE, **fits}), Valid)
    extended = {"resources": {"limits": {"nvidia.com/gpu": 1, "hugepages-2Mi": "1Gi", "ephemeral-storage": "1G"}}}
    assert isinstance(validate_spec(MODELS["TrackingServer"], {**TS_BASE, **extended}), Valid)


def test_dotted_names_are_refused_by_the_crds_of_kinds_that_name_services() -> None:
    """metadata.name is not in the spec, so the CRD's rule is the only guard (the e2e admission test shows
    the API server applying it)."""
    rules = {
        info.kind: [
            rule["rule"]
            for rule in crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
        ]
        for info in KINDS
    }
    dots = "!self.metadata.name.contains('.')"
    assert dots in rules["TrackingServer"] and dots in rules["ModelDeployment"]
    assert dots not in rules["RegisteredModel"]  # it creates nothing named after itself in the cluster
