"""All I/O lives here: the Kubernetes API, the MLflow registry, S3 and Prometheus."""
