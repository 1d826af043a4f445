#!/usr/bin/env bash
# Install everything the test suite needs and run it: Debian packages (fio, Slurm, munge,
# sshd, iproute2) when root, a venv with gpunode[dev], then ruff and pytest.
# CI (CI=true) turns "missing real part" skips into failures via GPUNODE_REQUIRE_ALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PACKAGES=(fio slurm-wlm munge openssh-server openssh-client iproute2 util-linux procps kmod chromium chromium-driver prometheus groff-base)
# prometheus: promtool checks every textfile and the alert rules (~19 MB download); groff-base: the man page renders
# Debian's python3 ships venv separately: install it with the rest, after the one apt-get update.
"$PY" -c "import ensurepip" 2>/dev/null || PACKAGES+=(python3-venv)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    echo "not root or no apt-get: tests that need Debian packages or root will skip" >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

if [ "${CI:-}" = "true" ]; then export GPUNODE_REQUIRE_ALL=1; fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
