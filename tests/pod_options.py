"""A `spec.pod` with every option set, on the examples' TrackingServer and ModelDeployment: shared by the unit
tests (what each workload gets) and the e2e admission test (the API server admits the resources and every
object rendered from them)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.kube import ROOT

EVERY_POD_OPTION: dict[str, Any] = {
    "imagePullSecrets": [{"name": "mirror-pull"}],
    "nodeSelector": {"node-pool": "ml"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}
            ],
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"team": "fraud"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    },
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}],
    "priorityClassName": "ml-critical",
    "labels": {"team": "fraud", "cost-center": "ml-42"},
    "annotations": {"example.com/owner": "ml-platform"},
    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlflow"},
    "env": [
        {"name": "REQUESTS_CA_BUNDLE", "value": "/etc/ssl/corp/ca.pem"},
        {"name": "HTTPS_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "url"}}},
        {"name": "EXTRA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "extra", "key": "token", "optional": True}}},
    ],
    "envFrom": [{"configMapRef": {"name": "corp-settings"}, "prefix": "CORP_"}, {"secretRef": {"name": "corp"}}],
    "volumes": [
        {"name": "corp-ca", "configMap": {"name": "corp-ca"}},
        {"name": "corp-secret", "secret": {"secretName": "corp", "optional": True}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
    ],
    "volumeMounts": [
        {"name": "corp-ca", "mountPath": "/etc/ssl/corp"},
        {"name": "scratch", "mountPath": "/scratch", "readOnly": False},
    ],
}


def examples_with_every_pod_option() -> list[dict[str, Any]]:
    """The TrackingServer and ModelDeployment examples (auth, managed database, gc) with EVERY_POD_OPTION."""
    documents = []
    for name in ("tracking-server.yaml", "model-deployment.yaml"):
        for loaded in yaml.safe_load_all((ROOT / "examples" / name).read_text()):
            document = copy.deepcopy(loaded)
            if document["kind"] in ("TrackingServer", "ModelDeployment"):
                document["spec"]["pod"] = copy.deepcopy(EVERY_POD_OPTION)
            documents.append(document)
    return documents
