"""Bounded loading of every file a person or another program could have written.

Each reader opens regular files only (a FIFO or /dev/zero is refused at once, never read),
stops at a size bound, decodes strict UTF-8, and parses YAML or JSON with duplicate keys
rejected and nesting, aliases and expanded size bounded (a 1 KB alias bomb fails in
milliseconds). Every problem is one `InputError` whose message names the file and, where the
parser knows it, the line: `profile.yaml:3: duplicate key 'settings'`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from typing import Any

from gpunode.exits import UsageError

MAX_BYTES = 4 * 1024 * 1024  # profiles, configs, baselines are a few KB
MAX_DEPTH = 32  # nesting of mappings/lists; gpunode's own documents stay under 10
MAX_ALIASES = 100  # YAML `*alias` uses per document
MAX_NODES = 200_000  # YAML nodes after expanding aliases (the alias-bomb bound)
MAX_RECORDED_BYTES = 64 * 1024 * 1024  # a snapshot's commands.json holds whole dmesg/nvidia-smi outputs


class InputError(UsageError):  # a ValueError, exit 3 (exits.USAGE_EXIT)
    """A file or value that cannot be used; the message is one line naming where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> bytes:
    """The content of a regular file, at most `max_bytes`; never blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return read_fd(fd, max_bytes, path)
    finally:
        os.close(fd)


def read_fd(fd: int, max_bytes: int, path: str | os.PathLike) -> bytes:
    """The content of the open regular file `fd` (named `path` in errors), at most `max_bytes`."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file ({_file_type(info.st_mode)})")
        if info.st_size > max_bytes:
            raise InputError(f"{path}: too large ({info.st_size} bytes; at most {max_bytes})")
        chunks, total = [], 0
        while True:  # the size can grow after fstat: the bound holds on what is read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise InputError(f"{path}: too large (more than {max_bytes} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def decode(data: bytes, source: str | os.PathLike) -> str:
    """Strict UTF-8; the error names the byte offset instead of a UnicodeDecodeError traceback."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1]
        raise InputError(f"{source}:{line}: not UTF-8 text (byte {exc.start}: {bad!r})") from None


def read_text(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> str:
    return decode(read_bytes(path, max_bytes), path)


# --- YAML -------------------------------------------------------------------------------


def parse_yaml(
    text: str,
    source: str | os.PathLike = "<yaml>",
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
) -> Any:
    """yaml.safe_load with duplicate keys refused and depth/aliases/expanded size bounded."""
    from gpunode import yaml_bounded  # PyYAML only when YAML is parsed

    try:
        return yaml_bounded.parse_yaml(text, source, max_depth, max_aliases, max_nodes)
    except yaml_bounded.Refused as exc:
        key = f" {key_name(exc.key[0])}" if exc.key else ""
        raise InputError(f"{exc.where}: {exc.message}{key}") from None


def load_yaml(path: str | os.PathLike, max_bytes: int = MAX_BYTES, cache=None, **limits: int) -> Any:
    """`cache`: a gpunode.parsed_cache.ParsedCache (the gate's): the document of a text parsed
    before, without PyYAML; a new text is parsed and kept."""
    text = read_text(path, max_bytes)
    if cache is None:
        return parse_yaml(text, path, **limits)
    key = cache.key(text, tuple(sorted(limits.items())))
    hit, document = cache.get(key)
    if not hit:
        document = parse_yaml(text, path, **limits)
        cache.put(key, document)
    return document


# --- JSON -------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(Exception):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


class _NonFinite(Exception):
    pass


def parse_json(
    text: str, source: str | os.PathLike = "<json>", max_depth: int = MAX_DEPTH, allow_nonfinite: bool = False
) -> Any:
    """json.loads with duplicate keys refused, NaN/Infinity refused unless allowed, depth bounded."""
    try:
        data = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=float if allow_nonfinite else _refuse_constant,
        )
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except _Duplicate as exc:
        raise InputError(f"{source}: duplicate key {key_name(exc.args[0])}") from None
    except _NonFinite as exc:
        raise InputError(f"{source}: {exc.args[0]} is not a number gpunode accepts") from None
    except RecursionError:
        raise InputError(f"{source}: nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise InputError(f"{source}: not valid JSON: {exc}") from None
    _check_tree(data, source, max_depth, allow_nonfinite)
    return data


def _check_tree(data: Any, source: str | os.PathLike, max_depth: int, allow_nonfinite: bool) -> None:
    """Depth and finiteness, walked without recursion (the document may be deep)."""
    stack = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not allow_nonfinite and not math.isfinite(item):
            raise InputError(f"{source}: a number too large to be finite (e.g. 1e999)")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children and depth + 1 > max_depth:
            raise InputError(f"{source}: nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def load_json(
    path: str | os.PathLike, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH, allow_nonfinite: bool = False
) -> Any:
    return parse_json(read_text(path, max_bytes), path, max_depth, allow_nonfinite)


# --- shapes -----------------------------------------------------------------------------


def expect_mapping(data: Any, source: str | os.PathLike, what: str = "the top level") -> dict:
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping at {what}, got {_type_name(data)}")
    return data


def unknown_keys(keys, known) -> str | None:
    """`unknown key(s) a, b; known: ...` for the keys of a document gpunode does not know, or
    None. Only keys that look like key names are quoted: a file that is not gpunode's at all
    (`--config /etc/shadow`, whose lines parse as keys) is never echoed into an error."""
    unknown = sorted({str(k) for k in keys} - set(known))
    if not unknown:
        return None
    shown = [k for k in unknown if re.fullmatch(_KEY_NAME, k)]
    hidden = len(unknown) - len(shown)
    parts = shown + ([f"{hidden} that are not key names (not shown: is this gpunode's file?)"] if hidden else [])
    return f"unknown key(s) {', '.join(parts)}; known: {', '.join(sorted(known))}"


# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_KEY_NAME = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"


def key_name(key: Any) -> str:
    """A key quoted for an error when it looks like a key name; else not shown (see unknown_keys)."""
    return repr(key) if isinstance(key, str) and re.fullmatch(_KEY_NAME, key) else "(not shown: not a key name)"


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__

