"""Hypothesis strategies fuzzing the three kinds' specs (tests/e2e/test_fuzz.py, tests/unit/test_fuzz_validation.py).

A case starts from a structurally plausible spec (the shapes of examples/ and of the e2e tests), then gets
0-3 mutations: hostile strings (quotes, newlines, `${}`, `{{}}`, control and Unicode whitespace characters,
emoji, lengths around the schema's maxLength), wrong types, out-of-range numbers, missing required fields,
both sides of exactly-one groups, unknown fields.

Every URL a spec can carry points at a closed port on loopback (or is refused at admission), and
trackingServerRef never names a TrackingServer the fuzzer creates: the operator reconciling a fuzzed
object sends traffic nowhere but 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

LOOPBACK = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused, at once
KINDS = ("TrackingServer", "RegisteredModel", "ModelDeployment")
# trackingServerRef targets: never the name of a fuzzed TrackingServer (those are named by the e2e test).
ABSENT_SERVERS = ("mlflow", "no-such-server", "a", "x" * 63)

# Characters that break naive quoting, templating, parsing, and regexes that differ between Go (RE2, ASCII
# \s) and Python/Rust (Unicode \s): NBSP, LINE SEPARATOR, IDEOGRAPHIC SPACE, NEL are the interesting ones.
HOSTILE_CHARS = [
    *"ab0-_.\"'`\\:;#= @/%&|<>?*![]{}()$,~^+",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\x85",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\u200b",
    "\u202e",
    "\ufeff",
    "é",
    "ß",
    "İ",
    "雪",
    "😀",
]
HOSTILE_SNIPPETS = [
    "${HOME}",
    "$(id)",
    "{{canary}}",
    "{{ .Values }}",
    "{{namespace}}",
    "%(x)s",
    "%s%n",
    "' OR '1'='1",
    '"; DROP TABLE runs; --',
    "\\",
    "\n[pgbouncer]\nadmin_users = *",
    "a\nb: c",
    "---\n",
    "null",
    "true",
    "0x1F",
    "1e3",
    "-1",
    "../../etc/passwd",
    "<script>",
    " leading",
    "trailing ",
    "",
    " ",
    "\u00a0",
    "😀" * 3,
]


def hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(alphabet=st.sampled_from(HOSTILE_CHARS), min_size=0, max_size=max_size),
        st.sampled_from(HOSTILE_SNIPPETS),
        st.lists(st.sampled_from(HOSTILE_SNIPPETS), min_size=2, max_size=4).map("".join),
    )


def around(limit: int, fill: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """A string of limit-1, limit or limit+1 code points (ASCII, two-byte or astral characters)."""
    fill = fill if fill is not None else st.sampled_from(["a", "é", "😀", "0"])
    return st.builds(lambda n, c: c * n, st.sampled_from([max(limit - 1, 0), limit, limit + 1]), fill)


# maxLengths of the API's strings: near and beyond them.
LIMITS = (32, 63, 64, 128, 253, 256, 512, 1024, 2048, 4096, 5000)
LONG = st.one_of(*(around(limit) for limit in LIMITS))
WRONG_TYPES: st.SearchStrategy[Any] = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, 1.5, -0.0, 1e300, True, False, [], {}, [1, "a"], {"k": "v"}, None]),
    hostile_text(12),
)
OUT_OF_RANGE = st.sampled_from([-(2**63), -1, 0, 1, 101, 1001, 36501, 65536, 100001, 2**31, 2**53 + 1, 2**63 - 1])


def loopback_url() -> st.SearchStrategy[str]:
    """URLs the operator may reach: loopback only, with hostile (non-whitespace) paths."""
    path = hostile_text(20).map(lambda s: re.sub(r"\s", "", s))
    return st.one_of(
        st.just(LOOPBACK),
        path.map(lambda p: f"{LOOPBACK}/{p}"),
        st.sampled_from([f"{LOOPBACK}/\u00a0", f"{LOOPBACK}/a\u2028b", f"{LOOPBACK}/\u3000"]),
        st.builds(
            lambda n: f"{LOOPBACK}/" + "p" * n, st.sampled_from([2048 - len(LOOPBACK) - 1, 2048 - len(LOOPBACK)])
        ),
    )


def refused_url() -> st.SearchStrategy[str]:
    """URLs the schema refuses (another scheme, whitespace, empty)."""
    return st.sampled_from(
        ["", "ftp://127.0.0.1/", "127.0.0.1:1", "http://", f"{LOOPBACK}/a b", f"{LOOPBACK}/\n", "file:///etc/passwd"]
    )


def url() -> st.SearchStrategy[str]:
    return st.one_of(loopback_url(), refused_url())


DNS_NAME = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
KEY = st.from_regex(r"\A[-._a-zA-Z0-9]{1,12}\Z")
quantities = st.one_of(
    st.sampled_from(["100m", "1", "0.5", "1Gi", "512Mi", ".5", "+1", "1e3", "2E6", "1.", "1Ki", "0"]),
    st.integers(0, 64),
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, or the marker for "leave the field out"."""
    return st.one_of(st.just(_ABSENT), strategy)


_ABSENT = object()


@st.composite
def obj(draw: st.DrawFn, /, **fields: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A dict of the given fields, each present or not (a field given as maybe(...))."""
    out: dict[str, Any] = {}
    for name, strategy in fields.items():
        value = draw(strategy)
        if value is not _ABSENT:
            out[name] = value
    return out


def resources() -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]), hostile_text(8))
    amounts = st.dictionaries(names, quantities, max_size=2)
    return obj(requests=maybe(amounts), limits=maybe(amounts))


def secret_ref(*keys: str) -> st.SearchStrategy[dict[str, Any]]:
    return obj(name=DNS_NAME, **{key: maybe(KEY) for key in keys})


# ------------------------------------------------------------------------------------------ TrackingServer

lifecycle_rule = obj(
    id=st.one_of(st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\Z"), hostile_text(12).filter(bool)),
    status=maybe(st.sampled_from(["Enabled", "Disabled"])),
    filter=maybe(obj(prefix=maybe(st.sampled_from(["tmp/", "mlflow/tmp/", ""])))),
    expiration=st.one_of(
        st.builds(lambda d: {"days": d}, st.integers(1, 36500)), st.just({"expiredObjectDeleteMarker": True})
    ),
    noncurrentVersionExpiration=maybe(
        obj(noncurrentDays=st.integers(1, 36500), newerNoncurrentVersions=maybe(st.integers(1, 100)))
    ),
    abortIncompleteMultipartUpload=maybe(obj(daysAfterInitiation=st.integers(1, 36500))),
    transitions=maybe(
        st.lists(obj(days=st.integers(0, 36500), storageClass=st.sampled_from(["STANDARD_IA", "GLACIER"])), max_size=2)
    ),
)


@st.composite
def pooler(draw: st.DrawFn) -> dict[str, Any]:
    max_db = draw(st.integers(20, 10000))  # the default defaultPoolSize is 20
    return draw(
        obj(
            enabled=maybe(st.booleans()),
            mode=maybe(st.sampled_from(["transaction", "session"])),
            defaultPoolSize=maybe(st.integers(1, min(max_db, 1000))),
            maxClientConn=maybe(st.integers(1, 100000)),
            maxDbConnections=st.just(max_db),
            replicas=maybe(st.integers(1, 20)),
            resources=maybe(resources()),
        )
    )


managed_database = obj(
    version=maybe(st.sampled_from(["14", "15", "16", "17"])),
    image=maybe(st.sampled_from(["postgres:16", "registry.local:5000/pg@sha256:" + "a" * 64])),
    storageSize=maybe(st.sampled_from(["1Gi", "20Gi", "512Mi", "1Ti"])),
    storageClassName=maybe(st.sampled_from(["standard", "fast-ssd"])),
    parameters=maybe(
        st.dictionaries(
            st.one_of(st.sampled_from(["work_mem", "application_name"]), hostile_text(12)), hostile_text(16), max_size=2
        )
    ),
    resources=maybe(resources()),
)
external_database = obj(
    host=st.sampled_from(["db.example.internal", "10.0.0.5", "pg"]),
    port=maybe(st.integers(1, 65535)),
    database=maybe(st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")),
    sslMode=maybe(st.sampled_from(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])),
    credentialsSecret=secret_ref("usernameKey", "passwordKey", "uriKey"),
)


@st.composite
def tracking_server_specs(draw: st.DrawFn) -> dict[str, Any]:
    database = draw(
        st.one_of(
            st.builds(lambda m: {"managed": m}, managed_database),
            st.builds(lambda e: {"external": e}, external_database),
        )
    )
    if draw(st.booleans()):
        database["pooler"] = draw(pooler())
    s3 = draw(
        obj(
            bucket=st.from_regex(r"\A[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]\Z").filter(lambda b: ".." not in b),
            prefix=maybe(st.sampled_from(["mlflow", "", "team-a/runs", "a" * 512])),
            endpoint=loopback_url(),
            region=maybe(st.sampled_from(["us-east-1", "eu-west-1", ""])),
            credentialsSecret=maybe(secret_ref("accessKeyIdKey", "secretAccessKeyKey")),
            serviceAccountAnnotations=maybe(
                st.dictionaries(
                    st.one_of(st.sampled_from(["eks.amazonaws.com/role-arn", "note"]), hostile_text(12)),
                    hostile_text(20),
                    max_size=2,
                )
            ),
        )
    )
    artifacts: dict[str, Any] = {"s3": s3}
    if draw(st.booleans()):
        artifacts["lifecycle"] = {"rules": draw(st.lists(lifecycle_rule, max_size=3, unique_by=lambda r: r["id"]))}
    return draw(
        obj(
            version=maybe(st.sampled_from(["3.17.2", "2.9.0", "2.22.1", "3.0.0", "2.8.9", "1.0.0", "10.20.30"])),
            image=maybe(st.sampled_from(["ghcr.io/mlflow/mlflow:v3.17.2", "mlflow:custom"])),
            replicas=maybe(st.integers(1, 50)),
            workers=maybe(st.integers(1, 32)),
            database=st.just(database),
            artifacts=st.just(artifacts),
            retention=maybe(
                obj(
                    deletedRunsOlderThan=maybe(st.sampled_from(["30d", "1h30m", "10s", "0s"])),
                    schedule=maybe(st.sampled_from(["0 3 * * *", "*/5 * * * *", "@daily x y z w"])),
                )
            ),
            auth=maybe(obj(enabled=maybe(st.booleans()), adminSecret=maybe(obj(name=DNS_NAME)))),
            ingress=maybe(
                st.one_of(
                    st.just({"enabled": False}),
                    obj(
                        enabled=st.just(True),
                        host=st.sampled_from(["mlflow.example.com", "*.example.com"]),
                        className=maybe(st.sampled_from(["nginx", "traefik"])),
                        tlsSecretName=maybe(DNS_NAME),
                    ),
                )
            ),
            resources=maybe(resources()),
            metrics=maybe(obj(enabled=maybe(st.booleans()))),
            deletionPolicy=maybe(st.sampled_from(["Retain", "Delete"])),
        )
    )


# ----------------------------------------------------------------------------------------- RegisteredModel


@st.composite
def registry_connection(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"trackingServerRef": {"name": draw(st.sampled_from(ABSENT_SERVERS))}}
    spec: dict[str, Any] = {"trackingUri": draw(loopback_url())}
    if draw(st.booleans()):
        spec["credentialsSecret"] = draw(secret_ref("usernameKey", "passwordKey", "tokenKey"))
    return spec


ALIAS = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_-]{0,15}\Z").filter(
    lambda a: not re.fullmatch(r"latest|v[0-9]+", a.lower())
)
MODEL_NAME = st.one_of(
    st.sampled_from(["fraud", "Fraud Model v2", "team.fraud_model-1", "雪", "a" * 256]),
    hostile_text(30).filter(lambda s: re.fullmatch(r"[^/\s][^/]*", s) is not None),
)


@st.composite
def registered_model_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(registry_connection())
    spec.update(
        draw(
            obj(
                modelName=maybe(MODEL_NAME),
                description=maybe(hostile_text(60)),
                tags=maybe(st.dictionaries(hostile_text(12).filter(bool), hostile_text(20), max_size=3)),
                aliases=maybe(st.dictionaries(ALIAS, st.integers(1, 2**31), max_size=3)),
                aliasPolicy=maybe(st.sampled_from(["Owned", "Exclusive"])),
                versions=maybe(
                    st.lists(
                        obj(
                            source=st.sampled_from(["runs:/0123abcd/model", "s3://bucket/model", "models:/m/1"]),
                            runId=maybe(st.from_regex(r"\A[a-f0-9]{0,32}\Z")),
                            description=maybe(hostile_text(30)),
                            tags=maybe(st.dictionaries(hostile_text(8).filter(bool), hostile_text(8), max_size=2)),
                        ),
                        max_size=3,
                    )
                ),
                deletionPolicy=maybe(st.sampled_from(["Retain", "Delete"])),
                resyncInterval=maybe(st.sampled_from(["5m", "30s", "1h", "1d"])),
            )
        )
    )
    return spec


# ----------------------------------------------------------------------------------------- ModelDeployment

metric_name = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
threshold_range = st.one_of(
    st.builds(lambda v: {"max": v}, st.floats(-1e6, 1e6)),
    st.builds(lambda v: {"min": v}, st.integers(-5, 5)),
    st.just({"min": 0, "max": 1}),
)
metric = st.one_of(
    obj(
        name=metric_name,
        query=st.one_of(
            st.sampled_from(['sum(rate(x{service="{{canary}}"}[1m]))', 'x{v="{{stableVersion}}"}', "up"]),
            hostile_text(30).filter(bool),
        ),
        thresholdRange=threshold_range,
    ),
    obj(name=metric_name, template=st.sampled_from(["successRate", "latencyP99"]), thresholdRange=threshold_range),
)


@st.composite
def model_deployment_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(registry_connection())
    model: dict[str, Any] = {"registeredModel": draw(MODEL_NAME)}
    if draw(st.booleans()):
        model["alias"] = draw(ALIAS)
    else:
        model["version"] = draw(st.integers(1, 2**40))
    spec["model"] = model
    scaling = draw(st.sampled_from(["replicas", "autoscaling", "none"]))
    if scaling == "replicas":
        spec["replicas"] = draw(st.integers(0, 1000))
    elif scaling == "autoscaling":
        low = draw(st.integers(1, 10))
        spec["autoscaling"] = draw(
            obj(
                minReplicas=maybe(st.just(low)),
                maxReplicas=st.integers(low, 1000),
                targetCPUUtilizationPercentage=maybe(st.integers(1, 100)),
            )
        )
    spec.update(
        draw(
            obj(
                runtime=maybe(
                    obj(
                        image=maybe(st.sampled_from(["ghcr.io/mlflow/mlflow:v3.17.2", "server:1"])),
                        resources=maybe(resources()),
                        env=maybe(
                            st.lists(
                                obj(
                                    name=st.from_regex(r"\A[-._a-zA-Z][-._a-zA-Z0-9]{0,15}\Z"),
                                    value=maybe(hostile_text(30)),
                                ),
                                max_size=3,
                            )
                        ),
                    )
                ),
                pollInterval=maybe(st.sampled_from(["1m", "30s", "1h"])),
                promotion=maybe(obj(setAlias=maybe(ALIAS))),
            )
        )
    )
    routing = draw(st.sampled_from(["none", "replicaRatio", "gatewayAPI"]))
    if routing == "replicaRatio":
        spec["trafficRouting"] = {"replicaRatio": {}}
    elif routing == "gatewayAPI":
        spec["trafficRouting"] = {
            "gatewayAPI": draw(
                obj(
                    parentRefs=st.lists(
                        obj(name=DNS_NAME, namespace=maybe(DNS_NAME), sectionName=maybe(st.just("https"))),
                        min_size=1,
                        max_size=2,
                    ),
                    hostnames=maybe(st.lists(st.sampled_from(["fraud.example.com", "*.example.com"]), max_size=2)),
                    headerMatch=maybe(obj(name=st.just("x-canary"), value=hostile_text(20).filter(bool))),
                    mirrorPercent=maybe(st.integers(1, 100)),
                )
            )
        }
    if routing != "none" and draw(st.booleans()):
        analysis = draw(st.booleans())
        step = st.one_of(
            st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
            st.builds(lambda p: {"pause": p}, obj(duration=maybe(st.sampled_from(["1m", "30s"])))),
            *([st.builds(lambda c: {"analysis": c}, obj(count=maybe(st.integers(1, 1000))))] if analysis else []),
        )
        spec["strategy"] = {"canary": {"steps": draw(st.lists(step, min_size=1, max_size=4))}}
        if analysis:
            spec["analysis"] = draw(
                obj(
                    prometheusAddress=maybe(loopback_url()),
                    interval=maybe(st.sampled_from(["30s", "1m"])),
                    count=maybe(st.integers(1, 1000)),
                    failureLimit=maybe(st.integers(0, 100)),
                    inconclusiveLimit=maybe(st.integers(0, 100)),
                    sampleSizeQuery=maybe(hostile_text(20)),
                    minSampleSize=maybe(st.integers(1, 10**6)),
                    metrics=st.lists(metric, min_size=1, max_size=3, unique_by=lambda m: m["name"]),
                )
            )
    return spec


SPECS: dict[str, Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    "TrackingServer": tracking_server_specs,
    "RegisteredModel": registered_model_specs,
    "ModelDeployment": model_deployment_specs,
}

# Both sides of each exactly-one group, and other cross-field rules, per kind: (path of the object, extra fields).
CONFLICTS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "TrackingServer": [
        (("database",), {"managed": {}, "external": {"host": "db", "credentialsSecret": {"name": "s"}}}),
        (("database",), {"pooler": {"defaultPoolSize": 100, "maxDbConnections": 50}}),
        (("ingress",), {"enabled": True}),
    ],
    "RegisteredModel": [
        ((), {"trackingUri": LOOPBACK, "trackingServerRef": {"name": "mlflow"}}),
        ((), {"credentialsSecret": {"name": "creds"}}),
        ((), {"aliases": {"latest": 1}}),
        ((), {"aliases": {"V12": 3}}),
    ],
    "ModelDeployment": [
        ((), {"trackingUri": LOOPBACK, "trackingServerRef": {"name": "mlflow"}}),
        (("model",), {"alias": "champion", "version": 3}),
        ((), {"replicas": 2, "autoscaling": {"maxReplicas": 4}}),
        ((), {"trafficRouting": {"replicaRatio": {}, "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}}),
        (
            (),
            {
                "strategy": {"canary": {"steps": [{"setWeight": 5, "pause": {}}]}},
                "trafficRouting": {"replicaRatio": {}},
            },
        ),
        ((), {"strategy": {"canary": {"steps": [{"analysis": {}}]}}, "trafficRouting": {"replicaRatio": {}}}),
    ],
}
URL_FIELDS = {"endpoint", "trackingUri", "prometheusAddress"}


@dataclass
class FuzzCase:
    kind: str
    spec: dict[str, Any]
    mutations: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.kind} mutations={self.mutations} spec={json.dumps(self.spec, ensure_ascii=True)[:2000]}"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below the root (dict keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _parent(spec: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        spec = spec[key]
    return spec


UNICODE_SPACES = ["\u00a0", "\u2028", "\u3000", "\u0085", "\u2009", "\x0b", "\x0c"]
MUTATIONS = ["hostile", "hostile", "long", "space", "range", "type", "delete", "unknown", "conflict"]


def _leaves(spec: Any, paths: list[tuple[Any, ...]], kind: type) -> list[tuple[Any, ...]]:
    return [p for p in paths if type(_parent(spec, p)[p[-1]]) is kind]


def _mutate_structure(draw: st.DrawFn, case: FuzzCase, what: str, paths: list[tuple[Any, ...]]) -> None:
    """Both sides of an exactly-one group (or another cross-field rule), or an unknown field."""
    spec = case.spec
    if what == "conflict":
        target, extra = draw(st.sampled_from(CONFLICTS[case.kind]))
        node = spec
        for key in target:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node.update(copy.deepcopy(extra))
            case.mutations.append(f"conflict {'.'.join(target) or 'spec'} {sorted(extra)}")
        return
    dicts = [()] + [p for p in paths if isinstance(_parent(spec, p)[p[-1]], dict)]
    target = draw(st.sampled_from(dicts))
    node = spec if not target else _parent(spec, target)[target[-1]]
    name = draw(st.sampled_from(["replica", "extra", "Replicas", "spec", "x-unknown", "__proto__"]))
    node[name] = draw(WRONG_TYPES)
    case.mutations.append(f"unknown {'.'.join(map(str, target))}.{name}")


def _mutate_value(draw: st.DrawFn, what: str, value: Any) -> Any:
    if what == "hostile":
        return draw(hostile_text())
    if what == "space" and isinstance(value, str):
        # Whitespace to Python's \s, not to Go's: where the schema's and the models' regexes disagree.
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(st.sampled_from(UNICODE_SPACES)) + value[at:]
    if what == "long":
        return draw(LONG)
    if what == "type":
        return draw(WRONG_TYPES)
    return draw(OUT_OF_RANGE)


@st.composite
def mutated(draw: st.DrawFn, kind: str, spec: dict[str, Any]) -> FuzzCase:
    """0-3 mutations of a plausible spec. URL fields only ever get loopback or refused URLs."""
    case = FuzzCase(kind, copy.deepcopy(spec))
    for _ in range(draw(st.sampled_from([1, 0, 1, 0, 2, 1, 3]))):
        paths = _paths(case.spec)
        what = draw(st.sampled_from(MUTATIONS))
        if what in ("conflict", "unknown"):
            _mutate_structure(draw, case, what, paths)
            continue
        # Strings get string mutations, numbers out-of-range values: most mutations keep the shape.
        leaves = {"hostile": str, "long": str, "space": str, "range": int}
        candidates = (_leaves(case.spec, paths, leaves[what]) if what in leaves else []) or paths
        if not candidates:
            continue
        path = draw(st.sampled_from(candidates))
        parent, key = _parent(case.spec, path), path[-1]
        label = ".".join(map(str, path))
        if what == "delete" and not (key == "endpoint" and kind == "TrackingServer"):
            if isinstance(parent, dict) or len(parent) > 1:
                parent.pop(key)
            case.mutations.append(f"delete {label}")
        elif key in URL_FIELDS:
            parent[key] = draw(url())
            case.mutations.append(f"url {label}")
        else:
            parent[key] = _mutate_value(draw, what, parent[key])
            case.mutations.append(f"{what} {label}")
    return case


@st.composite
def fuzz_cases(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> FuzzCase:
    kind = draw(st.sampled_from(kinds))
    return draw(mutated(kind, draw(SPECS[kind]())))


def reaches_only_loopback(case: FuzzCase) -> bool:
    """Every http(s) URL in the spec is on loopback, and a TrackingServer always names its S3 endpoint
    (none would mean AWS). The strategy guarantees it; the e2e test checks again before applying."""

    def urls(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [u for value in node.values() for u in urls(value)]
        if isinstance(node, list):
            return [u for value in node for u in urls(value)]
        return [node] if isinstance(node, str) and re.match(r"(?i)\s*https?:", node) else []

    if not all(u == LOOPBACK or u.startswith(f"{LOOPBACK}/") or re.search(r"\s", u) for u in urls(case.spec)):
        return False
    if case.kind == "TrackingServer":
        s3 = (case.spec.get("artifacts") or {}).get("s3") if isinstance(case.spec.get("artifacts"), dict) else None
        if isinstance(s3, dict) and not (isinstance(s3.get("endpoint"), str) and s3["endpoint"].startswith(LOOPBACK)):
            return False
    return True


# Findings of this fuzzing not fixed yet: values the CRD admits and the models accept, that the builders render
# into objects the API server refuses, so the reconcile pass fails (and is retried with backoff). Each maps to
# a regex matching both the unit test's problem text and the API server's refusal in the operator's log.
# tests/unit/test_fuzz_validation.py has a strict-xfail reproducer for each: fix one, drop it here.
# Patterns of problems the fuzz tests have found and that are not fixed yet (id -> regex over the API
# server's or the builders' message): excused, and listed, so that a new finding stands out. Empty: the six
# found so far (dotted names, resource names, annotation keys, storage and ingress class names, requests
# above limits) are fixed and regression-tested in tests/unit/test_fuzz_validation.py.
KNOWN_FINDINGS: dict[str, str] = {}


def known_finding(text: str) -> str | None:
    """The KNOWN_FINDINGS id whose pattern `text` matches, if any."""
    return next((name for name, pattern in KNOWN_FINDINGS.items() if re.search(pattern, text)), None)


def batch(strategy: st.SearchStrategy[Any], size: int, seed_value: int) -> list[Any]:
    """`size` examples of `strategy`, the same ones for the same seed (and hypothesis version)."""
    out: list[Any] = []

    @seed(seed_value)
    @settings(
        database=None,
        max_examples=size,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out
