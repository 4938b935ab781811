#!/usr/bin/env bash
# Installs what the tests and the local cluster need and is not in the repo, once; cached afterwards.
#   - Debian packages (only the missing ones; `apt-get update` at most once per run)
#   - the Python virtualenv in .venv (re-installed when pyproject.toml changes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
APT_PACKAGES=(openssl ca-certificates curl)

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
