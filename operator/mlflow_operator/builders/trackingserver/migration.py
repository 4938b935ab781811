"""The Job that runs `mlflow db upgrade` for one MLflow version before servers of that version start."""

from __future__ import annotations

from mlflow_operator.builders.common import Obj, job_pod, labels, metadata, secret_env
from mlflow_operator.builders.pod import workload
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_MIGRATION,
    MLFLOW_JOB_RESOURCES,
    TrackingServerInputs,
    mlflow_image,
)


def get_migration_job(inputs: TrackingServerInputs, version: str) -> Obj:
    """`mlflow db upgrade`, once per version, straight to Postgres: a transaction-mode pooler would break
    the migration's session state, and running it in every pod's init container races and crash-loops."""
    names = inputs.names
    container = {
        "name": "migrate",
        "image": mlflow_image(inputs, version),
        "command": ["mlflow", "db", "upgrade", "$(MLFLOW_DIRECT_URI)"],
        "env": [secret_env("MLFLOW_DIRECT_URI", names.backend_secret, "direct-uri")],
        "resources": MLFLOW_JOB_RESOURCES,
    }
    return workload(
        "Job",
        metadata(
            names.migration(version),
            inputs.namespace,
            labels(inputs.name, COMPONENT_MIGRATION),
            annotations={"mlflow.operator.dev/mlflow-version": version},
        ),
        {
            "backoffLimit": 4,  # Kubernetes retries with exponential backoff (10 s, 20 s, 40 s, ...)
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": labels(inputs.name, COMPONENT_MIGRATION)},
                "spec": job_pod(APP_UID, container),
            },
        },
        inputs.spec.pod,
    )
