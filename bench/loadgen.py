"""Concurrent "training jobs" against MLflow's REST API, with asyncio and aiohttp.

Each job creates a run in one experiment, then logs a batch of metrics in a loop: back-to-back, or after
every `interval_s` seconds (with jitter) of "training", the first batch too. All jobs start at once (they
wait on one event), so all runs are created in one burst. Requests go round-robin
over the servers' URLs, as a Service would spread them over replicas. Everything is bounded: a fixed
duration after which no job starts a new request, and a timeout per request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from bench.stats import Sample, error_key

CREATE_RUN = "/api/2.0/mlflow/runs/create"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
CREATE_EXPERIMENT = "/api/2.0/mlflow/experiments/create"
SEARCH_EXPERIMENTS = "/api/2.0/mlflow/experiments/search"
CREATE_RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class Load:
    """One load shape: `jobs` jobs for `duration_s`, `rounds` times (fresh jobs and runs each round);
    interval_s 0 means back-to-back."""

    name: str
    jobs: int
    duration_s: float
    rounds: int = 1
    interval_s: float = 0.0
    jitter: float = 0.2  # each pause is interval_s x uniform(1 - jitter, 1 + jitter)
    metrics_per_batch: int = 10
    request_timeout_s: float = 60.0
    seed: int = 1

    def describe(self) -> dict[str, Any]:
        """The shape for the results: every field but the name (the key it is filed under) and the seed."""
        return {key: value for key, value in asdict(self).items() if key not in ("name", "seed")}


@dataclass
class LoadRun:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0
    runs_created: int = 0


def _message(text: str) -> str:
    """MLflow's error message from a response body (JSON with `message`), else the body itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and "message" in body:
        return str(body.get("error_code", "")) + " " + str(body["message"])
    return text


class _Client:
    def __init__(self, session: aiohttp.ClientSession, urls: Sequence[str], timeout_s: float, record: LoadRun):
        self._session = session
        self._urls = itertools.cycle(urls)
        self._timeout_s = timeout_s
        self._record = record

    async def post(self, kind: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """One request, recorded; the parsed response on 200, else None."""
        url = next(self._urls) + path
        began = time.perf_counter()
        error: str | None = None
        result: dict[str, Any] | None = None
        try:
            async with self._session.post(url, json=body) as response:
                text = await response.text()
                if response.status == 200:
                    parsed = json.loads(text) if text else {}
                    result = parsed if isinstance(parsed, dict) else {}
                else:
                    error = error_key(response.status, _message(text))
        except TimeoutError:
            error = error_key(None, f"timeout after {self._timeout_s:g} s")
        except (aiohttp.ClientError, ValueError) as exc:
            error = error_key(None, f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - began
        self._record.samples.append(Sample(kind, error is None, latency, error))
        return result


async def _job(
    index: int, client: _Client, load: Load, experiment_id: str, start: asyncio.Event, deadline: list[float]
) -> bool:
    """One training job; True when it created its run."""
    rng = random.Random(load.seed * 1_000_003 + index)
    await start.wait()
    run_id: str | None = None
    while run_id is None and time.monotonic() < deadline[0]:
        body = {"experiment_id": experiment_id, "run_name": f"job-{index}", "start_time": int(time.time() * 1000)}
        created = await client.post("create", CREATE_RUN, body)
        if created is not None:
            run_id = created.get("run", {}).get("info", {}).get("run_id")
        if run_id is None:
            await asyncio.sleep(CREATE_RETRY_DELAY_S)  # a job whose create failed tries again
    if run_id is None:
        return False
    step = 0
    while True:
        if load.interval_s > 0:  # training between batches: the first batch comes after the first interval
            pause = load.interval_s * rng.uniform(1 - load.jitter, 1 + load.jitter)
            if time.monotonic() + pause >= deadline[0]:
                break
            await asyncio.sleep(pause)
        elif time.monotonic() >= deadline[0]:
            break
        now = int(time.time() * 1000)
        metrics = [
            {"key": f"metric_{k}", "value": rng.random(), "timestamp": now, "step": step}
            for k in range(load.metrics_per_batch)
        ]
        await client.post("log-batch", LOG_BATCH, {"run_id": run_id, "metrics": metrics})
        step += 1
    return True


async def run_load(urls: Sequence[str], experiment_id: str, load: Load) -> LoadRun:
    """Runs load against urls (round-robin per request) and returns every request's sample. elapsed_s runs
    from the common start to the last job's end, in-flight requests included."""
    record = LoadRun()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=load.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = _Client(session, urls, load.request_timeout_s, record)
        start = asyncio.Event()
        deadline = [float("inf")]
        tasks = [asyncio.create_task(_job(i, client, load, experiment_id, start, deadline)) for i in range(load.jobs)]
        await asyncio.sleep(0.1)  # every job is waiting on the event
        began = time.perf_counter()
        deadline[0] = time.monotonic() + load.duration_s
        start.set()
        created = await asyncio.gather(*tasks)
        record.elapsed_s = time.perf_counter() - began
        record.runs_created = sum(created)
    return record


async def create_experiment(url: str, name: str, timeout_s: float = 60) -> str:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url + CREATE_EXPERIMENT, json={"name": name}) as response,
        ):
            text = await response.text()
    except TimeoutError as exc:
        raise RuntimeError(f"creating experiment {name!r} on {url}: no answer within {timeout_s:g} s") from exc
    if response.status != 200:
        raise RuntimeError(f"creating experiment {name!r} on {url}: HTTP {response.status}: {text[:500]}")
    return str(json.loads(text)["experiment_id"])


async def warm_up(urls: Sequence[str], requests_per_url: int, timeout_s: float = 60) -> int:
    """Concurrent cheap reads on every server so each worker has loaded the app and opened its store;
    returns how many failed."""
    failed = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def one(url: str) -> bool:
            try:
                async with session.post(url + SEARCH_EXPERIMENTS, json={"max_results": 10}) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(one(url) for url in urls for _ in range(requests_per_url)))
        failed = sum(not ok for ok in results)
    return failed
