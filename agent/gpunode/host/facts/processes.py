"""Running processes by program name, read from /proc/PID/cmdline (comm is cut to 15
characters: nvidia-cuda-mps-control and -server would read the same)."""

from __future__ import annotations


def processes_named(sys, names: tuple[str, ...]) -> dict[str, list[int]] | None:
    """{program name: [pid, ...]} for each running process whose argv[0] ends in one of names;
    None when /proc cannot be listed (a snapshot without it): unknown, not "none running"."""
    entries = sys.listdir("/proc")
    if entries is None:
        return None
    found: dict[str, list[int]] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        raw = sys.read(f"/proc/{entry}/cmdline")
        if not raw:
            continue
        program = raw.split("\0", 1)[0].rsplit("/", 1)[-1]
        if program in names:
            found.setdefault(program, []).append(int(entry))
    return found
