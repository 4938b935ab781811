"""Types shared by every kind: bounded strings, references, conditions.

Every string, list and map in the API is bounded: the API server estimates the cost of CEL rules from
these bounds and refuses rules whose worst case is too expensive, and unbounded input is a denial-of-
service vector for the operator too. The CRD generator refuses a schema that leaves one unbounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# DNS-1123 label: the name of a Secret key owner, a Service, a container.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain: names of most Kubernetes objects.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Go-style durations as MLflow, Prometheus and kopf users write them, plus days: 30s, 5m, 1h30m, 30d.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
# A container resource name, as the API server accepts them: the standard ones or a domain-prefixed
# extended resource (nvidia.com/gpu).
RESOURCE_NAME_PATTERN = (
    r"^(cpu|memory|ephemeral-storage|hugepages-[A-Za-z0-9]+|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
# An annotation or label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# A Kubernetes resource quantity (100m, 1Gi, 0.5).
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$"

# The characters Python's `\s` matches, spelled out: the API server checks CRD patterns with Go's RE2, whose
# `\s` is ASCII only, so `[^\s]` there would admit a no-break or an em space that the operator then refuses.
# Patterns use SPACE / NOT_SPACE instead, which both engines read the same. All but U+0085 (NEL): YAML 1.1
# readers take it for a line break, and kustomize writes it unescaped, so a CRD carrying it loses it on the way.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
SPACE, NOT_SPACE = f"[{WHITESPACE}]", f"[^{WHITESPACE}]"
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=5000)]
Duration = Annotated[str, StringConstraints(min_length=2, max_length=32, pattern=DURATION_PATTERN)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=f"^https?://{NOT_SPACE}+$")]
Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=f"^{NOT_SPACE}+$")]
Quantity = Annotated[int | str, Field(json_schema_extra={"pattern": QUANTITY_PATTERN, "maxLength": 64})]

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float:
    """Seconds in a Duration as the API admits them (DURATION_PATTERN): 30s, 5m, 1h30m, 250ms, 7d."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=RESOURCE_NAME_PATTERN)]
QualifiedName = Annotated[str, StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME_PATTERN)]
_SUFFIXES: dict[str, Decimal] = {
    **{suffix: Decimal(2) ** (10 * power) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{suffix: Decimal(10) ** (3 * power) for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    "m": Decimal("0.001"),
}


def quantity_value(quantity: int | str) -> Decimal:
    """The number a quantity stands for (QUANTITY_PATTERN: 100m, 1Gi, 1e3, 0.5), to compare two of them."""
    text = str(quantity).lstrip("+")
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and not (suffix == "E" and "e" in text.lower()[:-1]):
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(text)


DateTime = Annotated[str, StringConstraints(max_length=64)]


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time (Z or an offset; T, t or a space between date and time) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T"))


@dataclass(frozen=True)
class Rule:
    """A rule across fields, declared once: the CRD carries it as a CEL rule the API server enforces at
    admission, and the operator checks it again when it validates what it reads, so an object admitted
    without it (created before the rule existed, or by an API server that skipped it) is refused by name
    rather than half-applied. Transition rules (oldSelf) exist only as CEL: the operator has no old object."""

    expression: str  # CEL, over the wire (camelCase) names
    message: str
    holds: Callable[[Any], bool]  # the same rule over the model's (snake_case) attributes
    field_path: str | None = None

    def schema(self) -> dict[str, str]:
        return cel(self.expression, self.message, self.field_path)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused.

    `exactly_one_of` declares groups of mutually exclusive fields once and `admission_rules` other rules
    across fields (Rule): the operator enforces both when it validates a spec, and the CRD generator turns
    them into CEL rules the API server enforces at admission.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    exactly_one_of: ClassVar[tuple[tuple[str, ...], ...]] = ()
    admission_rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def _wire_names(cls, group: tuple[str, ...]) -> list[str]:
        return [cls.model_fields[name].alias or name for name in group]

    @classmethod
    def exactly_one_message(cls, group: tuple[str, ...]) -> str:
        names = cls._wire_names(group)
        return f"exactly one of {', '.join(names[:-1])} or {names[-1]} must be set"

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for group in self.exactly_one_of:
            if sum(getattr(self, name) is not None for name in group) != 1:
                raise ValueError(self.exactly_one_message(group))
        for rule in self.admission_rules:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        rules = [
            cel(exactly_one(*cls._wire_names(group)), cls.exactly_one_message(group)) for group in cls.exactly_one_of
        ]
        rules += [rule.schema() for rule in cls.admission_rules]
        if rules:
            target["x-kubernetes-validations"] = rules + list(target.get("x-kubernetes-validations", []))
        return schema


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `fieldPath` makes the API server name the field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def exactly_one(*fields: str) -> str:
    """CEL expression: exactly one of the named optional fields is set."""
    terms = ", ".join(f"has(self.{f})" for f in fields)
    return f"[{terms}].filter(x, x).size() == 1"


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object, in the same namespace.")


class ResourceRequirements(ApiModel):
    """Compute resources of a container, as in a Pod spec."""

    requests: dict[ResourceName, Quantity] | None = Field(
        default=None, max_length=16, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[ResourceName, Quantity] | None = Field(
        default=None, max_length=16, description="Maximum resources, e.g. {memory: 2Gi}."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        # The API server refuses a workload whose request exceeds its limit; the CRD cannot compare
        # quantities, so the operator refuses the spec (InvalidSpec naming the resource) instead.
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and quantity_value(request) > quantity_value(limit):
                raise ValueError(f"requests.{name} ({request}) must not exceed limits.{name} ({limit})")
        return self


class EnvVar(ApiModel):
    """A literal environment variable for a container."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")] = (
        Field(description="Variable name.")
    )
    value: Annotated[str, StringConstraints(max_length=4096)] = Field(default="", description="Variable value.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A Kubernetes-style condition: one observed aspect of the resource's state."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")] = Field(
        description="CamelCase condition type, e.g. Ready."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = (
        Field(description="CamelCase machine-readable reason for the last transition.")
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Human-readable details."
    )
    last_transition_time: DateTime = Field(
        description="When status last changed (RFC 3339); unchanged when only reason or message change."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation that this condition was computed from."
    )


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description="Observed conditions; Ready summarizes them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


DeletionPolicy = Literal["Retain", "Delete"]


class RegistryConnection(ApiModel):
    """Which MLflow server to talk to: a TrackingServer in this namespace, or any URI."""

    exactly_one_of = (("tracking_server_ref", "tracking_uri"),)

    tracking_server_ref: LocalObjectReference | None = Field(
        default=None, description="A TrackingServer in the same namespace; its URL and auth Secret are used."
    )
    tracking_uri: Url | None = Field(
        default=None,
        description="URI of any MLflow tracking server, e.g. http://mlflow.example:5000. "
        "Used as given, so it must be reachable from where the operator runs.",
    )
    credentials_secret: RegistryCredentials | None = Field(
        default=None, description="Credentials for trackingUri (basic auth or a bearer token)."
    )
    registry_events: RegistryEvents | None = Field(
        default=None,
        description="Registry webhooks that wake this resource within seconds of a change in MLflow. A "
        "trackingServerRef gets them without configuration (its TrackingServer registers the webhook); a "
        "trackingUri needs secret, and a webhook registered in that MLflow as docs/operations.md describes.",
    )


class RegistryCredentials(ApiModel):
    """A Secret holding MLflow credentials: username and password, or a token."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    username_key: SecretKey | None = Field(default="username", description="Key of the username.")
    password_key: SecretKey | None = Field(default="password", description="Key of the password.")
    token_key: SecretKey | None = Field(
        default=None, description="Key of a bearer token; when set, username and password are not used."
    )


class WebhookSecret(ApiModel):
    """The Secret key holding the signing secret of a webhook registered in an external MLflow."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    key: SecretKey = Field(default="secret", description="Key of the webhook's signing secret.")


class RegistryEvents(ApiModel):
    """How registry events reach this resource, and how often it polls while they do."""

    secret: WebhookSecret | None = Field(
        default=None,
        description="For trackingUri: the signing secret of the webhook registered in that MLflow, whose URL is "
        "<receiver>/registry-events/<namespace>/secrets/<secret name>.",
    )
    poll_interval: Duration = Field(
        default="5m",
        description="How often the registry is read while events arrive (never less often than without them: "
        "the longer of this and the resource's own interval). A missed event is handled at the next poll.",
    )


REGISTRY_CONNECTION_RULES = (
    Rule(
        "!has(self.credentialsSecret) || has(self.trackingUri)",
        "credentialsSecret is only used with trackingUri (a trackingServerRef brings its own credentials)",
        lambda spec: spec.credentials_secret is None or spec.tracking_uri is not None,
        field_path=".credentialsSecret",
    ),
    Rule(
        "!has(self.registryEvents) || !has(self.registryEvents.secret) || has(self.trackingUri)",
        "registryEvents.secret is only used with trackingUri (a trackingServerRef's webhook is the operator's)",
        lambda spec: (
            spec.registry_events is None or spec.registry_events.secret is None or spec.tracking_uri is not None
        ),
        field_path=".registryEvents.secret",
    ),
)

RegistryConnection.model_rebuild()
