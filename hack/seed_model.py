"""Seeds the examples' registry (run by hack/run.py as a Job in the model-server image, which has mlflow,
scikit-learn and pandas): logs a tiny scikit-learn classifier, registers it as a version of `fraud` and
points the alias `champion` at it, which is what examples/model-deployment.yaml serves.

The version carries the tag `sample_predictions`: what the trained model itself predicts for SAMPLE (the
request the README sends), so anyone (the real-pod e2e tests) can check a server's answer against the model.

Idempotent: when `champion` already names a version, nothing is logged (a second `make run` adds no version).
With `--next` (`hack/run.py --next-version`, the README's canary walkthrough) it always logs a retrained
version and moves `champion` to it, which starts the example ModelDeployment's canary.
The tracking URI and the admin credentials come from the Job's env (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD).
"""

from __future__ import annotations

import json
import sys

import mlflow
import pandas as pd  # type: ignore[import-untyped]
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression  # type: ignore[import-not-found]

MODEL = "fraud"
ALIAS = "champion"
EXPERIMENT = "fraud"
SAMPLE = {"columns": ["amount", "hour"], "data": [[1500.0, 3], [20.0, 14]]}  # the README's request body
PREDICTIONS_TAG = "sample_predictions"


def champion_version(client: MlflowClient) -> str | None:
    try:
        return str(client.get_model_version_by_alias(MODEL, ALIAS).version)
    except MlflowException:  # no such alias (or model) yet
        return None


def training_data() -> tuple[pd.DataFrame, list[int]]:
    """Card transactions: large amounts at night are fraud. Named columns give the model a signature, so the
    scoring server accepts {"dataframe_split": {"columns": ["amount", "hour"], ...}}."""
    features = pd.DataFrame(
        {
            "amount": [12.0, 40.0, 7.5, 950.0, 1200.0, 30.0, 2200.0, 15.0],
            "hour": [14, 10, 18, 3, 2, 12, 4, 9],
        }
    )
    return features, [0, 0, 0, 1, 1, 0, 1, 0]


def log_and_register(model: LogisticRegression, model_name: str = MODEL) -> str:
    """Logs `model`, registers it as a new version of `model_name` tagged with its SAMPLE predictions."""
    features, _ = training_data()
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="seed"):
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=features.head(2), registered_model_name=model_name
        )
    version = str(info.registered_model_version)
    predictions = model.predict(pd.DataFrame(SAMPLE["data"], columns=SAMPLE["columns"])).tolist()
    MlflowClient().set_model_version_tag(model_name, version, PREDICTIONS_TAG, json.dumps(predictions))
    return version


def fraud_classifier(regularization: float = 1.0) -> LogisticRegression:
    features, labels = training_data()
    return LogisticRegression(C=regularization, max_iter=1000).fit(features, labels)


def main() -> None:
    client = MlflowClient()
    existing = champion_version(client)
    if "--next" in sys.argv[1:]:
        # A retrained model (stronger regularization): same task, a new version to roll out.
        version = log_and_register(fraud_classifier(regularization=0.5))
        client.set_registered_model_alias(MODEL, ALIAS, version)
        print(f"registered {MODEL} version {version}, {ALIAS} -> {version} (was {existing})")
        return
    if existing is not None:
        print(f"{MODEL}@{ALIAS} is already version {existing}: nothing to seed")
        return
    version = log_and_register(fraud_classifier())
    client.set_registered_model_alias(MODEL, ALIAS, version)
    print(f"registered {MODEL} version {version}, {ALIAS} -> {version}")


if __name__ == "__main__":
    main()
