"""A real Prometheus scraping metrics a test controls, for the analysis adapter, the e2e tests and benchmarks.

    with MetricsExporter() as exporter, start_prometheus([exporter.target], tmp_path) as prometheus:
        exporter.set("requests_total", 10, {"code": "500"})
        prometheus.wait_for('sum(requests_total{code="500"})', lambda value: value == 10)
        ...  # query prometheus.url as the operator would

- `MetricsExporter`: a threaded HTTP server on 127.0.0.1 serving the series a test sets, in Prometheus's text
  exposition format at /metrics. Thread-safe; values may be NaN or infinite.
- `start_prometheus`: Debian's /usr/bin/prometheus (installed by `make deps`) scraping the given targets every
  `scrape_interval`, listening on 127.0.0.1 on a free port, its TSDB and log in `workdir`. It returns once
  Prometheus is ready and every target was scraped successfully; a failure says why, with the log's tail.
- `PrometheusServer.wait_for`: scrapes are periodic, so what a test sets becomes visible up to one scrape
  interval later; poll the query rather than sleep.

Staleness: when a target that is still scraped stops exposing a series, Prometheus writes a staleness marker
at the next scrape and the series is gone from instant queries at once ("no data"), without waiting for the
5-minute lookback delta. `MetricsExporter.remove` therefore gives "no data" within about one scrape interval
(test_prometheus_adapter checks it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.integration.dataplane import HOST, DataplaneError, Process, free_port, tail

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
STARTUP_TIMEOUT = 60.0  # a cold start is about a second; 2 busy cores can make it much slower
REQUEST_TIMEOUT = 5.0
POLL_INTERVAL = 0.1
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelKey = tuple[tuple[str, str], ...]


class PrometheusQueryError(DataplaneError):
    """A harness query Prometheus refused, or that did not return at most one number."""


# --- the exporter ---------------------------------------------------------------------------------------


class MetricsExporter:
    """Serves the series set with `set` at http://127.0.0.1:PORT/metrics until `close()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, LabelKey], float] = {}
        self._scrapes = 0
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-exporter", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        """host:port, as a Prometheus static_configs target."""
        return f"{HOST}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    @property
    def scrapes(self) -> int:
        """How many times /metrics was served (to tell that Prometheus scrapes this exporter)."""
        with self._lock:
            return self._scrapes

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Exposes `name{labels} value` from now on, replacing the series' previous value."""
        key = _series_key(name, labels)
        with self._lock:
            self._series[key] = float(value)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Stops exposing the series (Prometheus then marks it stale at its next scrape); no-op if absent."""
        key = _series_key(name, labels)
        with self._lock:
            self._series.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()

    def render(self) -> str:
        """The exposition text, series grouped by name (the format wants a metric's lines together)."""
        with self._lock:
            series = sorted(self._series.items())
        return "".join(f"{name}{_format_labels(labels)} {_format_value(value)}\n" for (name, labels), value in series)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _served(self) -> bytes:
        with self._lock:
            self._scrapes += 1
        return self.render().encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter._served()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape per second would drown the test output

        return Handler


def _series_key(name: str, labels: Mapping[str, str] | None) -> tuple[str, LabelKey]:
    # A bad name would make Prometheus reject the whole scrape, failing unrelated series: refuse it here.
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"not a Prometheus metric name: {name!r}")
    for label in labels or {}:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"not a Prometheus label name: {label!r}")
    return name, tuple(sorted((labels or {}).items()))


def _format_labels(labels: LabelKey) -> str:
    if not labels:
        return ""
    escaped = ((name, value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for name, value in labels)
    return "{" + ",".join(f'{name}="{value}"' for name, value in escaped) + "}"


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


# --- Prometheus -----------------------------------------------------------------------------------------


def prometheus_binary() -> Path:
    found = shutil.which("prometheus") or (str(PROMETHEUS_BINARY) if PROMETHEUS_BINARY.is_file() else None)
    if not found:
        raise DataplaneError(f"prometheus not found on PATH nor at {PROMETHEUS_BINARY}: run `make deps`")
    return Path(found)


def prometheus_config(targets: Sequence[str], scrape_interval: str) -> str:
    """The configuration file: one job scraping the targets; JSON, which is YAML too."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{"job_name": "exporter", "static_configs": [{"targets": list(targets)}]}],
    }
    return json.dumps(config, indent=2) + "\n"


class PrometheusServer:
    """A running Prometheus; `url` is the base address the adapter takes (with the route prefix if any)."""

    def __init__(self, process: Process, url: str, targets: Sequence[str]) -> None:
        self.process = process
        self.url = url
        self.targets = list(targets)

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_tail(self) -> str:
        return tail(self.log_path)

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET {url}{path} and the JSON answer's `data`; raises PrometheusQueryError on a status: error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=REQUEST_TIMEOUT) as response:
                document = json.load(response)
        except urllib.error.HTTPError as error:
            document = json.loads(error.read() or b"{}")
        if document.get("status") != "success":
            raise PrometheusQueryError(f"{path} {params}: {document.get('errorType')}: {document.get('error')}")
        return document["data"]

    def query(self, promql: str) -> float | None:
        """An instant query's one value (NaN included), None when it returns no series."""
        data = self.api("/api/v1/query", {"query": promql})
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if data["resultType"] != "vector" or len(result) > 1:
            raise PrometheusQueryError(f"{promql!r} returned {data['resultType']} {result}, not one number")
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, predicate: Callable[[float | None], bool], timeout: float = 30.0) -> float | None:
        """Polls `query(promql)` until predicate(value) holds and returns that value (None is "no data");
        raises with the last value and the log's tail after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.query(promql)
            if predicate(value):
                return value
            if time.monotonic() >= deadline:
                raise DataplaneError(
                    f"{promql!r} was still {value} after {timeout:g} s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def target_health(self) -> dict[str, str]:
        """Each scraped target (host:port) and its health: "up", "down" or "unknown" (not scraped yet)."""
        active = self.api("/api/v1/targets", {"state": "active"})["activeTargets"]
        return {target["labels"]["instance"]: target["health"] for target in active}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 20 s."""
        self.process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=REQUEST_TIMEOUT) as response:
                return int(response.status) == 200
        except OSError:  # refused while it starts; 503 (an HTTPError) while the TSDB opens
            return False

    def _targets_up(self) -> bool:
        health = self.target_health()
        return all(health.get(target) == "up" for target in self.targets)


def start_prometheus(
    targets: Sequence[str],
    workdir: Path,
    scrape_interval: str = "1s",
    *,
    route_prefix: str = "",
    timeout: float = STARTUP_TIMEOUT,
) -> PrometheusServer:
    """Prometheus scraping `targets` (host:port, path /metrics); returns once it is ready and has scraped
    every target successfully. `route_prefix` (e.g. "/prometheus") serves everything under that path, as
    behind a path-routing proxy; `url` includes it."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(prometheus_config(targets, scrape_interval))
    port = free_port()
    prefix = "/" + route_prefix.strip("/") if route_prefix.strip("/") else ""
    argv = [
        str(prometheus_binary()),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        "--storage.tsdb.retention.time=1h",
        f"--web.listen-address={HOST}:{port}",
        f"--web.external-url=http://{HOST}:{port}{prefix}/",
        f"--web.route-prefix={prefix or '/'}",
    ]
    process = Process("prometheus", argv, workdir / "prometheus.log", cwd=workdir)
    process.start()
    server = PrometheusServer(process, f"http://{HOST}:{port}{prefix}", targets)
    try:
        deadline = time.monotonic() + timeout
        process.wait_ready(server._ready, timeout=timeout, what="ready")
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            process.wait_ready(server._targets_up, timeout=remaining, what=f"scraping {', '.join(targets)}")
        except DataplaneError as error:
            raise DataplaneError(f"{error}\ntarget health: {server.target_health()}") from None
    except BaseException:
        server.stop()
        raise
    return server
