"""mlflow's first import from several worker threads at once (the registry adapters run in threads)."""

from __future__ import annotations

import subprocess
import sys

# Six threads import parts of mlflow for the first time at once, in a fresh interpreter; without one import at
# a time this failed every run with "partially initialized module" errors and import deadlocks.
CONCURRENT_FIRST_IMPORTS = """
import threading
from mlflow_operator.adapters.registry_store import mlflow_module
errors = []
def load(name):
    try:
        mlflow_module(name)
    except Exception as error:
        errors.append(repr(error))
modules = ("utils.rest_utils", "store.model_registry.rest_store", "entities.model_registry", "exceptions",
           "utils.proto_json_utils", "tracking._model_registry.fluent")
threads = [threading.Thread(target=load, args=(name,)) for name in modules]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_first_imports_of_mlflow_from_several_threads_succeed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_FIRST_IMPORTS], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
