"""RegisteredModel planning: spec -> desired state, plan against an observed registry, conditions, status."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.logic.registeredmodel import (
    REASON_SYNCED,
    REASON_VERSION_NOT_FOUND,
    VERSION_KEY_TAG,
    Action,
    CreateModel,
    DeleteAlias,
    DeleteTag,
    DesiredModel,
    ObservedModel,
    ObservedVersion,
    RegisterVersion,
    SetAlias,
    SetDescription,
    SetTag,
    SyncPlan,
    desired_model,
    desired_version,
    model_id_from_source,
    plan_sync,
    retry_delay,
    run_id_from_source,
    status_fields,
    sync_failure,
    synced_condition,
    version_key,
)

URI = "http://mlflow.example:5000"
RUN_A = "a" * 32
RUN_B = "b" * 32


def spec(**fields: Any) -> RegisteredModelSpec:
    """A spec from its wire (camelCase) form, as the operator reads it from the cluster."""
    return RegisteredModelSpec.model_validate({"trackingUri": URI, **fields})


def desired(**fields: Any) -> DesiredModel:
    return desired_model(spec(**fields), "churn")


def version(number: int, key: str | None = None, **fields: Any) -> ObservedVersion:
    tags = {VERSION_KEY_TAG: key} if key else {}
    return ObservedVersion(number, status="READY", tags=tags, **fields)


def registry(
    versions: Sequence[ObservedVersion] = (),
    *,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    aliases: Mapping[str, int] | None = None,
) -> ObservedModel:
    return ObservedModel("churn", description, dict(tags or {}), dict(aliases or {}), tuple(versions))


def kinds(plan: SyncPlan) -> list[str]:
    return [type(action).__name__ for action in plan.actions]


# --- spec -> desired ------------------------------------------------------------------------------------


def test_the_registry_name_is_model_name_else_metadata_name() -> None:
    assert desired_model(spec(), "from-metadata").name == "from-metadata"
    assert desired_model(spec(modelName="Churn Model"), "from-metadata").name == "Churn Model"


@pytest.mark.parametrize(
    ("source", "run_id", "model_id"),
    [
        (f"runs:/{RUN_A}/model", RUN_A, None),
        (f"runs:/{RUN_A}", RUN_A, None),
        ("models:/m-0123abcd", None, "m-0123abcd"),
        ("models:/churn/3", None, None),  # a registered version, not a logged model
        ("models:/churn@champion", None, None),
        ("s3://bucket/models/churn", None, None),
        ("mlflow-artifacts:/1/abc/artifacts/model", None, None),
    ],
)
def test_run_and_model_ids_are_taken_from_the_source_as_mlflow_register_model_does(
    source: str, run_id: str | None, model_id: str | None
) -> None:
    assert run_id_from_source(source) == run_id
    assert model_id_from_source(source) == model_id
    entry = desired_version(source, None, None, {})
    assert (entry.run_id, entry.model_id) == (run_id, model_id)


def test_an_explicit_run_id_wins_over_the_source() -> None:
    assert desired_version(f"runs:/{RUN_A}/model", RUN_B, None, {}).run_id == RUN_B


def test_the_version_key_depends_on_source_and_run_only() -> None:
    key = version_key("s3://b/m", RUN_A)
    assert key == version_key("s3://b/m", RUN_A) and key.startswith("sha256:")
    assert (
        len({key, version_key("s3://b/m", RUN_B), version_key("s3://b/m", None), version_key("s3://b/n", RUN_A)}) == 4
    )
    # Description and tags may be edited in the spec without making it another version.
    edited = desired_version("s3://b/m", RUN_A, "new words", {"k": "v"})
    assert edited.key == key


def test_the_key_tag_is_added_and_cannot_be_overridden_by_the_spec() -> None:
    entry = desired_version("s3://b/m", None, None, {"dataset": "q1", VERSION_KEY_TAG: "forged"})
    assert entry.tags == {"dataset": "q1", VERSION_KEY_TAG: entry.key}


def test_the_same_source_listed_twice_is_one_version() -> None:
    model = desired(versions=[{"source": "s3://b/m"}, {"source": "s3://b/n"}, {"source": "s3://b/m"}])
    assert [v.source for v in model.versions] == ["s3://b/m", "s3://b/n"]


# --- create or adopt ------------------------------------------------------------------------------------


def test_a_missing_model_is_created_with_description_and_tags_in_one_action() -> None:
    plan = plan_sync(desired(description="Predicts churn.", tags={"team": "search"}), None)
    assert plan.actions == (CreateModel("Predicts churn.", {"team": "search"}),)
    assert plan.owned_tags == ("team",) and plan.refusal is None


def test_versions_are_registered_in_spec_order_after_creating_the_model() -> None:
    model = desired(versions=[{"source": "s3://b/2"}, {"source": "s3://b/1", "runId": RUN_A, "description": "d"}])
    plan = plan_sync(model, None)
    assert kinds(plan) == ["CreateModel", "RegisterVersion", "RegisterVersion"]
    first, second = plan.actions[1], plan.actions[2]
    assert isinstance(first, RegisterVersion) and isinstance(second, RegisterVersion)
    assert (first.source, second.source) == ("s3://b/2", "s3://b/1")
    assert (second.run_id, second.description, second.tags[VERSION_KEY_TAG]) == (RUN_A, "d", second.key)


def test_an_existing_model_is_adopted_and_only_what_differs_changes() -> None:
    observed = registry([version(1)], description="old", tags={"team": "search", "foreign": "x"})
    plan = plan_sync(desired(description="new", tags={"team": "search"}), observed)
    assert plan.actions == (SetDescription("new", "old"),)


def test_no_description_in_the_spec_leaves_the_registrys_alone() -> None:
    assert plan_sync(desired(), registry(description="written in the UI")).in_sync


def test_an_empty_description_in_the_spec_clears_it() -> None:
    assert plan_sync(desired(description=""), registry(description="x")).actions == (SetDescription("", "x"),)


# --- tags ------------------------------------------------------------------------------------------------


def test_tags_are_set_changed_and_deleted_when_owned_and_others_are_left_alone() -> None:
    observed = registry(tags={"changed": "old", "dropped": "1", "foreign": "keep", "gone-already": "?"})
    model = desired(tags={"changed": "new", "added": "a"})
    plan = plan_sync(model, observed, owned_tags=["changed", "dropped", "vanished"])
    assert plan.actions == (
        SetTag("added", "a", None),
        SetTag("changed", "new", "old"),
        DeleteTag("dropped", "1"),
    )
    assert plan.owned_tags == ("added", "changed")


def test_a_foreign_tag_named_in_the_spec_becomes_owned() -> None:
    plan = plan_sync(desired(tags={"team": "search"}), registry(tags={"team": "ads"}))
    assert plan.actions == (SetTag("team", "search", "ads"),) and plan.owned_tags == ("team",)


# --- aliases ---------------------------------------------------------------------------------------------


def test_aliases_are_set_moved_and_deleted_when_owned() -> None:
    observed = registry([version(1), version(2), version(3)], aliases={"moved": 1, "dropped": 2, "foreign": 3})
    model = desired(aliases={"moved": 2, "added": 3})
    plan = plan_sync(model, observed, owned_aliases=["moved", "dropped"])
    assert plan.actions == (SetAlias("added", 3, None), SetAlias("moved", 2, 1), DeleteAlias("dropped", 2))
    assert plan.owned_aliases == ("added", "moved")


def test_exclusive_policy_deletes_every_alias_outside_the_spec() -> None:
    observed = registry([version(1), version(2)], aliases={"champion": 1, "foreign": 2, "other": 1})
    plan = plan_sync(desired(aliases={"champion": 1}, aliasPolicy="Exclusive"), observed)
    assert plan.actions == (DeleteAlias("foreign", 2), DeleteAlias("other", 1))


def test_owned_policy_never_touches_an_alias_it_does_not_own() -> None:
    observed = registry([version(1)], aliases={"foreign": 1})
    assert plan_sync(desired(aliases={}), observed, owned_aliases=["champion"]).in_sync


# --- VersionNotFound ------------------------------------------------------------------------------------


def test_an_alias_naming_a_missing_version_refuses_the_whole_pass() -> None:
    observed = registry([version(1), version(2)], description="old", tags={"t": "old"}, aliases={"stale": 1})
    model = desired(description="new", tags={"t": "new"}, aliases={"champion": 7, "challenger": 2})
    plan = plan_sync(model, observed, owned_tags=["gone"], owned_aliases=["stale"])
    assert plan.actions == ()
    assert plan.refusal is not None and plan.refusal.reason == REASON_VERSION_NOT_FOUND
    assert plan.refusal.missing == (("champion", 7),)
    assert plan.refusal.message.startswith('alias "champion" names version 7, which does not exist')
    assert "latest version is 2" in plan.refusal.message
    # Nothing was applied, so ownership is what it was.
    assert plan.owned_tags == ("gone",) and plan.owned_aliases == ("stale",)
    assert not plan.in_sync and not plan.needs_follow_up


def test_a_missing_model_with_aliases_and_no_versions_to_register_is_refused_not_created() -> None:
    plan = plan_sync(desired(aliases={"champion": 1}), None)
    assert plan.actions == () and plan.refusal is not None
    assert "it has no versions" in plan.refusal.message


def test_aliases_wait_for_versions_registered_in_the_same_pass() -> None:
    observed = registry([version(1)], aliases={})
    model = desired(aliases={"champion": 1, "challenger": 2}, versions=[{"source": "s3://b/2"}])
    plan = plan_sync(model, observed)
    assert kinds(plan) == ["RegisterVersion", "SetAlias"]
    assert plan.actions[1] == SetAlias("champion", 1, None)
    assert plan.deferred_aliases == ("challenger",) and plan.needs_follow_up
    assert plan.owned_aliases == ("challenger", "champion")

    registered = dataclasses.replace(observed, versions=(version(1), version(2, plan_key(plan))))
    after = dataclasses.replace(registered, aliases={"champion": 1})
    follow_up = plan_sync(model, after, plan.owned_tags, plan.owned_aliases)
    assert follow_up.actions == (SetAlias("challenger", 2, None),) and not follow_up.needs_follow_up


def plan_key(plan: SyncPlan) -> str:
    (register,) = [a for a in plan.actions if isinstance(a, RegisterVersion)]
    return register.key


def test_the_follow_up_refuses_when_the_new_version_got_another_number() -> None:
    model = desired(aliases={"champion": 5}, versions=[{"source": "s3://b/new"}])
    registered = registry([version(1), version(2, desired_version("s3://b/new", None, None, {}).key)])
    plan = plan_sync(model, registered)
    assert plan.refusal is not None and plan.refusal.missing == (("champion", 5),)


# --- idempotent registration ------------------------------------------------------------------------------


def test_versions_are_found_by_their_key_after_a_restart_that_lost_status() -> None:
    model = desired(
        description="d",
        tags={"team": "search"},
        aliases={"champion": 2},
        versions=[{"source": "s3://b/1"}, {"source": f"runs:/{RUN_A}/model"}],
    )
    keys = [v.key for v in model.versions]
    observed = registry(
        [version(1, keys[0]), version(2, keys[1]), version(3)],  # version 3 registered by someone else
        description="d",
        tags={"team": "search"},
        aliases={"champion": 2},
    )
    plan = plan_sync(model, observed, owned_tags=[], owned_aliases=[])
    assert plan.in_sync and plan.actions == ()
    assert plan.owned_tags == ("team",) and plan.owned_aliases == ("champion",)


def test_a_version_deleted_in_the_registry_is_registered_again() -> None:
    model = desired(versions=[{"source": "s3://b/1"}])
    plan = plan_sync(model, registry([version(2)]), resync=True)
    assert kinds(plan) == ["RegisterVersion"]
    assert plan.drift == ('version registered from "s3://b/1"',)


# --- idle and drift ---------------------------------------------------------------------------------------


def test_an_idle_resync_plans_nothing() -> None:
    model = desired(description="d", tags={"a": "1"}, aliases={"x": 1}, versions=[{"source": "s3://b/1"}])
    observed = registry(
        [version(1, model.versions[0].key, aliases=("x",))],
        description="d",
        tags={"a": "1", "f": "2"},
        aliases={"x": 1},
    )
    plan = plan_sync(model, observed, ["a"], ["x"], resync=True)
    assert plan.in_sync and plan.actions == () and plan.drift == () and plan.drift_summary() == ""


def test_drift_is_described_only_on_a_resync() -> None:
    observed = registry([version(1), version(2)], description="edited", tags={"team": "ads"}, aliases={"champion": 2})
    model = desired(description="d", tags={"team": "search", "tier": "gold"}, aliases={"champion": 1})
    assert plan_sync(model, observed, ["team", "tier"], ["champion"]).drift == ()
    plan = plan_sync(model, observed, ["team", "tier"], ["champion"], resync=True)
    assert plan.drift_summary() == (
        "description restored; "
        'tag "team" set to "search" (was "ads"); '
        'tag "tier" set to "gold"; '
        'alias "champion" moved to version 1 (was 2)'
    )


def test_every_action_describes_itself() -> None:
    actions: list[Action] = [
        CreateModel(None, {}),
        SetDescription("d", ""),
        DeleteTag("k", "v"),
        SetAlias("a", 1, None),
        DeleteAlias("a", 3),
    ]
    assert [a.describe() for a in actions] == [
        "registered model created",
        "description set",
        'tag "k" deleted (was "v")',
        'alias "a" set to version 1',
        'alias "a" deleted (was version 3)',
    ]


def test_long_tag_values_are_quoted_short() -> None:
    described = SetTag("notes", "x" * 5000, "y" * 100).describe()
    assert described == f'tag "notes" set to "{"x" * 77}..." (was "{"y" * 77}...")'


# --- conditions and backoff ---------------------------------------------------------------------------------


def test_synced_condition() -> None:
    model = desired(aliases={"x": 1}, tags={"a": "b"})
    observed = registry([version(1)], tags={"a": "b"}, aliases={"x": 1})
    synced = synced_condition(plan_sync(model, observed), model, observed)
    assert (synced.type, synced.status, synced.reason) == ("Synced", "True", REASON_SYNCED)
    assert "1 version(s), 1 alias(es), 1 tag(s)" in synced.message

    refused = synced_condition(plan_sync(desired(aliases={"x": 9}), observed), model, observed)
    assert (refused.status, refused.reason) == ("False", REASON_VERSION_NOT_FOUND)

    contended = synced_condition(plan_sync(desired(tags={"a": "c"}), observed), model, observed)
    assert contended.status == "Unknown" and 'tag "a" set to "c"' in contended.message

    failed = sync_failure("RegistryUnavailable", "connection refused")
    assert (failed.type, failed.status, failed.reason) == ("Synced", "False", "RegistryUnavailable")


def test_retry_delay_is_exponential_and_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert retry_delay(30) == 300.0 and retry_delay(0) == 5.0


# --- status ------------------------------------------------------------------------------------------------


def test_status_lists_versions_newest_first_and_aliases_that_fit_the_schema() -> None:
    versions = [
        ObservedVersion(
            n,
            status="READY",
            run_id=RUN_A if n % 2 else "not/a-run-id",
            source=("s3://b/" + "x" * 2000) if n == 150 else f"s3://b/{n}",
            aliases=("champion", "ünïcode") if n == 149 else (),
            creation_timestamp_ms=1_700_000_000_000 if n == 150 else None,
        )
        for n in range(1, 151)
    ]
    observed = registry(versions, aliases={"champion": 149, "ünïcode": 149, "-dash": 3})
    status = status_fields("churn", observed, ["b", "a", "a"], ["champion"])
    assert status["modelName"] == "churn" and status["latestVersion"] == 150
    assert len(status["versions"]) == 100 and status["versions"][0]["version"] == 150
    assert status["versions"][0] == {
        "version": 150,
        "status": "READY",
        "source": ("s3://b/" + "x" * 2000)[:1024],
        "creationTimestamp": "2023-11-14T22:13:20Z",
    }
    assert status["versions"][1] == {
        "version": 149,
        "status": "READY",
        "runId": RUN_A,
        "source": "s3://b/149",
        "aliases": ["champion"],
    }
    assert status["aliases"] == {"champion": 149}
    assert status["ownedTags"] == ["a", "b"] and status["ownedAliases"] == ["champion"]


def test_status_of_a_missing_model() -> None:
    assert status_fields("churn", None, [], []) == {
        "modelName": "churn",
        "latestVersion": None,
        "versions": [],
        "aliases": {},
        "ownedTags": [],
        "ownedAliases": [],
    }


# --- properties: a simulated registry ----------------------------------------------------------------------


class SimulatedRegistry:
    """Applies actions the way MLflow's registry does: numbers versions max+1, refuses aliases to missing
    versions, and lets a version's aliases follow the model's alias map."""

    def __init__(self, observed: ObservedModel | None) -> None:
        self.model = observed
        self.registrations = 0

    def apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self.model = self._apply(action)

    def _apply(self, action: Action) -> ObservedModel:
        if isinstance(action, CreateModel):
            assert self.model is None, "created twice"
            return ObservedModel("churn", action.description or "", dict(action.tags))
        model = self.model
        assert model is not None, f"{action} on a missing model"
        if isinstance(action, SetDescription):
            return dataclasses.replace(model, description=action.description)
        if isinstance(action, SetTag):
            return dataclasses.replace(model, tags={**model.tags, action.key: action.value})
        if isinstance(action, DeleteTag):
            return dataclasses.replace(model, tags={k: v for k, v in model.tags.items() if k != action.key})
        if isinstance(action, RegisterVersion):
            self.registrations += 1
            number = (model.latest_version or 0) + 1
            new = ObservedVersion(number, "READY", action.run_id, action.source, tags=dict(action.tags))
            return dataclasses.replace(model, versions=(*model.versions, new))
        if isinstance(action, SetAlias):
            assert action.version in model.version_numbers, f"{action} names a missing version"
            return dataclasses.replace(model, aliases={**model.aliases, action.alias: action.version})
        assert isinstance(action, DeleteAlias)
        return dataclasses.replace(model, aliases={k: v for k, v in model.aliases.items() if k != action.alias})


TAG_KEYS = st.sampled_from(["team", "tier", "owner", "stage"])
TAG_VALUES = st.sampled_from(["a", "b"])
ALIASES = st.sampled_from(["champion", "challenger", "shadow"])
SOURCES = st.sampled_from(["s3://b/1", "s3://b/2", "s3://b/3", f"runs:/{RUN_A}/model"])


@st.composite
def observed_models(draw: st.DrawFn) -> ObservedModel | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    count = draw(st.integers(0, 4))
    keyed_sources = draw(st.lists(st.one_of(st.none(), SOURCES), min_size=count, max_size=count))
    versions = tuple(
        version(n + 1, version_key(source, None) if source else None) for n, source in enumerate(keyed_sources)
    )
    numbers = [v.version for v in versions]
    aliases = draw(st.dictionaries(ALIASES, st.sampled_from(numbers))) if numbers else {}
    return registry(
        versions,
        description=draw(st.sampled_from(["", "old", "new"])),
        tags=draw(st.dictionaries(TAG_KEYS, TAG_VALUES)),
        aliases=aliases,
    )


@st.composite
def specs(draw: st.DrawFn) -> DesiredModel:
    fields: dict[str, Any] = {
        "tags": draw(st.dictionaries(TAG_KEYS, TAG_VALUES)),
        "aliases": draw(st.dictionaries(ALIASES, st.integers(1, 6))),
        "aliasPolicy": draw(st.sampled_from(["Owned", "Exclusive"])),
        "versions": [{"source": s} for s in draw(st.lists(SOURCES, max_size=3))],
    }
    description = draw(st.sampled_from([None, "", "new"]))
    if description is not None:
        fields["description"] = description
    return desired(**fields)


@settings(max_examples=300, deadline=None)
@given(
    observed=observed_models(),
    model=specs(),
    owned_tags=st.lists(TAG_KEYS, unique=True),
    owned_aliases=st.lists(ALIASES, unique=True),
)
def test_a_sync_converges_in_two_passes_without_touching_what_it_does_not_own(
    observed: ObservedModel | None,
    model: DesiredModel,
    owned_tags: list[str],
    owned_aliases: list[str],
) -> None:
    sim = SimulatedRegistry(observed)
    plan = plan_sync(model, observed, owned_tags, owned_aliases)
    refused_at_once = plan.refusal is not None
    pending = [e for e in model.versions if observed is None or observed.version_with_key(e.key) is None]
    passes = 0
    while plan.actions:
        assert plan.refusal is None
        sim.apply(plan.actions)
        passes += 1
        assert passes <= 2, "the plan did not converge in two passes"
        plan = plan_sync(model, sim.model, plan.owned_tags, plan.owned_aliases)
    # Converged: in sync, or refused with nothing to do.
    assert plan.in_sync or (plan.refusal is not None and plan.refusal.reason == REASON_VERSION_NOT_FOUND)
    # Each spec version missing from the registry was registered exactly once, however many passes ran.
    assert sim.registrations == (0 if refused_at_once else len(pending))
    final = sim.model
    if plan.in_sync:
        assert final is not None
        assert {k: final.tags[k] for k in model.tags} == dict(model.tags)
        assert {a: final.aliases[a] for a in model.aliases} == dict(model.aliases)
        if model.description is not None:
            assert final.description == model.description
        # Idempotent: once in sync, the same pass again (even with the status lost) does nothing.
        assert plan_sync(model, final, plan.owned_tags, plan.owned_aliases, resync=True).actions == ()
        assert plan_sync(model, final, [], []).actions == ()
    # Tags neither in the spec nor owned are left alone; so are foreign aliases under the Owned policy.
    before_tags = dict(observed.tags) if observed else {}
    after_tags = dict(final.tags) if final else {}
    for key, value in before_tags.items():
        if key not in model.tags and key not in owned_tags:
            assert after_tags.get(key) == value
    if model.alias_policy == "Owned":
        before_aliases = dict(observed.aliases) if observed else {}
        after_aliases = dict(final.aliases) if final else {}
        for alias, target in before_aliases.items():
            if alias not in model.aliases and alias not in owned_aliases:
                assert after_aliases.get(alias) == target


@settings(max_examples=200, deadline=None)
@given(observed=observed_models(), model=specs(), owned=st.lists(ALIASES, unique=True))
def test_a_refusal_has_no_actions_and_happens_only_for_missing_versions_with_nothing_to_register(
    observed: ObservedModel | None, model: DesiredModel, owned: list[str]
) -> None:
    plan = plan_sync(model, observed, [], owned)
    existing = observed.version_numbers if observed else frozenset()
    missing = {(a, v) for a, v in model.aliases.items() if v not in existing}
    pending = [e for e in model.versions if observed is None or observed.version_with_key(e.key) is None]
    if plan.refusal is not None:
        assert plan.actions == () and plan.deferred_aliases == ()
        assert set(plan.refusal.missing) == missing and not pending
    else:
        assert not missing or pending
        assert set(plan.deferred_aliases) == {a for a, _ in missing}
