"""The systemd unit of the watcher (gpunode-watch.service), rendered from validated values.

Type=notify: the watcher says READY=1 after its first poll wrote the state, and WATCHDOG=1 while
its polls come back (a wedged driver that hangs the polls gets the service restarted).
Hardening: the watcher reads /dev/kmsg and the NVIDIA devices and writes only its state
directory, the site's state dir and the node_exporter textfile directory.
docs/examples/systemd/gpunode-watch.service is this text for /opt/gpunode/bin/python.
"""

from __future__ import annotations

import re

UNIT_NAME = "gpunode-watch.service"
STATE_DIR = "/run/gpunode"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE = f"{TEXTFILE_DIR}/gpunode-watch.prom"
GPUNODE_STATE = "/var/lib/gpunode"
WATCHDOG_S = 60
# A path systemd takes as one word without quoting: no spaces, quotes, %, $ or control characters.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


def plain_path(value: str, what: str) -> str:
    if not _PLAIN_PATH.fullmatch(value) or "/../" in f"{value}/":
        raise ValueError(f"{what} {value!r}: an absolute path of letters, digits and ._+-/ only")
    return value


def unit_text(python: str, poll_s: float = 10.0, shadow: bool = False, textfile: str | None = TEXTFILE,
              config: str | None = None) -> str:
    plain_path(python, "python")
    if not 1.0 <= poll_s <= 600.0:
        raise ValueError(f"poll interval {poll_s:g}: must be 1-600 seconds")
    argv = [python, "-I", "-m", "gpunode", "watch", "--state-dir", STATE_DIR, "--poll", f"{poll_s:g}"]
    if shadow:
        argv.append("--shadow")
    if textfile:
        argv += ["--textfile", plain_path(textfile, "textfile")]
    if config:
        argv += ["--config", plain_path(config, "config")]
    writable = [STATE_DIR, GPUNODE_STATE] + ([textfile.rsplit("/", 1)[0]] if textfile else [])
    return "\n".join([
        "# gpunode watch: the resident watcher (docs/watch.md). Written by `gpunode slurm install --watch`",
        "# or the Ansible role (gpunode_watch: true); edits are overwritten: use a drop-in.",
        "[Unit]",
        "Description=gpunode watch (GPU faults between checks)",
        "Documentation=man:gpunode(1)",
        "After=nvidia-persistenced.service slurmd.service",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={' '.join(argv)}",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={WATCHDOG_S}",
        "TimeoutStartSec=120",
        "# The state directory: made 0755 when missing (outside the sandbox: /run is read-only in it);",
        "# an existing one is never chmod'ed (RuntimeDirectory= would).",
        f"ExecStartPre=+/bin/mkdir -p -m 0755 {STATE_DIR}",
        "# Hardening: read-only system, writes only where the watcher keeps its files.",
        "ProtectSystem=strict",
        f"ReadWritePaths={' '.join('-' + p for p in writable)}",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictNamespaces=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "# /dev stays as it is (no DevicePolicy): the watcher needs /dev/kmsg and /dev/nvidia*, whose",
        "# device groups differ by driver; a wrong guess would read as an NVML failure on every poll.",
        "# Reading /dev/kmsg needs CAP_SYSLOG where dmesg_restrict=1; the Slurm calls run as root.",
        "CapabilityBoundingSet=CAP_SYSLOG CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER "
        "CAP_KILL",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
