#!/usr/bin/env bash
# Create .venv and install the toolkit into it, once. Idempotent: a second run with an unchanged
# pyproject.toml, extras and this script only checks a stamp and returns in about a second.
#
#   bash recipes/bootstrap.sh            # extras: dev,libero (LIBERO-10 runs headless in the tests)
#   EXTRAS=dev bash recipes/bootstrap.sh   # without the LIBERO simulator
#
# torch is installed first and pinned (CPU machines here carry local wheels of these releases; a
# bare `torch` requirement would download a multi-GB CUDA build). Users on GPU nodes can install any
# torch>=2.6 before running this script: an importable torch is left as it is.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
extras="${EXTRAS:-dev,libero}"
python="${PYTHON:-python3}"

case "$(uname -m)" in
  aarch64|arm64) torch_pins="torch==2.9.1 torchvision==0.24.1" ;;
  *)             torch_pins="torch==2.14.1 torchvision==0.29.1" ;;
esac

# Debian packages for headless rendering (pybullet TinyRenderer needs none; MuJoCo/LIBERO use EGL or OSMesa).
apt_pkgs=(libegl1 libgl1 libosmesa6 libglib2.0-0)

stamp_of() {
  { cat "$root/pyproject.toml" "$root/recipes/bootstrap.sh"; echo "$extras $torch_pins"; } | sha256sum | cut -d' ' -f1
}

missing_apt() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local p
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

want="$(stamp_of)"
stamp_file="$venv/.bootstrap-stamp"
missing="$(missing_apt | tr '\n' ' ')"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$want" && -z "${missing// /}" ]]; then
  exit 0
fi

if [[ -n "${missing// /}" ]]; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing Debian packages: $missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) >/dev/null \
      || echo "[bootstrap] warning: could not install $missing (headless MuJoCo rendering may fail)" >&2
  else
    echo "[bootstrap] warning: missing Debian packages: $missing (install them as root for headless rendering)" >&2
  fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "[bootstrap] creating $venv"
  "$python" -m venv "$venv"
fi
log="$venv/bootstrap-pip.log"
: > "$log"
pip_install() {  # pip's output goes to a log, shown only when it fails
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[bootstrap] error: pip install $* failed (full log: $log)" >&2
    exit 1
  fi
}

if ! "$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[bootstrap] installing $torch_pins"
  pip_install $torch_pins
fi
echo "[bootstrap] installing the toolkit with extras [$extras]"
pip_install -e "$root[$extras]"
echo "$want" > "$stamp_file"
echo "[bootstrap] ready: $venv"
