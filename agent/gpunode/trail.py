"""The audit trail: one syslog line per change gpunode makes to a host (apply, rollback, a
Slurm drain or resume), so `journalctl -t gpunode` or the site's syslog shows who changed what.

Sent as a datagram to the config's `audit_log` socket (/dev/log, which journald and rsyslog
read); `audit_log: off` sends nothing. A host without the socket (a container) is silent; a
socket that refuses the line is a warning for the caller to print, never a failed command.
"""

from __future__ import annotations

import os
import shlex
import socket

FACILITY_AUTHPRIV = 10  # who changed what on the host: the facility sites keep and forward
SEVERITY = {"notice": 5, "warning": 4}
MAX_BYTES = 2048


def message(event: str, fields: dict) -> str:
    words = [f"{k}={shlex.quote(' '.join(str(v).split()))}" for k, v in fields.items() if v not in (None, "")]
    return " ".join([event, *words])


def record(event: str, fields: dict, config=None, severity: str = "notice") -> str | None:
    """-> None, or a warning when the socket exists but did not take the line."""
    address = _address(config)
    if address in ("off", "") or not os.path.exists(address):
        return None
    pri = FACILITY_AUTHPRIV * 8 + SEVERITY[severity]
    line = f"<{pri}>gpunode[{os.getpid()}]: {message(event, fields)}".encode("utf-8", "replace")[:MAX_BYTES]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            sock.sendto(line, address)
    except OSError as exc:
        return f"audit trail: cannot log to {address}: {exc.strerror or exc}"
    return None


def _address(config) -> str:
    if config is None:
        from gpunode.config import ConfigError, load_config

        try:
            config = load_config()
        except ConfigError:
            return "/dev/log"  # the command itself reports a bad config; the trail still goes out
    return config.audit_log


def log(event: str, fields: dict, config=None, severity: str = "notice") -> None:
    """record(), printing its warning (if any) on stderr."""
    import sys

    warning = record(event, fields, config, severity)
    if warning:
        print(f"gpunode: warning: {warning}", file=sys.stderr)
