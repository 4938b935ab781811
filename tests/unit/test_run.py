"""The pure parts of hack/run.py (`make run`): what it renders and decides, without a cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kube import ROOT
from tests.scripts import load_script

sys.path.insert(0, str(ROOT / "hack"))  # run.py imports its sibling localcluster
run = load_script("run", ROOT / "hack" / "run.py")


def examples() -> dict[str, Any]:
    return {
        "items": [
            {"kind": "TrackingServer", "metadata": {"name": "mlflow"}, "spec": {"replicas": 2}},
            {"kind": "ModelDeployment", "metadata": {"name": "fraud"}, "spec": {"replicas": 2}},
        ]
    }


def test_a_small_node_gets_servers_that_fit_and_nothing_else_changes() -> None:
    objects = examples()
    run.fit_to_node(objects, 2000)
    tracking, deployment = objects["items"]
    assert deployment["spec"]["runtime"]["resources"]["requests"]["cpu"] == "100m"
    assert deployment["spec"]["replicas"] == 2
    assert tracking["spec"].pop("resources")["requests"]["cpu"] == "250m"
    assert tracking == examples()["items"][0]


def test_a_node_with_room_gets_the_examples_as_written() -> None:
    objects = examples()
    run.fit_to_node(objects, 4000)
    assert objects == examples()


def test_kubectl_json_output_is_read_as_a_stream_of_documents() -> None:
    assert run.json_stream('{"a": 1}\n{"b": [2]}\n') == [{"a": 1}, {"b": [2]}]
    assert run.json_stream("") == []


def test_minio_runs_the_pinned_image_as_non_root_behind_service_minio() -> None:
    namespace, deployment, service = run.minio_objects()
    pod = deployment["spec"]["template"]["spec"]
    assert namespace["metadata"]["name"] == "storage"
    assert service["metadata"]["name"] == "minio" and service["spec"]["ports"][0]["port"] == 9000
    assert pod["containers"][0]["image"] == f"localhost/minio:{run.localcluster.versions()['MINIO_VERSION']}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_images_newer_than_the_cluster_are_imported_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new, state = tmp_path / "old.oci.tar", tmp_path / "new.oci.tar", tmp_path / "state.json"
    for path, mtime in ((old, 100), (state, 200), (new, 300)):
        path.write_text("")
        os.utime(path, (mtime, mtime))
    entries = [(old, "localhost/old:1"), (new, "localhost/new:1"), (tmp_path / "gone.oci.tar", "localhost/gone:1")]
    monkeypatch.setattr(run.localcluster, "image_manifest_entries", lambda node_only: entries)
    assert run.images_newer_than(tmp_path) == ["localhost/new:1"]
    assert run.images_newer_than(tmp_path / "no-cluster") == []
