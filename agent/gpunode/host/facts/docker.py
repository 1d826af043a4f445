"""Docker's daemon configuration (/etc/docker/daemon.json): the bounded JSON parse, Docker's size
strings (`64m`, `1G`, `1gb`) and its default-ulimits entries, shared by the audit and the `json`
setting kind."""

from __future__ import annotations

import re

from gpunode.inputs import InputError, parse_json

DAEMON_JSON = "/etc/docker/daemon.json"
# Docker's own default /dev/shm for a container (moby: daemon/config DefaultShmSize = 64 MiB).
DOCKER_DEFAULT_SHM = 64 * 1024 * 1024
# Where the engine binary lives when Docker is installed from Docker's or Debian's packages.
DOCKERD = ("/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/local/bin/dockerd")
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_SIZE = r"(?i)\s*(\d{1,19}(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*"
_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


class DaemonJsonInvalid(InputError):
    """daemon.json that dockerd itself would refuse to start with (not JSON, not an object)."""


def parse_daemon_json(text: str, source: str = DAEMON_JSON) -> dict:
    """The top-level object; DaemonJsonInvalid for text that is not one JSON object."""
    try:
        data = parse_json(text, source)
    except InputError as exc:
        raise DaemonJsonInvalid(str(exc)) from None
    if not isinstance(data, dict):
        raise DaemonJsonInvalid(f"{source}: not a JSON object (dockerd refuses to start with it)")
    return data


def size_bytes(value) -> int | None:
    """Docker's size string (go-units RAMInBytes: binary units, case-insensitive, optional b/ib)
    or a number of bytes -> bytes; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(_SIZE, value)
    if not m:
        return None
    return int(float(m.group(1)) * _UNIT[m.group(2).lower()])


def size_text(n: int) -> str:
    """Bytes as the shortest exact Docker size string: 1073741824 -> '1g', 1000 -> '1000'."""
    for unit in ("p", "t", "g", "m", "k"):
        if n and n % _UNIT[unit] == 0:
            return f"{n // _UNIT[unit]}{unit}"
    return str(n)


def ulimit(entry) -> tuple[int, int] | None:
    """A default-ulimits entry ({"Name": "memlock", "Soft": -1, "Hard": -1}) -> (soft, hard)."""
    if not isinstance(entry, dict):
        return None
    soft, hard = entry.get("Soft"), entry.get("Hard")
    if isinstance(soft, bool) or isinstance(hard, bool) or not isinstance(soft, int) or not isinstance(hard, int):
        return None
    return soft, hard


def shm_size(config: dict) -> int | None:
    """The default /dev/shm a container gets: daemon.json's default-shm-size, else Docker's 64 MiB;
    None when the configured value is not a size."""
    if "default-shm-size" not in config:
        return DOCKER_DEFAULT_SHM
    return size_bytes(config["default-shm-size"])
