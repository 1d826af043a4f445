"""What a journal line must look like before rollback acts on it.

A journal tells root which files to write (bytes and mode), which commands to run after, which
GPU to change: every field is checked for its type here, where the line is read, so a
damaged or forged line is quarantined instead of crashing a rollback halfway (which left the
apply "rollback-interrupted" for good). Each check raises TypeError or ValueError with a short
reason; parse_journal turns that into a quarantined line.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from gpunode.tune.kinds.change import Change

PERMISSION_BITS = 0o777  # a restored file gets these at most: no setuid, setgid or sticky bit
SPECIAL_BITS = 0o7000

_TEXT_FIELDS = ("setting_id", "subject", "action", "target", "current_text", "after_text", "blocked", "note")
_FLAG_FIELDS = ("needs_root", "reboot_required", "gpu_reset_required")
RESTORE_STATUSES = ("restored", "not-written", "left", "error")


def _fail(why: str) -> TypeError:
    return TypeError(why)


def need_int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"{what} is not a whole number >= {minimum}")
    return value


def need_text(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or "\0" in value:
        raise _fail(f"{what} is not text")
    return value


def _scalar(value: Any, what: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    raise _fail(f"{what} is not a single value")


def _argv(value: Any, what: str) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and "\0" not in a for a in value):
        raise _fail(f"{what} is not a command (a list of strings)")


def file_state(doc: Any, what: str) -> dict:
    """A FileState document; -> the same document with its mode cut to the permission bits."""
    if not isinstance(doc, dict) or set(doc) - {"exists", "data", "mode", "link"}:
        raise _fail(f"{what} is not a file state")
    if not isinstance(doc.get("exists"), bool):
        raise _fail(f"{what}.exists is not true/false")
    data, mode, link = doc.get("data"), doc.get("mode"), doc.get("link")
    if not doc["exists"]:
        if data is not None or mode is not None or link is not None:
            raise ValueError(f"{what}: an absent file with content, mode or link")
        return doc
    if link is not None:
        need_text(link, f"{what}.link")
        if data is not None or mode is not None:
            raise ValueError(f"{what}: a symlink with content or mode")
        return doc
    try:
        base64.b64decode(str(need_text(data, f"{what}.data")), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}.data is not base64") from None
    # The mode was read from the file by fstat (S_IMODE): at most 0o7777. Whatever special
    # bits it had, a rollback restores only the permission bits: a line cannot add setuid.
    bits = need_int(mode, f"{what}.mode")
    if bits > PERMISSION_BITS | SPECIAL_BITS:
        raise ValueError(f"{what}.mode {bits:o} is not a file mode")
    return {**doc, "mode": bits & PERMISSION_BITS}


def _service(doc: Any, what: str) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("active"), str) or not isinstance(doc.get("enabled"), str):
        raise _fail(f"{what} is not a unit state")
    return doc


def _mig(doc: Any, what: str) -> Any:
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("profile"), (str, int)) or isinstance(doc["profile"], bool):
        raise _fail(f"{what} is not a MIG instance")
    for key in ("start", "size", "id"):
        if key in doc:
            need_int(doc[key], f"{what}.{key}")
    return doc


def _plain(value: Any, what: str) -> Any:
    _scalar(value, what)
    return value


def _gpu_value(value: Any, what: str) -> Any:
    for v in value if isinstance(value, list) else [value]:
        _scalar(v, what)
    return value


# before/after of each action (gpunode.tune.actions.REGISTRY names them)
VALUES = {
    "knob": _plain,
    "file": file_state,
    "enable": _plain,
    "service": _service,
    "grubby": _plain,
    "gpu": _gpu_value,
    "mig": _mig,
}


def _extra(extra: Any) -> None:
    if not isinstance(extra, dict):
        raise _fail("change extra is not a mapping")
    _created_dirs(extra.get("created_dirs", []))
    for key in ("raw_before",):
        need_text(extra.get(key), key, optional=True)
    for key in ("link", "key", "nic", "uuid"):
        if key in extra:
            need_text(extra[key], key, optional=key == "uuid")
    if "index" in extra:
        need_int(extra["index"], "index")
    for key in ("do", "undo"):
        if key in extra:
            _commands(extra[key], key)


def _created_dirs(dirs: Any) -> None:
    if not isinstance(dirs, list) or not all(isinstance(d, str) and d.startswith("/") for d in dirs):
        raise _fail("created_dirs is not a list of absolute paths")


def _commands(value: Any, what: str) -> None:
    """One command (an argv) or a list of them."""
    argvs = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
    for argv in argvs:
        _argv(argv, what)


def change_from_line(data: Any) -> Change:
    """The Change of a `change` line, every field of the right type (else TypeError/ValueError)."""
    if not isinstance(data, dict):
        raise _fail("change is not a mapping")
    _change_fields(data)
    _extra(data.get("extra", {}))
    check = VALUES.get(data.get("action"))  # type: ignore[arg-type]
    if check is None:
        raise ValueError(f"unknown action {data.get('action')!r}")
    if "before" not in data or "after" not in data:
        raise KeyError("before/after")
    fixed = {**data, "before": check(data["before"], "before"), "after": check(data["after"], "after")}
    _action_needs(data)
    return Change.from_json(fixed)


def _change_fields(data: dict) -> None:
    """A change line's text and flag fields, and its post commands."""
    for name in _TEXT_FIELDS:
        if name in data:
            need_text(data[name], name)
    for name in _FLAG_FIELDS:
        if name in data and not isinstance(data[name], bool):
            raise _fail(f"{name} is not true/false")
    post = data.get("post", [])
    if not isinstance(post, list):
        raise _fail("post is not a list of commands")
    for argv in post:
        _argv(argv, "post")


def _action_needs(data: dict) -> None:
    """What an action cannot be undone without: an enable its link, a GPU change its GPU."""
    if data["action"] == "enable" and not isinstance(data.get("extra", {}).get("link"), str):
        raise _fail("an enable change without its link")
    if data["action"] in ("gpu", "mig") and "index" not in data.get("extra", {}):
        raise _fail("a GPU change without its GPU index")


def done_result(value: Any) -> dict | None:
    """What a write returned (a created MIG instance) or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("result is not a mapping")
    if "instance" in value:
        _mig(value["instance"], "instance")
    return value
