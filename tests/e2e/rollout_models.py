"""Registers the two versions the real-pod rollout test ships; run as a Job in the model-server image, next
to hack/seed_model.py (both from one ConfigMap), with the Job's MLFLOW_TRACKING_* env:

- a classifier trained on the inverted labels, so its predictions for seed_model.SAMPLE differ from the
  seed's (tagged `sample_predictions` like every seeded version);
- a model that downloads but cannot load (its load_context raises), as a broken build would;
- a model that loads and answers day-time requests but raises on any night-time row (hour < 6), as a model
  with a bug on some inputs would: MLflow answers those requests 400 and the model server counts a
  prediction error, which the successRate analysis template sees.

Prints `VERSIONS <inverted> <unloadable> <flaky>` last.
"""

from __future__ import annotations

import mlflow
import mlflow.pyfunc
from sklearn.linear_model import LogisticRegression  # type: ignore[import-not-found]

import seed_model  # type: ignore[import-not-found]  # the ConfigMap's sibling file


class Unloadable(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    def load_context(self, context: object) -> None:
        raise RuntimeError("this model cannot load (a broken build, on purpose)")

    def predict(self, context: object, model_input: object) -> object:
        return model_input


class NightBlind(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    def predict(self, context: object, model_input: object) -> object:
        hours = list(model_input["hour"])  # type: ignore[index]
        if any(hour < 6 for hour in hours):
            raise ValueError("night-time transactions are not supported by this build")
        return [0 for _ in hours]


def log_python_model(run_name: str, model: object) -> str:
    """A pyfunc model registered as a new version of seed_model.MODEL; its version."""
    with mlflow.start_run(run_name=run_name):
        # Explicit requirements: inferring them would load the model, which may raise.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=model, pip_requirements=["mlflow"], registered_model_name=seed_model.MODEL
        )
    return str(info.registered_model_version)


def main() -> None:
    features, labels = seed_model.training_data()
    inverted = seed_model.log_and_register(LogisticRegression(max_iter=1000).fit(features, [1 - y for y in labels]))
    mlflow.set_experiment(seed_model.EXPERIMENT)
    unloadable = log_python_model("unloadable", Unloadable())
    night_blind = log_python_model("night-blind", NightBlind())
    print("VERSIONS", inverted, unloadable, night_blind)


if __name__ == "__main__":
    main()
