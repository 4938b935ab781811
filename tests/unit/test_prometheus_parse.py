"""parse_instant_response: every shape of an /api/v1/query answer becomes a value, no data, or a one-line error.

The bodies are Prometheus's own JSON, as its HTTP API documents and as 2.42 sends it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from mlflow_operator.adapters.prometheus import MAX_BODY_IN_ERROR, parse_instant_response
from mlflow_operator.logic.rollout_analysis import Sample

TS = 1_700_000_000.123


def success(result_type: str, result: Any) -> str:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}})


def series(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [TS, value]}


VALUES = [
    pytest.param(success("vector", [series("0.25", job="canary")]), 0.25, id="vector-1-series"),
    pytest.param(success("vector", [series("42")]), 42.0, id="vector-integer"),
    pytest.param(success("vector", [series("1e-3")]), 0.001, id="vector-exponent"),
    pytest.param(success("vector", [series("+Inf")]), math.inf, id="vector-plus-inf"),
    pytest.param(success("vector", [series("-Inf")]), -math.inf, id="vector-minus-inf"),
    pytest.param(success("scalar", [TS, "3.5"]), 3.5, id="scalar"),
    pytest.param(success("scalar", [TS, "-Inf"]), -math.inf, id="scalar-minus-inf"),
    pytest.param(success("vector", [series("7")]).encode(), 7.0, id="bytes-body"),
]


@pytest.mark.parametrize(("body", "expected"), VALUES)
def test_one_number_is_the_value(body: str | bytes, expected: float) -> None:
    assert parse_instant_response("errorRate", 200, body) == Sample("errorRate", value=expected)


@pytest.mark.parametrize(
    "body", [success("vector", [series("NaN")]), success("scalar", [TS, "NaN"])], ids=["vector", "scalar"]
)
def test_nan_stays_nan(body: str) -> None:
    sample = parse_instant_response("latency", 200, body)
    assert sample.error is None
    assert sample.value is not None and math.isnan(sample.value)


def test_empty_vector_is_no_data_not_zero_and_not_an_error() -> None:
    assert parse_instant_response("errorRate", 200, success("vector", [])) == Sample("errorRate")


def test_a_warning_does_not_change_the_value() -> None:
    body = json.loads(success("vector", [series("1")]))
    body["warnings"] = ["PromQL info: metric might not be a counter"]
    assert parse_instant_response("m", 200, json.dumps(body)) == Sample("m", value=1.0)


# Each error case: the body, the HTTP status, and fragments the one-line error must contain.
ERRORS = [
    pytest.param(
        200,
        success("vector", [series("1", pod="a"), series("2", pod="b")]),
        ["2 series", "must return one", "sum()"],
        id="vector-2-series",
    ),
    pytest.param(
        200,
        success("vector", [series(str(i), pod=str(i)) for i in range(17)]),
        ["17 series"],
        id="vector-17-series",
    ),
    pytest.param(
        200,
        success("matrix", [{"metric": {}, "values": [[TS, "1"], [TS + 1, "2"]]}]),
        ["range vector"],
        id="matrix",
    ),
    pytest.param(200, success("string", [TS, "hello"]), ["string"], id="string"),
    pytest.param(200, success("histogram", []), ["unexpected result type", "histogram"], id="unknown-result-type"),
    pytest.param(
        200,
        success("vector", [{"metric": {}, "histogram": [TS, {"count": "3", "sum": "1"}]}]),
        ["native histogram"],
        id="native-histogram",
    ),
    pytest.param(200, success("vector", [series("fast")]), ["malformed sample", "fast"], id="unparseable-value"),
    pytest.param(200, success("vector", [{"metric": {}}]), ["malformed series"], id="series-without-value"),
    pytest.param(200, success("scalar", "1"), ["malformed sample"], id="scalar-not-a-pair"),
    pytest.param(
        400,
        json.dumps(
            {
                "status": "error",
                "errorType": "bad_data",
                "error": "invalid parameter \"query\": 1:5: parse error: unexpected right parenthesis ')'",
            }
        ),
        ["Prometheus error bad_data", "parse error", "unexpected right parenthesis"],
        id="status-error-bad-data",
    ),
    pytest.param(
        422,
        json.dumps({"status": "error", "errorType": "execution", "error": "query processing would load too many"}),
        ["Prometheus error execution", "too many"],
        id="status-error-execution",
    ),
    pytest.param(
        503,
        json.dumps({"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}),
        ["Prometheus error timeout", "timed out"],
        id="status-error-timeout",
    ),
    pytest.param(
        500,
        "<html>\n<head><title>500 Internal Server Error</title></head>\n<body>nginx</body>\n</html>\n",
        ["HTTP 500", "not a Prometheus API answer", "<title>500 Internal Server Error</title>"],
        id="500-html",
    ),
    pytest.param(200, "OK", ["HTTP 200", "not a Prometheus API answer", "OK"], id="200-not-json"),
    pytest.param(502, "", ["HTTP 502", "(empty body)"], id="502-empty"),
    pytest.param(200, b"\xff\xfe\x00garbage", ["HTTP 200", "not a Prometheus API answer"], id="not-utf8"),
    pytest.param(200, "[1, 2]", ["HTTP 200", "not a Prometheus API answer"], id="json-not-an-object"),
    pytest.param(200, json.dumps({"status": "success"}), ["without data"], id="success-without-data"),
    pytest.param(200, json.dumps({"data": {}}), ["unexpected answer", "HTTP 200"], id="no-status"),
    pytest.param(
        404,
        json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}),
        ["unexpected answer", "HTTP 404"],
        id="success-json-with-404",
    ),
]


@pytest.mark.parametrize(("status_code", "body", "fragments"), ERRORS)
def test_errors_are_one_short_line(status_code: int, body: str | bytes, fragments: list[str]) -> None:
    sample = parse_instant_response("errorRate", status_code, body)
    assert sample.metric == "errorRate"
    assert sample.value is None
    assert sample.error is not None
    for fragment in fragments:
        assert fragment in sample.error
    assert "\n" not in sample.error
    assert len(sample.error) <= 700


def test_a_long_body_is_truncated() -> None:
    body = "<html>" + "x" * 10_000 + "</html>"
    sample = parse_instant_response("m", 502, body)
    assert sample.error is not None
    assert sample.error.startswith("HTTP 502, not a Prometheus API answer: <html>xxx")
    quoted = sample.error.split(": ", 1)[1]
    assert len(quoted) == MAX_BODY_IN_ERROR
    assert quoted.endswith("...")
    assert "</html>" not in sample.error


def test_a_long_prometheus_error_is_truncated() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error " + "y" * 5000})
    sample = parse_instant_response("m", 400, body)
    assert sample.error is not None
    assert sample.error.startswith("Prometheus error bad_data: parse error yyy")
    assert len(sample.error) < 600
    assert sample.error.endswith("...")
