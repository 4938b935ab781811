"""MLflow's scoring server with Prometheus request metrics, on a port of their own.

The operator runs `uvicorn --app-dir <this file's directory> mlflow_model_serving:app` instead of MLflow's
`mlflow.pyfunc.scoring_server.app:app`: the same FastAPI app (same routes, formats and answers), wrapped by
an ASGI middleware that counts every request, and a prometheus-client HTTP server on METRICS_PORT_ENV's port.
Probes stay on the serving port and never share the metrics one, and scraping never queues behind a slow
prediction.

Series (names and labels are the operator's analysis templates' contract, see the operator's
builders/analysis.py):
- mlflow_model_server_requests_total{path, method, code}: requests answered, by route and HTTP status;
- mlflow_model_server_request_duration_seconds{path}: a latency histogram;
- mlflow_model_server_prediction_errors_total: predictions that raised. MLflow answers a model's own
  exception with HTTP 400 (as if the input were bad), so a canary whose model crashes on some inputs would
  look healthy by status codes alone; this counter tells those apart from rejected input (schema errors
  raise MlflowException before the model runs and are not counted).
Every series also carries model_deployment, model_deployment_namespace and model_version from the
environment the operator sets, so a query selects one version's pods whatever labels the scraper adds.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from prometheus_client import Counter, Histogram, start_http_server

METRICS_PORT_ENV = "MODEL_SERVER_METRICS_PORT"
IDENTITY_ENV = {
    "model_deployment": "MODEL_DEPLOYMENT",
    "model_deployment_namespace": "MODEL_DEPLOYMENT_NAMESPACE",
    "model_version": "MODEL_VERSION",
}
# Any other path is counted as "other": a label per scanned URL would grow the series without bound.
ROUTES = ("/invocations", "/ping", "/health", "/version")
# Model latencies range from a millisecond to the request timeout (60 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def identity() -> dict[str, str]:
    return {label: os.environ.get(variable, "") for label, variable in IDENTITY_ENV.items()}


IDENTITY = identity()
REQUESTS = Counter(
    "mlflow_model_server_requests",
    "Requests answered by the model server, by route and HTTP status.",
    [*IDENTITY, "path", "method", "code"],
)
LATENCY = Histogram(
    "mlflow_model_server_request_duration_seconds",
    "Time from a request's arrival to the end of its response.",
    [*IDENTITY, "path"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_ERRORS = Counter(
    "mlflow_model_server_prediction_errors",
    "Predictions where the model itself raised (MLflow answers them with HTTP 400).",
    list(IDENTITY),
)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by route and status, and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ROUTES else "other"
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            REQUESTS.labels(**IDENTITY, path=path, method=scope["method"], code=str(status)).inc()
            LATENCY.labels(**IDENTITY, path=path).observe(time.perf_counter() - started)


def count_prediction_errors(predict: Callable[..., Any]) -> Callable[..., Any]:
    """`predict`, counting the exceptions the model raises (not MLflow's own input validation)."""

    @functools.wraps(predict)  # keeps the signature: the scoring server inspects it for `params`
    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return predict(*args, **kwargs)
        except MlflowException:
            raise
        except Exception:
            PREDICTION_ERRORS.labels(**IDENTITY).inc()
            raise

    return counted


def initialize_series() -> None:
    """The series analysis compares, at 0 from the start. A counter that first appears with its first
    increment has no earlier sample, so Prometheus cannot compute its rate until the next scrape after that:
    a canary's first errors would stay invisible for a scrape interval or two, exactly when they matter."""
    for code in ("200", "400", "500"):
        REQUESTS.labels(**IDENTITY, path="/invocations", method="POST", code=code)
    LATENCY.labels(**IDENTITY, path="/invocations")
    PREDICTION_ERRORS.labels(**IDENTITY)


def create_app() -> ASGIApp:
    # What mlflow.pyfunc.scoring_server.app does, with the model's predict counted.
    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    model.predict = count_prediction_errors(model.predict)  # type: ignore[method-assign]
    return RequestMetrics(scoring_server.init(model))


app = create_app()
initialize_series()
start_http_server(int(os.environ.get(METRICS_PORT_ENV, "8081")))
