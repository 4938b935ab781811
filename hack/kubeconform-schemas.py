#!/usr/bin/env python3
# Run with the project's virtualenv (it needs PyYAML): .venv/bin/python hack/kubeconform-schemas.py ...
"""Writes the JSON schemas kubeconform validates against, offline, in its standard layout.

kubeconform normally downloads them from GitHub (yannh/kubernetes-json-schema), which CI cannot reach. We
generate the same thing locally instead:

- built-in kinds from `api/openapi-spec/swagger.json` of the `k8s.io/kubernetes` Go module at
  $K8S_VERSION (hack/versions.env): the module the control plane is built from, already in the Go module
  cache after `hack/build-binaries.sh kubernetes` (downloaded here with `go mod download` if not), so the
  schemas match the API server the e2e tests run exactly. This is what upstream's openapi2jsonschema does
  (same input, same output layout);
- custom kinds from the `openAPIV3Schema` of CRD files given with `--crd` (ours from crds/, and e.g. the
  Gateway API CRDs).

Why not `kubernetes-validate` from PyPI, which bundles schemas: it is a large wheel with schemas for many
Kubernetes versions, none of them necessarily ours, adds jsonschema/referencing to the test environment,
and knows nothing of our CRDs; kubeconform with these schemas covers both, for the exact server version.

Each schema is "standalone": the kind's definition plus the closure of the definitions it references under
`definitions` (recursive types such as JSONSchemaProps stay references, so nothing is inlined forever), and
"strict": objects with declared properties get `additionalProperties: false` (kubeconform `-strict`).

Usage: hack/kubeconform-schemas.py OUTDIR [--crd FILE]...  prints the -schema-location to pass, then
    kubeconform -strict -kubernetes-version 1.36.3 -schema-location "$LOCATION" FILES...
where LOCATION is OUTDIR/ followed by the LOCATION template below (kubeconform's own default layout).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LOCATION = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"


def pinned(name: str) -> str:
    for line in (HERE / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise KeyError(name)


def swagger_path(k8s_version: str) -> Path:
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True, env=env)
    path = Path(modcache.stdout.strip()) / f"k8s.io/kubernetes@{k8s_version}" / "api/openapi-spec/swagger.json"
    if not path.exists():
        # Outside a module, `go mod download` fetches into the cache (a few MB of zip, once).
        subprocess.run(
            ["go", "mod", "download", f"k8s.io/kubernetes@{k8s_version}"], check=True, env=env, cwd="/", timeout=900
        )
    return path


def kind_suffix(group: str, version: str) -> str:
    """As kubeconform computes it: `-<first label of the group>-<version>`, `-<version>` for the core group."""
    return f"-{group.split('.', maxsplit=1)[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"


def strict(schema: Any) -> Any:
    """Closes every object with declared properties, and maps the OpenAPI extensions to JSON schema.

    Walks the schema keywords only: a property may well be named `description` or `nullable`.
    """
    if not isinstance(schema, dict):
        return schema
    out = {key: value for key, value in schema.items() if key != "description"}
    for key in ("properties", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict(sub) for name, sub in out[key].items()}
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
        elif isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(refs(value) for value in node.values()))


def closure(definitions: dict[str, Any], roots: set[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = definitions[name]
        todo.extend(refs(definitions[name]) - seen.keys())
    return seen


def pin_type_meta(schema: dict[str, Any], group: str, version: str, kind: str) -> None:
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}" if group else version]}
    props["kind"] = {"type": "string", "enum": [kind]}


def builtin_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    definitions = {name: strict(schema) for name, schema in swagger["definitions"].items()}
    # What openapi2jsonschema does: the two string types that also accept numbers in YAML.
    definitions[INT_OR_STRING] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    definitions[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    out = {}
    for name, schema in swagger["definitions"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            root = copy.deepcopy(definitions[name])
            pin_type_meta(root, group, version, kind)
            root["definitions"] = closure(definitions, refs(root))
            out[f"{kind.lower()}{kind_suffix(group, version)}.json"] = root
    return out


def crd_schemas(paths: list[Path], object_meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                pin_type_meta(schema, group, version["name"], kind)
                schema["properties"]["metadata"] = {"$ref": f"#/definitions/{OBJECT_META}"}
                schema["definitions"] = object_meta
                out[f"{kind.lower()}{kind_suffix(group, version['name'])}.json"] = schema
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--crd", type=Path, action="append", default=[], help="a CRD YAML file (repeatable)")
    parser.add_argument("--kubernetes-version", default=pinned("K8S_VERSION"))
    args = parser.parse_args()

    swagger = json.loads(swagger_path(args.kubernetes_version).read_text())
    schemas = builtin_schemas(swagger)
    meta = next(s for n, s in schemas.items() if n == "namespace-v1.json")["definitions"]
    schemas.update(crd_schemas(args.crd, closure(meta, {OBJECT_META})))
    folder = args.output / f"{args.kubernetes_version}-standalone-strict"
    folder.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (folder / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
    print(args.output / LOCATION)


if __name__ == "__main__":
    main()
