"""The optional garbage collection of deleted runs: a CronJob running the safe-gc script from a ConfigMap."""

from __future__ import annotations

import re

from mlflow_operator.builders.common import Obj, job_pod, labels, metadata, secret_env
from mlflow_operator.builders.config import (
    GC_SCRIPT,
    gc_script,
)
from mlflow_operator.builders.pod import workload
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_GC,
    GC_SCRIPT_DIR,
    MLFLOW_JOB_RESOURCES,
    TrackingServerInputs,
    mlflow_image,
    tracking_url,
)
from mlflow_operator.builders.trackingserver.secrets import admin_secret_name

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")


_MILLIS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def gc_older_than(duration: str) -> str:
    """A duration of the API (units in any order, repeated, milliseconds) as `mlflow gc --older-than`
    parses it: its regex takes days, hours, minutes, seconds, each at most once and in that order, and
    fails the whole run on anything else (30m1h, 1d12h30m0s1s or 500ms made every gc Job fail)."""
    total = sum(int(number) * _MILLIS[unit] for number, unit in _DURATION_PART.findall(duration))
    days, rest = divmod(total, _MILLIS["d"])
    hours, rest = divmod(rest, _MILLIS["h"])
    minutes, millis = divmod(rest, _MILLIS["m"])
    seconds = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = "".join(f"{value}{unit}" for value, unit in parts if value)
    return text + f"{seconds}s" if millis or not text else text


def get_gc_configmap(inputs: TrackingServerInputs) -> Obj | None:
    """The gc Job's script (builders/templates/safe_gc.py): the mlflow-server image has mlflow, not the
    operator, so the script travels in a ConfigMap."""
    if inputs.spec.retention is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inputs.names.gc, inputs.namespace, labels(inputs.name, COMPONENT_GC)),
        "data": {GC_SCRIPT: gc_script()},
    }


def gc_command(older_than: str) -> list[str]:
    """The image's python running the mounted script. The backend URI stays in the env: on the command line
    its password would show in the pod spec's expansion and the process list."""
    return ["python", f"{GC_SCRIPT_DIR}/{GC_SCRIPT}", "--older-than", gc_older_than(older_than)]


def get_gc_cronjob(inputs: TrackingServerInputs) -> Obj | None:
    """`mlflow gc` of what was deleted long enough ago, except what a registered model version needs (see
    templates/safe_gc.py); MLFLOW_TRACKING_URI makes it delete artifacts through the server's proxy."""
    retention = inputs.spec.retention
    if retention is None:
        return None
    names = inputs.names
    env = [
        secret_env("MLFLOW_BACKEND_STORE_URI", names.backend_secret, "pooled-uri"),
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_url(inputs.name, inputs.namespace)},
        # As for the server: no usage telemetry leaves the cluster from the nightly Job either.
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        # MLflow's client retries a failing artifact delete 7 times with exponential backoff: about 4 minutes
        # before an unreachable bucket fails the Job. The Job retries itself (backoffLimit), so 2 are enough.
        {"name": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "value": "2"},
    ]
    if inputs.spec.auth is not None and inputs.spec.auth.enabled:
        admin = admin_secret_name(inputs.name, inputs.spec.auth)
        env += [
            secret_env("MLFLOW_TRACKING_USERNAME", admin, "username"),
            secret_env("MLFLOW_TRACKING_PASSWORD", admin, "password"),
        ]
    container = {
        "name": "gc",
        "image": mlflow_image(inputs, inputs.serving_version),
        "command": gc_command(retention.deleted_runs_older_than),
        "env": env,
        "resources": MLFLOW_JOB_RESOURCES,
    }
    script = {"name": "script", "configMap": {"name": names.gc}}
    script_mount = {"name": "script", "mountPath": GC_SCRIPT_DIR, "readOnly": True}
    pod_labels = labels(inputs.name, COMPONENT_GC)
    return workload(
        "CronJob",
        metadata(names.gc, inputs.namespace, pod_labels),
        {
            "schedule": retention.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                # Labelled Jobs: the TrackingServer reads its gc Jobs' outcome with one label-selected list.
                "metadata": {"labels": pod_labels},
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        # No config-hash annotation: each Job's pod mounts the ConfigMap as it is when the pod
                        # starts, so a changed script reaches the next run without rolling anything.
                        "metadata": {"labels": pod_labels},
                        "spec": job_pod(APP_UID, container, [script_mount], [script]),
                    },
                },
            },
        },
        inputs.spec.pod,
    )
