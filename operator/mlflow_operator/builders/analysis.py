"""The PromQL a ModelDeployment's analysis runs: a user's query with its placeholders substituted, or a
built-in template, like Flagger's request-success-rate and request-duration.

The templates read the series the default model server exports (images/mlflow-model-server/
mlflow_model_serving.py, which names them), selected by the labels every one of its series carries: the
ModelDeployment, its namespace and the model version. Versions, not roles: each version runs in its own
Deployment and keeps its pods when promoted, so "the canary's pods" are those of status.canaryVersion.

- successRate: share of /invocations requests answered without a 5xx and without a model error (MLflow
  answers an exception raised by the model with HTTP 400; the server counts those apart from rejected input).
  Either failure count may have no series yet (`or vector(0)`); no request at all gives no data, which the
  analysis counts as Inconclusive, never as a pass.
- latencyP99: the 99th percentile of /invocations latency in seconds, from the histogram's buckets.

Both look back over the analysis interval, at least MIN_WINDOW_SECONDS: a rate needs two scrapes in its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow_operator.api.common import duration_seconds
from mlflow_operator.api.modeldeployment import Analysis, AnalysisMetric, AnalysisTemplate
from mlflow_operator.builders.modeldeployment import Names

REQUESTS = "mlflow_model_server_requests_total"
LATENCY_BUCKETS = "mlflow_model_server_request_duration_seconds_bucket"
PREDICTION_ERRORS = "mlflow_model_server_prediction_errors_total"
SERVED_PATH = "/invocations"
MIN_WINDOW_SECONDS = 30


@dataclass(frozen=True)
class QueryContext:
    """What a query's placeholders and the templates' selectors stand for in one measurement."""

    name: str
    namespace: str
    canary_service: str
    stable_service: str
    canary_version: int | None
    stable_version: int | None
    window_seconds: int


def query_context(
    name: str, namespace: str, analysis: Analysis, canary_version: int | None, stable_version: int | None
) -> QueryContext:
    return QueryContext(
        name=name,
        namespace=namespace,
        canary_service=Names(name).canary,
        stable_service=Names(name).stable,
        canary_version=canary_version,
        stable_version=stable_version,
        window_seconds=max(MIN_WINDOW_SECONDS, math.ceil(duration_seconds(analysis.interval))),
    )


def substitute(query: str, context: QueryContext) -> str:
    """A user's query with {{canary}}, {{stable}}, {{canaryVersion}}, {{stableVersion}} and {{namespace}}."""
    values = {
        "canary": context.canary_service,
        "stable": context.stable_service,
        "canaryVersion": _version_text(context.canary_version),
        "stableVersion": _version_text(context.stable_version),
        "namespace": context.namespace,
    }
    for placeholder, value in values.items():
        query = query.replace("{{" + placeholder + "}}", value)
    return query


def metric_query(metric: AnalysisMetric, context: QueryContext) -> str:
    if metric.template is not None:
        return template_query(metric.template, context)
    assert metric.query is not None  # exactly one of query and template (AnalysisMetric)
    return substitute(metric.query, context)


def template_query(template: AnalysisTemplate, context: QueryContext) -> str:
    canary = _selector(context, context.canary_version)
    served = f'{canary},path="{SERVED_PATH}"'
    window = f"[{context.window_seconds}s]"
    if template == "successRate":
        server_errors = f'(sum(rate({REQUESTS}{{{served},code=~"5.."}}{window})) or vector(0))'
        model_errors = f"(sum(rate({PREDICTION_ERRORS}{{{canary}}}{window})) or vector(0))"
        requests = f"sum(rate({REQUESTS}{{{served}}}{window}))"
        return f"1 - ({server_errors} + {model_errors}) / {requests}"
    return f"histogram_quantile(0.99, sum by (le) (rate({LATENCY_BUCKETS}{{{served}}}{window})))"


def _selector(context: QueryContext, version: int | None) -> str:
    return (
        f'model_deployment_namespace="{context.namespace}",model_deployment="{context.name}",'
        f'model_version="{_version_text(version)}"'
    )


def _version_text(version: int | None) -> str:
    # No version (no canary yet) selects nothing: the measurement has no data and is Inconclusive.
    return "" if version is None else str(version)
