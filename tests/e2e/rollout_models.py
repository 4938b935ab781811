"""Registers the two versions the real-pod rollout test ships; run as a Job in the model-server image, next
to hack/seed_model.py (both from one ConfigMap), with the Job's MLFLOW_TRACKING_* env:

- a classifier trained on the inverted labels, so its predictions for seed_model.SAMPLE differ from the
  seed's (tagged `sample_predictions` like every seeded version);
- a model that downloads but cannot load (its load_context raises), as a broken build would.

Prints `VERSIONS <inverted> <unloadable>` last.
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


def main() -> None:
    features, labels = seed_model.training_data()
    inverted = seed_model.log_and_register(LogisticRegression(max_iter=1000).fit(features, [1 - y for y in labels]))
    mlflow.set_experiment(seed_model.EXPERIMENT)
    with mlflow.start_run(run_name="unloadable"):
        # Explicit requirements: inferring them would load the model, which raises.
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Unloadable(),
            pip_requirements=["mlflow"],
            registered_model_name=seed_model.MODEL,
        )
    print("VERSIONS", inverted, info.registered_model_version)


if __name__ == "__main__":
    main()
