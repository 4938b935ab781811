"""The registry adapter against the real MLflow server (Postgres backend), checked with the real MLflow client.

Models are logged with the full mlflow package in the server's virtualenv (a pyfunc model per run); the
adapter under test runs in this process and speaks MLflow's REST API, and what it did is read back by a
separate real MlflowClient, as users and the UI see it. The tests of the open server run in file order and share one
registered model: each leaves it matching SPEC.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_operator.adapters import registry as registry_module
from mlflow_operator.adapters.registry import (
    AliasNotFound,
    ModelNotFound,
    ModelRegistry,
    RegistryUnavailable,
    SyncOutcome,
    Unauthorized,
    VersionNotFound,
)
from mlflow_operator.adapters.registry_store import CallCount, RegistryEndpoint
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.logic.registeredmodel import (
    REASON_MODEL_NOT_FOUND,
    REASON_REGISTRY_UNAVAILABLE,
    REASON_UNAUTHORIZED,
    REASON_VERSION_NOT_FOUND,
    VERSION_KEY_TAG,
    CreateModel,
    DeleteAlias,
    DeleteTag,
    DesiredModel,
    RegisterVersion,
    SetAlias,
    SetTag,
    desired_model,
    status_fields,
)
from tests.integration.dataplane import HOST, Postgres, server_venv
from tests.integration.registry_server import (
    LOG_MODELS_SCRIPT,
    READ_MODEL_SCRIPT,
    TAMPER_SCRIPT,
    Admin,
    RegistryServer,
    migrated_server,
    new_admin,
    run_client,
)

MODEL = "churn-classifier"
OUTAGE_BOUND = 15.0  # seconds for a stopped server to be reported


@dataclass
class Servers:
    postgres: Postgres
    open: RegistryServer
    artifacts: Path
    logs: Path


@pytest.fixture(scope="module")
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Postgres and the open (no auth) server."""
    server_venv()  # fails fast, with "run `make deps`", before anything starts
    logs = tmp_path_factory.mktemp("registry-logs")
    artifacts = tmp_path_factory.mktemp("registry-artifacts")
    failed_before = request.session.testsfailed
    with ExitStack() as stack:
        postgres = stack.enter_context(Postgres({"max_connections": "50"}, log_dir=logs))
        open_server = migrated_server(postgres, "registry", artifacts, logs)
        stack.callback(open_server.stop)
        yield Servers(postgres, open_server, artifacts, logs)
        if request.session.testsfailed > failed_before:
            print(open_server.log_tail())


@dataclass
class AuthServer:
    server: RegistryServer
    admin: Admin


@pytest.fixture(scope="module")
def auth_server(request: pytest.FixtureRequest, servers: Servers) -> Iterator[AuthServer]:
    """A second server with MLflow's basic-auth app, on the same Postgres."""
    admin = new_admin()
    failed_before = request.session.testsfailed
    server = migrated_server(servers.postgres, "registryauth", servers.artifacts, servers.logs, admin=admin)
    try:
        yield AuthServer(server, admin)
        if request.session.testsfailed > failed_before:
            print(server.log_tail())
    finally:
        server.stop()


@pytest.fixture(scope="module")
def logged(servers: Servers) -> list[dict[str, str]]:
    """Two models logged with the real client, one run each: run_id, model_uri (models:/m-...), model_id."""
    result: list[dict[str, str]] = run_client(
        servers.open.url, LOG_MODELS_SCRIPT, {"experiment": "registry-adapter", "adds": [1, 2]}
    )
    return result


def spec_for(url: str, logged: list[dict[str, str]], **overrides: Any) -> RegisteredModelSpec:
    """Version 1 from MLflow 3's logged-model URI (models:/<model_id>), version 2 from its run (runs:/...)."""
    fields: dict[str, Any] = {
        "trackingUri": url,
        "description": "Predicts churn.",
        "tags": {"team": "search", "tier": "gold"},
        "aliases": {"champion": 1, "challenger": 2},
        "versions": [
            {"source": logged[0]["model_uri"], "runId": logged[0]["run_id"], "tags": {"dataset": "2024-q1"}},
            {"source": f"runs:/{logged[1]['run_id']}/model", "description": "retrained"},
        ],
    }
    return RegisteredModelSpec.model_validate({**fields, **overrides})


def desired(servers: Servers, logged: list[dict[str, str]], **overrides: Any) -> DesiredModel:
    return desired_model(spec_for(servers.open.url, logged, **overrides), MODEL)


def open_registry(url: str, **options: Any) -> ModelRegistry:
    return ModelRegistry(RegistryEndpoint(url, **options))


def read_back(url: str, name: str = MODEL, admin: Admin | None = None) -> dict[str, Any]:
    result: dict[str, Any] = run_client(url, READ_MODEL_SCRIPT, {"name": name}, admin=admin)
    return result


@pytest.fixture(scope="module")
def first_sync(servers: Servers, logged: list[dict[str, str]]) -> SyncOutcome:
    return open_registry(servers.open.url).sync(desired(servers, logged), [], [])


# --- the open server, in order ----------------------------------------------------------------------------


def test_first_sync_creates_the_model_registers_versions_and_sets_aliases(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    outcome = first_sync
    kinds = [type(action) for action in outcome.applied]
    # The aliases wait for the versions: the follow-up pass sets them once the registry has numbered them.
    assert kinds == [CreateModel, RegisterVersion, RegisterVersion, SetAlias, SetAlias]
    assert outcome.calls.writes == 5
    assert outcome.plan.in_sync and outcome.drift == ()
    assert outcome.owned_tags == ("team", "tier") and outcome.owned_aliases == ("challenger", "champion")
    observed = outcome.observed
    assert observed is not None
    assert [v.version for v in observed.versions] == [2, 1]
    assert all(v.key and v.tags[VERSION_KEY_TAG] == v.key for v in observed.versions)

    read = read_back(servers.open.url)
    assert read["description"] == "Predicts churn."
    assert read["tags"] == {"team": "search", "tier": "gold"}
    assert read["by_alias"]["champion"] == {
        "version": 1,
        "source": logged[0]["model_uri"],
        "run_id": logged[0]["run_id"],
    }
    assert read["by_alias"]["challenger"]["version"] == 2
    assert read["by_alias"]["challenger"]["source"] == f"runs:/{logged[1]['run_id']}/model"
    assert read["by_alias"]["challenger"]["run_id"] == logged[1]["run_id"]  # taken from the runs:/ URI
    assert read["versions"][0]["tags"]["dataset"] == "2024-q1"

    status = status_fields(MODEL, observed, outcome.owned_tags, outcome.owned_aliases)
    assert status["latestVersion"] == 2
    assert status["aliases"] == {"champion": 1, "challenger": 2}
    assert [v["version"] for v in status["versions"]] == [2, 1]
    assert status["versions"][1]["aliases"] == ["champion"]
    assert status["versions"][1]["status"] == "READY"
    assert status["versions"][1]["creationTimestamp"].endswith("Z")


def test_idle_resync_only_reads(servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome) -> None:
    registry = open_registry(servers.open.url)
    outcome = registry.sync(desired(servers, logged), first_sync.owned_tags, first_sync.owned_aliases, resync=True)
    assert outcome.applied == () and outcome.drift == ()
    assert outcome.calls == CallCount(reads=2, writes=0)
    assert dict(registry.calls.by_api) == {"GetRegisteredModel": 1, "SearchModelVersions": 1}
    assert outcome.plan.in_sync


def test_serving_resolves_aliases_and_versions_and_writes_back(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    """What a ModelDeployment asks of the registry: one read per resolution, and its tags and alias moves
    as the real client reads them back."""
    registry = open_registry(servers.open.url)
    before = registry.calls.snapshot()
    champion = registry.resolve(MODEL, alias="champion")
    assert (champion.version, champion.status) == (1, "READY")
    assert (champion.source, champion.run_id) == (logged[0]["model_uri"], logged[0]["run_id"])
    assert registry.resolve(MODEL, version=2).run_id == logged[1]["run_id"]
    assert registry.calls.snapshot() - before == CallCount(reads=2, writes=0)
    with pytest.raises(AliasNotFound):
        registry.resolve(MODEL, alias="nope")
    with pytest.raises(VersionNotFound):
        registry.resolve(MODEL, version=99)
    with pytest.raises(ModelNotFound):
        registry.resolve("no-such-model", alias="champion")
    with pytest.raises(VersionNotFound):  # MLflow answers "Model Version (name=..., version=1) not found"
        registry.resolve("no-such-model", version=1)

    registry.set_version_tags(MODEL, 2, {"mlflow.operator.dev/rollout": "Deployed", "note": "x" * 500})
    registry.set_alias(MODEL, "production", 2)
    read = read_back(servers.open.url)
    assert read["aliases"]["production"] == 2
    tags = next(v["tags"] for v in read["versions"] if v["version"] == 2)
    assert tags["mlflow.operator.dev/rollout"] == "Deployed" and tags["note"] == "x" * 500
    # Leave the model as the tests after this one expect it.
    registry.api.call("DeleteRegisteredModelAlias", name=MODEL, alias="production")
    registry.api.call("DeleteModelVersionTag", name=MODEL, version="2", key="mlflow.operator.dev/rollout")
    registry.api.call("DeleteModelVersionTag", name=MODEL, version="2", key="note")


def test_drift_is_put_back_and_foreign_changes_are_left_alone(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    tamper = {
        "name": MODEL,
        "set_aliases": {"champion": 2, "shadow": 1},
        "delete_tags": ["team"],
        "set_tags": {"owner": "someone-in-the-ui"},
        "description": "edited in the UI",
    }
    run_client(servers.open.url, TAMPER_SCRIPT, tamper)

    registry = open_registry(servers.open.url)
    outcome = registry.sync(desired(servers, logged), first_sync.owned_tags, first_sync.owned_aliases, resync=True)
    assert outcome.drift == (
        "description restored",
        'tag "team" set to "search"',
        'alias "champion" moved to version 1 (was 2)',
    )
    assert outcome.calls.writes == 3 and outcome.plan.in_sync

    read = read_back(servers.open.url)
    assert read["description"] == "Predicts churn."
    assert read["tags"] == {"team": "search", "tier": "gold", "owner": "someone-in-the-ui"}
    assert read["aliases"] == {"champion": 1, "challenger": 2, "shadow": 1}

    again = registry.sync(desired(servers, logged), outcome.owned_tags, outcome.owned_aliases, resync=True)
    assert again.calls == CallCount(reads=2, writes=0)


def test_exclusive_alias_policy_removes_foreign_aliases(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    registry = open_registry(servers.open.url)
    exclusive = desired(servers, logged, aliasPolicy="Exclusive")
    outcome = registry.sync(exclusive, first_sync.owned_tags, first_sync.owned_aliases)
    assert outcome.applied == (DeleteAlias("shadow", 1),)
    assert outcome.observed is not None and dict(outcome.observed.aliases) == {"champion": 1, "challenger": 2}


def test_restart_with_lost_status_registers_nothing_twice(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    # A new operator process with an empty status: the versions are found by their idempotency tags.
    registry = open_registry(servers.open.url)
    outcome = registry.sync(desired(servers, logged), [], [])
    assert outcome.applied == ()
    assert outcome.calls.writes == 0
    assert outcome.observed is not None and len(outcome.observed.versions) == 2
    # The same spec applied twice in a row by two passes that both missed each other's status.
    twice = registry.sync(desired(servers, logged), [], [])
    assert twice.applied == () and twice.observed is not None and len(twice.observed.versions) == 2


def test_tags_and_aliases_removed_from_the_spec_are_deleted(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    registry = open_registry(servers.open.url)
    smaller = desired(servers, logged, tags={"team": "search"}, aliases={"champion": 1})
    outcome = registry.sync(smaller, first_sync.owned_tags, first_sync.owned_aliases)
    assert set(outcome.applied) == {DeleteTag("tier", "gold"), DeleteAlias("challenger", 2)}
    assert outcome.owned_tags == ("team",) and outcome.owned_aliases == ("champion",)
    observed = outcome.observed
    assert observed is not None
    assert dict(observed.aliases) == {"champion": 1}
    assert "tier" not in observed.tags and observed.tags["owner"] == "someone-in-the-ui"

    restored = registry.sync(desired(servers, logged), outcome.owned_tags, outcome.owned_aliases)
    assert set(restored.applied) == {SetTag("tier", "gold", None), SetAlias("challenger", 2, None)}
    assert restored.plan.in_sync


def test_alias_naming_a_missing_version_changes_nothing(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    registry = open_registry(servers.open.url)
    broken = desired(servers, logged, description="a new description", aliases={"champion": 99, "challenger": 2})
    outcome = registry.sync(broken, first_sync.owned_tags, first_sync.owned_aliases)
    refusal = outcome.plan.refusal
    assert refusal is not None and refusal.reason == REASON_VERSION_NOT_FOUND
    assert 'alias "champion" names version 99' in refusal.message
    assert outcome.applied == () and outcome.calls == CallCount(reads=2, writes=0)
    assert outcome.observed is not None and outcome.observed.description == "Predicts churn."


def test_versions_are_read_page_by_page(
    servers: Servers, first_sync: SyncOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "VERSIONS_PAGE_SIZE", 1)
    registry = open_registry(servers.open.url)
    observed = registry.observe(MODEL)
    assert observed is not None and sorted(v.version for v in observed.versions) == [1, 2]
    assert registry.calls.by_api["SearchModelVersions"] >= 2


def test_delete_policy_removes_the_model_and_odd_names_work(servers: Servers) -> None:
    registry = open_registry(servers.open.url)
    name = "it's a model"  # MLflow's search grammar has no escapes: the adapter quotes it with "
    spec = RegisteredModelSpec.model_validate({"trackingUri": servers.open.url, "tags": {"k": "v"}})
    outcome = registry.sync(desired_model(spec, name), [], [])
    assert outcome.observed is not None and outcome.observed.name == name and outcome.plan.in_sync
    assert registry.delete_model(name) is True
    assert registry.observe(name) is None
    assert registry.delete_model(name) is False


def test_apply_tolerates_the_races_a_retry_or_another_writer_causes(servers: Servers, first_sync: SyncOutcome) -> None:
    registry = open_registry(servers.open.url)
    before = registry.observe(MODEL)
    # Created meanwhile (or by our own request whose response was lost); deleted already.
    registry.apply(MODEL, [CreateModel("ignored", {}), DeleteTag("never-set", "x"), DeleteAlias("never-set", 1)])
    assert registry.observe(MODEL) == before
    with pytest.raises(VersionNotFound) as no_version:
        registry.apply(MODEL, [SetAlias("champion", 99, 1)])
    assert no_version.value.reason == REASON_VERSION_NOT_FOUND
    with pytest.raises(ModelNotFound) as no_model:
        registry.apply("never-created", [SetTag("k", "v", None)])
    assert no_model.value.reason == REASON_MODEL_NOT_FOUND and no_model.value.code == "RESOURCE_DOES_NOT_EXIST"


# --- failures ---------------------------------------------------------------------------------------------


def create_user(server: RegistryServer, admin: Admin, username: str, password: str) -> None:
    token = base64.b64encode(f"{admin.username}:{admin.password}".encode()).decode()
    request = urllib.request.Request(
        f"{server.url}/api/2.0/mlflow/users/create",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_credentials_are_per_client_and_refusals_are_unauthorized(
    auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, admin = auth_server.server.url, auth_server.admin
    # MlflowClient would read these; the adapter must not: each client has its own credentials.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin.password)
    good = open_registry(url, username=admin.username, password=admin.password)
    wrong = open_registry(url, username=admin.username, password="not-the-password")
    anonymous = open_registry(url)
    spec = RegisteredModelSpec.model_validate({"trackingUri": url, "description": "behind basic auth"})
    target = desired_model(spec, "guarded")

    with pytest.raises(Unauthorized) as refused:
        wrong.sync(target, [], [])
    assert refused.value.reason == REASON_UNAUTHORIZED and refused.value.code == "UNAUTHENTICATED"
    with pytest.raises(Unauthorized):
        anonymous.observe("guarded")
    assert good.sync(target, [], []).plan.in_sync

    # Both clients at once, from several threads: neither borrows the other's credentials.
    with ThreadPoolExecutor(4) as pool:
        good_reads = [pool.submit(good.observe, "guarded") for _ in range(6)]
        wrong_reads = [pool.submit(wrong.observe, "guarded") for _ in range(6)]
        assert all(future.result() is not None for future in good_reads)
        assert all(isinstance(future.exception(), Unauthorized) for future in wrong_reads)

    # A known user without the permission to write: 403, also Unauthorized.
    create_user(auth_server.server, admin, "reader", "reader-password-123")
    reader = open_registry(url, username="reader", password="reader-password-123")
    assert reader.observe("guarded") is not None  # default_permission = READ
    with pytest.raises(Unauthorized) as forbidden:
        reader.sync(desired_model(spec.model_copy(update={"description": "changed"}), "guarded"), [], [])
    assert forbidden.value.code == "PERMISSION_DENIED"
    assert read_back(url, "guarded", admin=admin)["description"] == "behind basic auth"


def test_a_server_that_never_answers_is_unavailable_within_the_bounds() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
        url = f"http://{HOST}:{listener.getsockname()[1]}"
        registry = open_registry(url, timeout=1.0, max_retries=1, backoff_factor=0.0, backoff_jitter=0.0)
        began = time.monotonic()
        with pytest.raises(RegistryUnavailable) as unavailable:
            registry.observe(MODEL)
        assert time.monotonic() - began < 5
        assert unavailable.value.reason == REASON_REGISTRY_UNAVAILABLE

        # The async wrapper's own bound, shorter than one request here.
        slow = open_registry(url, timeout=2.0, max_retries=0, call_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="no answer within"):
            asyncio.run(slow.observe_async(MODEL))
        assert time.monotonic() - began < 5  # asyncio.run also waited for the abandoned worker thread


def test_server_outage_is_reported_quickly_and_recovery_needs_nothing(
    servers: Servers, logged: list[dict[str, str]], first_sync: SyncOutcome
) -> None:
    registry = open_registry(servers.open.url)
    target = desired(servers, logged)
    assert registry.sync(target, first_sync.owned_tags, first_sync.owned_aliases).plan.in_sync
    servers.open.stop()
    try:
        began = time.monotonic()
        with pytest.raises(RegistryUnavailable) as down:
            registry.sync(target, first_sync.owned_tags, first_sync.owned_aliases)
        elapsed = time.monotonic() - began
        assert elapsed < OUTAGE_BOUND, f"took {elapsed:.1f} s"
        assert down.value.reason == REASON_REGISTRY_UNAVAILABLE
        assert "Connection refused" in down.value.message
        began = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            asyncio.run(registry.sync_async(target, first_sync.owned_tags, first_sync.owned_aliases))
        assert time.monotonic() - began < OUTAGE_BOUND
    finally:
        servers.open.start()
    # The same client works again: it keeps no connection state that the outage broke.
    outcome = asyncio.run(registry.sync_async(target, first_sync.owned_tags, first_sync.owned_aliases))
    assert outcome.plan.in_sync and outcome.calls == CallCount(reads=2, writes=0)
