#!/usr/bin/env python3
"""A real Kubernetes cluster as local processes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and, by default, a real node on this machine (containerd + runc + CNI bridge, kubelet, kube-proxy, CoreDNS, a
local-path StorageClass: hack/localnode.py); kwok for fake nodes, on request or instead of the real node.

    localcluster.py up [--dir DIR] [--fake-nodes N] [--no-real-node]  # idempotent; prints the kubeconfig last
    localcluster.py down [--dir DIR]             # stops and removes everything it started, state included
    localcluster.py env                          # prints the paths of the cached binaries
    localcluster.py load-images [--dir DIR]      # imports the listed image archives into the node again
    localcluster.py load-images --image A=REF    # imports archive A as REF (e.g. a build-images.py variant)
    localcluster.py restart NAME [--dir DIR]     # SIGKILL one component, start it with the same argv
    localcluster.py pause|resume NAME [--dir DIR] # SIGSTOP / SIGCONT one component (e.g. etcd)
    localcluster.py provision --dir DIR          # (started by `up`) the local-path volume provisioner

With the real node, pods run for real: they get IPs on the bridge cni0 (10.244.0.0/24), Services work
through kube-proxy, names resolve through CoreDNS, and the API server listens on the node IP 10.244.0.1 only.
Only one real node runs on a machine at a time. Its images come from archives built without a registry
(hack/node-images.sh; interface described there). Fake nodes (kwok) are tainted kwok.x-k8s.io/node=fake
when a real node runs, so real workloads never land there. With --no-real-node (3 fake nodes by default,
untainted) everything stays on loopback, as the benchmarks and the kwok-based e2e tests need.

Binaries come from hack/build-binaries.sh (built once, cached by version). Needs root for the real node.
Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localnode  # the sibling module; imported as hack.localcluster too, so put hack/ on the path

HACK = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MLFLOW_OPERATOR_CACHE", Path.home() / ".cache" / "mlflow-operator"))
DEFAULT_DIR = CACHE / "cluster"
STARTUP_TIMEOUT = 180.0
NODE_MANIFEST = "node-manifest.tsv"  # hack/node-images.sh's; other image builders keep their own *.tsv


def versions() -> dict[str, str]:
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


# Each binary and the hack/build-binaries.sh target that builds it; the node's only matter with a real node.
CONTROL_PLANE_TARGETS = {
    "etcd": "etcd",
    "kube-apiserver": "kubernetes",
    "kube-controller-manager": "kubernetes",
    "kube-scheduler": "kubernetes",
    "kubectl": "kubernetes",
    "kwok": "kwok",
    "kwok-stages": "kwok",
}
NODE_TARGETS = {
    "kubelet": "node",
    "kube-proxy": "node",
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "coredns": "coredns",
    "pause": "pause",
    "traefik": "traefik",
    "gateway-api-crds": "gateway-api",
}


def binaries() -> dict[str, Path]:
    pins = versions()
    bin_dir = CACHE / "bin"
    k8s = bin_dir / f"kubernetes-{pins['K8S_VERSION']}"
    node = bin_dir / f"kubernetes-node-{pins['K8S_VERSION']}"
    kwok = bin_dir / f"kwok-{pins['KWOK_VERSION']}"
    containerd = bin_dir / f"containerd-{pins['CONTAINERD_VERSION']}"
    return {
        "etcd": bin_dir / f"etcd-{pins['ETCD_VERSION']}" / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kube-controller-manager": k8s / "kube-controller-manager",
        "kube-scheduler": k8s / "kube-scheduler",
        "kubectl": k8s / "kubectl",
        "kwok": kwok / "kwok",
        "kwok-stages": kwok / "stages.yaml",
        "kubelet": node / "kubelet",
        "kube-proxy": node / "kube-proxy",
        "containerd": containerd / "containerd",
        "containerd-shim-runc-v2": containerd / "containerd-shim-runc-v2",
        "ctr": containerd / "ctr",
        "coredns": bin_dir / f"coredns-{pins['COREDNS_VERSION']}" / "coredns",
        "pause": bin_dir / f"pause-{pins['PAUSE_VERSION']}" / "pause",
        "traefik": bin_dir / f"traefik-{pins['TRAEFIK_VERSION']}" / "traefik",
        # A directory of YAML files (the standard channel), applied as they are.
        "gateway-api-crds": bin_dir / f"gateway-api-{pins['GATEWAY_API_VERSION']}",
    }


def missing_targets(bins: dict[str, Path], real_node: bool) -> list[str]:
    targets = {**CONTROL_PLANE_TARGETS, **(NODE_TARGETS if real_node else {})}
    return sorted({target for name, target in targets.items() if not bins[name].exists()})


def ensure_binaries(real_node: bool) -> dict[str, Path]:
    bins = binaries()
    for target in missing_targets(bins, real_node):
        subprocess.run([str(HACK / "build-binaries.sh"), target], check=True)
    return bins


def node_images() -> dict[str, str]:
    pins = versions()
    return {
        "pause": f"localhost/pause:{pins['PAUSE_VERSION']}",
        "coredns": f"localhost/coredns:{pins['COREDNS_VERSION'][1:]}",
        "traefik": f"localhost/traefik:{pins['TRAEFIK_VERSION'][1:]}",
    }


NODE_PORTS_START = 30000


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range. A port taken from that range now and bound minutes later
    (the Gateway's, once the node runs) may meanwhile have become the source port of one of the many
    connections start-up opens to the API server; Traefik then cannot bind it and the Gateway never becomes
    Programmed (a CI run failed so). Below 30000 too: 30000-32767 are the Services' NodePorts."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 12000), min(low, NODE_PORTS_START)))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"[localcluster] no free port on {host} below {low}")


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path, real_node: bool) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=mlflow-operator-e2e-ca",
        cwd=pki,
    )
    for name, (subject, extensions) in certificates(real_node).items():
        issue_certificate(pki, name, subject, extensions)
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def certificates(real_node: bool) -> dict[str, tuple[str, list[str]]]:
    """Each certificate's subject and extensions. A client's identity is its subject: CN the user, O the
    groups (system:masters is cluster-admin; system:nodes + system:node:<name> is what the Node authorizer
    expects of a kubelet; system:kube-proxy has the built-in system:node-proxier role)."""
    sans = (
        f"subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:{localnode.NODE_IP},DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    client = ["extendedKeyUsage=clientAuth"]
    certs = {
        "apiserver": ("/CN=kube-apiserver", [sans, "extendedKeyUsage=serverAuth"]),
        "admin": ("/O=system:masters/CN=e2e-admin", client),
    }
    if real_node:
        certs |= {
            "kubelet": (f"/O=system:nodes/CN=system:node:{localnode.NODE_NAME}", client),
            "kube-proxy": ("/CN=system:kube-proxy", client),
            # kube-apiserver -> kubelet (logs, exec, port-forward); the kubelet authorizes it by webhook.
            "apiserver-kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", client),
        }
    return certs


def issue_certificate(pki: Path, name: str, subject: str, extensions: list[str]) -> None:
    ext = pki / f"{name}.ext"
    ext.write_text("\n".join([*extensions, "keyUsage=digitalSignature,keyEncipherment"]) + "\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "3650",
        "-extfile",
        ext.name,
        cwd=pki,
    )


def write_kubeconfig(path: Path, pki: Path, server: str, user: str = "admin") -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: mlflow-operator-local
  cluster: {{server: "{server}", certificate-authority: "{pki}/ca.crt"}}
users:
- name: {user}
  user: {{client-certificate: "{pki}/{user}.crt", client-key: "{pki}/{user}.key"}}
contexts:
- name: mlflow-operator-local
  context: {{cluster: mlflow-operator-local, user: {user}}}
current-context: mlflow-operator-local
""")


def start(state: dict[str, Any], name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
    logfile = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        argv,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=workdir,
        env={**os.environ, **env} if env else None,
    )
    state["pids"][name] = proc.pid
    state.setdefault("argv", {})[name] = argv  # for `restart`: the same arguments again
    if env:
        state.setdefault("env", {})[name] = env
    save(workdir, state)


def save(workdir: Path, state: dict[str, Any]) -> None:
    (workdir / "state.json").write_text(json.dumps(state, indent=2))


def wait_for(
    what: str, check: Callable[[], object], timeout: float = STARTUP_TIMEOUT, workdir: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    hint = f" (logs in {workdir})" if workdir else ""
    raise SystemExit(f"[localcluster] timed out waiting for {what}{hint}")


def http_ok(url: str, cafile: Path | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    with urllib.request.urlopen(url, timeout=3, context=context) as response:
        return bool(response.status == 200)


def api_server(state: dict[str, Any]) -> str:
    # States written before the real node existed have no host: their API server was on loopback.
    return f"https://{state.get('host', '127.0.0.1')}:{state['ports']['apiserver']}"


def api_get(state: dict[str, Any], workdir: Path, path: str) -> dict[str, Any]:
    """GET on the API server as the admin, without kubectl (cheap enough for `running()`)."""
    pki = workdir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    with urllib.request.urlopen(f"{api_server(state)}{path}", timeout=5, context=context) as response:
        return dict(json.loads(response.read()))


def node_ready(state: dict[str, Any], workdir: Path) -> bool:
    node = api_get(state, workdir, f"/api/v1/nodes/{localnode.NODE_NAME}")
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def kubectl(bins: dict[str, Path], kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(bins["kubectl"]), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie counts as dead.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


def running(workdir: Path) -> dict[str, Any] | None:
    state_file = workdir / "state.json"
    if not state_file.exists():
        return None
    state: dict[str, Any] = json.loads(state_file.read_text())
    if not state.get("ready") or not all(alive(pid) for pid in state["pids"].values()):
        return None
    try:
        http_ok(f"{api_server(state)}/readyz", workdir / "pki" / "ca.crt")
        if state.get("real_node") and not node_ready(state, workdir):
            return None
    except Exception:
        return None
    return state


# The default StorageClass without a real node: kube-controller-manager's hostPath provisioner. Its volumes
# are root-owned 0750 directories, which non-root pods cannot write: with a real node, `provision` serves it.
HOSTPATH_STORAGE_CLASS = """apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
"""
LOCAL_PATH_PROVISIONER = "localcluster.mlflow-operator.dev/local-path"
LOCAL_PATH_STORAGE_CLASS = f"""apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {{storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: {LOCAL_PATH_PROVISIONER}
reclaimPolicy: Delete
volumeBindingMode: Immediate
"""

NODE_TEMPLATE = """apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}}
  labels: {{kubernetes.io/arch: amd64, kubernetes.io/hostname: {name}, kubernetes.io/os: linux, type: kwok,
           topology.kubernetes.io/zone: zone-{zone}}}
spec:
  taints: {taints}
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake}}
"""
FAKE_NODE_TAINT = "[{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]"


def fake_nodes_yaml(count: int, tainted: bool) -> str:
    """Fake nodes, managed by kwok (which picks them by the kwok.x-k8s.io/node annotation). Beside a real
    node they are tainted: a pod lands there only if it tolerates the taint, e.g. a scale test's."""
    taints = FAKE_NODE_TAINT if tainted else "[]"
    return "\n---\n".join(NODE_TEMPLATE.format(name=f"kwok-node-{i}", zone=i % 3, taints=taints) for i in range(count))


def up(workdir: Path, fake_nodes: int | None = None, real_node: bool = True, node_images_only: bool = False) -> Path:
    kubeconfig = workdir / "kubeconfig"
    if running(workdir):
        log(f"already running in {workdir}")
        return kubeconfig
    down(workdir, quiet=True)
    fake_nodes = (0 if real_node else 3) if fake_nodes is None else fake_nodes
    bins = ensure_binaries(real_node)
    if real_node:
        localnode.claim(workdir)  # before touching anything machine-wide
        subprocess.run([str(HACK / "node-images.sh"), "node"], check=True)
    workdir.mkdir(parents=True, exist_ok=True)
    host = localnode.NODE_IP if real_node else "127.0.0.1"
    state: dict[str, Any] = {
        "pids": {},
        "ready": False,
        "real_node": real_node,
        "host": host,
        "node_images_only": node_images_only,
    }
    if real_node:
        # The bridge first: the API server binds its address.
        localnode.create_bridge()
        state["sysctls"] = localnode.enable_forwarding()
    make_pki(workdir / "pki", real_node)
    state["ports"] = {name: free_port() for name in ("etcd", "etcd-peer", "kcm", "scheduler", "kwok")}
    state["ports"]["apiserver"] = free_port(host)
    if real_node:
        state["ports"].update(gateway=free_port(), **{"gateway-admin": free_port()})
    save(workdir, state)
    write_kubeconfig(kubeconfig, workdir / "pki", api_server(state))
    start_control_plane(state, bins, workdir)
    if real_node:
        start_node(state, bins, workdir)
    else:
        wait_for(
            "StorageClass",
            lambda: bool(kubectl(bins, kubeconfig, "apply", "-f", "-", stdin=HOSTPATH_STORAGE_CLASS)),
            workdir=workdir,
        )
    if fake_nodes:
        start_kwok(state, bins, workdir, fake_nodes, tainted=real_node)
    wait_for(
        "default ServiceAccount",
        lambda: bool(kubectl(bins, kubeconfig, "-n", "default", "get", "sa", "default", "-o", "name")),
        workdir=workdir,
    )
    state["ready"] = True
    save(workdir, state)
    node = f", node {localnode.NODE_NAME} ({localnode.NODE_IP})" if real_node else ""
    log(f"ready: kube-apiserver {versions()['K8S_VERSION']} on {api_server(state)}{node}, {fake_nodes} fake nodes")
    return kubeconfig


def start_control_plane(state: dict[str, Any], bins: dict[str, Path], workdir: Path) -> None:
    pki, kubeconfig, ports, host = workdir / "pki", workdir / "kubeconfig", state["ports"], state["host"]
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    log("starting etcd")
    start(
        state,
        "etcd",
        [
            str(bins["etcd"]),
            "--name=e2e",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=e2e={peer_url}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--auto-compaction-retention=1",
        ],
        workdir,
    )
    wait_for("etcd", lambda: http_ok(f"{etcd_url}/health"), workdir=workdir)
    log("starting kube-apiserver")
    kubelet_client = (
        [
            f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP",
        ]
        if state["real_node"]
        else []
    )
    start(
        state,
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            # The advertised address is the `kubernetes` Service's endpoint: with a real node it must be one
            # pods can reach (the node IP), not loopback.
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki}/apiserver.crt",
            f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            f"--service-cluster-ip-range={localnode.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            "--enable-priority-and-fairness=false",
            *kubelet_client,
        ],
        workdir,
    )
    wait_for(
        "kube-apiserver /readyz",
        lambda: http_ok(f"{api_server(state)}/readyz", pki / "ca.crt"),
        workdir=workdir,
    )
    common = [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--leader-elect=false",
    ]
    log("starting kube-controller-manager, kube-scheduler")
    start(
        state,
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            *common,
            f"--secure-port={ports['kcm']}",
            f"--root-ca-file={pki}/ca.crt",
            f"--service-account-private-key-file={pki}/sa.key",
            "--use-service-account-credentials=true",
            "--controllers=*",
            "--node-monitor-grace-period=40s",
            # Dynamic hostPath volumes (development only) so PersistentVolumeClaims bind, as on kind.
            "--enable-hostpath-provisioner=true",
            # Signs CertificateSigningRequests (kubelet serving certificates, tests of CSR flows).
            f"--cluster-signing-cert-file={pki}/ca.crt",
            f"--cluster-signing-key-file={pki}/ca.key",
        ],
        workdir,
    )
    start(
        state,
        "kube-scheduler",
        [str(bins["kube-scheduler"]), *common, f"--secure-port={ports['scheduler']}"],
        workdir,
    )


def start_node(state: dict[str, Any], bins: dict[str, Path], workdir: Path) -> None:
    """containerd, the images, kubelet, kube-proxy; then the cluster add-ons: CoreDNS and the StorageClass."""
    kubeconfig, pki = workdir / "kubeconfig", workdir / "pki"
    for directory in ("containerd", "cni/net.d", "kubelet", "pod-logs", "volumes"):
        (workdir / directory).mkdir(parents=True, exist_ok=True)
    images = node_images()
    (workdir / "containerd" / "config.toml").write_text(localnode.containerd_config(workdir, images["pause"]))
    (workdir / "cni" / "net.d" / "10-bridge.conflist").write_text(localnode.cni_config(workdir))
    (workdir / "kubelet-config.yaml").write_text(localnode.kubelet_config(workdir))
    (workdir / "kube-proxy-config.yaml").write_text(localnode.kube_proxy_config(workdir))
    write_kubeconfig(workdir / "kubelet.kubeconfig", pki, api_server(state), user="kubelet")
    write_kubeconfig(workdir / "kube-proxy.kubeconfig", pki, api_server(state), user="kube-proxy")
    log("starting containerd")
    # containerd finds the shim on PATH; the CNI plugins call iptables from /usr/sbin.
    path = f"{bins['containerd'].parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    start(
        state,
        "containerd",
        [str(bins["containerd"]), "--config", str(workdir / "containerd" / "config.toml")],
        workdir,
        env={"PATH": path},
    )
    wait_for("containerd", lambda: ctr(bins, workdir, "version") is not None, workdir=workdir)
    load_images(bins, workdir, image_manifest_entries(state["node_images_only"]))
    log("starting kubelet, kube-proxy")
    start(
        state,
        "kubelet",
        [
            str(bins["kubelet"]),
            f"--config={workdir / 'kubelet-config.yaml'}",
            f"--kubeconfig={workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={workdir / 'kubelet'}",
            f"--cert-dir={workdir / 'kubelet' / 'pki'}",
            f"--hostname-override={localnode.NODE_NAME}",
            f"--node-ip={localnode.NODE_IP}",
            "--v=1",
        ],
        workdir,
        env={"PATH": path},
    )
    start(
        state,
        "kube-proxy",
        [str(bins["kube-proxy"]), f"--config={workdir / 'kube-proxy-config.yaml'}", "--v=1"],
        workdir,
        env={"PATH": path},
    )
    start(
        state,
        "provisioner",
        [sys.executable, str(Path(__file__).resolve()), "provision", "--dir", str(workdir)],
        workdir,
    )
    wait_for(f"node {localnode.NODE_NAME} Ready", lambda: node_ready(state, workdir), workdir=workdir)
    log("starting CoreDNS")
    addons = "\n---\n".join([LOCAL_PATH_STORAGE_CLASS, localnode.coredns_manifest(images["coredns"])])
    wait_for(
        "add-ons applied", lambda: bool(kubectl(bins, kubeconfig, "apply", "-f", "-", stdin=addons)), workdir=workdir
    )
    wait_for(
        "CoreDNS Available",
        lambda: bool(
            kubectl(
                bins,
                kubeconfig,
                "-n",
                "kube-system",
                "wait",
                "--for=condition=Available",
                "deployment/coredns",
                "--timeout=5s",
            )
        ),
        workdir=workdir,
    )
    start_gateway(state, bins, workdir, images["traefik"])


GATEWAY_KINDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")


def start_gateway(state: dict[str, Any], bins: dict[str, Path], workdir: Path, image: str) -> None:
    """The Gateway API CRDs (the pinned standard channel), then Traefik and the Gateway `mlflow-gateway`;
    returns once the Gateway is Programmed, i.e. Traefik serves it on 127.0.0.1:<ports.gateway>."""
    kubeconfig, ports = workdir / "kubeconfig", state["ports"]
    log(f"starting the Gateway (Traefik) on 127.0.0.1:{ports['gateway']}")
    crds = bins["gateway-api-crds"]
    kubectl(bins, kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crds))
    crds_established = [f"crd/{kind}.gateway.networking.k8s.io" for kind in GATEWAY_KINDS]
    wait_for(
        "the Gateway API CRDs Established",
        lambda: bool(
            kubectl(bins, kubeconfig, "wait", "--for=condition=Established", *crds_established, "--timeout=5s")
        ),
        workdir=workdir,
    )
    manifest = localnode.gateway_manifest(image, ports["gateway"], ports["gateway-admin"])
    wait_for(
        "Gateway applied", lambda: bool(kubectl(bins, kubeconfig, "apply", "-f", "-", stdin=manifest)), workdir=workdir
    )
    gateway = f"gateway/{localnode.GATEWAY_NAME}"
    with explained_by(lambda: gateway_diagnostics(bins, kubeconfig)):
        wait_programmed(bins, kubeconfig, gateway, workdir)


def wait_programmed(bins: dict[str, Path], kubeconfig: Path, gateway: str, workdir: Path) -> None:
    wait_for(
        f"{gateway} Programmed",
        lambda: bool(
            kubectl(
                bins,
                kubeconfig,
                "-n",
                localnode.GATEWAY_NAMESPACE,
                "wait",
                "--for=condition=Programmed",
                gateway,
                "--timeout=5s",
            )
        ),
        workdir=workdir,
    )


@contextlib.contextmanager
def explained_by(diagnostics: Callable[[], str]) -> Iterator[None]:
    """A start-up step that times out prints what explains it first: its logs are gone with the test's
    temporary directory, and a CI log is all there is."""
    try:
        yield
    except SystemExit:
        log(diagnostics())
        raise


def gateway_diagnostics(bins: dict[str, Path], kubeconfig: Path) -> str:
    namespace = ["-n", localnode.GATEWAY_NAMESPACE]
    asks = {
        "pods": ["get", "pods", "-o", "wide", *namespace],
        "gateway": ["get", "gateway", localnode.GATEWAY_NAME, "-o", "jsonpath={.status}", *namespace],
        "traefik log": ["logs", "deployment/traefik", "--tail=40", *namespace],
        "previous traefik log": ["logs", "deployment/traefik", "--previous", "--tail=40", *namespace],
    }
    parts = []
    for what, args in asks.items():
        try:
            parts.append(f"--- {what}:\n{kubectl(bins, kubeconfig, *args, '--request-timeout=10s')}")
        except subprocess.CalledProcessError as error:
            parts.append(f"--- {what}: {error.stderr.strip()}")
    return "\n".join(parts)


def gateway_url(state: dict[str, Any]) -> str | None:
    """The Gateway's address on this machine, once Traefik answers its ping; None before (or without a node)."""
    ports = state.get("ports", {})
    if "gateway" not in ports:
        return None
    try:
        up = http_ok(f"http://127.0.0.1:{ports['gateway-admin']}/ping")
    except OSError:
        up = False
    return f"http://127.0.0.1:{ports['gateway']}" if up else None


def ctr(bins: dict[str, Path], workdir: Path, *args: str) -> str | None:
    # containerd 2.x's ctr needs an absolute socket path ("invalid (non-empty) authority" otherwise).
    socket_path = (workdir / "containerd" / "containerd.sock").resolve()
    result = subprocess.run(
        [str(bins["ctr"]), "--address", str(socket_path), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def image_manifest_entries(node_only: bool) -> list[tuple[Path, str]]:
    """(archive, reference) from every manifest in $CACHE/images (hack/node-images.sh and any other image
    builder keep one each: `<archive>\t<reference>` lines), or only from the node's own."""
    entries = []
    for manifest in sorted((CACHE / "images").glob(NODE_MANIFEST if node_only else "*.tsv")):
        for line in manifest.read_text().splitlines():
            if "\t" in line:
                archive, reference = line.split("\t", 1)
                entries.append((Path(archive), reference.strip()))
    return entries


def load_images(bins: dict[str, Path], workdir: Path, entries: list[tuple[Path, str]]) -> None:
    for archive, reference in entries:
        if not archive.exists():
            log(f"skipping {reference}: {archive} is gone")
            continue
        # The archive names the image by its tag only: the base name supplies the repository.
        base_name = reference.rsplit(":", 1)[0]
        began = time.monotonic()
        if ctr(bins, workdir, "images", "import", "--base-name", base_name, str(archive)) is None:
            raise SystemExit(f"[localcluster] could not import {archive} as {reference} (logs in {workdir})")
        log(f"imported {reference} in {time.monotonic() - began:.1f} s")


def start_kwok(state: dict[str, Any], bins: dict[str, Path], workdir: Path, count: int, tainted: bool) -> None:
    kubeconfig = workdir / "kubeconfig"
    log(f"starting kwok with {count} fake nodes")
    kwok_config = workdir / "kwok.yaml"
    kwok_config.write_text(
        bins["kwok-stages"].read_text() + "\n---\napiVersion: config.kwok.x-k8s.io/v1alpha1\n"
        "kind: KwokConfiguration\noptions:\n  nodeLeaseDurationSeconds: 40\n"
        # Standalone kwok does not apply its own defaults to these: zero fails.
        "  nodeLeaseParallelism: 4\n  podPlayStageParallelism: 4\n"
        "  nodePlayStageParallelism: 4\n  podsOnNodeSyncParallelism: 1\n"
    )
    start(
        state,
        "kwok",
        [
            str(bins["kwok"]),
            f"--kubeconfig={kubeconfig}",
            f"--config={kwok_config}",
            # Only the fake nodes: the real node's kubelet must not have kwok writing its status too.
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            "--cidr=10.0.0.0/24",
            f"--server-address=127.0.0.1:{state['ports']['kwok']}",
        ],
        workdir,
    )
    objects = fake_nodes_yaml(count, tainted)
    wait_for(
        "node registration", lambda: bool(kubectl(bins, kubeconfig, "apply", "-f", "-", stdin=objects)), workdir=workdir
    )
    wait_for(
        "fake nodes Ready",
        lambda: bool(
            kubectl(bins, kubeconfig, "wait", "--for=condition=Ready", "node", "--selector=type=kwok", "--timeout=5s")
        ),
        workdir=workdir,
    )


def down(workdir: Path, quiet: bool = False) -> None:
    state_file = workdir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    pids = state.get("pids", {})
    real_node = bool(state.get("real_node")) or localnode.owner() == workdir
    if real_node:
        # Nothing may create pods while the node is drained; the kubelet then tears every pod down through
        # CRI and CNI, which releases its IP, veth and CNI rules the ordinary way.
        for name in ("kube-controller-manager", "kube-scheduler", "kwok", "provisioner"):
            stop_component(pids, name, quiet)
        if "kubelet" in pids and alive(pids["kubelet"]):  # only a running kubelet completes the deletions
            drain_node(state, workdir)
        for name in ("kube-proxy", "kubelet", "containerd"):
            stop_component(pids, name, quiet)
    for name in reversed(list(pids)):
        stop_component(pids, name, quiet)
    if real_node:
        localnode.cleanup_host(workdir, binaries()["kube-proxy"], state.get("sysctls"))
    if workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
    if real_node and not quiet:
        left = {what: items for what, items in localnode.leftovers(workdir).items() if items}
        log(f"left behind: {left}" if left else "nothing left behind")


def stop_component(pids: dict[str, int], name: str, quiet: bool) -> None:
    if name in pids:
        stop(pids.pop(name))
        if not quiet:
            log(f"stopped {name}")


def drain_node(state: dict[str, Any], workdir: Path, timeout: float = 30.0) -> None:
    """Deletes the node's pods with a 1 s grace period and waits until the kubelet has removed them."""
    if "ports" not in state or not (workdir / "kubeconfig").exists():
        return
    bins, kubeconfig = binaries(), workdir / "kubeconfig"
    on_node = f"--field-selector=spec.nodeName={localnode.NODE_NAME}"
    with contextlib.suppress(subprocess.CalledProcessError):
        kubectl(
            bins,
            kubeconfig,
            "delete",
            "pods",
            "-A",
            on_node,
            "--grace-period=1",
            "--wait=false",
            "--request-timeout=10s",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not kubectl(bins, kubeconfig, "get", "pods", "-A", on_node, "-o", "name", "--request-timeout=5s"):
                return
            time.sleep(0.5)


def stop(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def load_state(workdir: Path) -> dict[str, Any]:
    state_file = workdir / "state.json"
    if not state_file.exists():
        raise SystemExit(f"[localcluster] no cluster in {workdir}")
    return dict(json.loads(state_file.read_text()))


def restart(workdir: Path, name: str) -> None:
    """SIGKILL one component (no clean shutdown, as when it crashes) and start it again with the arguments
    it was started with; for kube-apiserver, wait until it is ready again."""
    state = load_state(workdir)
    argv = state.get("argv", {}).get(name)
    if argv is None:
        raise SystemExit(f"[localcluster] no recorded command line for {name!r} in {workdir}")
    pid = state["pids"][name]
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGCONT)  # a paused process must not keep its port
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    ports = state["ports"]
    port = {"kube-apiserver": ports["apiserver"], "etcd": ports["etcd"]}.get(name)
    host = state.get("host", "127.0.0.1") if name == "kube-apiserver" else "127.0.0.1"
    checks = {
        "kube-apiserver": lambda: http_ok(f"{api_server(state)}/readyz", workdir / "pki" / "ca.crt"),
        "etcd": lambda: http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
    }
    # Clients retrying against a dead loopback port can briefly hold it (a TCP self-connect): the new
    # process then fails to bind. Start it again until it stays up, within the start-up timeout.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if port is not None:
            wait_for(f"port {port} free", lambda: port_free(port, host), timeout=60, workdir=workdir)
        start(state, name, argv, workdir, env=state.get("env", {}).get(name))
        if name not in checks:
            break
        new_pid = state["pids"][name]
        while time.monotonic() < deadline and alive(new_pid):
            with contextlib.suppress(Exception):
                if checks[name]():
                    break
            time.sleep(0.5)
        else:
            if time.monotonic() >= deadline:
                raise SystemExit(f"[localcluster] {name} not ready after restart (logs in {workdir})")
            log(f"{name} exited right after its restart; starting it again")
            continue
        break
    log(f"restarted {name} (pid {state['pids'][name]})")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def signal_component(workdir: Path, name: str, sig: signal.Signals) -> None:
    """SIGSTOP or SIGCONT one component: a paused etcd is a hung (not a dead) dependency."""
    pid = load_state(workdir)["pids"][name]
    os.kill(pid, sig)
    log(f"sent {sig.name} to {name} (pid {pid})")


# ------------------------------------------------------------------------------------------------ local-path volumes
# kube-controller-manager's hostPath provisioner makes root-owned 0750 directories, which the non-root pods a
# restricted namespace runs (Postgres as uid 999, say) cannot write. This one makes 0777 directories under
# the state directory, as local-path provisioners do (the pod's uid is unknown up front), and pre-binds a PV
# to each pending claim of the class; the PV controller completes the binding.

LOCAL_PATH_LABEL = "localcluster.mlflow-operator.dev/local-path"


def claims_to_provision(claims: list[dict[str, Any]], provisioned: set[str]) -> list[dict[str, Any]]:
    return [
        c
        for c in claims
        if c["spec"].get("storageClassName") == "standard"
        and not c["spec"].get("volumeName")
        and c.get("status", {}).get("phase") == "Pending"
        and volume_name(c) not in provisioned
    ]


def volume_name(claim: dict[str, Any]) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def volume_for(claim: dict[str, Any], path: Path) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(claim),
            "labels": {LOCAL_PATH_LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PATH_PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": str(path), "type": "Directory"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [localnode.NODE_NAME]}
                            ]
                        }
                    ]
                }
            },
        },
    }


def volumes_to_delete(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in volumes if v.get("status", {}).get("phase") in ("Released", "Failed")]


def api_send(state: dict[str, Any], workdir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    pki = workdir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api_server(state)}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10, context=context):
        pass


def provision_once(state: dict[str, Any], workdir: Path) -> None:
    volumes = api_get(state, workdir, f"/api/v1/persistentvolumes?labelSelector={LOCAL_PATH_LABEL}%3Dtrue")["items"]
    for claim in claims_to_provision(api_get(state, workdir, "/api/v1/persistentvolumeclaims")["items"],
                                     {v["metadata"]["name"] for v in volumes}):  # fmt: skip
        path = workdir / "volumes" / volume_name(claim)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # after mkdir: the umask would narrow mkdir's mode
        api_send(state, workdir, "POST", "/api/v1/persistentvolumes", volume_for(claim, path))
        log(f"provisioned {path} for {claim['metadata']['namespace']}/{claim['metadata']['name']}")
    for volume in volumes_to_delete(volumes):
        shutil.rmtree(volume["spec"]["hostPath"]["path"], ignore_errors=True)
        api_send(state, workdir, "DELETE", f"/api/v1/persistentvolumes/{volume['metadata']['name']}")
        log(f"deleted {volume['metadata']['name']}")


def provision_forever(workdir: Path, interval: float = 1.0) -> None:
    state = load_state(workdir)
    while True:
        try:
            provision_once(state, workdir)
        except Exception as error:  # the API server restarting, a claim deleted meanwhile: next round
            log(f"provisioner: {error}")
        time.sleep(interval)


def load_images_command(workdir: Path, images: list[str]) -> None:
    """The given `archive=reference` pairs, or else every archive the cluster imported at `up`."""
    state = load_state(workdir)
    if not state.get("real_node"):
        raise SystemExit(f"[localcluster] the cluster in {workdir} has no real node")
    pairs = [image.split("=", 1) for image in images]
    entries = [(Path(archive), reference) for archive, reference in pairs]
    load_images(binaries(), workdir, entries or image_manifest_entries(state.get("node_images_only", False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "command", choices=["up", "down", "env", "load-images", "restart", "pause", "resume", "provision"]
    )
    parser.add_argument("component", nargs="?", help="restart/pause/resume: etcd, kube-apiserver, ...")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    parser.add_argument(
        "--fake-nodes",
        "--nodes",
        dest="fake_nodes",
        type=int,
        default=None,
        help="kwok nodes to create (default: 0 beside a real node, 3 without)",
    )
    parser.add_argument(
        "--no-real-node", dest="real_node", action="store_false", help="no real node: only kwok nodes, on loopback"
    )
    # Every listed image is imported at each `up` (containerd's store lives in the state directory, which
    # `down` removes): ~25 s per 300 MB archive here. Without the application images up/down take seconds.
    parser.add_argument(
        "--node-images-only",
        action="store_true",
        help=f"import only $CACHE/images/{NODE_MANIFEST} (pause, CoreDNS, test images), not other builders' lists",
    )
    parser.add_argument(
        "--image", action="append", default=[], metavar="ARCHIVE=REFERENCE", help="load-images: only this archive"
    )
    args = parser.parse_args()
    workdir = args.dir.resolve()
    if args.command == "up":
        print(up(workdir, args.fake_nodes, args.real_node, args.node_images_only))
    elif args.command == "down":
        down(workdir)
    elif args.command == "load-images":
        load_images_command(workdir, args.image)
    elif args.command == "provision":
        provision_forever(workdir)
    elif args.command in ("restart", "pause", "resume"):
        if not args.component:
            parser.error(f"{args.command} needs a component name")
        if args.command == "restart":
            restart(workdir, args.component)
        else:
            signal_component(workdir, args.component, signal.SIGSTOP if args.command == "pause" else signal.SIGCONT)
    else:
        for name, path in binaries().items():
            print(f"{name}={path}")
        state = running(workdir)
        url = gateway_url(state) if state else None
        if url:
            print(f"gateway={url}")


if __name__ == "__main__":
    main()
