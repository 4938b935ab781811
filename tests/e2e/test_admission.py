"""The API server itself refuses bad input, with a message that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.stacks import resource
from tests.kube import Kubectl


def canary(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"strategy": {"canary": {"steps": list(steps)}}, "trafficRouting": {"replicaRatio": {}}, **extra}


ANALYSIS = {"metrics": [{"name": "errors", "query": "up", "thresholdRange": {"max": 1}}]}
LIFECYCLE_RULE = {"id": "r1", "expiration": {"days": 7}}

# (id, kind, spec changes, text the API server's message must contain: the field and the reason)
INVALID = [
    (
        "ts-restore-target-time",
        "TrackingServer",
        {"database": {"managed": {"restore": {"fromBackup": {"serverName": "old"}, "targetTime": "yesterday"}}}},
        "spec.database.managed.restore.targetTime",
    ),
    (
        "ts-backup-retention",
        "TrackingServer",
        {"database": {"managed": {"backup": {"retention": "30 days"}}}},
        "spec.database.managed.backup.retention",
    ),
    (
        "ts-both-databases",
        "TrackingServer",
        {"database": {"managed": {}, "external": {"host": "db", "credentialsSecret": {"name": "s"}}}},
        "spec.database: Invalid value: exactly one of managed or external must be set",
    ),
    ("ts-no-database", "TrackingServer", {"database": {}}, "exactly one of managed or external must be set"),
    ("ts-zero-replicas", "TrackingServer", {"replicas": 0}, "spec.replicas: Invalid value: 0"),
    (
        "ts-version-not-semver",
        "TrackingServer",
        {"version": "latest"},
        'spec.version: Invalid value: "latest"',
    ),
    (
        "ts-bucket-name",
        "TrackingServer",
        {"artifacts": {"s3": {"bucket": "Bad_Bucket"}}},
        "spec.artifacts.s3.bucket",
    ),
    (
        "ts-pool-mode",
        "TrackingServer",
        {"database": {"managed": {}, "pooler": {"mode": "statement"}}},
        'spec.database.pooler.mode: Unsupported value: "statement"',
    ),
    (
        "ts-pool-size",
        "TrackingServer",
        {"database": {"managed": {}, "pooler": {"defaultPoolSize": 100, "maxDbConnections": 50}}},
        "spec.database.pooler.defaultPoolSize: Invalid value: pooler.defaultPoolSize must not exceed",
    ),
    (
        "ts-rule-without-action",
        "TrackingServer",
        {"artifacts": {"s3": {"bucket": "mlflow-bucket"}, "lifecycle": {"rules": [{"id": "noop"}]}}},
        "spec.artifacts.lifecycle.rules[0]: Invalid value: a lifecycle rule needs at least one action",
    ),
    (
        "ts-duplicate-rule-ids",
        "TrackingServer",
        {
            "artifacts": {
                "s3": {"bucket": "mlflow-bucket"},
                "lifecycle": {"rules": [LIFECYCLE_RULE, LIFECYCLE_RULE]},
            }
        },
        "spec.artifacts.lifecycle.rules[1]: Duplicate value",
    ),
    (
        "ts-delete-marker-with-tags",
        "TrackingServer",
        {
            "artifacts": {
                "s3": {"bucket": "mlflow-bucket"},
                "lifecycle": {
                    "rules": [
                        {
                            "id": "dm",
                            "filter": {"tags": [{"key": "a", "value": "b"}]},
                            "expiration": {"expiredObjectDeleteMarker": True},
                        }
                    ]
                },
            }
        },
        "expiration.expiredObjectDeleteMarker cannot be combined with filter.tags",
    ),
    (
        "ts-ingress-without-host",
        "TrackingServer",
        {"ingress": {"enabled": True}},
        "spec.ingress.host: Invalid value: ingress.host is required",
    ),
    (
        "ts-retention-duration",
        "TrackingServer",
        {"retention": {"deletedRunsOlderThan": "thirty days"}},
        "spec.retention.deletedRunsOlderThan",
    ),
    (
        "rm-two-servers",
        "RegisteredModel",
        {"trackingUri": "http://mlflow:5000"},
        "spec: Invalid value: exactly one of trackingServerRef or trackingUri must be set",
    ),
    (
        "rm-reserved-alias",
        "RegisteredModel",
        {"aliases": {"latest": 1}},
        "spec.aliases: Invalid value: aliases: 'latest' and 'v<number>' are reserved",
    ),
    (
        "rm-alias-version-zero",
        "RegisteredModel",
        {"aliases": {"champion": 0}},
        "spec.aliases.champion: Invalid value: 0",
    ),
    (
        "rm-credentials-without-uri",
        "RegisteredModel",
        {"credentialsSecret": {"name": "creds"}},
        "spec.credentialsSecret: Invalid value: credentialsSecret is only used with trackingUri",
    ),
    (
        "rm-uri-scheme",
        "RegisteredModel",
        {"trackingServerRef": None, "trackingUri": "ftp://mlflow"},
        "spec.trackingUri",
    ),
    (
        "rm-deletion-policy",
        "RegisteredModel",
        {"deletionPolicy": "Orphan"},
        'spec.deletionPolicy: Unsupported value: "Orphan"',
    ),
    # Go's `\s` is ASCII only: the CRD patterns spell Unicode whitespace out, as Python's `\s` means it.
    (
        "md-image-no-break-space",
        "ModelDeployment",
        {"runtime": {"image": "ghcr.io/acme/model\u00a0server:1"}},
        "spec.runtime.image: Invalid value:",
    ),
    (
        "md-tracking-uri-ideographic-space",
        "ModelDeployment",
        {"trackingServerRef": None, "trackingUri": "http://mlflow\u3000x:5000"},
        "spec.trackingUri: Invalid value:",
    ),
    (
        "md-template-and-query",
        "ModelDeployment",
        canary(
            {"analysis": {}},
            analysis={
                "metrics": [{"name": "m", "query": "up", "template": "successRate", "thresholdRange": {"min": 1}}]
            },
        ),
        "exactly one of query or template must be set",
    ),
    (
        "md-alias-and-version",
        "ModelDeployment",
        {"model": {"registeredModel": "fraud", "alias": "champion", "version": 3}},
        "spec.model: Invalid value: exactly one of alias or version must be set",
    ),
    (
        "md-step-two-actions",
        "ModelDeployment",
        canary({"setWeight": 10, "pause": {}}),
        "spec.strategy.canary.steps[0]: Invalid value: exactly one of setWeight, pause or analysis",
    ),
    (
        "md-weight-over-100",
        "ModelDeployment",
        canary({"setWeight": 150}),
        "spec.strategy.canary.steps[0].setWeight: Invalid value: 150",
    ),
    (
        "md-analysis-step-without-analysis",
        "ModelDeployment",
        canary({"analysis": {}}),
        "spec.analysis: Invalid value: strategy.canary.steps[].analysis requires spec.analysis",
    ),
    (
        "md-canary-without-router",
        "ModelDeployment",
        {"strategy": {"canary": {"steps": [{"setWeight": 5}]}}},
        "spec.trafficRouting: Invalid value: strategy.canary requires trafficRouting",
    ),
    (
        "md-replicas-and-autoscaling",
        "ModelDeployment",
        {"replicas": 2, "autoscaling": {"maxReplicas": 4}},
        "spec.autoscaling: Invalid value: set replicas or autoscaling, not both",
    ),
    (
        "md-two-routers",
        "ModelDeployment",
        {"trafficRouting": {"replicaRatio": {}, "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}},
        "spec.trafficRouting: Invalid value: exactly one of gatewayAPI or replicaRatio",
    ),
    ("md-empty-steps", "ModelDeployment", canary(), "spec.strategy.canary.steps"),
    (
        "md-threshold-range",
        "ModelDeployment",
        canary(
            {"analysis": {}},
            analysis={"metrics": [{"name": "e", "query": "up", "thresholdRange": {"min": 2, "max": 1}}]},
        ),
        "thresholdRange.min must not exceed max",
    ),
    (
        "ts-resource-name",
        "TrackingServer",
        {"resources": {"limits": {"gpu": "1"}}},
        "spec.resources.limits: Invalid value: keys must match",
    ),
    (
        "ts-storage-class",
        "TrackingServer",
        {"database": {"managed": {"storageClassName": "Fast SSD"}}},
        'spec.database.managed.storageClassName: Invalid value: "Fast SSD"',
    ),
    (
        "ts-annotation-key",
        "TrackingServer",
        {"artifacts": {"s3": {"bucket": "mlflow-bucket", "serviceAccountAnnotations": {"not a key": "v"}}}},
        "spec.artifacts.s3.serviceAccountAnnotations",
    ),
    (
        "ts-ingress-class",
        "TrackingServer",
        {"ingress": {"enabled": True, "host": "mlflow.example.com", "className": "Not A Class"}},
        'spec.ingress.className: Invalid value: "Not A Class"',
    ),
    (
        "md-version-zero",
        "ModelDeployment",
        {"model": {"registeredModel": "fraud", "version": 0}},
        "spec.model.version: Invalid value: 0",
    ),
    (
        "md-autoscaling-bounds",
        "ModelDeployment",
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling.minReplicas: Invalid value: autoscaling.minReplicas must not exceed maxReplicas",
    ),
    (
        "md-mirror-percent",
        "ModelDeployment",
        {"trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}], "mirrorPercent": 0}}},
        "spec.trafficRouting.gatewayAPI.mirrorPercent: Invalid value: 0",
    ),
    (
        "md-no-parent-refs",
        "ModelDeployment",
        {"trafficRouting": {"gatewayAPI": {"parentRefs": []}}},
        "spec.trafficRouting.gatewayAPI.parentRefs",
    ),
    (
        "md-header-name",
        "ModelDeployment",
        {
            "trafficRouting": {
                "gatewayAPI": {"parentRefs": [{"name": "gw"}], "headerMatch": {"name": "bad header", "value": "1"}}
            }
        },
        "spec.trafficRouting.gatewayAPI.headerMatch.name",
    ),
    (
        "md-analysis-interval",
        "ModelDeployment",
        canary({"analysis": {}}, analysis={**ANALYSIS, "interval": "soon"}),
        "spec.analysis.interval",
    ),
    (
        "md-metric-without-range",
        "ModelDeployment",
        canary({"analysis": {}}, analysis={"metrics": [{"name": "e", "query": "up", "thresholdRange": {}}]}),
        "thresholdRange needs min or max",
    ),
    (
        "md-duplicate-metric-names",
        "ModelDeployment",
        canary({"analysis": {}}, analysis={"metrics": [ANALYSIS["metrics"][0], ANALYSIS["metrics"][0]]}),
        "spec.analysis.metrics[1]: Duplicate value",
    ),
    (
        "md-poll-interval",
        "ModelDeployment",
        {"pollInterval": "every minute"},
        "spec.pollInterval",
    ),
    (
        "md-promotion-alias",
        "ModelDeployment",
        {"promotion": {"setAlias": "bad alias!"}},
        "spec.promotion.setAlias",
    ),
    (
        "md-registered-model-name",
        "ModelDeployment",
        {"model": {"registeredModel": "team/fraud", "alias": "champion"}},
        "spec.model.registeredModel",
    ),
]


def _drop_nones(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if value is not None}


@pytest.mark.parametrize(
    ("kind", "changes", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_spec_is_refused_naming_the_field(
    kubectl: Kubectl, crds: None, namespace: str, kind: str, changes: dict[str, Any], expected: str
) -> None:
    obj = resource(kind, changes)
    obj["spec"] = _drop_nones(obj["spec"])
    result = kubectl.apply(obj, namespace, check=False)
    assert result.returncode != 0, f"{kind} was admitted: {changes}"
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["TrackingServer", "ModelDeployment"])
def test_dotted_name_is_refused_where_it_names_services(
    kubectl: Kubectl, crds: None, namespace: str, kind: str
) -> None:
    result = kubectl.apply(resource(kind, {}, name="my.server"), namespace, check=False)
    assert result.returncode != 0
    assert "metadata.name must not contain dots" in result.stderr, result.stderr


def test_unknown_field_is_refused(kubectl: Kubectl, crds: None, namespace: str) -> None:
    result = kubectl.apply(resource("TrackingServer", {"replica": 3}), namespace, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.replica"' in result.stderr


def test_name_longer_than_children_allow_is_refused(kubectl: Kubectl, crds: None, namespace: str) -> None:
    result = kubectl.apply(resource("TrackingServer", {}, name="n" * 41), namespace, check=False)
    assert result.returncode != 0
    assert "metadata.name must be at most 40 characters" in result.stderr


@pytest.mark.parametrize(
    ("kind", "spec", "change", "expected"),
    [
        (
            "TrackingServer",
            {"database": {"managed": {"storageSize": "10Gi"}}},
            {"database": {"managed": {"storageSize": "20Gi"}}},
            "storageSize is immutable",
        ),
        (
            "TrackingServer",
            {},
            {"database": {"external": {"host": "db", "credentialsSecret": {"name": "s"}}}},
            "database.managed and database.external cannot be switched after creation",
        ),
        (
            "TrackingServer",
            {"database": {"managed": {}}},
            {"database": {"managed": {"restore": {"fromBackup": {"serverName": "old"}}}}},
            "restore is set when the TrackingServer is created and cannot change",
        ),
        (
            "TrackingServer",
            {"database": {"managed": {"restore": {"fromBackup": {"serverName": "old"}}}}},
            {"database": {"managed": {"restore": {"fromBackup": {"serverName": "older"}}}}},
            "restore is set when the TrackingServer is created and cannot change",
        ),
        ("RegisteredModel", {"modelName": "fraud"}, {"modelName": "fraud-v2"}, "modelName is immutable"),
    ],
    ids=["storage-size", "database-kind", "restore-added", "restore-changed", "model-name"],
)
def test_immutable_fields_refuse_changes(
    kubectl: Kubectl,
    crds: None,
    namespace: str,
    kind: str,
    spec: dict[str, Any],
    change: dict[str, Any],
    expected: str,
) -> None:
    kubectl.apply(resource(kind, spec, name="immutable"), namespace)
    result = kubectl.apply(resource(kind, change, name="immutable"), namespace, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_kubectl_explain_shows_field_descriptions(kubectl: Kubectl, crds: None) -> None:
    spec = kubectl.run("explain", "trackingservers.spec").stdout
    assert "Desired state of an MLflow tracking server." in spec
    assert "MLflow version; upgrades run a migration Job first." in spec
    pooler = kubectl.run("explain", "trackingservers.spec.database.pooler.mode").stdout
    assert "PgBouncer pool_mode" in pooler
    steps = kubectl.run("explain", "modeldeployments.spec.strategy.canary.steps").stdout
    assert "exactly one of setWeight, pause or analysis" in steps
