"""The Prometheus adapter against Debian's real Prometheus 2.42, scraping a MetricsExporter every second.

Each test uses its own metric names, so they share one Prometheus (started once per module) without seeing
each other's series. Values the test sets must come back exactly; everything that is not one number must
come back as no data (None) or as an error, never as a value.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_operator.adapters.prometheus import NO_ADDRESS, SAMPLE_SIZE_METRIC, measure, query_instant
from mlflow_operator.logic.rollout_analysis import Measurement, Sample
from tests.integration.prometheus_server import MetricsExporter, PrometheusServer, start_prometheus

SCRAPE_INTERVAL = 1.0
# Slack for the 2 shared cores: generous for "visible after a scrape", small for "bounded by the timeout".
VISIBLE_WITHIN = 30.0
TIMEOUT_MARGIN = 1.5


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as exporter:
        yield exporter


@pytest.fixture(scope="module")
def departing() -> Iterator[MetricsExporter]:
    """A second target, which one test shuts down (as a canary's pods go away)."""
    with MetricsExporter() as exporter:
        yield exporter


@pytest.fixture(scope="module")
def prometheus(
    exporter: MetricsExporter, departing: MetricsExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("prometheus")
    with start_prometheus([exporter.target, departing.target], workdir, f"{SCRAPE_INTERVAL:g}s") as server:
        yield server


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus under /prometheus (--web.route-prefix), as behind a path-routing proxy; scrapes nothing."""
    with start_prometheus([], tmp_path_factory.mktemp("prefixed"), route_prefix="/prometheus") as server:
        yield server


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def query(address: str, promql: str, metric: str = "m", timeout: float = 10.0) -> Sample:
    return asyncio.run(query_instant(address, metric, promql, timeout=timeout))


# --- values -----------------------------------------------------------------------------------------------


def test_a_ratio_of_two_series_comes_back_exactly(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("ratio_requests_total", 93, {"code": "200"})
    exporter.set("ratio_requests_total", 7, {"code": "500"})
    error_rate = 'sum(ratio_requests_total{code=~"5.."}) / sum(ratio_requests_total)'
    prometheus.wait_for("count(ratio_requests_total)", lambda count: count == 2, VISIBLE_WITHIN)

    assert query(prometheus.url, error_rate, "errorRate") == Sample("errorRate", value=0.07)
    assert query(prometheus.url, "sum(ratio_requests_total)") == Sample("m", value=100.0)


def test_measure_runs_every_query_and_the_sample_size(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("measure_latency_seconds", 0.125)
    exporter.set("measure_errors_ratio", 0.0)
    exporter.set("measure_requests", 1234)
    prometheus.wait_for("measure_requests", lambda value: value == 1234, VISIBLE_WITHIN)

    measurement = asyncio.run(
        measure(
            prometheus.url,
            [("latency", "max(measure_latency_seconds)"), ("errors", "sum(measure_errors_ratio)")],
            sample_size_query="sum(measure_requests)",
        )
    )

    assert measurement == Measurement(
        samples=(Sample("latency", value=0.125), Sample("errors", value=0.0)),
        sample_size=Sample(SAMPLE_SIZE_METRIC, value=1234.0),
    )


def test_a_scalar_and_infinity_are_values(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("inf_gauge", math.inf)
    prometheus.wait_for("inf_gauge", lambda value: value == math.inf, VISIBLE_WITHIN)

    assert query(prometheus.url, "inf_gauge") == Sample("m", value=math.inf)
    assert query(prometheus.url, "-inf_gauge") == Sample("m", value=-math.inf)
    assert query(prometheus.url, "scalar(vector(2.5))") == Sample("m", value=2.5)


# --- no data, NaN -----------------------------------------------------------------------------------------


def test_a_series_never_scraped_is_no_data(prometheus: PrometheusServer) -> None:
    assert query(prometheus.url, "sum(rate(never_exposed_total[1m]))") == Sample("m")


def test_a_removed_series_is_no_data_within_a_scrape(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("removed_gauge", 1.0)
    prometheus.wait_for("removed_gauge", lambda value: value == 1.0, VISIBLE_WITHIN)
    assert query(prometheus.url, "removed_gauge") == Sample("m", value=1.0)

    exporter.remove("removed_gauge")
    removed_at = time.monotonic()
    prometheus.wait_for("removed_gauge", lambda value: value is None, VISIBLE_WITHIN)
    gone_after = time.monotonic() - removed_at

    assert query(prometheus.url, "removed_gauge") == Sample("m")
    assert query(prometheus.url, "sum(removed_gauge)") == Sample("m")
    # The staleness marker, written at the next scrape, not the 5-minute lookback delta, ends the series.
    assert gone_after < 10 * SCRAPE_INTERVAL, gone_after


def test_a_target_that_goes_away_is_no_data(departing: MetricsExporter, prometheus: PrometheusServer) -> None:
    departing.set("departing_gauge", 3.0)
    prometheus.wait_for("departing_gauge", lambda value: value == 3.0, VISIBLE_WITHIN)

    departing.close()  # its scrapes now fail: Prometheus marks every series of the target stale
    closed_at = time.monotonic()
    prometheus.wait_for("departing_gauge", lambda value: value is None, VISIBLE_WITHIN)

    assert query(prometheus.url, "departing_gauge") == Sample("m")
    assert time.monotonic() - closed_at < 10 * SCRAPE_INTERVAL
    assert query(prometheus.url, f'up{{instance="{departing.target}"}}') == Sample("m", value=0.0)


def test_nan_comes_back_as_nan(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("nan_gauge", math.nan)
    exporter.set("zero_requests_total", 0.0)
    prometheus.wait_for("nan_gauge", lambda value: value is not None and math.isnan(value), VISIBLE_WITHIN)
    prometheus.wait_for("zero_requests_total", lambda value: value == 0.0, VISIBLE_WITHIN)

    exposed = query(prometheus.url, "nan_gauge")
    divided = query(prometheus.url, "sum(zero_requests_total) / sum(zero_requests_total)")  # 0/0, no traffic

    for sample in (exposed, divided):
        assert sample.error is None
        assert sample.value is not None and math.isnan(sample.value)


# --- errors -----------------------------------------------------------------------------------------------


def test_two_series_are_an_error_naming_them(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    exporter.set("two_pods_latency", 0.1, {"pod": "a"})
    exporter.set("two_pods_latency", 0.2, {"pod": "b"})
    prometheus.wait_for("count(two_pods_latency)", lambda count: count == 2, VISIBLE_WITHIN)

    sample = query(prometheus.url, "two_pods_latency", "latency")

    assert sample.metric == "latency"
    assert sample.value is None
    assert sample.error is not None
    assert "2 series" in sample.error
    assert "sum()" in sample.error
    assert query(prometheus.url, "avg(two_pods_latency)").value == pytest.approx(0.15)


def test_a_syntax_error_is_prometheus_bad_data(prometheus: PrometheusServer) -> None:
    sample = query(prometheus.url, "sum(rate(http_requests_total[5m])")

    assert sample.value is None
    assert sample.error is not None
    assert sample.error.startswith("Prometheus error bad_data:")
    assert "parse error" in sample.error


def test_a_range_vector_is_an_error(prometheus: PrometheusServer) -> None:
    sample = query(prometheus.url, "up[1m]")

    assert sample.value is None
    assert sample.error is not None and "range vector" in sample.error


def test_no_address_is_an_error_for_every_query() -> None:
    measurement = asyncio.run(measure(None, [("a", "up"), ("b", "up")], sample_size_query="up"))

    assert measurement == Measurement(
        samples=(Sample("a", error=NO_ADDRESS), Sample("b", error=NO_ADDRESS)),
        sample_size=Sample(SAMPLE_SIZE_METRIC, error=NO_ADDRESS),
    )
    assert "spec.analysis.prometheusAddress" in NO_ADDRESS


def test_a_closed_port_is_unreachable_at_once() -> None:
    address = f"http://127.0.0.1:{closed_port()}"
    began = time.monotonic()
    sample = query(address, "up", timeout=2.0)

    assert time.monotonic() - began < 2.0 + TIMEOUT_MARGIN
    assert sample.value is None
    assert sample.error is not None
    assert sample.error.startswith(f"Prometheus at {address} unreachable: ")


def test_a_silent_server_is_unreachable_within_the_timeout(stalled_port: int) -> None:
    address = f"http://127.0.0.1:{stalled_port}"
    queries = [(f"metric{i}", "up") for i in range(8)]
    began = time.monotonic()
    measurement = asyncio.run(measure(address, queries, sample_size_query="up", timeout=1.0))
    elapsed = time.monotonic() - began

    # Concurrent: nine silent queries take one timeout, not nine.
    assert 1.0 <= elapsed < 1.0 + TIMEOUT_MARGIN, elapsed
    assert measurement.sample_size is not None
    for sample in (*measurement.samples, measurement.sample_size):
        assert sample.value is None
        assert sample.error == f"Prometheus at {address} unreachable: no answer within 1 s"


def test_credentials_in_the_address_are_not_shown() -> None:
    sample = query(f"http://operator:s3cret@127.0.0.1:{closed_port()}", "up", timeout=2.0)

    assert sample.error is not None and "unreachable" in sample.error
    assert "s3cret" not in sample.error and "operator" not in sample.error


# --- addresses ----------------------------------------------------------------------------------------------


def test_a_trailing_slash_is_accepted(prometheus: PrometheusServer) -> None:
    assert query(prometheus.url + "/", "vector(4)") == Sample("m", value=4.0)


@pytest.mark.parametrize("suffix", ["", "/"])
def test_a_path_prefix_is_kept(prefixed: PrometheusServer, suffix: str) -> None:
    assert prefixed.url.endswith("/prometheus")

    assert query(prefixed.url + suffix, "vector(5)") == Sample("m", value=5.0)
    assert query(prefixed.url + suffix, "absent_metric_here") == Sample("m")


def test_a_missing_path_prefix_is_an_http_error(prefixed: PrometheusServer) -> None:
    without_prefix = prefixed.url.removesuffix("/prometheus")

    sample = query(without_prefix, "vector(5)")

    assert sample.value is None
    assert sample.error is not None and "HTTP 404" in sample.error


# --- the harness itself -------------------------------------------------------------------------------------


def test_the_exporter_refuses_names_prometheus_would_reject(exporter: MetricsExporter) -> None:
    with pytest.raises(ValueError, match="metric name"):
        exporter.set("0starts-with-a-digit", 1.0)
    with pytest.raises(ValueError, match="label name"):
        exporter.set("fine", 1.0, {"__reserved": "x"})


def test_the_exporter_escapes_label_values(exporter: MetricsExporter, prometheus: PrometheusServer) -> None:
    tricky = 'quote " backslash \\ newline \n end'
    exporter.set("escaped_gauge", 6.0, {"text": tricky})
    prometheus.wait_for("escaped_gauge", lambda value: value == 6.0, VISIBLE_WITHIN)

    (series,) = prometheus.api("/api/v1/query", {"query": "escaped_gauge"})["result"]
    assert series["metric"]["text"] == tricky
    assert exporter.scrapes > 0
    assert Path(prometheus.log_path).is_file()
