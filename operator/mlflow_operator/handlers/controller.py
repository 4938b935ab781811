"""A level-based controller loop on top of kopf's watches.

kopf delivers watch events; each kind's Controller keeps the latest object per key, de-duplicates work in
a queue, and runs its reconcile function from a few workers. Children's events and a periodic resync
enqueue the owner again. Unlike kopf's timers and daemons this adds no finalizer (so deleting a resource
never hangs while the operator is down) and writes no bookkeeping annotations (so idle resyncs write
nothing). Failures are retried with exponential backoff per key; a reconcile can ask to run again later.

Each pass is counted and timed in mlflow_operator.metrics (per kind), along with the queue's depth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow_operator import metrics
from mlflow_operator.handlers import memo
from mlflow_operator.logic.backoff import exponential_backoff

Key = tuple[str, str]  # (namespace, name)
Reconcile = Callable[[dict[str, Any]], Awaitable[float | None]]

logger = logging.getLogger("mlflow_operator.controller")
MAX_BACKOFF_SECONDS = 300.0


def backoff_seconds(failures: int) -> float:
    """1, 2, 4, ... seconds after unexpected errors, capped: retried without a hot loop."""
    return exponential_backoff(failures, base=1.0, cap=MAX_BACKOFF_SECONDS)


@dataclass
class Controller:
    kind: str
    reconcile: Reconcile
    resync_seconds: float | None = 60.0  # None: no periodic resync; the reconcile asks when to come back
    workers: int = 4
    backoff: Callable[[int], float] = backoff_seconds  # seconds before retry N; tests inject a faster one
    # A deletion drops what the kind's handlers remember of the object (handlers.memo, by uid): without it,
    # per-object memos grow with every object ever created (one without finalizers is never reconciled
    # deleted). `forget` is for what a memo does not hold (a ModelDeployment's metric series).
    forget: Callable[[dict[str, Any]], None] | None = None
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _queue: asyncio.Queue[Key] | None = None
    _queued: set[Key] = field(default_factory=set)
    _running: set[Key] = field(default_factory=set)
    _dirty: set[Key] = field(default_factory=set)
    _failures: dict[Key, int] = field(default_factory=dict)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        metrics.init_kind(self.kind)

    def _report(self) -> None:
        metrics.set_queue(self.kind, len(self._queued), len(self._running), len(self.objects), len(self._failures))

    # ---- inputs

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event of the kind itself: remember the latest object and reconcile it."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            uid = body["metadata"].get("uid")
            if uid:
                memo.forget_object(self.kind, uid)
            if self.forget is not None:
                self.forget(body)
            self.objects.pop(key, None)
            self._failures.pop(key, None)
            metrics.forget_object(self.kind, *key)
            self._report()
            return
        self.objects[key] = dict(body)
        self.enqueue(key)
        self._report()

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if self._queue is None or key not in self.objects:
            return
        if delay > 0:
            previous = self._timers.pop(key, None)
            if previous is not None and previous.when() <= asyncio.get_running_loop().time() + delay:
                self._timers[key] = previous  # an earlier wake-up is already scheduled
                return
            if previous is not None:
                previous.cancel()
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._wake, key)
            return
        if key in self._running:
            self._dirty.add(key)  # reconcile again right after the running pass, with the latest object
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            self._report()

    def _wake(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    # ---- lifecycle

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.kind}-worker-{i}") for i in range(self.workers)]
        if self.resync_seconds is not None:
            self._tasks.append(asyncio.create_task(self._resync(), name=f"{self.kind}-resync"))
        for key in list(self.objects):
            self.enqueue(key)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _resync(self) -> None:
        assert self.resync_seconds is not None
        while True:
            await asyncio.sleep(self.resync_seconds)
            for key in list(self.objects):
                self.enqueue(key)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            body = self.objects.get(key)
            if body is None:
                self._report()
                continue
            self._running.add(key)
            self._report()
            try:
                await self._run_once(key, body)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                self._report()

    async def _run_once(self, key: Key, body: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            again = await self.reconcile(body)
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.observe_reconcile(self.kind, *key, time.monotonic() - started, ok=False)
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = self.backoff(failures)
            logger.exception(
                "%s %s/%s: reconcile failed (attempt %d), retrying in %.0fs", self.kind, key[0], key[1], failures, delay
            )
            self.enqueue(key, delay)
            return
        elapsed = time.monotonic() - started
        metrics.observe_reconcile(self.kind, *key, elapsed, ok=True)
        self._failures.pop(key, None)
        logger.debug("%s %s/%s reconciled in %.3fs", self.kind, key[0], key[1], elapsed)
        if again:
            self.enqueue(key, again)
