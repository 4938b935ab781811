"""Real traffic from the host: bursts of concurrent /invocations requests to the model servers and a steady
background load (of those, or of the tracking server's REST API), each answer recorded with its status,
predictions, latency and time. Used by the real-pod e2e tests (splits, header routing, analysis, credential
rotation) and by bench.real_node (Gateway overhead).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

SAMPLE: dict[str, Any] = {"columns": ["amount", "hour"], "data": [[1500.0, 3], [20.0, 14]]}  # seed_model.py's
# Day-time rows only: a model that fails on night-time rows (tests/e2e/rollout_models.py) answers these.
DAY_SAMPLE: dict[str, Any] = {"columns": ["amount", "hour"], "data": [[20.0, 14]]}


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no response (connection refused, timeout)
    predictions: tuple[Any, ...] | None
    latency_s: float
    at: float  # time.monotonic() when the answer came


def invoke(
    session: requests.Session, url: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Answer:
    began = time.monotonic()
    try:
        response = session.post(url, json={"dataframe_split": body}, headers=dict(headers or {}), timeout=30)
    except requests.RequestException:
        return Answer(None, None, time.monotonic() - began, time.monotonic())
    predictions = None
    if response.status_code == 200:
        predictions = tuple(response.json()["predictions"])
    return Answer(response.status_code, predictions, time.monotonic() - began, time.monotonic())


def post_json(
    session: requests.Session, url: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Answer:
    """A plain JSON POST (the tracking server's REST API), recorded like invoke()'s answers."""
    began = time.monotonic()
    try:
        response = session.post(url, json=dict(body), headers=dict(headers or {}), timeout=30)
    except requests.RequestException:
        return Answer(None, None, time.monotonic() - began, time.monotonic())
    return Answer(response.status_code, None, time.monotonic() - began, time.monotonic())


def burst(
    url: str,
    count: int,
    *,
    concurrency: int = 20,
    body: Mapping[str, Any] = SAMPLE,
    headers: Mapping[str, str] | None = None,
) -> list[Answer]:
    """`count` requests, `concurrency` at a time, each client keeping its connection (as a real client would,
    so a proxy's per-connection cost is not measured again on every request)."""
    local = threading.local()

    def one(_: int) -> Answer:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return invoke(local.session, url, body, headers)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(count)))


def share(answers: Sequence[Answer], predictions: Sequence[Any]) -> float:
    """The fraction of answers that are 200 with exactly these predictions."""
    matching = sum(1 for a in answers if a.status == 200 and a.predictions == tuple(predictions))
    return matching / len(answers) if answers else 0.0


@dataclass
class SteadyLoad:
    """Requests one after another from `clients` threads until stopped, alternating between `bodies`; every
    answer is kept. Used as `with SteadyLoad(url) as load: ...`."""

    url: str
    clients: int = 2
    bodies: Sequence[Mapping[str, Any]] = (SAMPLE,)
    headers: Mapping[str, str] = field(default_factory=dict)
    pause_s: float = 0.05
    send: Callable[[requests.Session, str, Mapping[str, Any], Mapping[str, str]], Answer] = invoke
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SteadyLoad:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, index: int) -> None:
        session = requests.Session()
        turn = index
        while not self._stop.is_set():
            answer = self.send(session, self.url, self.bodies[turn % len(self.bodies)], self.headers)
            turn += 1
            with self._lock:
                self.answers.append(answer)
            self._stop.wait(self.pause_s)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)
