"""The PromQL of analysis: placeholders, built-in templates, and the model server's side of their contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlflow_operator.api.modeldeployment import Analysis, AnalysisMetric
from mlflow_operator.builders import analysis as queries
from mlflow_operator.builders import modeldeployment as build

SERVING_MODULE = Path(__file__).parents[2] / "images" / "mlflow-model-server" / "mlflow_model_serving.py"
ANALYSIS = Analysis.model_validate(
    {"interval": "30s", "metrics": [{"name": "m", "query": "up", "thresholdRange": {"max": 1}}]}
)


def context(canary: int | None = 4, stable: int | None = 3, interval: str = "30s") -> queries.QueryContext:
    analysis = ANALYSIS.model_copy(update={"interval": interval})
    return queries.query_context("fraud", "ml", analysis, canary, stable)


def test_placeholders_name_services_versions_and_namespace() -> None:
    query = 'a{s="{{canary}}",t="{{stable}}",cv="{{canaryVersion}}",sv="{{stableVersion}}",n="{{namespace}}"}'
    assert queries.substitute(query, context()) == 'a{s="fraud-canary",t="fraud-stable",cv="4",sv="3",n="ml"}'


def test_without_a_canary_the_version_selects_nothing() -> None:
    assert queries.substitute('a{v="{{canaryVersion}}"}', context(canary=None)) == 'a{v=""}'
    assert 'model_version=""' in queries.template_query("successRate", context(canary=None))


def test_success_rate_counts_server_and_model_errors_of_the_canary_version() -> None:
    canary = 'model_deployment_namespace="ml",model_deployment="fraud",model_version="4"'
    served = f'{canary},path="/invocations"'
    assert queries.template_query("successRate", context()) == (
        f'1 - ((sum(rate(mlflow_model_server_requests_total{{{served},code=~"5.."}}[30s])) or vector(0))'
        f" + (sum(rate(mlflow_model_server_prediction_errors_total{{{canary}}}[30s])) or vector(0)))"
        f" / sum(rate(mlflow_model_server_requests_total{{{served}}}[30s]))"
    )


def test_latency_p99_is_a_histogram_quantile_of_served_requests() -> None:
    assert queries.template_query("latencyP99", context(interval="2m")) == (
        "histogram_quantile(0.99, sum by (le) (rate(mlflow_model_server_request_duration_seconds_bucket"
        '{model_deployment_namespace="ml",model_deployment="fraud",model_version="4",path="/invocations"}[120s])))'
    )


def test_the_window_covers_at_least_two_scrapes() -> None:
    assert context(interval="5s").window_seconds == queries.MIN_WINDOW_SECONDS
    assert context(interval="90s").window_seconds == 90


def test_a_metric_has_a_query_or_a_template_not_both() -> None:
    both = {"name": "m", "query": "up", "template": "successRate", "thresholdRange": {"min": 0.9}}
    with pytest.raises(ValidationError, match="exactly one of query or template"):
        AnalysisMetric.model_validate(both)
    with pytest.raises(ValidationError, match="exactly one of query or template"):
        AnalysisMetric.model_validate({"name": "m", "thresholdRange": {"min": 0.9}})
    with pytest.raises(ValidationError):
        AnalysisMetric.model_validate({"name": "m", "template": "p95", "thresholdRange": {"min": 0.9}})
    metric = AnalysisMetric.model_validate({"name": "m", "template": "successRate", "thresholdRange": {"min": 0.9}})
    assert queries.metric_query(metric, context()) == queries.template_query("successRate", context())


def _serving_constants() -> dict[str, object]:
    """Top-level constants and metric names of the image's serving module, read without importing it
    (it loads a model at import)."""
    tree = ast.parse(SERVING_MODULE.read_text())
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                if value.func.id in ("Counter", "Histogram"):
                    found[node.targets[0].id] = ast.literal_eval(value.args[0])  # Counter("name", ...)
            elif not isinstance(value, ast.Call):
                try:
                    found[node.targets[0].id] = ast.literal_eval(value)
                except ValueError:
                    continue
    return found


def test_the_templates_query_what_the_model_server_exports() -> None:
    serving = _serving_constants()
    # prometheus-client appends _total to counters and _bucket to histogram buckets.
    assert f"{serving['REQUESTS']}_total" == queries.REQUESTS
    assert f"{serving['PREDICTION_ERRORS']}_total" == queries.PREDICTION_ERRORS
    assert f"{serving['LATENCY']}_bucket" == queries.LATENCY_BUCKETS
    assert queries.SERVED_PATH in serving["ROUTES"]  # type: ignore[operator]
    assert serving["METRICS_PORT_ENV"] == build.METRICS_PORT_ENV
    identity = serving["IDENTITY_ENV"]
    assert identity == {
        "model_deployment": build.DEPLOYMENT_ENV,
        "model_deployment_namespace": build.NAMESPACE_ENV,
        "model_version": build.VERSION_ENV,
    }
