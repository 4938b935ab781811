"""The pure parts of hack/localcluster.py and hack/localnode.py: what they render and decide, without a host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import ROOT
from tests.scripts import load_script

localcluster = load_script("localcluster", ROOT / "hack" / "localcluster.py")
localnode = load_script("localnode", ROOT / "hack" / "localnode.py")


def claim(phase: str = "Pending", storage_class: str = "standard", volume: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": "data", "namespace": "db", "uid": "1234"},
        "spec": {
            "storageClassName": storage_class,
            "volumeName": volume,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}},
        },
        "status": {"phase": phase},
    }


def test_fake_nodes_are_tainted_only_beside_a_real_node() -> None:
    tainted = list(yaml.safe_load_all(localcluster.fake_nodes_yaml(2, tainted=True)))
    plain = list(yaml.safe_load_all(localcluster.fake_nodes_yaml(2, tainted=False)))
    assert [n["metadata"]["name"] for n in tainted] == ["kwok-node-0", "kwok-node-1"]
    assert all(
        n["spec"]["taints"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}] for n in tainted
    )
    assert all(n["spec"]["taints"] == [] for n in plain)
    # kwok manages exactly the nodes carrying this annotation, never the real one.
    assert all(n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for n in tainted + plain)


def test_only_pending_unbound_claims_of_the_class_are_provisioned() -> None:
    claims = [claim(), claim(phase="Bound", volume="pvc-1"), claim(storage_class="other")]
    assert localcluster.claims_to_provision(claims, set()) == [claims[0]]
    assert localcluster.claims_to_provision(claims, {"pvc-1234"}) == []  # its volume exists: the binding is pending


def test_volume_is_pre_bound_to_its_claim_on_the_real_node() -> None:
    volume = localcluster.volume_for(claim(), Path("/state/volumes/pvc-1234"))
    spec = volume["spec"]
    assert volume["metadata"]["name"] == "pvc-1234"
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "db",
        "name": "data",
        "uid": "1234",
    }
    assert spec["capacity"] == {"storage": "2Gi"}
    assert spec["hostPath"] == {"path": "/state/volumes/pvc-1234", "type": "Directory"}
    terms = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [localnode.NODE_NAME]


def test_released_and_failed_volumes_are_deleted() -> None:
    volumes = [{"status": {"phase": p}} for p in ("Bound", "Released", "Failed", "Available")]
    assert localcluster.volumes_to_delete(volumes) == [volumes[1], volumes[2]]


def test_missing_targets_name_the_build_targets(tmp_path: Path) -> None:
    bins = {name: tmp_path / name for name in {**localcluster.CONTROL_PLANE_TARGETS, **localcluster.NODE_TARGETS}}
    assert localcluster.missing_targets(bins, real_node=False) == ["etcd", "kubernetes", "kwok"]
    assert localcluster.missing_targets(bins, real_node=True) == [
        "containerd",
        "coredns",
        "etcd",
        "gateway-api",
        "kubernetes",
        "kwok",
        "node",
        "pause",
        "traefik",
    ]
    for path in bins.values():
        path.touch()
    assert localcluster.missing_targets(bins, real_node=True) == []


def test_netfilter_rules_of_kube_proxy_and_cni_are_recognised() -> None:
    assert localnode._ours("-N KUBE-SERVICES")
    assert localnode._ours("-N CNI-abc123")
    assert localnode._ours("-A PREROUTING -m comment --comment kubernetes -j KUBE-SERVICES")
    assert localnode._ours("-A POSTROUTING -s 10.244.0.5/32 -j CNI-abc123")
    assert not localnode._ours("-N DOCKER")
    assert not localnode._ours("-A INPUT -j ACCEPT")
    assert not localnode._ours("-A INPUT -m comment --comment KUBE-like -j ACCEPT")


def test_node_configs_carry_this_machines_settings(tmp_path: Path) -> None:
    kubelet = yaml.safe_load(localnode.kubelet_config(tmp_path))
    assert kubelet["failCgroupV1"] is False  # cgroup v1 hosts
    assert kubelet["oomScoreAdj"] == 0  # no CAP_SYS_RESOURCE
    assert kubelet["address"] == localnode.NODE_IP
    assert kubelet["imageGCHighThresholdPercent"] == 100  # images cannot be pulled again
    proxy = yaml.safe_load(localnode.kube_proxy_config(tmp_path))
    assert proxy["nodePortAddresses"] == [f"{localnode.NODE_IP}/32"]
    assert proxy["oomScoreAdj"] == 0
    assert "restrict_oom_score_adj = true" in localnode.containerd_config(tmp_path, "localhost/pause:3.10.2")
    cni = json.loads(localnode.cni_config(tmp_path))
    bridge = cni["plugins"][0]
    assert bridge["bridge"] == localnode.BRIDGE
    assert bridge["ipam"]["ranges"] == [[{"subnet": localnode.POD_CIDR, "gateway": localnode.NODE_IP}]]
    objects = list(yaml.safe_load_all(localnode.coredns_manifest("localhost/coredns:1.15.0")))
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["clusterIP"] == localnode.CLUSTER_DNS == kubelet["clusterDNS"][0]


def test_every_listed_image_is_imported_unless_only_the_nodes_are_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "node-manifest.tsv").write_text("/c/pause.oci.tar\tlocalhost/pause:3.10.2\n")
    (images / "manifest.tsv").write_text("/c/pg.oci.tar\tdocker.io/library/postgres:15\nnot a line\n")
    (images / "manifest.tsv.partial").write_text("/c/half.oci.tar\tghcr.io/half:1\n")  # being written: ignored
    monkeypatch.setattr(localcluster, "CACHE", tmp_path)
    assert localcluster.image_manifest_entries(node_only=False) == [
        (Path("/c/pg.oci.tar"), "docker.io/library/postgres:15"),
        (Path("/c/pause.oci.tar"), "localhost/pause:3.10.2"),
    ]
    assert localcluster.image_manifest_entries(node_only=True) == [(Path("/c/pause.oci.tar"), "localhost/pause:3.10.2")]
