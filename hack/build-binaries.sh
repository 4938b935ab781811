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
# Usage: hack/build-binaries.sh [kubernetes|etcd|kwok|minio|gateway-api|helm|kubeconform|all]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${MLFLOW_OPERATOR_CACHE:-$HOME/.cache/mlflow-operator}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GONOSUMDB=${GONOSUMDB:-k8s.io,sigs.k8s.io,go.etcd.io}

log() { echo "[build-binaries] $*" >&2; }

# One build at a time: two concurrent builds into the same cache entry would clobber each other.
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.lock"
flock 9

build_kubernetes() {
  local out="$CACHE/bin/kubernetes-$K8S_VERSION"
  if [ -x "$out/kubectl" ] && [ -x "$out/kube-apiserver" ]; then log "cached: $out"; return; fi
  local staging_version="v0.${K8S_VERSION#v1.}" minor work kgomod staging ldf
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  log "building Kubernetes $K8S_VERSION (cold: 15-30 min on 2 cores)"
  (
    cd "$work"
    go mod init local/k8sbuild >/dev/null 2>&1
    go mod edit -go=1.26.0
    kgomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    # k8s.io/kubernetes requires its staging modules at v0.0.0 with local replaces: pin each to v0.Y.Z.
    staging=$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\2#p' "$kgomod" | sort -u)
    log "staging modules: $(echo "$staging" | wc -w)"
    for m in $staging; do go mod edit -replace="${m}=${m}@${staging_version}"; done
    go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
    cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl"
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
  rm -rf "$out"; mv "$out.tmp" "$out"
  "$out/kube-apiserver" --version >&2
}

build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION" work
  if [ -x "$out/etcd" ]; then log "cached: $out"; return; fi
  log "building etcd $ETCD_VERSION"
  # server/go.mod has replace directives, so `go install pkg@v` refuses it; a wrapper module works
  # because a dependency's replaces are ignored and its requires are real versions.
  work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    go mod init local/etcdbuild >/dev/null 2>&1
    go mod edit -go=1.26.0
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
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
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_minio() {
  local out="$CACHE/bin/minio-$MINIO_VERSION"
  if [ -x "$out/minio" ]; then log "cached: $out"; return; fi
  log "building MinIO $MINIO_VERSION (cold: 5-15 min on 2 cores)"
  mkdir -p "$out.tmp"
  # go.mod has no replace directives, so a plain `go install pkg@version` works.
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@${MINIO_VERSION}"
  rm -rf "$out"; mv "$out.tmp" "$out"
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
  rm -rf "$out"; mv "$out.tmp" "$out"
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
  rm -rf "$out"; mv "$out.tmp" "$out"
  "$out/helm" version --short >&2
}

build_kubeconform() {
  local out="$CACHE/bin/kubeconform-$KUBECONFORM_VERSION"
  if [ -x "$out/kubeconform" ]; then log "cached: $out"; return; fi
  log "building kubeconform $KUBECONFORM_VERSION"
  mkdir -p "$out.tmp"
  # go.mod has no replace directives, so a plain `go install pkg@version` works.
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X main.version=${KUBECONFORM_VERSION}" \
    "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}"
  rm -rf "$out"; mv "$out.tmp" "$out"
  "$out/kubeconform" -v >&2
}

case "${1:-all}" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  minio) build_minio ;;
  gateway-api) build_gateway_api ;;
  helm) build_helm ;;
  kubeconform) build_kubeconform ;;
  all) build_etcd; build_kwok; build_kubernetes; build_minio; build_gateway_api; build_helm; build_kubeconform ;;
  *) echo "usage: $0 [kubernetes|etcd|kwok|minio|gateway-api|helm|kubeconform|all]" >&2; exit 2 ;;
esac
