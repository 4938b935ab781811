"""Who owns a registry alias a ModelDeployment uses: a RegisteredModel that declares it, as pure decisions.

A RegisteredModel owns the aliases in its spec.aliases (all of the model's aliases with aliasPolicy
Exclusive) and puts them back when they move elsewhere: that is its drift correction. A ModelDeployment uses
two aliases of its model: the one it follows (spec.model.alias) and the one it moves on promotion
(spec.promotion.setAlias). With the same registry and model:

- promotion.setAlias owned by a RegisteredModel is a conflict: two writers would move the alias back and
  forth (the promotion moves it, drift correction moves it back). The ModelDeployment does not move it
  (its version tags are still written) and reports `AliasConflict=True/PromotionAliasOwned`.
- spec.model.alias owned by a RegisteredModel is how GitOps ships a model (edit the RegisteredModel, the
  deployment follows), but a move made in the MLflow UI starts a canary that the drift correction then
  undoes. It is reported, not refused: `AliasConflict=False/FollowedAliasOwned` says where to move it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mlflow_operator.api.common import RegistryConnection
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.logic.conditions import ConditionUpdate

ALIAS_CONFLICT = "AliasConflict"
REASON_PROMOTION_ALIAS_OWNED = "PromotionAliasOwned"
REASON_FOLLOWED_ALIAS_OWNED = "FollowedAliasOwned"
REASON_NO_CONFLICT = "NoConflict"


@dataclass(frozen=True)
class AliasOwner:
    """A RegisteredModel, as far as alias ownership goes."""

    name: str  # the RegisteredModel's metadata.name
    registry: str  # registry_key() of its connection
    model: str  # the model's name in the registry
    aliases: frozenset[str]
    exclusive: bool  # aliasPolicy Exclusive: every alias of the model is its

    def owns(self, registry: str, model: str, alias: str) -> bool:
        return self.registry == registry and self.model == model and (self.exclusive or alias in self.aliases)


def alias_owner(name: str, spec: RegisteredModelSpec) -> AliasOwner:
    """What a RegisteredModel (metadata.name, spec) owns."""
    return AliasOwner(
        name,
        registry_key(spec),
        spec.model_name or name,
        frozenset(spec.aliases or {}),
        spec.alias_policy == "Exclusive",
    )


def registry_key(connection: RegistryConnection) -> str:
    """Which registry a resource talks to: the same TrackingServer, or the same URI."""
    if connection.tracking_server_ref is not None:
        return f"trackingServerRef:{connection.tracking_server_ref.name}"
    return f"trackingUri:{(connection.tracking_uri or '').rstrip('/')}"


def owner_of(registry: str, model: str, alias: str | None, owners: Iterable[AliasOwner]) -> AliasOwner | None:
    if alias is None:
        return None
    return next((owner for owner in sorted(owners, key=lambda o: o.name) if owner.owns(registry, model, alias)), None)


@dataclass(frozen=True)
class AliasReport:
    """The AliasConflict condition, and whether the promotion may move its alias."""

    condition: ConditionUpdate
    promotion_may_set_alias: bool

    def rollout_spec(self, spec: ModelDeploymentSpec) -> ModelDeploymentSpec:
        """The spec the rollout runs with: without promotion.setAlias when the promotion may not move it."""
        if self.promotion_may_set_alias or spec.promotion is None:
            return spec
        return spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"set_alias": None})})


def _owned_by(owner: AliasOwner, field: str, alias: str | None, model: str) -> str:
    return f'{field} "{alias}" of model "{model}" is owned by RegisteredModel {owner.name}'


def alias_report(spec: ModelDeploymentSpec, owners: Iterable[AliasOwner]) -> AliasReport:
    owners = list(owners)
    registry, model = registry_key(spec), spec.model.registered_model
    promotion_alias = spec.promotion.set_alias if spec.promotion else None
    promotion_owner = owner_of(registry, model, promotion_alias, owners)
    if promotion_owner is not None:
        message = _owned_by(promotion_owner, "spec.promotion.setAlias", promotion_alias, model) + (
            ", which puts it back when it moves: the promotion does not move it (version tags are still written); "
            "remove it from one of the two"
        )
        return AliasReport(ConditionUpdate(ALIAS_CONFLICT, "True", REASON_PROMOTION_ALIAS_OWNED, message), False)
    followed_owner = owner_of(registry, model, spec.model.alias, owners)
    if followed_owner is not None:
        message = _owned_by(followed_owner, "spec.model.alias", spec.model.alias, model) + (
            ": move it by editing that RegisteredModel; a move made in the registry (UI, client) starts a rollout "
            "that its drift correction then undoes"
        )
        return AliasReport(ConditionUpdate(ALIAS_CONFLICT, "False", REASON_FOLLOWED_ALIAS_OWNED, message), True)
    return NO_OWNERS


NO_OWNERS = AliasReport(
    ConditionUpdate(
        ALIAS_CONFLICT,
        "False",
        REASON_NO_CONFLICT,
        "no RegisteredModel owns the aliases this deployment follows or sets",
    ),
    True,
)
