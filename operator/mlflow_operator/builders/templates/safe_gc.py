"""`mlflow gc` that never collects what a registered model version needs.

Why this exists: `mlflow gc --older-than X` hard-deletes deleted runs, logged models and experiments by
lifecycle stage and age alone; it never asks the model registry. A version registered from a run's artifacts
(`runs:/<run>/model`, or a path inside the run's artifact directory) lost its files when the run was
collected; one registered from a logged model (`models:/m-...`) lost its files when the logged model was; and
collecting a deleted experiment deletes the rows of every run and logged model in it. A registry that points
at nothing is the worst failure an operator of MLflow can cause, and it is silent.

So this script, run by the TrackingServer's gc CronJob in the mlflow-server image:
  1. lists every registered model version and what it depends on (runs, logged models, their experiments,
     artifact locations), through the tracking server with the Job's credentials;
  2. lists what `mlflow gc --older-than X` would collect, with the same backend-store calls;
  3. runs mlflow gc's own collection code on that list minus what a version needs, printing one line per
     kept resource that names the version keeping it.
Any failure raises, so the Job exits non-zero and the TrackingServer's GarbageCollected condition says so.

It calls `_gc_tracking_resources` (the body of `mlflow gc`) instead of the command: the command reads an
empty --run-ids / --logged-model-ids / --experiment-ids as "every deleted one", and has no switch to skip a
kind, so "these runs but no logged model" cannot be said on its command line.

Environment: MLFLOW_BACKEND_STORE_URI (never on the command line: it holds the database password),
MLFLOW_TRACKING_URI (artifacts are deleted through the server's proxy), MLFLOW_TRACKING_USERNAME/PASSWORD.
The module imports only the standard library at load time, so its pure part runs without mlflow.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

RUN, LOGGED_MODEL, EXPERIMENT = "run", "logged model", "experiment"
# mlflow gc's own --older-than grammar: days, hours, minutes, seconds, each optional, in that order.
OLDER_THAN = re.compile(
    r"^((?P<days>[\.\d]+?)d)?((?P<hours>[\.\d]+?)h)?((?P<minutes>[\.\d]+?)m)?((?P<seconds>[\.\d]+?)s)?$"
)


@dataclass(frozen=True)
class Version:
    """A registered model version and everything it reads its files or lineage from."""

    name: str
    version: str
    run_ids: frozenset[str] = frozenset()
    model_ids: frozenset[str] = frozenset()
    experiment_ids: frozenset[str] = frozenset()
    locations: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"model version {self.name!r} version {self.version}"


@dataclass(frozen=True)
class Collectable:
    """A resource `mlflow gc --older-than` would hard-delete, and the artifacts that would go with it."""

    kind: str
    id: str
    experiment_id: str
    artifact_location: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


# --- pure: what a version depends on -------------------------------------------------------------------------


def older_than_millis(older_than: str) -> int:
    """--older-than in milliseconds, parsed as mlflow gc parses it (so a value it refuses is refused here)."""
    parts = OLDER_THAN.match(older_than)
    if not older_than or parts is None:
        raise ValueError(f"cannot parse --older-than {older_than!r} (mlflow gc's form: 1d2h3m4s)")
    values = {unit: float(number) for unit, number in parts.groupdict().items() if number}
    return int(timedelta(**values).total_seconds() * 1000)


def run_id_of(uri: str) -> str | None:
    """The run of a `runs:/<run_id>/<path>` URI."""
    parts = urlsplit(uri)
    if parts.scheme != "runs":
        return None
    return parts.path.strip("/").split("/")[0] or parts.netloc or None


def model_id_of(uri: str) -> str | None:
    """The logged model of a `models:/<model_id>` URI (`models:/<name>/<version>` and `@alias` name versions)."""
    parts = urlsplit(uri)
    path = parts.path.strip("/")
    if parts.scheme != "models" or not path or "/" in path or "@" in path:
        return None
    return path


def normalized(location: str) -> str:
    """A location without a trailing slash; mlflow-artifacts URIs without the server's address, which names
    the same proxied path with or without it."""
    location = location.rstrip("/")
    parts = urlsplit(location)
    if parts.scheme == "mlflow-artifacts":
        return f"mlflow-artifacts:/{parts.path.lstrip('/')}"
    return location


def inside(location: str, root: str) -> bool:
    """Whether `location` is `root` or a path under it."""
    if not location or not root:
        return False
    location, root = normalized(location), normalized(root)
    return location == root or location.startswith(root + "/")


def version_dependencies(
    name: str, version: str, source: str, download_uri: str, run_id: str | None, model_id: str | None
) -> Version:
    """What one registered version needs: its run and logged model (named by id or by a runs:/ or models:/
    source) and the artifact locations it is read from. Experiments are added by the caller (they need a
    lookup)."""
    uris = [uri for uri in (source, download_uri) if uri]
    run_ids = frozenset(found for found in (run_id, *(run_id_of(uri) for uri in uris)) if found)
    model_ids = frozenset(found for found in (model_id, *(model_id_of(uri) for uri in uris)) if found)
    locations = tuple(uri for uri in uris if urlsplit(uri).scheme not in ("runs", "models"))
    return Version(name, version, run_ids, model_ids, locations=locations)


def needed_by(resource: Collectable, version: Version) -> bool:
    """Whether collecting `resource` would take away rows or files `version` reads."""
    if any(inside(location, resource.artifact_location) for location in version.locations):
        return True
    if resource.kind == RUN:
        return resource.id in version.run_ids
    if resource.kind == LOGGED_MODEL:
        return resource.id in version.model_ids
    return resource.id in version.experiment_ids


def keepers(collectable: Iterable[Collectable], versions: Iterable[Version]) -> dict[Collectable, Version]:
    """Each collectable resource some version needs -> the first such version. An experiment is also kept when
    a kept run or logged model is in it: collecting the experiment deletes the rows of everything in it."""
    resources, versions = list(collectable), list(versions)
    kept: dict[Collectable, Version] = {}
    for resource in resources:
        keeper = next((version for version in versions if needed_by(resource, version)), None)
        if keeper is not None:
            kept[resource] = keeper
    for resource, keeper in list(kept.items()):
        for experiment in resources:
            if experiment.kind == EXPERIMENT and experiment.id == resource.experiment_id:
                kept.setdefault(experiment, keeper)
    return kept


def to_collect(collectable: Iterable[Collectable], kept: dict[Collectable, Version], kind: str) -> list[str]:
    return sorted(resource.id for resource in collectable if resource.kind == kind and resource not in kept)


# --- I/O: the registry, the backend store, mlflow gc ---------------------------------------------------------


def pages(fetch: Any) -> Iterator[Any]:
    """Every item of a paged MLflow listing: fetch(page_token) returns a PagedList."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def experiment_of(lookup: Any) -> str | None:
    """lookup()'s experiment id, or None when the run or logged model is already gone (nothing left to keep).
    Any other error stops the gc: a lineage it could not read must not count as no lineage."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return str(lookup().experiment_id)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def experiment_ids_of(store: Any, version: Version) -> frozenset[str]:
    """The experiments of the version's runs and logged models."""
    runs = [experiment_of(lambda run_id=run_id: store.get_run(run_id).info) for run_id in version.run_ids]
    models = [
        experiment_of(lambda model_id=model_id: store.get_logged_model(model_id, allow_deleted=True))
        for model_id in version.model_ids
    ]
    return frozenset(found for found in [*runs, *models] if found)


def registered_versions(store: Any) -> list[Version]:
    """Every registered model version, as the tracking server lists them to the Job's (admin) user."""
    from dataclasses import replace

    from mlflow import MlflowClient

    client = MlflowClient()
    versions = []
    for mv in pages(lambda token: client.search_model_versions(max_results=200, page_token=token)):
        download_uri = client.get_model_version_download_uri(mv.name, mv.version)
        version = version_dependencies(
            mv.name, mv.version, mv.source or "", download_uri or "", mv.run_id, getattr(mv, "model_id", None)
        )
        versions.append(replace(version, experiment_ids=experiment_ids_of(store, version)))
    return versions


def collectable(store: Any, time_delta: int) -> list[Collectable]:
    """What `mlflow gc --older-than` would collect: the same store calls `_gc_tracking_resources` makes."""
    from mlflow.entities import ViewType

    found = []
    for run_id in store._get_deleted_runs(older_than=time_delta):
        info = store.get_run(run_id).info
        found.append(Collectable(RUN, run_id, info.experiment_id, info.artifact_uri))
    for model_id in store._get_deleted_logged_models(older_than=time_delta):
        model = store.get_logged_model(model_id, allow_deleted=True)
        found.append(Collectable(LOGGED_MODEL, model_id, model.experiment_id, model.artifact_location))
    threshold = int(time.time() * 1000) - time_delta
    experiments = pages(
        lambda token: store.search_experiments(
            view_type=ViewType.DELETED_ONLY, filter_string=f"last_update_time < {threshold}", page_token=token
        )
    )
    found += [Collectable(EXPERIMENT, e.experiment_id, e.experiment_id, e.artifact_location) for e in experiments]
    return found


def collect(store: Any, resources: list[Collectable], kept: dict[Collectable, Version], older_than: str) -> None:
    """mlflow gc's collection, restricted to `resources` minus `kept`; an empty kind collects nothing."""
    from mlflow.cli import _gc_tracking_resources

    experiments = to_collect(resources, kept, EXPERIMENT)
    _gc_tracking_resources(
        backend_store=store,
        run_ids=to_collect(resources, kept, RUN),  # a list, even empty: None would mean every deleted run
        experiment_ids=experiments or None,
        logged_model_ids=to_collect(resources, kept, LOGGED_MODEL),  # likewise
        older_than=older_than,
        time_delta=older_than_millis(older_than),
        skip_experiments=not experiments,  # experiment_ids=None alone would mean every deleted experiment
        skip_logged_models=False,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than", required=True, help="as `mlflow gc --older-than`, e.g. 30d")
    older_than = parser.parse_args(argv).older_than
    time_delta = older_than_millis(older_than)

    import mlflow.cli
    from mlflow.tracking import _get_store

    if not hasattr(mlflow.cli, "_gc_tracking_resources"):
        # Older MLflow inlines its gc in the command, which cannot be told to skip a kind: refuse, delete nothing.
        raise SystemExit(f"MLflow {mlflow.__version__} has no mlflow.cli._gc_tracking_resources: nothing deleted")
    # The store `mlflow gc --backend-store-uri` builds (mlflow is untyped: hence the ignore).
    store = _get_store(os.environ["MLFLOW_BACKEND_STORE_URI"])  # type: ignore[no-untyped-call]
    # Versions first: a registry that cannot be read must stop the gc before anything is deleted.
    versions = registered_versions(store)
    resources = collectable(store, time_delta)
    kept = keepers(resources, versions)
    for resource, version in sorted(kept.items(), key=lambda item: (item[0].kind, item[0].id)):
        print(f"Kept {resource}: {version} needs it.", flush=True)
    if len(kept) == len(resources):
        print(f"Nothing to collect ({len(versions)} registered versions checked, {len(kept)} resources kept).")
        return 0
    collect(store, resources, kept, older_than)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
