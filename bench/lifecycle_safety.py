"""`python -m bench.lifecycle_safety`: the cost of the lifecycle safety check at N registered model versions.

Each TrackingServer pass that has a lifecycle rule deleting objects reads where every registered model version
keeps its artifacts (ModelRegistry.version_artifacts): one SearchModelVersions per 1000 versions, plus one
GetLoggedModel / GetRun per version whose location this process has not resolved before (a version's source
never changes). This measures, against a real `mlflow server` on a local Postgres (the integration harness):

- cold: the first check of a process (every location resolved),
- warm: the checks of every later pass (paged search only), repeated K times,

each with its wall time and its requests by API, and the pure decision over those versions (a handful of
rules) for scale. N versions are N registrations of M logged models (`models:/m-...` sources, as
`log_model(registered_model_name=...)` writes them), a tenth of them from runs' artifacts (`runs:/` sources).

Results: bench/results/lifecycle_safety.json (--quick: lifecycle_safety-quick.json) and a table on stdout.

    .venv/bin/python -m bench.lifecycle_safety [--quick] [--versions N] [--warm-checks K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.integration import dataplane as dp
from tests.integration import registry_server as rs

from bench.common import logs_dir, number, report, result_header
from bench.harness import results_path
from mlflow_operator.adapters import registry_store
from mlflow_operator.adapters.registry import ModelRegistry
from mlflow_operator.adapters.registry_store import RegistryEndpoint
from mlflow_operator.api.trackingserver import Lifecycle, LifecycleRule
from mlflow_operator.logic.lifecycle import desired_rules, fingerprint
from mlflow_operator.logic.lifecycle_safety import safety_decision

# Logs M tiny logged models, then registers N versions over them (each under its own model name, so that
# every version is resolved separately), every tenth from the run's artifacts instead.
SEED_SCRIPT = """\
import json, os
import mlflow
from mlflow import MlflowClient

params = json.loads(os.environ["TEST_PARAMS"])


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.set_experiment("bench-lifecycle-safety")
logged = []
for i in range(params["logged"]):
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"])
        mlflow.log_text("x", "extra/notes.txt")
        logged.append((info.model_id, run.info.run_id))
client = MlflowClient()
for n in range(params["versions"]):
    model_id, run_id = logged[n % len(logged)]
    name = f"model-{n // 10:04d}"
    if n % 10 == 0:
        client.create_registered_model(name)
    if n % 10 == 9:
        client.create_model_version(name, f"runs:/{run_id}/extra", run_id=run_id)
    else:
        client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id)
print(json.dumps({"logged": len(logged), "versions": params["versions"]}))
"""

RULES = [
    LifecycleRule.model_validate(rule)
    for rule in (
        {"id": "expire-scratch", "filter": {"prefix": "mlflow/scratch/"}, "expiration": {"days": 14}},
        {"id": "expire-tmp", "filter": {"prefix": "mlflow/tmp/"}, "expiration": {"days": 3}},
        {"id": "abort", "abortIncompleteMultipartUpload": {"daysAfterInitiation": 3}},
    )
]


def timed_check(registry: ModelRegistry) -> dict[str, Any]:
    """One check as a TrackingServer pass runs it: the registry read, then the decision."""
    before = dict(registry.calls.by_api)
    start = time.perf_counter()
    versions = registry.version_artifacts()
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    spec = fingerprint(desired_rules(Lifecycle(rules=RULES)))
    decision = safety_decision(RULES, "mlflow", "bucket", versions, None, spec)
    decide_s = time.perf_counter() - start
    calls = {api: n - before.get(api, 0) for api, n in registry.calls.by_api.items() if n - before.get(api, 0)}
    unresolved = sum(1 for v in versions if v.artifact_uri is None)
    return {
        "versions": len(versions),
        "unresolved": unresolved,
        "read_s": round(read_s, 3),
        "decide_s": round(decide_s, 4),
        "requests": calls,
        "withheld": [r.rule_id for r in decision.withheld],
    }


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 versions, 3 warm checks")
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--logged-models", type=int, default=20)
    parser.add_argument("--warm-checks", type=int, default=10)
    args = parser.parse_args(argv)
    if args.quick:
        args.versions, args.logged_models, args.warm_checks = 100, 5, 3
    stamp, logs = logs_dir("lifecycle_safety")
    parameters = {
        "quick": args.quick,
        "versions": args.versions,
        "logged_models": args.logged_models,
        "warm_checks": args.warm_checks,
    }
    result = result_header("lifecycle_safety", stamp, argv, parameters)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        postgres = stack.enter_context(dp.Postgres({"max_connections": "50"}, log_dir=logs))
        server = rs.migrated_server(postgres, "bench", Path(scratch) / "artifacts", logs)
        stack.callback(server.stop)
        start = time.perf_counter()
        rs.run_client(server.url, SEED_SCRIPT, {"versions": args.versions, "logged": args.logged_models})
        result["seed_s"] = round(time.perf_counter() - start, 1)
        registry_store.forget_locations()  # a process that never resolved a location: the cold case
        registry = ModelRegistry(RegistryEndpoint(server.url))
        result["cold"] = timed_check(registry)
        warm = [timed_check(registry) for _ in range(args.warm_checks)]
        result["warm"] = {
            "read_s_median": round(statistics.median(w["read_s"] for w in warm), 3),
            "read_s_max": max(w["read_s"] for w in warm),
            "decide_s_median": round(statistics.median(w["decide_s"] for w in warm), 4),
            "requests_each": warm[-1]["requests"],
        }
    results_path("lifecycle_safety", args.quick).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    cold, warm = result["cold"], result["warm"]
    rows = [
        ("registered versions", str(cold["versions"])),
        ("cold check: registry read", number(cold["read_s"], 2, " s") + f" ({cold['requests']})"),
        ("warm check: registry read, median / max", f"{warm['read_s_median']:.3f} s / {warm['read_s_max']:.3f} s"),
        ("warm check: requests", str(warm["requests_each"])),
        ("decision over all versions (3 rules), median", number(warm["decide_s_median"] * 1000, 1, " ms")),
    ]
    return report("Lifecycle safety check", result, rows)


if __name__ == "__main__":
    print(table(run()))
