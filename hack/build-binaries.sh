#!/usr/bin/env bash
# Builds, once, the pinned control-plane binaries from the Go module proxy and caches them outside the
# repo, keyed by version, so a fresh clone (and CI) reuses them:
#   $CACHE/bin/kubernetes-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $CACHE/bin/etcd-<v>/etcd
#   $CACHE/bin/kwok-<v>/kwok   (+ stages.yaml taken from the module's kustomize/stage)
#   $CACHE/bin/minio-<v>/minio (the S3 server of the lifecycle integration tests)
#   $CACHE/bin/gateway-api-<v>/*.yaml (the standard-channel Gateway API CRDs, for the ModelDeployment e2e)
#   $CACHE/bin/helm-<v>/helm   (renders and installs charts/mlflow-operator)
#   $CACHE/bin/kubeconform-<v>/kubeconform (validates rendered manifests; schemas: hack/kubeconform-schemas.py)
#   $CACHE/bin/actionlint-<v>/actionlint (lints .github/workflows in make check)
#   $CACHE/bin/argocd-<v>/argocd (evaluates docs/argocd's health checks as Argo CD does)
# The real node of hack/localcluster.py:
#   $CACHE/bin/kubernetes-node-<v>/{kubelet,kube-proxy}   (at K8S_VERSION, its own entry: see build_node)
#   $CACHE/bin/containerd-<v>/{containerd,containerd-shim-runc-v2,ctr}
#   $CACHE/bin/coredns-<v>/coredns                         (11 plugins: see build_coredns)
#   $CACHE/bin/pause-<v>/pause                             (static C, packed as an image by hack/node-images.sh)
#   $CACHE/bin/traefik-<v>/traefik                         (the local cluster's Gateway API implementation)
# Usage: hack/build-binaries.sh [kubernetes|node|etcd|kwok|minio|gateway-api|helm|kubeconform|actionlint|containerd|coredns|pause|traefik|argocd|all]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${MLFLOW_OPERATOR_CACHE:-$HOME/.cache/mlflow-operator}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GONOSUMDB=${GONOSUMDB:-k8s.io,sigs.k8s.io,go.etcd.io}

log() { echo "[build-binaries] $*" >&2; }

# The machine running this is usually shared (2 cores, tests running): builds yield the CPU to everything else.
renice -n 19 -p $$ >/dev/null

# One build per cache entry at a time: two concurrent builds into the same entry would clobber each other,
# but a containerd build need not wait for another checkout's 20-minute Kubernetes build.
mkdir -p "$CACHE/bin"
locked() {
  local entry=$1; shift
  ( flock 9; "$@" ) 9>"$CACHE/bin/.lock-$entry"
}

# A cache entry is built in $out.tmp and then moved into place, so an interrupted build never leaves a
# half-filled entry that a later run would take as cached.
publish() { rm -rf "$1"; mv "$1.tmp" "$1"; }

# The wrapper module (in the current directory) through which a module with replace directives is built:
# `go install pkg@v` refuses such a module, but a dependency's replaces are ignored.
init_wrapper_module() {
  go mod init "local/${1}build" >/dev/null 2>&1
  go mod edit -go=1.26.0
}

# A tool whose go.mod has no replace directives, so a plain `go install pkg@version` works, with its version
# stamped into main.version. Usage: build_stamped_go_tool NAME VERSION PACKAGE VERSION-FLAG...
build_stamped_go_tool() {
  local name=$1 version=$2 pkg=$3 out="$CACHE/bin/$1-$2"
  if [ -x "$out/$name" ]; then log "cached: $out"; return; fi
  log "building $name $version"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X main.version=${version}" "${pkg}@${version}"
  publish "$out"
  "$out/$name" "${@:4}" >&2
}

# Builds k8s.io/kubernetes commands through a wrapper module: k8s.io/kubernetes requires its staging modules
# at v0.0.0 with local replaces, which `go install pkg@v` refuses. Every command built this way shares the
# GOCACHE, so the node's kubelet/kube-proxy after the control plane only compile what differs.
build_k8s_commands() {
  local out=$1; shift
  local cmds="$*" staging_version="v0.${K8S_VERSION#v1.}" minor work kgomod staging ldf
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    init_wrapper_module k8s
    kgomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    # Pin each staging module to v0.Y.Z.
    staging=$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\2#p' "$kgomod" | sort -u)
    log "staging modules: $(echo "$staging" | wc -w)"
    for m in $staging; do go mod edit -replace="${m}=${m}@${staging_version}"; done
    go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
    # shellcheck disable=SC2046
    go get $(for c in $cmds; do echo "k8s.io/kubernetes/cmd/$c@${K8S_VERSION}"; done)
    # Version stamping as hack/lib/version.sh does, so kubectl/clients see a real version.
    ldf="-s -w"
    for kv in "gitVersion=${K8S_VERSION}" "gitMajor=1" "gitMinor=${minor}" "gitTreeState=clean" \
              "buildDate=2026-01-01T00:00:00Z"; do
      ldf="$ldf -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
    done
    mkdir -p "$out.tmp"
    # shellcheck disable=SC2046
    go build -p 2 -trimpath -ldflags "$ldf" -o "$out.tmp/" $(for c in $cmds; do echo "k8s.io/kubernetes/cmd/$c"; done)
  )
  publish "$out"
}

build_kubernetes() {
  local out="$CACHE/bin/kubernetes-$K8S_VERSION"
  if [ -x "$out/kubectl" ] && [ -x "$out/kube-apiserver" ]; then log "cached: $out"; return; fi
  log "building Kubernetes $K8S_VERSION (cold: 15-30 min on 2 cores)"
  build_k8s_commands "$out" kube-apiserver kube-controller-manager kube-scheduler kubectl
  "$out/kube-apiserver" --version >&2
}

# kubelet and kube-proxy get their own entry rather than joining kubernetes-<v>: adding them there would
# invalidate every existing control-plane cache entry, and kwok-only users never need them.
build_node() {
  local out="$CACHE/bin/kubernetes-node-$K8S_VERSION"
  if [ -x "$out/kubelet" ] && [ -x "$out/kube-proxy" ]; then log "cached: $out"; return; fi
  log "building kubelet + kube-proxy $K8S_VERSION (cold: ~7 min on 2 cores, ~5 after the control plane)"
  build_k8s_commands "$out" kubelet kube-proxy
  "$out/kubelet" --version >&2
}

build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION" work
  if [ -x "$out/etcd" ]; then log "cached: $out"; return; fi
  log "building etcd $ETCD_VERSION"
  # server/go.mod has replace directives, so `go install pkg@v` refuses it; a wrapper module works
  # because a dependency's replaces are ignored and its requires are real versions.
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    init_wrapper_module etcd
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  publish "$out"
  "$out/etcd" --version >&2
}

build_kwok() {
  local out="$CACHE/bin/kwok-$KWOK_VERSION"
  if [ -x "$out/kwok" ] && [ -s "$out/stages.yaml" ]; then log "cached: $out"; return; fi
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  local stages
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@${KWOK_VERSION}/kustomize/stage"
  # The standalone kwok binary has no built-in stages: ship the upstream ones it needs.
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$stages/$f"; echo '---'
  done > "$out.tmp/stages.yaml"
  publish "$out"
}

build_minio() {
  local out="$CACHE/bin/minio-$MINIO_VERSION"
  if [ -x "$out/minio" ]; then log "cached: $out"; return; fi
  log "building MinIO $MINIO_VERSION (cold: 5-15 min on 2 cores)"
  mkdir -p "$out.tmp"
  # go.mod has no replace directives, so a plain `go install pkg@version` works.
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@${MINIO_VERSION}"
  publish "$out"
  "$out/minio" --version >&2
}

build_gateway_api() {
  local out="$CACHE/bin/gateway-api-$GATEWAY_API_VERSION" dir
  if [ -s "$out/gateway.networking.k8s.io_httproutes.yaml" ]; then log "cached: $out"; return; fi
  log "fetching the Gateway API $GATEWAY_API_VERSION CRDs"
  # Not a build: the module ships the CRDs as YAML (config/crd/standard), the same files as its releases.
  dir=$(go mod download -json "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  mkdir -p "$out.tmp"
  cp "$dir"/config/crd/standard/*.yaml "$out.tmp/"
  chmod u+w "$out.tmp"/*.yaml
  publish "$out"
}

build_helm() {
  local out="$CACHE/bin/helm-$HELM_VERSION" gomod client_go minor ldf
  if [ -x "$out/helm" ]; then log "cached: $out"; return; fi
  log "building helm $HELM_VERSION (cold: 2-5 min on 2 cores)"
  # Stamped as helm's Makefile does: the version, and the default Kubernetes version of `helm template`
  # (.Capabilities.KubeVersion, checked against Chart.yaml's kubeVersion) derived from its client-go
  # v0.Y.Z -> 1.Y; unstamped, helm assumes Kubernetes v1.20.
  gomod=$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  client_go=$(sed -n 's#^[[:space:]]*k8s\.io/client-go[[:space:]]\{1,\}\(v[0-9.]*\).*#\1#p' "$gomod" | head -1)
  minor=$(echo "$client_go" | cut -d. -f2)
  ldf="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldf="$ldf -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
  done
  mkdir -p "$out.tmp"
  # helm's go.mod has no replace directives (checked for v3.22.0), so a plain `go install pkg@version` works;
  # should a later version add some, build through a wrapper module as build_etcd does.
  GOBIN="$out.tmp" go install -trimpath -ldflags "$ldf" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  publish "$out"
  "$out/helm" version --short >&2
}

build_kubeconform() {
  build_stamped_go_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform -v
}

build_actionlint() {
  build_stamped_go_tool actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint -version
}

build_containerd() {
  local out="$CACHE/bin/containerd-$CONTAINERD_VERSION" ldf
  if [ -x "$out/containerd" ] && [ -x "$out/containerd-shim-runc-v2" ] && [ -x "$out/ctr" ]; then
    log "cached: $out"; return
  fi
  log "building containerd $CONTAINERD_VERSION (cold: ~3 min on 2 cores)"
  mkdir -p "$out.tmp"
  # The version stamp is what the CRI reports: the node shows containerRuntimeVersion containerd://2.4.2.
  ldf="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
  ldf="$ldf -X github.com/containerd/containerd/v2/version.Revision=goproxy"
  # go.mod has no replace directives, so a plain `go install pkg@version` works. The snapshotters left
  # out need cgo or kernel features the node does not use (it runs overlayfs).
  GOBIN="$out.tmp" go install -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ldf" \
    "github.com/containerd/containerd/v2/cmd/containerd@${CONTAINERD_VERSION}" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@${CONTAINERD_VERSION}" \
    "github.com/containerd/containerd/v2/cmd/ctr@${CONTAINERD_VERSION}"
  publish "$out"
  "$out/containerd" --version >&2
}

# CoreDNS's own main imports core/plugin, i.e. every plugin, with the route53/azure/clouddns SDKs: a wrapper
# main with only what cluster DNS uses builds in a third of the time. dnsserver.Directives is the plugin
# order, that of upstream's plugin.cfg restricted to these plugins.
COREDNS_PLUGINS="reload ready health errors log loadbalance cache hosts kubernetes loop forward"
build_coredns() {
  local out="$CACHE/bin/coredns-$COREDNS_VERSION" work p
  if [ -x "$out/coredns" ]; then log "cached: $out"; return; fi
  log "building CoreDNS $COREDNS_VERSION (cold: ~2 min on 2 cores)"
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    init_wrapper_module coredns
    {
      echo 'package main'
      echo 'import ('
      echo '	"github.com/coredns/coredns/core/dnsserver"'
      echo '	"github.com/coredns/coredns/coremain"'
      for p in $COREDNS_PLUGINS; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
      echo ')'
      printf 'func init() { dnsserver.Directives = []string{'
      for p in $COREDNS_PLUGINS; do printf '"%s", ' "$p"; done
      echo '} }'
      echo 'func main() { coremain.Run() }'
    } > main.go
    gofmt -w main.go
    go get "github.com/coredns/coredns@${COREDNS_VERSION}"
    go mod tidy
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/coredns" .
  )
  publish "$out"
  "$out/coredns" -version >&2
}

# The sandbox ("pause") process, from the pause.c that ships in the k8s.io/kubernetes module, compiled as
# upstream's Makefile does. A C file, so no Go module: the whole upstream image is this one static binary.
build_pause() {
  local out="$CACHE/bin/pause-$PAUSE_VERSION" src
  if [ -x "$out/pause" ]; then log "cached: $out"; return; fi
  log "building pause $PAUSE_VERSION"
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@${K8S_VERSION}/build/pause/linux/pause.c"
  [ -f "$src" ] || go mod download "k8s.io/kubernetes@${K8S_VERSION}"
  mkdir -p "$out.tmp"
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}-goproxy" -o "$out.tmp/pause" "$src"
  strip "$out.tmp/pause"
  publish "$out"
  "$out/pause" -v >&2
}

# Applies a module's replace/exclude lines to the wrapper module in the current directory: Go ignores a
# dependency's own, and modules such as Traefik and Argo CD build only with them. A replace by a local path
# (not in the module zip) is refused unless named as OLD=./DIR (the wrapper provides DIR and requires OLD).
copy_module_edits() {
  local gomod edits
  gomod=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  edits=$(go mod edit -json "$gomod" | LOCAL_REPLACES="${*:2}" python3 -c '
import json, os, sys
local = dict(item.split("=", 1) for item in os.environ["LOCAL_REPLACES"].split())
m = json.load(sys.stdin)
for r in m.get("Replace") or []:
    o, n = r["Old"], r["New"]
    if n.get("Version"):
        print("-replace=%s=%s@%s" % (o["Path"], n["Path"], n["Version"]))
    elif o["Path"] in local:
        print("-replace=%s=%s" % (o["Path"], local[o["Path"]]))
        print("-require=%s@v0.0.0-00010101000000-000000000000" % o["Path"])
    else:
        sys.exit("%s is replaced by the local path %s: not buildable from the module proxy" % (o["Path"], n["Path"]))
for e in m.get("Exclude") or []:
    print("-exclude=%s@%s" % (e["Path"], e["Version"]))
')
  # shellcheck disable=SC2086
  go mod edit $edits
}

# Traefik's go.mod has replace directives (so `go install pkg@v` refuses it) and, from v3.7, one points at a
# nested module (github.com/traefik/traefik/dynamic/ext -> ./pkg/config/dynamic/ext) that is neither in the
# module zip nor on the proxy; a wrapper module copies the replace/exclude lines (a dependency's are ignored)
# and supplies that nested module as upstream's open-source stub (three empty extension types). The web UI is
# not embedded (the module ships only a placeholder): routing does not need it.
build_traefik() {
  local out="$CACHE/bin/traefik-$TRAEFIK_VERSION" work
  if [ -x "$out/traefik" ]; then log "cached: $out"; return; fi
  log "building Traefik $TRAEFIK_VERSION (cold: ~7 min on 2 cores, 3 GB peak memory)"
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    mkdir ext
    printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' > ext/go.mod
    cat > ext/ext.go <<'GO'
package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}

// RouterIng is a RouterIng extension for ingress provider annotations.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router { return Router{} }
GO
    init_wrapper_module traefik
    copy_module_edits "github.com/traefik/traefik/v3@${TRAEFIK_VERSION}" github.com/traefik/traefik/dynamic/ext=./ext
    go get "github.com/traefik/traefik/v3/cmd/traefik@${TRAEFIK_VERSION}"
    mkdir -p "$out.tmp"
    # One package at a time: in parallel the link steps of this 180 MB binary peak above 6 GB.
    go build -p 1 -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION}" \
      -o "$out.tmp/traefik" github.com/traefik/traefik/v3/cmd/traefik
  )
  publish "$out"
  "$out/traefik" version >&2
}

# The Argo CD CLI, to evaluate docs/argocd's health checks with Argo CD's own code (`argocd admin settings
# resource-overrides health`). Its go.mod replaces modules (so `go install pkg@v` refuses it): a wrapper module
# copies the versioned replace/exclude lines, as build_traefik does. From v3.3 on, go.mod replaces gitops-engine
# with a nested module (./gitops-engine) that is neither in the module zip nor on the proxy (v3.4+ require
# github.com/argoproj/argo-cd/gitops-engine, which the proxy refuses with 403), so such a version is refused
# here rather than built against another gitops-engine; v3.2 requires a published gitops-engine
# pseudo-version, so the binary is upstream's release source. One binary serves every Argo CD command,
# chosen by argv[0]: installed as `argocd`, it is the CLI.
build_argocd() {
  local out="$CACHE/bin/argocd-$ARGOCD_VERSION" work ldf client_go
  if [ -x "$out/argocd" ]; then log "cached: $out"; return; fi
  log "building the Argo CD CLI $ARGOCD_VERSION (cold: ~5 min on 2 cores, 2 GB peak, a 142 MiB binary)"
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    init_wrapper_module argocd
    copy_module_edits "github.com/argoproj/argo-cd/v3@${ARGOCD_VERSION}"
    go get "github.com/argoproj/argo-cd/v3/cmd@${ARGOCD_VERSION}"
    # Stamped as upstream's Makefile does (`argocd version --client` shows it).
    client_go=$(go list -m k8s.io/client-go | awk '{print $NF}')
    ldf="-s -w"
    for kv in "version=${ARGOCD_VERSION#v}" "gitTag=${ARGOCD_VERSION}" "gitTreeState=clean" "gitCommit=goproxy" \
              "buildDate=2026-01-01T00:00:00Z" "kubectlVersion=${client_go}"; do
      ldf="$ldf -X github.com/argoproj/argo-cd/v3/common.$kv"
    done
    mkdir -p "$out.tmp"
    go build -p 2 -trimpath -ldflags "$ldf" -o "$out.tmp/argocd" github.com/argoproj/argo-cd/v3/cmd
  )
  publish "$out"
  "$out/argocd" version --client --short >&2
}

build() {
  case "$1" in
    kubernetes) locked kubernetes build_kubernetes ;;
    node) locked kubernetes-node build_node ;;
    etcd) locked etcd build_etcd ;;
    kwok) locked kwok build_kwok ;;
    minio) locked minio build_minio ;;
    gateway-api) locked gateway-api build_gateway_api ;;
    helm) locked helm build_helm ;;
    kubeconform) locked kubeconform build_kubeconform ;;
    actionlint) locked actionlint build_actionlint ;;
    containerd) locked containerd build_containerd ;;
    coredns) locked coredns build_coredns ;;
    pause) locked pause build_pause ;;
    traefik) locked traefik build_traefik ;;
    argocd) locked argocd build_argocd ;;
    *) echo "usage: $0 [kubernetes|node|etcd|kwok|minio|gateway-api|helm|kubeconform|actionlint|containerd|coredns|pause|traefik|argocd|all]" >&2
       exit 2 ;;
  esac
}

case "${1:-all}" in
  # The node's binaries after the control plane's: kubelet/kube-proxy then reuse the GOCACHE it filled.
  all) for target in etcd kwok kubernetes minio gateway-api helm kubeconform actionlint node containerd coredns pause traefik argocd; do
         build "$target"
       done ;;
  *) build "$1" ;;
esac
