"""What the operator would create for a file of resources, computed offline (`mlflow-operator render`).

For pull-request review and GitOps diffs: the same pure builders the reconcilers apply, fed with what the
operator would otherwise read from the cluster. Where that is not knowable offline the output says so:

- generated or derived secrets (database and admin passwords, the URIs, userlist.txt and basic_auth.ini
  that contain them) are rendered as the placeholder `<generated at runtime>`, never as real-looking
  values, and the config-hash annotations that roll pods when they change as `<computed at runtime>`;
- an alias (`spec.model.alias`) is resolved by the registry: `model_version` renders as if it resolved to
  that version, otherwise only the objects that do not depend on a version are rendered;
- owner references are added by the operator when it applies: rendered objects have none.

Nothing here does I/O; the CLI reads the file and prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from mlflow_operator.api.common import RegistryCredentials
from mlflow_operator.api.kinds import API_VERSION, MODEL_DEPLOYMENT, REGISTERED_MODEL, TRACKING_SERVER, KindInfo
from mlflow_operator.api.modeldeployment import ModelDeploymentSpec
from mlflow_operator.api.registeredmodel import RegisteredModelSpec
from mlflow_operator.api.trackingserver import TrackingServerSpec
from mlflow_operator.api.traffic import TrackPlan
from mlflow_operator.builders import modeldeployment as md_build
from mlflow_operator.builders import trackingserver as ts_build
from mlflow_operator.builders.common import CONFIG_HASH_ANNOTATION
from mlflow_operator.builders.images import DEFAULT_IMAGES, Images
from mlflow_operator.logic.lifecycle import validate_rules
from mlflow_operator.logic.lifecycle_safety import deleting_action, layout_refusals
from mlflow_operator.logic.registry_reader import reader_username
from mlflow_operator.logic.validation import Invalid, validate_spec

Obj = dict[str, Any]
GENERATED = "<generated at runtime>"
COMPUTED = "<computed at runtime>"
# Secret keys whose rendered value is a fixed, non-secret constant of the builders.
PLAIN_KEYS = frozenset({"username"})
DEFAULT_NAMESPACE = "default"


class RenderError(ValueError):
    """A resource the operator would refuse; the message names the resource and the field."""


@dataclass
class Rendered:
    """The objects for every resource of the input, in input order, and notes for stderr."""

    objects: list[Obj] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


def _spec(info: KindInfo, doc: Obj, where: str) -> Any:
    result = validate_spec(info.spec_model, doc.get("spec") or {})
    if isinstance(result, Invalid):
        raise RenderError(f"{where}: invalid spec: {result.message}")
    return result.spec


def _name(info: KindInfo, doc: Obj, index: int) -> str:
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise RenderError(f"document {index + 1} ({info.kind}): metadata.name is required")
    if len(name) > info.max_name_length:
        raise RenderError(
            f"{info.kind} {name}: metadata.name must be at most {info.max_name_length} characters "
            "(names of the objects it creates append suffixes)"
        )
    return name


def _redact(objects: list[Obj]) -> list[str]:
    """Replace secret values and the hashes of them in place; return the names of the Secrets touched."""
    redacted = []
    for obj in objects:
        if obj["kind"] == "Secret":
            data = obj.get("stringData") or {}
            obj["stringData"] = {key: value if key in PLAIN_KEYS else GENERATED for key, value in data.items()}
            redacted.append(obj["metadata"]["name"])
        template = (obj.get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        if CONFIG_HASH_ANNOTATION in annotations:
            annotations[CONFIG_HASH_ANNOTATION] = COMPUTED
    return redacted


def render_tracking_server(
    name: str, namespace: str, spec: TrackingServerSpec, images: Images = DEFAULT_IMAGES
) -> Rendered:
    where = _ref("TrackingServer", namespace, name)
    if spec.database.managed is not None:
        database = ts_build.Credentials(ts_build.DATABASE_USER, GENERATED)
    else:
        database = ts_build.Credentials(GENERATED, GENERATED)  # read from the external credentials Secret
    admin = None
    if spec.auth is not None and spec.auth.enabled:
        admin = ts_build.Credentials("admin" if spec.auth.admin_secret is None else GENERATED, GENERATED)
    pooler = ts_build.Credentials(ts_build.POOLER_CLIENT_USER, GENERATED)
    inputs = ts_build.TrackingServerInputs(name, namespace, spec, spec.version, database, admin, images, pooler)
    try:
        objects = ts_build.all_objects(inputs, GENERATED, GENERATED, GENERATED)
    except ValueError as refused:
        raise RenderError(f"{where}: {refused}") from refused
    notes = []
    secrets = _redact(objects)
    if secrets:
        notes.append(
            f"{where}: Secret values are placeholders ({GENERATED}), generated or derived from credentials by the "
            f"operator at runtime: {', '.join(secrets)}; config-hash annotations likewise ({COMPUTED})"
        )
    notes += _lifecycle_notes(where, spec, ts_build.artifact_bucket_backups(name, namespace, spec))
    return Rendered(objects, notes)


def _lifecycle_notes(where: str, spec: TrackingServerSpec, backup_prefix: str | None) -> list[str]:
    """What the operator would send to the bucket; RenderError for rules it would refuse or withhold by
    layout (whether a rule reaches a registered version needs the registry: said in the note)."""
    lifecycle = spec.artifacts.lifecycle
    if lifecycle is None or not lifecycle.rules:
        return []
    problems = validate_rules(lifecycle.rules) + [
        refusal.message for refusal in layout_refusals(lifecycle.rules, spec.artifacts.s3.prefix, backup_prefix)
    ]
    if problems:
        raise RenderError(f"{where}: " + "; ".join(problems))
    deleting = [rule.id for rule in lifecycle.rules if deleting_action(rule)]
    checked = (
        f"; rules that delete objects ({', '.join(deleting)}) go only after the operator checked the registry: "
        "none may reach a registered model version's artifacts"
        if deleting
        else ""
    )
    return [
        f"{where}: {len(lifecycle.rules)} lifecycle rule(s) go to the bucket s3://{spec.artifacts.s3.bucket} "
        f"(S3 configuration, not Kubernetes objects){checked}"
    ]


def render_registered_model(name: str, namespace: str, spec: RegisteredModelSpec) -> Rendered:
    model = spec.model_name or name
    return Rendered(
        [],
        [
            f"{_ref('RegisteredModel', namespace, name)}: nothing in the cluster; the operator keeps the registered "
            f"model {model!r} in the MLflow registry as the spec says"
        ],
    )


def _registry_credentials(
    name: str, spec: ModelDeploymentSpec, namespace: str, servers: dict[tuple[str, str], TrackingServerSpec]
) -> tuple[str, RegistryCredentials | None, list[str]]:
    """The tracking URI and the credentials Secret the model pods get, as the handler resolves them."""
    where = _ref("ModelDeployment", namespace, name)
    if spec.tracking_uri is not None:
        return spec.tracking_uri, spec.credentials_secret, []
    assert spec.tracking_server_ref is not None  # the API refuses neither/both
    server_name = spec.tracking_server_ref.name
    uri = ts_build.tracking_url(server_name, namespace)
    server = servers.get((namespace, server_name))
    if server is None:
        return uri, None, [f"{where}: TrackingServer {server_name} is not in the input; rendered as if it had no auth"]
    if server.auth is None or not server.auth.enabled:
        return uri, None, []
    # The pods' own reader, never the admin (handlers.registry_reader).
    reader = md_build.Names(name).registry_reader
    return uri, RegistryCredentials(name=reader, username_key="username", password_key="password"), []


def render_model_deployment(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    servers: dict[tuple[str, str], TrackingServerSpec] | None = None,
    model_version: int | None = None,
    images: Images = DEFAULT_IMAGES,
) -> Rendered:
    where = _ref("ModelDeployment", namespace, name)
    uri, credentials, notes = _registry_credentials(name, spec, namespace, servers or {})
    version = spec.model.version
    if version is None and model_version is not None:
        version = model_version
        notes.append(f"{where}: alias {spec.model.alias!r} rendered as if it resolved to version {model_version}")
    elif version is None:
        notes.append(
            f"{where}: alias {spec.model.alias!r} is resolved by the registry at runtime; only the objects that do not "
            "depend on a version are rendered (give --model-version N to render the version's objects)"
        )
    tracks = (TrackPlan("stable", version),) if version is not None else ()
    reader = credentials is not None and credentials.name == md_build.Names(name).registry_reader
    inputs = md_build.ModelDeploymentInputs(
        name,
        namespace,
        spec,
        uri,
        credentials,
        tracks,
        images=images,
        credentials_revision=COMPUTED if reader else None,
    )
    try:
        objects = md_build.all_objects(inputs)
    except ValueError as refused:
        raise RenderError(f"{where}: {refused}") from refused
    if reader:
        objects.append(md_build.get_reader_secret(name, namespace, reader_username(namespace, name), GENERATED))
        _redact(objects)
    return Rendered(objects, notes)


def render_documents(
    documents: Iterable[Obj | None],
    namespace: str = DEFAULT_NAMESPACE,
    model_version: int | None = None,
    images: Images = DEFAULT_IMAGES,
) -> Rendered:
    """Every object the operator would create for the documents (a multi-document YAML file, loaded).

    Documents of other kinds are skipped with a note. `namespace` applies to documents without
    metadata.namespace, as `kubectl apply -n` would; `images` are the operator-wide defaults (the operator's
    --image-registry/--image). Raises RenderError for a resource the operator refuses.
    """
    docs = [doc for doc in documents if doc]
    # First pass: every TrackingServer, so a ModelDeployment's trackingServerRef can be resolved offline.
    servers: dict[tuple[str, str], TrackingServerSpec] = {}
    typed: list[tuple[KindInfo, str, str, Any]] = []
    result = Rendered()
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise RenderError(f"document {index + 1}: not a mapping")
        kind = doc.get("kind")
        info = next((i for i in (TRACKING_SERVER, REGISTERED_MODEL, MODEL_DEPLOYMENT) if i.kind == kind), None)
        if info is None or doc.get("apiVersion") != API_VERSION:
            if info is not None:
                raise RenderError(f"{kind} document {index + 1}: apiVersion must be {API_VERSION}")
            label = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
            result.notes.append(f"{label}: not a {API_VERSION} kind, skipped")
            continue
        name = _name(info, doc, index)
        ns = (doc.get("metadata") or {}).get("namespace") or namespace
        spec = _spec(info, doc, _ref(info.kind, ns, name))
        if info is TRACKING_SERVER:
            servers[(ns, name)] = spec
        typed.append((info, name, ns, spec))
    for info, name, ns, spec in typed:
        if info is TRACKING_SERVER:
            part = render_tracking_server(name, ns, spec, images)
        elif info is REGISTERED_MODEL:
            part = render_registered_model(name, ns, spec)
        else:
            part = render_model_deployment(name, ns, spec, servers, model_version, images)
        result.objects += part.objects
        result.notes += part.notes
    return result


def to_yaml(objects: Iterable[Obj]) -> str:
    """The objects as one YAML stream, `---` between documents, keys in the builders' order."""
    return "---\n".join(yaml.safe_dump(obj, sort_keys=False, width=120) for obj in objects)
