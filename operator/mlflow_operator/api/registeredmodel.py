"""RegisteredModel: an MLflow registry entry (description, tags, aliases, versions) declared in YAML."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mlflow_operator.api.common import (
    NOT_SPACE,
    REGISTRY_CONNECTION_RULES,
    WHITESPACE,
    ApiModel,
    Condition,
    DateTime,
    DeletionPolicy,
    Duration,
    LongText,
    RegistryConnection,
    Rule,
    cel,
    conditions_field,
    validations,
)

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=f"^[^/{WHITESPACE}][^/]*$")]
AliasName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=250)]
TagValue = Annotated[str, StringConstraints(max_length=5000)]
SourceUri = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=f"^{NOT_SPACE}+$")]
RunId = Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-zA-Z0-9]*$")]
VersionNumber = Annotated[int, Field(ge=1)]

# MLflow reserves `latest` and `v<number>` for version references in models:/ URIs.
RESERVED_ALIAS = re.compile(r"latest|v[0-9]+")
RESERVED_ALIAS_RULE = Rule(
    "!has(self.aliases) || self.aliases.all(k, !k.lowerAscii().matches('^(latest|v[0-9]+)$'))",
    "aliases: 'latest' and 'v<number>' are reserved by MLflow and cannot be used as alias names",
    lambda spec: not any(RESERVED_ALIAS.fullmatch(alias.lower()) for alias in spec.aliases or {}),
    field_path=".aliases",
)


class ModelVersionSpec(ApiModel):
    """A model version to register once from a source URI."""

    source: SourceUri = Field(description="Artifact URI of the model, e.g. runs:/<run-id>/model or s3://...")
    run_id: RunId | None = Field(default=None, description="Run that produced the model.")
    description: LongText | None = Field(default=None, description="Version description.")
    tags: dict[TagKey, TagValue] | None = Field(default=None, max_length=50, description="Version tags.")


class RegisteredModelSpec(RegistryConnection):
    """Desired state of a registered model in the MLflow registry."""

    model_name: ModelName | None = Field(
        default=None, description="Name in the registry; defaults to metadata.name. Immutable."
    )
    description: LongText | None = Field(default=None, description="Model description.")
    tags: dict[TagKey, TagValue] | None = Field(
        default=None,
        max_length=50,
        description="Tags the operator owns; other tags on the model are left alone.",
    )
    aliases: dict[AliasName, VersionNumber] | None = Field(
        default=None,
        max_length=20,
        description="Alias -> version number, e.g. {champion: 3, challenger: 4}.",
    )
    alias_policy: Literal["Owned", "Exclusive"] = Field(
        default="Owned",
        description="Owned touches only aliases this resource set; Exclusive also removes every other alias.",
    )
    versions: list[ModelVersionSpec] | None = Field(
        default=None, max_length=100, description="Versions registered once each, in order."
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description="Retain leaves the registry untouched on delete; Delete removes the model.",
    )
    resync_interval: Duration = Field(
        default="5m", description="How often the registry is compared with the spec to correct drift."
    )

    admission_rules = (*REGISTRY_CONNECTION_RULES, RESERVED_ALIAS_RULE)
    model_config = {
        "json_schema_extra": validations(
            cel(
                "(has(self.modelName) ? self.modelName : '') == (has(oldSelf.modelName) ? oldSelf.modelName : '')",
                "modelName is immutable",
                field_path=".modelName",
            ),
        )
    }


class ModelVersionStatus(ApiModel):
    """A model version as the registry reports it."""

    version: int = Field(description="Version number.")
    status: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="READY, ...")
    run_id: RunId | None = Field(default=None, description="Source run.")
    source: Annotated[str, StringConstraints(max_length=1024)] | None = Field(default=None, description="Source URI.")
    aliases: list[AliasName] | None = Field(default=None, max_length=20, description="Aliases on this version.")
    creation_timestamp: DateTime | None = Field(default=None, description="When it was registered (RFC 3339).")


class RegisteredModelStatus(ApiModel):
    """Observed state of a registered model."""

    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted on.")
    model_name: ModelName | None = Field(default=None, description="Name in the registry.")
    latest_version: int | None = Field(default=None, description="Highest version number.")
    versions: list[ModelVersionStatus] | None = Field(
        default=None, max_length=100, description="Versions, newest first (at most 100)."
    )
    aliases: dict[AliasName, int] | None = Field(default=None, max_length=100, description="Aliases in the registry.")
    owned_tags: list[TagKey] | None = Field(
        default=None, max_length=50, description="Tags set by the operator, so that removed ones are deleted."
    )
    owned_aliases: list[AliasName] | None = Field(
        default=None,
        max_length=20,
        description="Aliases set by the operator, so that removed ones are deleted.",
    )
    last_sync_time: DateTime | None = Field(default=None, description="Last successful sync (RFC 3339).")
    conditions: list[Condition] = conditions_field()
