#!/usr/bin/env bash
# Set up a development environment for napari-focsam in ./.venv (run from the repo root).
#
#   bash scripts/setup.sh
#
# - As root on Debian/Ubuntu: installs the system libraries Qt 6 / napari need under Xvfb
#   (skipped when they are all present already; skipped entirely when not root).
# - Creates (or reuses) .venv, installs torch first (CPU build), then the package with its
#   `test` extra in editable mode.
#
# Safe to run repeatedly. Environment overrides:
#   PYTHON               interpreter used to create the venv   (default: python3)
#   FOCSAM_TORCH_SPEC    pip requirement for torch             (default: torch==2.13.0)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${FOCSAM_TORCH_SPEC:-torch==2.13.0}"
VENV=".venv"

log() { echo "[setup] $*"; }

# ---------------------------------------------------------------- system packages (apt)
apt_packages() {
    local glib="libglib2.0-0"
    # Debian 13 / Ubuntu 24.04 renamed the package (64-bit time_t transition).
    if apt-cache show libglib2.0-0t64 >/dev/null 2>&1; then glib="libglib2.0-0t64"; fi
    echo xvfb \
        libgl1 libgl1-mesa-dri libegl1 \
        libfontconfig1 fonts-dejavu-core "$glib" libdbus-1-3 \
        libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 \
        libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
        libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 \
        libxcb-sync1 libxcb-shm0 libxcb-xkb1
    # The venv needs ensurepip, which Debian ships separately from python3.
    if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
        if command -v "$PYTHON" >/dev/null 2>&1; then echo python3-venv; else echo python3 python3-venv; fi
    fi
}

missing_packages() {
    local pkg
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != "installed" ]; then
            echo "$pkg"
        fi
    done
}

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2046  # word splitting of the package list is intended
    missing="$(missing_packages $(apt_packages))"
    if [ -n "$missing" ]; then
        log "installing system packages: $(echo "$missing" | tr '\n' ' ')"
        apt-get update -qq
        # shellcheck disable=SC2046
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $(apt_packages) >/dev/null
    else
        log "system packages already installed"
    fi
else
    log "not root or no apt-get: skipping system packages (Xvfb, libGL, xcb libraries for Qt)"
fi

# ---------------------------------------------------------------- python environment
# pip's output minus the "Location '...' is ignored" noise from the local index mirrors; the
# exit status is pip's (pipefail), so a failed install still stops the script.
pip_quiet() {
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
    log "reusing $VENV ($("$VENV/bin/python" --version))"
else
    rm -rf "$VENV"
    log "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

pip_quiet install -q --upgrade pip
# torch first: this exact pin resolves to the local CPU wheel. Installing the project first
# would let pip pick the default (multi-GB CUDA) torch build.
log "installing $TORCH_SPEC"
pip_quiet install -q "$TORCH_SPEC"
log "installing napari-focsam[test] (editable)"
pip_quiet install -q -e ".[test]"
log "done: $("$VENV/bin/python" -c 'import torch, napari; print("torch", torch.__version__, "| napari", napari.__version__)')"
