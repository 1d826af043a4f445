"""Free space of paths through GNU df (statvfs is not something a SysRoot can replay).

`df -B1 --output=size,used,avail,file -- PATH...` prints one line per path that it could stat,
with the path as given in the last column, so each answer maps back to its path even when
several paths share a filesystem; paths it cannot stat are named on stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

TIMEOUT_S = 5.0  # a hung network filesystem must not hold up a prolog
HEADER = re.compile(r"^\s*1B-blocks\s+Used\s+Avail\s+File\s*")
LINE = re.compile(r"^\s*(\d+|-)\s+(\d+|-)\s+(\d+|-) (/.*)")


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class Space(NamedTuple):
    """df's figures for one path, in bytes."""

    path: str
    size: int | None
    used: int | None
    avail: int | None  # what an unprivileged user can still write


@dataclass
class DfAnswer:
    """What one df run said about each path asked, and why it could not answer."""

    spaces: dict[str, Space]
    problems: dict[str, str]  # path -> why df could not answer for it ("No such file or directory")
    error: str | None = None  # df itself could not run or its output is unusable
    not_run: bool = False  # df absent or not recorded: nothing to judge


def argv(paths: list[str]) -> list[str]:
    return ["df", "-B1", "--output=size,used,avail,file", "--", *paths]


def _int(text: str) -> int | None:
    return None if text == "-" else int(text)


def parse(stdout: str, stderr: str, paths: list[str]) -> DfAnswer:
    """Raises ValueError when stdout is not df's --output table (garbled or truncated)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    spaces: dict[str, Space] = {}
    if lines:
        if not HEADER.fullmatch(lines[0]):
            raise ValueError(f"not df output (header {lines[0][:60]!r})")
        for line in lines[1:]:
            match = LINE.fullmatch(line)
            if not match:
                raise ValueError(f"unexpected df line {line[:80]!r}")
            size, used, avail, path = match.groups()
            spaces[path] = Space(path, _int(size), _int(used), _int(avail))
    problems: dict[str, str] = {}
    for line in stderr.splitlines():
        for path in paths:
            for shown in (path, f"'{path}'", f'"{path}"'):
                prefix = f"df: {shown}: "
                if line.startswith(prefix):
                    problems[path] = line[len(prefix):].strip()
    return DfAnswer(spaces, problems)


def free_space(runner, paths: list[str]) -> DfAnswer:
    """Run df once for all paths and say, for each, its space or why there is none."""
    result = runner.run(argv(paths), timeout=TIMEOUT_S)
    if result.error is not None:
        return DfAnswer({}, {}, error=result.error, not_run=True)
    if result.timed_out:
        return DfAnswer({}, {}, error=f"df did not answer within {TIMEOUT_S:.0f}s (a hung network filesystem?)")
    try:
        answer = parse(result.stdout, result.stderr, paths)
    except ValueError as exc:
        return DfAnswer({}, {}, error=f"cannot read df output: {exc}")
    if result.rc != 0 and not answer.problems:
        first = (result.stderr.strip().splitlines() or [f"exit status {result.rc}"])[0]
        answer.error = f"df failed: {first}"
    return answer
