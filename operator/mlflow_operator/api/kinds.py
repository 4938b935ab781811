"""The three kinds: names, printer columns and their spec/status models."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from mlflow_operator.api.common import Rule
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlflow_operator.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from mlflow_operator.api.trackingserver import TrackingServerSpec, TrackingServerStatus

GROUP = "mlflow.operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _column(name: str, type_: str, json_path: str, priority: int = 0) -> dict[str, object]:
    """One additionalPrinterColumns entry; priority 0 (shown by default) is left out of the entry."""
    column: dict[str, object] = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


def _condition_column(name: str, condition: str, field_name: str) -> dict[str, object]:
    return _column(name, "string", f'.status.conditions[?(@.type=="{condition}")].{field_name}')


READY_COLUMN = _condition_column("Ready", "Ready", "status")
REASON_COLUMN = _condition_column("Reason", "Ready", "reason")
AGE_COLUMN = _column("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    printer_columns: tuple[dict[str, object], ...]
    # metadata.name length cap: child object names append suffixes and must stay valid DNS labels.
    max_name_length: int = 40
    # Whether metadata.name must be a DNS label (no dots): it names Services and StatefulSets, which must.
    dns_label_name: bool = True
    categories: tuple[str, ...] = field(default=("mlflow",))

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def name_rules(self) -> list[Rule]:
        """Rules on metadata.name (holds: over the name): short enough for the suffixes of child names, and
        without dots where it names Services (custom resource names may be DNS subdomains; Service names must
        be DNS labels)."""
        limit = self.max_name_length
        rules = [
            Rule(
                f"self.metadata.name.size() <= {limit}",
                f"metadata.name must be at most {limit} characters (names of the objects it creates append suffixes)",
                lambda name: len(name) <= limit,
            )
        ]
        if self.dns_label_name:
            rules.append(
                Rule(
                    "!self.metadata.name.contains('.')",
                    "metadata.name must not contain dots (it names Services, which must be DNS labels)",
                    lambda name: "." not in name,
                )
            )
        return rules

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


TRACKING_SERVER = KindInfo(
    kind="TrackingServer",
    plural="trackingservers",
    short_names=("mlts", "ts"),
    spec_model=TrackingServerSpec,
    status_model=TrackingServerStatus,
    description="An MLflow tracking server on PostgreSQL behind PgBouncer, with S3 artifacts and lifecycle rules.",
    printer_columns=(
        READY_COLUMN,
        REASON_COLUMN,
        _column("Version", "string", ".status.version"),
        _column("Phase", "string", ".status.phase"),
        _column("URL", "string", ".status.url", priority=1),
        AGE_COLUMN,
    ),
)

REGISTERED_MODEL = KindInfo(
    kind="RegisteredModel",
    plural="registeredmodels",
    short_names=("rm", "mlmodel"),
    spec_model=RegisteredModelSpec,
    status_model=RegisteredModelStatus,
    description="A model in the MLflow registry: description, tags, aliases and versions kept in sync.",
    printer_columns=(
        _column("Model", "string", ".status.modelName"),
        _column("Latest", "integer", ".status.latestVersion"),
        READY_COLUMN,
        REASON_COLUMN,
        _column("Synced", "date", ".status.lastSyncTime", priority=1),
        AGE_COLUMN,
    ),
    dns_label_name=False,  # creates nothing in the cluster; its name may be a registry-style dotted name
)

MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("md", "mldeploy"),
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    description="Serves a registered model version with a canary rollout, analysis, rollback and promotion.",
    printer_columns=(
        _column("Stable", "integer", ".status.stableVersion"),
        _column("Canary", "integer", ".status.canaryVersion"),
        _column("Weight", "integer", ".status.canaryWeight"),
        _column("Step", "integer", ".status.currentStep"),
        _column("Phase", "string", ".status.phase"),
        READY_COLUMN,
        REASON_COLUMN,
        AGE_COLUMN,
    ),
)

KINDS: tuple[KindInfo, ...] = (TRACKING_SERVER, REGISTERED_MODEL, MODEL_DEPLOYMENT)


def kind_info(kind: str) -> KindInfo:
    for info in KINDS:
        if info.kind == kind:
            return info
    raise KeyError(kind)
