"""The operator's own Prometheus metrics: one dedicated registry, served on --metrics-address at /metrics.

Nothing here does I/O: the CLI serves REGISTRY from a thread, the controller and the handlers call the
functions below. A dedicated CollectorRegistry (not prometheus_client's global one) keeps tests and any
library that registers on the global registry apart; the standard process collector adds RSS, CPU and
file descriptors.

Per-object series (a ModelDeployment's phase and canary weight, registry sync errors, lifecycle
corrections) are removed when the object is deleted (`forget_object`), so deleted resources do not leave
series behind forever.
"""

from __future__ import annotations

import contextlib
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics

from mlflow_operator import __version__
from mlflow_operator.api.modeldeployment import RolloutPhase

# `*_created` series double every counter for no use on a dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "mlflow_operator"
PHASES: tuple[str, ...] = get_args(RolloutPhase)  # Progressing, Paused, Succeeded, RolledBack, Degraded
SUCCESS, ERROR = "success", "error"
# Reconciles take from milliseconds (an idle pass) to a minute (a slow registry or S3 behind retries).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)


def _gauge(suffix: str, documentation: str, labels: list[str]) -> Gauge:
    """A gauge named with the operator's prefix, on the operator's registry."""
    return Gauge(f"{PREFIX}_{suffix}", documentation, labels, registry=REGISTRY)


def _counter(suffix: str, documentation: str, labels: list[str]) -> Counter:
    """A counter named with the operator's prefix (`_total` is added on exposition), on the operator's registry."""
    return Counter(f"{PREFIX}_{suffix}", documentation, labels, registry=REGISTRY)


BUILD_INFO = _gauge("build_info", "Always 1; the operator's version as a label.", ["version"])
BUILD_INFO.labels(__version__).set(1)

RECONCILES = _counter(
    "reconciles",
    "Reconcile passes per kind; result=error when the pass raised (it is retried with backoff).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Duration of one reconcile pass per kind, successful or not.",
    ["kind"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = _gauge("queue_depth", "Objects waiting in a kind's work queue (not yet picked by a worker).", ["kind"])
IN_PROGRESS = _gauge("reconciles_in_progress", "Reconcile passes running now per kind.", ["kind"])
OBJECTS = _gauge("objects", "Custom resources of a kind the operator watches.", ["kind"])
RETRYING = _gauge(
    "objects_retrying",
    "Objects of a kind whose last reconcile raised and that wait for a retry with backoff.",
    ["kind"],
)
LAST_PASS = _gauge(
    "last_reconcile_timestamp_seconds",
    "When the operator last finished a reconcile pass of an object (Unix time), whatever its result: an object"
    " whose value stops moving while its resyncs are due is stuck.",
    ["kind", "namespace", "name"],
)
ROLLOUT_PHASE = _gauge(
    "modeldeployment_phase",
    "1 for a ModelDeployment's current status.phase, 0 for the other phases (kube-state-metrics style).",
    ["namespace", "name", "phase"],
)
CANARY_WEIGHT = _gauge(
    "modeldeployment_canary_weight",
    "Percent of a ModelDeployment's traffic going to its canary (status.canaryWeight).",
    ["namespace", "name"],
)
REGISTRY_SYNC_ERRORS = _counter(
    "registry_sync_errors",
    "RegisteredModel syncs with the MLflow registry that failed, by condition reason.",
    ["namespace", "name", "reason"],
)
LIFECYCLE_CORRECTIONS = _counter(
    "lifecycle_corrections",
    "Times a TrackingServer's bucket lifecycle rules had drifted from what the operator applied and were re-applied.",
    ["namespace", "name"],
)
REGISTRY_EVENTS = _counter(
    "registry_events",
    "Verified registry webhook deliveries by event type (entity.action, e.g. model_version_alias.created).",
    ["type"],
)
REGISTRY_EVENTS_REJECTED = _counter(
    "registry_events_rejected",
    "Registry webhook deliveries refused (bad_signature, stale, malformed, unknown_source) or waking nothing "
    "(unknown_model).",
    ["reason"],
)
REGISTRY_EVENT_WAKEUPS = _counter("registry_event_wakeups", "Resources woken by a registry event, by kind.", ["kind"])
DATABASE_BACKUP_TIME = _gauge(
    "database_backup_last_success_timestamp_seconds",
    "When a TrackingServer's newest completed base backup ended (alert on its age).",
    ["namespace", "name"],
)
DATABASE_BACKUP_FAILURES = _counter(
    "database_backup_failures",
    "Passes that found a TrackingServer's backups unhealthy, by reason (StoreUnavailable: the archive cannot "
    "be reached, so WAL piles up in the database's volume; BackupFailed: the last base backup Job failed).",
    ["namespace", "name", "reason"],
)
KUBE_REQUESTS = _counter(
    "kube_requests",
    "Kubernetes API requests the operator's reconcilers sent (children, status, Events, Secrets), by verb and "
    "kind; kopf's own watches are not counted.",
    ["verb", "kind"],
)

# Label values in use per object, so that forgetting an object removes every one of its series.
_rollout_phases: dict[tuple[str, str], set[str]] = {}
_sync_error_reasons: dict[tuple[str, str], set[str]] = {}
_corrected: set[tuple[str, str]] = set()
_backup_failure_reasons: dict[tuple[str, str], set[str]] = {}


# ---- the controller


def observe_reconcile(kind: str, namespace: str, name: str, seconds: float, ok: bool) -> None:
    """One reconcile pass of an object finished (ok=False: it raised)."""
    RECONCILES.labels(kind, SUCCESS if ok else ERROR).inc()
    RECONCILE_DURATION.labels(kind).observe(seconds)
    LAST_PASS.labels(kind, namespace, name).set_to_current_time()


def set_queue(kind: str, queued: int, running: int, objects: int, retrying: int) -> None:
    """The state of a kind's controller: queued keys, passes running, objects known, objects in backoff."""
    QUEUE_DEPTH.labels(kind).set(queued)
    IN_PROGRESS.labels(kind).set(running)
    OBJECTS.labels(kind).set(objects)
    RETRYING.labels(kind).set(retrying)


def init_kind(kind: str) -> None:
    """Create a kind's series at zero, so dashboards and rate() see them before the first event."""
    for result in (SUCCESS, ERROR):
        RECONCILES.labels(kind, result)
    RECONCILE_DURATION.labels(kind)
    set_queue(kind, 0, 0, 0, 0)


def forget_object(kind: str, namespace: str, name: str) -> None:
    """An object was deleted: drop its per-object series."""
    with contextlib.suppress(KeyError):  # deleted before its first pass finished
        LAST_PASS.remove(kind, namespace, name)
    if kind == "ModelDeployment":
        forget_rollout(namespace, name)
    elif kind == "RegisteredModel":
        for reason in _sync_error_reasons.pop((namespace, name), set()):
            REGISTRY_SYNC_ERRORS.remove(namespace, name, reason)
    elif kind == "TrackingServer":
        if (namespace, name) in _corrected:
            _corrected.discard((namespace, name))
            LIFECYCLE_CORRECTIONS.remove(namespace, name)
        forget_backups(namespace, name)


# ---- the handlers


def observe_rollout(namespace: str, name: str, phase: str | None, canary_weight: int) -> None:
    """A ModelDeployment's rollout as its status now says: 1 for `phase`, 0 for the others (all 0 when
    no phase yet), and the canary's traffic weight."""
    key = (namespace, name)
    phases = _rollout_phases.setdefault(key, set(PHASES))
    if phase is not None:
        phases.add(phase)  # a phase a newer rollout logic reports is shown too, and forgotten with the object
    for candidate in phases:
        ROLLOUT_PHASE.labels(namespace, name, candidate).set(1 if candidate == phase else 0)
    CANARY_WEIGHT.labels(namespace, name).set(canary_weight)


def forget_rollout(namespace: str, name: str) -> None:
    """The ModelDeployment is gone: remove its series (idempotent)."""
    phases = _rollout_phases.pop((namespace, name), None)
    if phases is None:
        return
    for phase in phases:
        ROLLOUT_PHASE.remove(namespace, name, phase)
    CANARY_WEIGHT.remove(namespace, name)


def count_registry_sync_error(namespace: str, name: str, reason: str) -> None:
    """A RegisteredModel's sync failed with this condition reason (RegistryUnavailable, SecretNotFound...)."""
    _sync_error_reasons.setdefault((namespace, name), set()).add(reason)
    REGISTRY_SYNC_ERRORS.labels(namespace, name, reason).inc()


def count_lifecycle_correction(namespace: str, name: str) -> None:
    """A TrackingServer's bucket lifecycle rules drifted and were re-applied."""
    _corrected.add((namespace, name))
    LIFECYCLE_CORRECTIONS.labels(namespace, name).inc()


def observe_backups(namespace: str, name: str, last_success: float | None, failure: str | None) -> None:
    """A TrackingServer's backups as one pass found them: the newest base backup's end, and a failure."""
    if last_success is not None:
        DATABASE_BACKUP_TIME.labels(namespace, name).set(last_success)
    if failure is not None:
        _backup_failure_reasons.setdefault((namespace, name), set()).add(failure)
        DATABASE_BACKUP_FAILURES.labels(namespace, name, failure).inc()


def forget_backups(namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):  # no backup seen yet
        DATABASE_BACKUP_TIME.remove(namespace, name)
    for reason in _backup_failure_reasons.pop((namespace, name), set()):
        DATABASE_BACKUP_FAILURES.remove(namespace, name, reason)


def count_kube_request(verb: str, kind: str) -> None:
    """One request to the Kubernetes API (apply, get, list, create, patch, delete) for an object of `kind`."""
    KUBE_REQUESTS.labels(verb, kind).inc()


# ---- introspection (dashboards and tests)


def exported_names() -> set[str]:
    """Every sample name /metrics can show (`x_total` for counters, `x_bucket`/`_sum`/`_count` for
    histograms), whether or not a series exists yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    """The current value of one series, or None (for tests and debugging)."""
    return REGISTRY.get_sample_value(name, labels or {})
