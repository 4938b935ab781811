"""The Job that runs `mlflow db upgrade` for one MLflow version before servers of that version start."""

from __future__ import annotations

from mlflow_operator.builders.common import (
    Obj,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    secret_env,
    tmp_volume,
)
from mlflow_operator.builders.pod import customized
from mlflow_operator.builders.trackingserver.inputs import (
    APP_UID,
    COMPONENT_MIGRATION,
    TrackingServerInputs,
    mlflow_image,
)


def get_migration_job(inputs: TrackingServerInputs, version: str) -> Obj:
    """`mlflow db upgrade`, once per version, straight to Postgres: a transaction-mode pooler would break
    the migration's session state, and running it in every pod's init container races and crash-loops."""
    names = inputs.names
    tmp, tmp_mount = tmp_volume()
    return customized(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata(
                names.migration(version),
                inputs.namespace,
                labels(inputs.name, COMPONENT_MIGRATION),
                annotations={"mlflow.operator.dev/mlflow-version": version},
            ),
            "spec": {
                "backoffLimit": 4,  # Kubernetes retries with exponential backoff (10 s, 20 s, 40 s, ...)
                "activeDeadlineSeconds": 1800,
                "template": {
                    "metadata": {"labels": labels(inputs.name, COMPONENT_MIGRATION)},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,  # no pod of the stack talks to the Kubernetes API
                        "securityContext": pod_security_context(APP_UID),
                        "containers": [
                            {
                                "name": "migrate",
                                "image": mlflow_image(inputs, version),
                                "command": ["mlflow", "db", "upgrade", "$(MLFLOW_DIRECT_URI)"],
                                "env": [secret_env("MLFLOW_DIRECT_URI", names.backend_secret, "direct-uri")],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "256Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": container_security_context(),
                                "volumeMounts": [tmp_mount],
                            }
                        ],
                        "volumes": [tmp],
                    },
                },
            },
        },
        inputs.spec.pod,
    )
