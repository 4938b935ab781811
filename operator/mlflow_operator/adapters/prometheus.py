"""Prometheus instant queries for ModelDeployment canary analysis, reported faithfully as `Sample`s.

An analysis measurement asks Prometheus one instant query per metric (`/api/v1/query`, evaluated at the
server's "now") and hands the answers to the pure rollout logic, which judges them. This adapter never
judges and never guesses: it says exactly what Prometheus answered, in one of three shapes.

- A value: the query returned exactly one series (or a scalar). Prometheus sends values as strings, and
  "NaN", "+Inf" and "-Inf" are parsed as the floats they are, so NaN reaches the logic as NaN.
- No data (`value` None, no error): the query returned an empty vector, e.g. nothing was scraped yet, the
  canary received no requests, or the series went stale.
- An error (`error` set): Prometheus refused the query (its errorType and message), answered something
  that is not one judgeable number (several series, a range vector, a string, a histogram, not JSON, an
  HTTP error), was unreachable or too slow, or no address is configured.

Why so strict: Flagger promoted bad canaries when a query returned nothing or NaN, because "no data" slipped
through its comparisons as a pass. Here no data,
NaN and every error are inconclusive in the logic, never a pass, and that only holds if the adapter keeps
the three apart: an empty result is never turned into 0, NaN is never dropped, and several series are never
silently reduced to the first one (which one would be arbitrary; the user aggregates with sum() or avg()).

The public functions never raise for a query's problems: a failing dependency is a measurement outcome
(inconclusive), not a reconcile error, so the rollout's counters see it. Each query is bounded by
`timeout` (aiohttp's total timeout: connect, send, and reading the whole answer), and the answer's size by
MAX_RESPONSE_BYTES, so one hung or huge Prometheus cannot stall the operator's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

from mlflow_operator.adapters.errors import DependencyError
from mlflow_operator.logic.rollout_analysis import Measurement, Sample

QUERY_PATH = "/api/v1/query"
SAMPLE_SIZE_METRIC = "sampleSize"
NO_ADDRESS = "no Prometheus address: set spec.analysis.prometheusAddress or the operator's --prometheus-address"
DEFAULT_TIMEOUT = 10.0
MAX_BODY_IN_ERROR = 300  # characters of a response body quoted in an error
MAX_TEXT_IN_ERROR = 500  # characters of Prometheus's own error message quoted in an error
# An instant query that must return one series has no business sending megabytes; a bigger answer is an
# error (the query matches far too many series), and the bound keeps the operator's memory in check.
MAX_RESPONSE_BYTES = 1 << 20


class PrometheusError(DependencyError):
    """A query had no judgeable answer; internal: the public functions turn it into `Sample.error`."""

    reason = "PrometheusError"


# --- parsing (pure) -------------------------------------------------------------------------------------


def parse_instant_response(metric: str, status_code: int, body: bytes | str) -> Sample:
    """The Sample an `/api/v1/query` answer means: a value, no data, or a one-line error."""
    try:
        return Sample(metric, value=_parse(status_code, body))
    except PrometheusError as error:
        return Sample(metric, error=error.message)


def _parse(status_code: int, body: bytes | str) -> float | None:
    document = _json_object(status_code, body)
    status = document.get("status")
    if status == "error":
        # Prometheus answers a refused query with a 4xx/5xx status *and* this JSON: its words are better.
        error_type = _one_line(str(document.get("errorType", "unknown")), MAX_TEXT_IN_ERROR)
        message = _one_line(str(document.get("error", "")), MAX_TEXT_IN_ERROR)
        raise PrometheusError(f"Prometheus error {error_type}: {message}", code=error_type)
    if status != "success" or status_code >= 400:
        raise PrometheusError(f"unexpected answer (HTTP {status_code}): {_quote(body)}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"answer without data (HTTP {status_code}): {_quote(body)}")
    return _parse_result(data.get("resultType"), data.get("result"))


def _json_object(status_code: int, body: bytes | str) -> dict[str, Any]:
    """The body as a JSON object, or an error with the HTTP status and the start of the body (a proxy's
    HTML error page, a wrong address answering something else)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise PrometheusError(f"HTTP {status_code}, not a Prometheus API answer: {_quote(body)}")
    return document


def _parse_result(result_type: object, result: object) -> float | None:
    if result_type == "vector" and isinstance(result, list):
        if not result:
            return None  # no data: never 0, never a pass
        if len(result) > 1:
            raise PrometheusError(
                f"the query returned {len(result)} series; it must return one (aggregate with sum() or avg())"
            )
        return _vector_value(result[0])
    if result_type == "scalar":
        return _sample_value(result)
    if result_type == "matrix":
        raise PrometheusError("the query returned a range vector; an instant query must return one sample")
    if result_type == "string":
        raise PrometheusError("the query returned a string; it must return a number")
    raise PrometheusError(f"unexpected result type {_one_line(repr(result_type), 40)}")


def _vector_value(series: object) -> float:
    if isinstance(series, dict) and "value" in series:
        return _sample_value(series["value"])
    if isinstance(series, dict) and "histogram" in series:
        raise PrometheusError("the query returned a native histogram; use histogram_quantile() or a counter")
    raise PrometheusError(f"malformed series: {_one_line(repr(series), MAX_BODY_IN_ERROR)}")


def _sample_value(pair: object) -> float:
    """A [timestamp, "value"] pair's value; float() reads Prometheus's "NaN", "+Inf" and "-Inf"."""
    if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
        try:
            return float(pair[1])
        except ValueError:
            pass
    raise PrometheusError(f"malformed sample: {_one_line(repr(pair), MAX_BODY_IN_ERROR)}")


def _quote(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return _one_line(text, MAX_BODY_IN_ERROR) or "(empty body)"


def _one_line(text: str, limit: int) -> str:
    """Whitespace collapsed (condition messages and Events are one line), at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- queries --------------------------------------------------------------------------------------------


def query_url(address: str) -> str:
    """The query endpoint under a base URL that may end with a slash or carry a path prefix (a Prometheus
    behind a proxy, or run with --web.route-prefix)."""
    return address.rstrip("/") + QUERY_PATH


async def query_instant(
    address: str,
    metric: str,
    promql: str,
    *,
    # ASYNC109 would have callers wrap the call in asyncio.timeout(); the bound is the adapter's contract
    # instead (aiohttp applies it to the request, and a timeout is a Sample error, not an exception).
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    session: aiohttp.ClientSession | None = None,
) -> Sample:
    """One instant query; never raises for the query's problems (they come back as `Sample.error`)."""
    if session is None:
        async with aiohttp.ClientSession() as own_session:
            return await query_instant(address, metric, promql, timeout=timeout, session=own_session)
    try:
        status_code, body = await _get(session, address, promql, aiohttp.ClientTimeout(total=timeout))
    except PrometheusError as error:
        return Sample(metric, error=f"Prometheus at {_shown(address)}: {error.message}")
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return Sample(metric, error=f"Prometheus at {_shown(address)} unreachable: {_describe(error, timeout)}")
    return parse_instant_response(metric, status_code, body)


async def _get(
    session: aiohttp.ClientSession, address: str, promql: str, bound: aiohttp.ClientTimeout
) -> tuple[int, bytes]:
    """The status and body of the query's answer, read in chunks up to MAX_RESPONSE_BYTES."""
    async with session.get(query_url(address), params={"query": promql}, timeout=bound) as response:
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise PrometheusError(f"answer larger than {MAX_RESPONSE_BYTES} bytes: the query matches too much")
        return response.status, bytes(body)


def _shown(address: str) -> str:
    """The address as errors show it: without user and password (errors end up in status and Events)."""
    try:
        return str(URL(address).with_user(None))
    except ValueError:
        return address


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):  # aiohttp's timeouts subclass it; their str() is often empty
        return f"no answer within {timeout:g} s"
    return _one_line(str(error) or type(error).__name__, MAX_TEXT_IN_ERROR)


async def measure(
    address: str | None,
    queries: Sequence[tuple[str, str]],
    sample_size_query: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (as query_instant's)
) -> Measurement:
    """Every (metric, promql) of one analysis measurement, concurrently, plus the sample-size query as
    metric SAMPLE_SIZE_METRIC when there is one. Never raises for a query's problems."""
    named = list(queries)
    if sample_size_query is not None:
        named.append((SAMPLE_SIZE_METRIC, sample_size_query))
    if address is None:
        samples = [Sample(metric, error=NO_ADDRESS) for metric, _ in named]
    else:
        async with aiohttp.ClientSession() as session:
            samples = list(
                await asyncio.gather(
                    *(
                        query_instant(address, metric, promql, timeout=timeout, session=session)
                        for metric, promql in named
                    )
                )
            )
    if sample_size_query is not None:
        return Measurement(tuple(samples[:-1]), sample_size=samples[-1])
    return Measurement(tuple(samples))
