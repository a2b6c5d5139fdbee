#!/usr/bin/env bash
# Installs what benchmarks/overhead/run.py needs; safe to run again (skips what is already there).
#   nginx, wrk, hey     from Debian (apt-get); `setup.sh --debian-only` stops there
#                       (all that benchmarks/bench/run.py needs)
#   granian             into benchmarks/overhead/.work/granian, pinned with its hash
#                       (granian.txt; the proxy-granian-server row only, so not in the lock)
#   LiteLLM proxy       into its own venv: benchmarks/overhead/.work/litellm-venv
#                       (its pins conflict with Switchgear's dependencies)
#   Portkey gateway     with npm into benchmarks/overhead/.work/portkey
# Only the Debian, PyPI and npm registries are reached.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$HERE/.work"
PYTHON="${BENCH_PYTHON:-python3.11}"
LITELLM_SPEC="${LITELLM_SPEC:-litellm[proxy]}"
PORTKEY_SPEC="${PORTKEY_SPEC:-@portkey-ai/gateway}"
mkdir -p "$WORK"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v hey >/dev/null 2>&1 || missing+=(hey)
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup: nginx, wrk and hey already installed"
    return
  fi
  echo "setup: apt-get install ${missing[*]}"
  # apt-get update only when the package lists do not know the packages yet.
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    as_root apt-get update -q
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}

install_granian() {
  local target="$WORK/granian"
  if [ -d "$target/granian" ]; then
    echo "setup: granian already installed"
    return
  fi
  echo "setup: granian into $target"
  # --no-deps: its one dependency, click, is in the lock (the venv has it).
  "$HERE/../../.venv/bin/python" -m pip install -q --no-deps --require-hashes \
    --target "$target" -r "$HERE/granian.txt"
}

install_litellm() {
  local venv="$WORK/litellm-venv"
  if [ -x "$venv/bin/litellm" ]; then
    echo "setup: LiteLLM already installed ($("$venv/bin/python" -m pip show litellm | grep ^Version))"
    return
  fi
  echo "setup: LiteLLM proxy into $venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$LITELLM_SPEC"
}

install_portkey() {
  local prefix="$WORK/portkey"
  if [ -f "$prefix/node_modules/@portkey-ai/gateway/package.json" ]; then
    echo "setup: Portkey gateway already installed"
    return
  fi
  command -v npm >/dev/null 2>&1 || {
    echo "setup: npm not found; install Node.js >= 18 first" >&2
    exit 1
  }
  echo "setup: Portkey gateway into $prefix"
  mkdir -p "$prefix"
  [ -f "$prefix/package.json" ] || echo '{"private": true}' >"$prefix/package.json"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "$PORTKEY_SPEC"
}

install_debian_packages
if [ "${1:-}" = "--debian-only" ]; then
  echo "setup: done (Debian packages only)"
  exit 0
fi
install_granian
install_litellm
install_portkey
echo "setup: done"
