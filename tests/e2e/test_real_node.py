"""The real node of hack/localcluster.py: real containers (containerd + runc), pod IPs on the bridge, Services
through kube-proxy, cluster DNS, volumes that keep data, kubectl logs/exec; and a `down` that leaves nothing.

Pods use localhost/test/python:1 (Debian's python3, built by hack/node-images.sh test) and never pull: there is
no registry. Python as PID 1 ignores SIGTERM, hence the 1 s grace periods.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.real_node_cluster import RealNodeCluster
from tests.kube import ROOT, Kubectl, eventually

IMAGE = "localhost/test/python:1"
NODE = "realnode"
BRIDGE = "cni0"
# Answers GET with the pod's name, so a test can tell which pod a Service picked.
WHO_AM_I = """
import http.server, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pinned_containerd_version() -> str:
    pins = dict(line.split("=", 1) for line in (ROOT / "hack" / "versions.env").read_text().splitlines() if "=" in line)
    return pins["CONTAINERD_VERSION"].strip().removeprefix("v")


def python_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    volume_mounts = spec.pop("volumeMounts", [])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script],
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": volume_mounts,
                }
            ],
            **spec,
        },
    }


def phase(kubectl: Kubectl, namespace: str, pod: str) -> str:
    obj = kubectl.get("pod", pod, namespace)
    return str(((obj or {}).get("status") or {}).get("phase", ""))


def run_to_completion(kubectl: Kubectl, namespace: str, pod: dict[str, Any]) -> str:
    """Runs a pod until it succeeds; returns its log (through the kubelet: kubectl logs)."""
    name = pod["metadata"]["name"]
    kubectl.apply(pod, namespace)
    done = eventually(
        lambda: phase(kubectl, namespace, name) in ("Succeeded", "Failed") and phase(kubectl, namespace, name),
        timeout=120,
        what=f"pod {name} to finish",
    )
    log = kubectl.run("logs", "-n", namespace, name).stdout
    assert done == "Succeeded", f"pod {name} {done}:\n{log}"
    return log


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def cluster(real_node_cluster: RealNodeCluster) -> RealNodeCluster:
    return real_node_cluster


@pytest.fixture
def restricted_namespace(cluster: RealNodeCluster) -> Iterator[str]:
    name = f"realnode-{uuid.uuid4().hex[:8]}"
    cluster.kubectl.run("create", "namespace", name)
    cluster.kubectl.run("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    cluster.kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def web(cluster: RealNodeCluster) -> Iterator[tuple[str, dict[str, Any]]]:
    """A Deployment of 2 pods and its ClusterIP Service, in a restricted namespace."""
    namespace = f"realnode-web-{uuid.uuid4().hex[:6]}"
    kubectl = cluster.kubectl
    kubectl.run("create", "namespace", namespace)
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = python_pod("web", WHO_AM_I)
    template = {"metadata": {"labels": {"app": "web"}}, "spec": pod["spec"]}
    template["spec"]["restartPolicy"] = "Always"
    template["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    template["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl.apply(deployment, namespace)
    kubectl.apply(service, namespace)
    kubectl.run("-n", namespace, "wait", "--for=condition=Available", "deployment/web", "--timeout=120s")
    yield namespace, kubectl.get("service", "web", namespace) or {}
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def web_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl.run("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout)["items"]
    return [p for p in items if p["status"].get("podIP") and p["metadata"].get("deletionTimestamp") is None]


def test_node_is_ready_on_containerd(cluster: RealNodeCluster) -> None:
    node = cluster.kubectl.get("node", NODE)
    assert node is not None
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"] == f"containerd://{pinned_containerd_version()}"
    assert (
        info["kubeletVersion"]
        == json.loads(cluster.kubectl.run("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    )
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.244.0.1"


def test_restricted_pod_runs_as_declared(cluster: RealNodeCluster, restricted_namespace: str) -> None:
    """The kernel enforces what the pod declares: uid, read-only root, no capabilities, seccomp filter."""
    script = """
import os
print("uid", os.getuid())
try:
    open("/etc/written", "w")
except OSError as error:
    print("root filesystem:", error.strerror)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
for key in ("CapEff", "Seccomp", "NoNewPrivs"):
    print(key, status[key].strip())
"""
    log = run_to_completion(cluster.kubectl, restricted_namespace, python_pod("restricted", script))
    assert "uid 10001" in log
    assert "root filesystem: Read-only file system" in log
    assert "CapEff 0000000000000000" in log
    assert "Seccomp 2" in log  # 2 = filter mode: the runtime's default profile is loaded
    assert "NoNewPrivs 1" in log


def test_pods_and_cluster_ip_answer_from_the_host(cluster: RealNodeCluster, web: tuple[str, dict[str, Any]]) -> None:
    namespace, service = web
    pods = web_pods(cluster.kubectl, namespace)
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["podIP"].startswith("10.244.0.")
        assert http_get(f"http://{pod['status']['podIP']}:8080/") == pod["metadata"]["name"]
    cluster_ip = service["spec"]["clusterIP"]
    assert cluster_ip.startswith("10.96.")
    # kube-proxy spreads connections at random: within 40 requests both pods answer (odds of not: 2^-39).
    # Its rules follow the endpoints by up to a second (its minimum sync period): refused until then.
    seen: set[str] = set()

    def both_answered() -> bool:
        try:
            for _ in range(40):
                seen.add(http_get(f"http://{cluster_ip}/"))
        except OSError:
            return False
        return seen == {p["metadata"]["name"] for p in pods}

    eventually(both_answered, timeout=30, what=f"both pods behind {cluster_ip}")


def test_service_name_resolves_in_a_pod(cluster: RealNodeCluster, web: tuple[str, dict[str, Any]]) -> None:
    """CoreDNS answers the Service's name; kubectl exec (API server -> kubelet -> CRI) runs the lookup."""
    namespace, service = web
    pod = web_pods(cluster.kubectl, namespace)[0]["metadata"]["name"]
    name = f"web.{namespace}.svc.cluster.local"
    lookup = f"import socket; print(socket.gethostbyname({name!r}))"
    result = cluster.kubectl.run("exec", "-n", namespace, pod, "--", "python3", "-c", lookup)
    assert result.stdout.strip() == service["spec"]["clusterIP"]
    short = cluster.kubectl.run("exec", "-n", namespace, pod, "--", "python3", "-c", lookup.replace(name, "web"))
    assert short.stdout.strip() == service["spec"]["clusterIP"]


def test_volume_keeps_data_when_its_pod_is_deleted(cluster: RealNodeCluster, restricted_namespace: str) -> None:
    """A non-root pod (as Postgres runs) writes to a claim of the default StorageClass; a new pod reads it."""
    kubectl, namespace = cluster.kubectl, restricted_namespace
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kubectl.apply(claim, namespace)
    token = uuid.uuid4().hex
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mounts = [{"name": "data", "mountPath": "/data"}]
    writer = python_pod("writer", f"open('/data/token', 'w').write({token!r})", volumeMounts=mounts, **volume)
    run_to_completion(kubectl, namespace, writer)
    kubectl.run("delete", "pod", "-n", namespace, "writer")
    reader = python_pod("reader", "print(open('/data/token').read())", volumeMounts=mounts, **volume)
    assert run_to_completion(kubectl, namespace, reader).strip() == token
    bound = kubectl.get("pvc", "data", namespace)
    assert bound is not None and bound["status"]["phase"] == "Bound"


# ------------------------------------------------------------------------------------------------ down and up
# Last in this module (pytest keeps file order): it stops the cluster the tests above use.


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and "pytest" not in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def host_leftovers(workdir: Path) -> dict[str, list[str]]:
    """What the machine still holds of a real node, inspected independently of localcluster's own code."""

    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    rules = out("iptables-save") + out("ip6tables-save")
    return {
        "processes": processes_mentioning(str(workdir)) + processes_mentioning("containerd-shim-runc-v2"),
        "mounts": [m for m in mounts if m.startswith(str(workdir)) or "/kubelet/pods/" in m],
        "interfaces": [line for line in out("ip", "-o", "link").splitlines() if BRIDGE in line],
        "iptables": [line for line in rules.splitlines() if re.search(r"\b(KUBE|CNI)-", line)],
        "nftables": [line for line in out("nft", "list", "tables").splitlines() if "kube-proxy" in line],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
        + [str(p) for p in Path("/sys/fs/cgroup").glob("kubepods")],
        "paths": [
            str(p)
            for p in (
                workdir,
                Path("/var/lib/kubelet/device-plugins/kubelet.sock"),
                Path("/run/containerd/s"),
                Path("/run/containerd/fifo"),
                Path("/var/lib/cni/results"),
                Path("/var/log/containers"),
            )
            if p.exists()
        ],
    }


def test_down_leaves_nothing_and_up_works_again(cluster: RealNodeCluster, web: tuple[str, dict[str, Any]]) -> None:
    # Pods are running (the web Deployment, CoreDNS): down must tear them down too.
    assert len(web_pods(cluster.kubectl, web[0])) == 2
    result = cluster.down()
    assert result.returncode == 0, result.stderr[-3000:]
    left = {what: items for what, items in host_leftovers(cluster.workdir).items() if items}
    assert left == {}, f"down left behind: {json.dumps(left, indent=2)}"

    cluster.up()
    probe = python_pod("after-up", "print('ok')")
    namespace = f"realnode-again-{uuid.uuid4().hex[:6]}"
    cluster.kubectl.run("create", "namespace", namespace)
    assert run_to_completion(cluster.kubectl, namespace, probe).strip() == "ok"
