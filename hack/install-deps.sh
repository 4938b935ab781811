#!/usr/bin/env bash
# Installs what the tests and the local cluster need and is not in the repo, once; cached afterwards.
#   - Debian packages (only the missing ones; `apt-get update` at most once per run)
#   - the Python virtualenv in .venv (re-installed when pyproject.toml changes)
#   - the MLflow server's and the model server's virtualenvs, outside the repo and keyed by their image's
#     requirements file, for the integration tests (tests/integration/dataplane.py finds them by the same hash)
#   - checkov in its own virtualenv keyed by its version (hack/versions.env), for tests/integration/test_packaging.py
# `hack/install-deps.sh apt` installs only the Debian packages (what `make images` needs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=versions.env
. "$root/hack/versions.env"
cache=${MLFLOW_OPERATOR_CACHE:-$HOME/.cache/mlflow-operator}
# postgresql, pgbouncer and prometheus: the integration and e2e tests run them as local processes.
APT_PACKAGES=(openssl ca-certificates curl postgresql pgbouncer prometheus)
# The real node of hack/localcluster.py: runc and the CNI plugins (bridge, host-local, loopback, portmap) are
# Debian's, new enough for containerd 2.x; mmdebstrap + umoci build its images and the operator's without a
# registry (hack/node-images.sh, hack/build-images.py); conntrack/iptables/nftables are what kube-proxy and
# the CNI plugins drive; iproute2 (ip netns): tests/integration/test_images.py runs the images with runc.
APT_PACKAGES+=(runc containernetworking-plugins mmdebstrap umoci conntrack iptables nftables gcc libc6-dev iproute2)
# barman-cloud (barman-cli-cloud): the backup integration tests run the scripts the database pods run.
APT_PACKAGES+=(barman-cli-cloud)

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Other checkouts may run this at the same time: wait for dpkg's lock instead of failing on it.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" != apt ] || exit 0

stamp="$root/.venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[install-deps] creating .venv" >&2
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip
  "$root/.venv/bin/pip" install -q -e "$root[dev]"
  rm -f "$root"/.venv/.installed-*
  touch "$stamp"
fi

# Each image's own virtualenv, installed from exactly the image's requirements file and kept apart from
# .venv so MLflow's dependencies never leak into the operator's. A new requirements file gives a new
# directory; the stamp is written last, so an interrupted install is redone from scratch.
image_venv() {
  local image=$1 requirements="$root/images/$1/requirements.txt"
  local venv="$cache/venvs/$image-$(sha256sum "$requirements" | cut -c1-16)"
  if [ ! -f "$venv/.installed" ]; then
    echo "[install-deps] creating $venv (takes a few minutes)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$requirements"
    touch "$venv/.installed"
  fi
}
image_venv mlflow-server
image_venv mlflow-model-server

# checkov: pinned by version, not in pyproject.toml (it brings ~100 dependencies the operator must not
# share). Same stamp-last rule as the image virtualenvs.
checkov_venv="$cache/venvs/checkov-$CHECKOV_VERSION"
if [ ! -f "$checkov_venv/.installed" ]; then
  echo "[install-deps] creating $checkov_venv (takes a few minutes)" >&2
  rm -rf "$checkov_venv"
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install -q --upgrade pip
  "$checkov_venv/bin/pip" install -q "checkov==$CHECKOV_VERSION"
  touch "$checkov_venv/.installed"
fi
