"""Lifecycle rules against registered models, on the real thing: the example TrackingServer as rendered
(MLflow server, PgBouncer, Postgres) writing artifacts to MinIO, the operator's registry adapter reading
where every version lives, and the operator's bucket adapter applying only the rules the safety check allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow_operator.adapters.registry import ModelRegistry
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.adapters.s3 import BucketLifecycle, S3Endpoint
from mlflow_operator.api.trackingserver import Lifecycle, LifecycleRule
from mlflow_operator.builders.trackingserver import Credentials
from mlflow_operator.logic.lifecycle import desired_rules, fingerprint
from mlflow_operator.logic.lifecycle_safety import SafetyDecision, artifact_key_prefix, safety_decision
from tests.integration.dataplane import Postgres
from tests.integration.s3_servers import S3Server
from tests.integration.tracking_plane import Plane, rendered_plane, run_client, tracking_inputs

# Logs a pyfunc model in an experiment (created with an artifact location when given) and registers it.
LOG_AND_REGISTER_SCRIPT = """\
import json, os
import mlflow

params = json.loads(os.environ["TEST_PARAMS"])


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


experiment = mlflow.create_experiment(params["experiment"], artifact_location=params.get("location") or None)
with mlflow.start_run(experiment_id=experiment):
    info = mlflow.pyfunc.log_model(
        name="model", python_model=Echo(), pip_requirements=["mlflow==" + mlflow.__version__],
        registered_model_name=params["model"],
    )
print(json.dumps({"experiment_id": experiment, "version": info.registered_model_version, "model_id": info.model_id}))
"""


def rule(rule_id: str, **fields: Any) -> LifecycleRule:
    return LifecycleRule.model_validate({"id": rule_id, **fields})


def registry(plane: Plane) -> ModelRegistry:
    admin = plane.inputs.admin_credentials
    assert admin is not None
    return ModelRegistry(RegistryEndpoint(plane.server.url, username=admin.username, password=admin.password))


def bucket(plane: Plane) -> BucketLifecycle:
    return BucketLifecycle(
        S3Endpoint(
            plane.bucket,
            endpoint_url=plane.s3.endpoint_url,
            access_key_id=plane.s3.access_key_id,
            secret_access_key=plane.s3.secret_access_key,
        )
    )


def check(plane: Plane, rules: list[LifecycleRule], previous: dict[str, Any] | None) -> SafetyDecision:
    """What the TrackingServer handler decides on a pass: the registry read, then the pure decision."""
    spec = plane.inputs.spec.artifacts.s3
    versions = registry(plane).version_artifacts()
    return safety_decision(
        rules, spec.prefix, spec.bucket, versions, previous, fingerprint(desired_rules(Lifecycle(rules=rules)))
    )


def bucket_rule_ids(plane: Plane) -> set[str]:
    return {r["ID"] for r in bucket(plane).get_rules()}


def test_rules_never_reach_a_registered_models_objects(minio: S3Server, tmp_path: Path) -> None:
    name = minio.create_bucket()
    with Postgres(log_dir=tmp_path / "logs") as postgres:
        inputs = tracking_inputs(minio, name, Credentials(postgres.user, postgres.password))
        with rendered_plane(postgres, inputs, minio, name, tmp_path) as plane:
            logged = run_client(plane, LOG_AND_REGISTER_SCRIPT, {"experiment": "fraud", "model": "fraud"})
            experiment = logged["experiment_id"]

            # The adapter finds where the version lives, and MinIO holds the model's files exactly there.
            [found] = registry(plane).version_artifacts()
            key_prefix = artifact_key_prefix(found.artifact_uri or "", name, "mlflow")
            assert key_prefix == f"mlflow/{experiment}/models/{logged['model_id']}/artifacts/"
            listing = minio.client().list_objects_v2(Bucket=name, Prefix=key_prefix)
            assert "MLmodel" in {item["Key"].rsplit("/", 1)[-1] for item in listing.get("Contents", [])}

            # An expiration of the model's experiment: refused, and the bucket is not touched.
            experiment_rule = rule(
                "expire-experiment", filter={"prefix": f"mlflow/{experiment}/"}, expiration={"days": 30}
            )
            refused = check(plane, [experiment_rule], None)
            assert [r.rule_id for r in refused.withheld] == ["expire-experiment"]
            assert refused.allowed([experiment_rule]) == [] and bucket(plane).get_rules() == []
            # Narrowed to one file of the logged model: still refused (a models/ directory).
            model_rule = rule("expire-model", filter={"prefix": key_prefix + "MLmodel"}, expiration={"days": 30})
            [model_refusal] = check(plane, [model_rule], None).withheld
            assert "would delete registered model artifacts" in model_refusal.message

            # A safe rule goes to the bucket.
            scratch = rule("expire-scratch", filter={"prefix": "mlflow/scratch/"}, expiration={"days": 14})
            versions_rule = rule("noncurrent-versions", noncurrentVersionExpiration={"noncurrentDays": 30})
            rules = [scratch, versions_rule]
            first = check(plane, rules, None)
            assert first.withheld == ()
            sync = bucket(plane).reconcile(desired_rules(Lifecycle(rules=first.allowed(rules))), None)
            assert bucket_rule_ids(plane) == {"expire-scratch", "noncurrent-versions"}

            # A version registered later from a scratch experiment: the next pass takes the rule off the bucket.
            params = {"experiment": "scratch-a", "location": "mlflow-artifacts:/scratch/a", "model": "keeper"}
            later = run_client(plane, LOG_AND_REGISTER_SCRIPT, params)
            second = check(plane, rules, first.record)
            [withheld] = second.withheld
            assert withheld.rule_id == "expire-scratch"
            assert f"model version keeper/{later['version']}" in withheld.message
            assert f"s3://{name}/mlflow/scratch/a/models/{later['model_id']}/artifacts/" in withheld.message
            bucket(plane).reconcile(desired_rules(Lifecycle(rules=second.allowed(rules))), sync.applied)
            assert bucket_rule_ids(plane) == {"noncurrent-versions"}
            # The model the rule would have deleted is whole.
            listing = minio.client().list_objects_v2(
                Bucket=name, Prefix=f"mlflow/scratch/a/models/{later['model_id']}/"
            )
            assert len(listing.get("Contents", [])) >= 3

            # Still withheld on the next pass at the same spec, with the record the handler keeps.
            assert [r.rule_id for r in check(plane, rules, second.record).withheld] == ["expire-scratch"]
