#!/usr/bin/env bash
# Installs what the tests and the local cluster need and is not in the repo, once; cached afterwards.
#   - Debian packages (only the missing ones; `apt-get update` at most once per run)
#   - the Python virtualenv in .venv (re-installed when pyproject.toml changes)
#   - the MLflow server's virtualenv, outside the repo and keyed by its requirements file, for the
#     integration tests (tests/integration/dataplane.py finds it with the same hash)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MLFLOW_OPERATOR_CACHE:-$HOME/.cache/mlflow-operator}
# postgresql and pgbouncer: the integration tests run the data plane as local processes.
APT_PACKAGES=(openssl ca-certificates curl postgresql pgbouncer)

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$root/.venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[install-deps] creating .venv" >&2
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip
  "$root/.venv/bin/pip" install -q -e "$root[dev]"
  rm -f "$root"/.venv/.installed-*
  touch "$stamp"
fi

# The tracking server's own virtualenv, installed from exactly the image's requirements file and kept
# apart from .venv so MLflow's dependencies never leak into the operator's. A new requirements file
# gives a new directory; the stamp is written last, so an interrupted install is redone from scratch.
requirements="$root/images/mlflow-server/requirements.txt"
server_venv="$cache/venvs/mlflow-server-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$server_venv/.installed" ]; then
  echo "[install-deps] creating $server_venv (MLflow server; takes a few minutes)" >&2
  rm -rf "$server_venv"
  python3 -m venv "$server_venv"
  "$server_venv/bin/pip" install -q --upgrade pip
  "$server_venv/bin/pip" install -q -r "$requirements"
  touch "$server_venv/.installed"
fi
