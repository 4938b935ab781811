"""mlflow-operator: a Kubernetes operator for a production MLflow platform."""

__version__ = "0.1.0"
