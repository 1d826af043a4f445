#!/usr/bin/env bash
# Install what the test suite uses and run it: Debian packages when root, a venv with
# gpunode[dev], then ruff and pytest. CI (CI=true) turns "missing real part" skips into failures
# via GPUNODE_REQUIRE_ALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# Only packages whose programs the tests run (grep tests/ for each before adding one):
#   fio; slurmctld slurmd slurm-client munge: the real Slurm the gate/fleet tests start themselves;
#   openssh-server openssh-client iproute2: the ssh fleet nodes in network namespaces;
#   iperf3: `fleet locate --test tcp` between those nodes (tests/test_fleet_locate_netns.py);
#   util-linux: unshare, setpriv; chromium chromium-driver: the fleet HTML page renders;
#   prometheus: promtool (Debian 12 ships it in no smaller package; its daemon is never started);
#   groff-base: the man page renders; systemd: systemd-analyze verifies the shipped units (no
#   systemd is started: a container keeps its own init).
PACKAGES=(fio slurmctld slurmd slurm-client munge openssh-server openssh-client iproute2 iperf3 util-linux
          chromium chromium-driver prometheus groff-base systemd)
# Debian's python3 ships venv separately: install it with the rest, after the one apt-get update.
"$PY" -c "import ensurepip" 2>/dev/null || PACKAGES+=(python3-venv)
# Packages must not start their daemons (prometheus, munged, slurmctld, slurmd, sshd): the tests
# start the ones they need with their own configuration. policy-rc.d exit 101 = "action forbidden".
POLICY=${GPUNODE_POLICY_RC_D:-/usr/sbin/policy-rc.d}

deny_daemon_starts() {
    if [ -e "$POLICY" ]; then mv "$POLICY" "$POLICY.gpunode-saved"; fi
    printf '#!/bin/sh\n# tests/run-all.sh: no daemon starts while it installs packages\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    trap restore_policy EXIT
}

restore_policy() {
    rm -f "$POLICY"
    if [ -e "$POLICY.gpunode-saved" ]; then mv "$POLICY.gpunode-saved" "$POLICY"; fi
}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        deny_daemon_starts
        echo "run-all: apt-get update"
        apt-get -q update
        echo "run-all: installing Debian packages (daemon starts denied): ${missing[*]}"
        apt-get -q install -y --no-install-recommends "${missing[@]}"
        restore_policy
        trap - EXIT
    fi
else
    echo "not root or no apt-get: tests that need Debian packages or root will skip" >&2
fi

echo "run-all: venv .venv with gpunode[dev]"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --progress-bar off --disable-pip-version-check --upgrade pip setuptools wheel
.venv/bin/python -m pip install --progress-bar off --disable-pip-version-check -e '.[dev]'

if [ "${CI:-}" = "true" ]; then export GPUNODE_REQUIRE_ALL=1; fi
echo "run-all: ruff"
.venv/bin/ruff check .
echo "run-all: pytest"
# GPU tests run on a GPU machine (`pytest -m gpu`); a later -m in "$@" replaces this one
.venv/bin/python -m pytest -q -p no:cacheprovider -m "not gpu" "$@"
