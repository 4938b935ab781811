#!/usr/bin/env python3
"""A real Kubernetes control plane as local processes on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and kwok for fake nodes whose pods become Ready.

    localcluster.py up [--dir DIR] [--nodes N]   # idempotent; prints the kubeconfig path last
    localcluster.py down [--dir DIR]             # stops every process it started, deletes the state
    localcluster.py env                          # prints the paths of the cached binaries
    localcluster.py restart NAME [--dir DIR]     # SIGKILL one component, start it with the same argv
    localcluster.py pause|resume NAME [--dir DIR] # SIGSTOP / SIGCONT one component (e.g. etcd)

No container engine is needed. Binaries come from hack/build-binaries.sh (built once, cached by
version). Pod and Service IPs are fake: only the API server is reached over the network.
Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HACK = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MLFLOW_OPERATOR_CACHE", Path.home() / ".cache" / "mlflow-operator"))
DEFAULT_DIR = CACHE / "cluster"
STARTUP_TIMEOUT = 180.0


def versions() -> dict[str, str]:
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def binaries() -> dict[str, Path]:
    pins = versions()
    k8s = CACHE / "bin" / f"kubernetes-{pins['K8S_VERSION']}"
    kwok = CACHE / "bin" / f"kwok-{pins['KWOK_VERSION']}"
    return {
        "etcd": CACHE / "bin" / f"etcd-{pins['ETCD_VERSION']}" / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kube-controller-manager": k8s / "kube-controller-manager",
        "kube-scheduler": k8s / "kube-scheduler",
        "kubectl": k8s / "kubectl",
        "kwok": kwok / "kwok",
        "kwok-stages": kwok / "stages.yaml",
    }


def ensure_binaries() -> dict[str, Path]:
    bins = binaries()
    if not all(path.exists() for path in bins.values()):
        subprocess.run([str(HACK / "build-binaries.sh"), "all"], check=True)
    return bins


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
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
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    certs = {
        "apiserver": ("/CN=kube-apiserver", [sans, "extendedKeyUsage=serverAuth"]),
        "admin": ("/O=system:masters/CN=e2e-admin", ["extendedKeyUsage=clientAuth"]),
    }
    for name, (subject, extensions) in certs.items():
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
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, pki: Path, port: int) -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: mlflow-operator-local
  cluster: {{server: "https://127.0.0.1:{port}", certificate-authority: "{pki}/ca.crt"}}
users:
- name: admin
  user: {{client-certificate: "{pki}/admin.crt", client-key: "{pki}/admin.key"}}
contexts:
- name: mlflow-operator-local
  context: {{cluster: mlflow-operator-local, user: admin}}
current-context: mlflow-operator-local
""")


def start(state: dict, name: str, argv: list[str], workdir: Path) -> None:
    logfile = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        argv,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=workdir,
    )
    state["pids"][name] = proc.pid
    state.setdefault("argv", {})[name] = argv  # for `restart`: the same arguments again
    (workdir / "state.json").write_text(json.dumps(state, indent=2))


def wait_for(what: str, check, timeout: float = STARTUP_TIMEOUT, workdir: Path | None = None) -> None:
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


def running(workdir: Path) -> dict | None:
    state_file = workdir / "state.json"
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    if not state.get("ready") or not all(alive(pid) for pid in state["pids"].values()):
        return None
    try:
        http_ok(f"https://127.0.0.1:{state['ports']['apiserver']}/readyz", workdir / "pki" / "ca.crt")
    except Exception:
        return None
    return state


# The default StorageClass, served by kube-controller-manager's hostPath provisioner.
STORAGE_CLASS = """apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
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
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake}}
"""


def up(workdir: Path, nodes: int) -> Path:
    kubeconfig = workdir / "kubeconfig"
    if running(workdir):
        log(f"already running in {workdir}")
        return kubeconfig
    down(workdir, quiet=True)
    bins = ensure_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    make_pki(pki)
    ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
    state: dict = {"ports": ports, "pids": {}, "ready": False}
    write_kubeconfig(kubeconfig, pki, ports["apiserver"])
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
    start(
        state,
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki}/apiserver.crt",
            f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            "--enable-priority-and-fairness=false",
        ],
        workdir,
    )
    wait_for(
        "kube-apiserver /readyz",
        lambda: http_ok(f"https://127.0.0.1:{ports['apiserver']}/readyz", pki / "ca.crt"),
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
    log("starting kube-controller-manager, kube-scheduler, kwok")
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
        ],
        workdir,
    )
    start(
        state,
        "kube-scheduler",
        [str(bins["kube-scheduler"]), *common, f"--secure-port={ports['scheduler']}"],
        workdir,
    )
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
            "--manage-all-nodes=true",
            "--node-ip=127.0.0.1",
            "--cidr=10.0.0.0/24",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ],
        workdir,
    )
    nodes_yaml = "\n---\n".join(
        [STORAGE_CLASS, *(NODE_TEMPLATE.format(name=f"kwok-node-{i}", zone=i % 3) for i in range(nodes))]
    )
    wait_for(
        "node registration",
        lambda: bool(kubectl(bins, kubeconfig, "apply", "-f", "-", stdin=nodes_yaml)),
        workdir=workdir,
    )
    wait_for(
        "nodes Ready",
        lambda: bool(kubectl(bins, kubeconfig, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s")),
        workdir=workdir,
    )
    wait_for(
        "default ServiceAccount",
        lambda: bool(kubectl(bins, kubeconfig, "-n", "default", "get", "sa", "default", "-o", "name")),
        workdir=workdir,
    )
    state["ready"] = True
    (workdir / "state.json").write_text(json.dumps(state, indent=2))
    log(f"ready: kube-apiserver {versions()['K8S_VERSION']} on https://127.0.0.1:{ports['apiserver']}")
    return kubeconfig


def down(workdir: Path, quiet: bool = False) -> None:
    state_file = workdir / "state.json"
    if state_file.exists():
        pids = json.loads(state_file.read_text()).get("pids", {})
        for name in reversed(list(pids)):
            stop(pids[name])
            if not quiet:
                log(f"stopped {name}")
    if workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)


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


def load_state(workdir: Path) -> dict:
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
    checks = {
        "kube-apiserver": lambda: http_ok(f"https://127.0.0.1:{ports['apiserver']}/readyz", workdir / "pki" / "ca.crt"),
        "etcd": lambda: http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
    }
    # Clients retrying against a dead loopback port can briefly hold it (a TCP self-connect): the new
    # process then fails to bind. Start it again until it stays up, within the start-up timeout.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if port is not None:
            wait_for(f"port {port} free", lambda: port_free(port), timeout=60, workdir=workdir)
        start(state, name, argv, workdir)
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


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def signal_component(workdir: Path, name: str, sig: signal.Signals) -> None:
    """SIGSTOP or SIGCONT one component: a paused etcd is a hung (not a dead) dependency."""
    pid = load_state(workdir)["pids"][name]
    os.kill(pid, sig)
    log(f"sent {sig.name} to {name} (pid {pid})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env", "restart", "pause", "resume"])
    parser.add_argument("component", nargs="?", help="restart/pause/resume: etcd, kube-apiserver, ...")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    parser.add_argument("--nodes", type=int, default=3, help="fake nodes to create")
    args = parser.parse_args()
    workdir = args.dir.resolve()
    if args.command == "up":
        print(up(workdir, args.nodes))
    elif args.command == "down":
        down(workdir)
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


if __name__ == "__main__":
    main()
