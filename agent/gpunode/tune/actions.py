"""How each kind of Change is written, checked and undone.

Every action answers `state(env, change, result)`: does the target hold what gpunode
wrote ("after"), what was there before ("before"), or something else ("other")? Apply
verifies with it, rollback restores only from "after", and anything else is left alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpunode.host.gpu.control import GpuControl, GpuControlError
from gpunode.tune.kinds.base import satisfies
from gpunode.tune.kinds.change import Change, FileState, read_file_state

from .files import write_file_state


class ApplyError(RuntimeError):
    """A write that failed or did not stick; the batch is rolled back."""


@dataclass
class ApplyEnv:
    host: object  # gpunode.host.Host
    gpu: GpuControl
    run_post: bool = False  # run post commands (update-grub, daemon-reload): live hosts only


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return satisfies("=", a, b)


def _classify(current, before, after) -> str:
    if _same(current, after):
        return "after"
    if _same(current, before):
        return "before"
    return "other"


# --- knob: a one-value file under /proc or /sys -------------------------------------------
def _knob_read(env, ch):
    return env.host.sys.read_active(ch.target)


def _knob_text(value) -> str:
    return f"{value}\n"


def _knob_undo(env, ch) -> None:
    """Put back the exact bytes when the file still holds exactly what gpunode wrote (a plain
    file, or a kernel knob that prints values as written); otherwise write the old value
    (a kernel knob such as THP prints `always [madvise] never`, which it would not accept)."""
    raw_before = ch.extra.get("raw_before")
    if raw_before is not None and env.host.sys.read(ch.target) == _knob_text(ch.after):
        env.host.sys.write(ch.target, raw_before)
    else:
        env.host.sys.write(ch.target, _knob_text(ch.before))


def prepare(env: ApplyEnv, ch: Change) -> None:
    """Record, just before the journal entry, what undo needs beyond before/after."""
    if ch.action == "knob":
        ch.extra["raw_before"] = env.host.sys.read(ch.target)
    if ch.action == "file":  # directories the write will create, so undo removes them again
        missing, parent = [], os.path.dirname(ch.target)
        while parent not in ("/", "") and not os.path.lexists(env.host.sys.path(parent)):
            missing.append(parent)
            parent = os.path.dirname(parent)
        ch.extra["created_dirs"] = missing


# --- file: whole files, byte-exact --------------------------------------------------------
def _file_state(env, ch) -> FileState:
    return read_file_state(env.host.sys, ch.target)


# --- service: systemd units through the runner ---------------------------------------------
def _unit(env, ch) -> dict:
    from gpunode.tune.kinds.service import unit_state

    state = unit_state(env.host, ch.target)
    if state is None:
        raise ApplyError(f"cannot read the state of {ch.target} (systemctl failed)")
    active = "not-installed" if state.get("LoadState") == "not-found" else state.get("ActiveState", "")
    return {"active": active, "enabled": state.get("UnitFileState", "")}


def _unit_matches(current: dict, wanted: dict) -> bool:
    from gpunode.tune.kinds.service import service_satisfies

    active_ok = current["active"] == wanted["active"] or (
        wanted["active"] in ("inactive", "failed", "not-installed") and service_satisfies("inactive", current["active"])
    )
    return active_ok and current["enabled"] == wanted["enabled"]


def _systemctl(env, *argv: str) -> None:
    result = env.host.runner.run(["systemctl", *argv], timeout=90)
    if not result.ok:
        detail = (result.stderr or result.error or "").strip().splitlines()
        raise ApplyError(f"systemctl {' '.join(argv)} failed: {detail[-1] if detail else f'rc {result.rc}'}")


def _unit_set(env, ch, frm: dict, to: dict) -> None:
    unit = ch.target
    if to["active"] == "active":  # enable first, then start
        if to["enabled"] != frm["enabled"] and to["enabled"] in ("enabled", "disabled"):
            _systemctl(env, "enable" if to["enabled"] == "enabled" else "disable", unit)
        if frm["active"] != "active":
            _systemctl(env, "start", unit)
    else:  # stop first, then disable
        if frm["active"] == "active":
            _systemctl(env, "stop", unit)
        if to["enabled"] != frm["enabled"] and to["enabled"] in ("enabled", "disabled"):
            _systemctl(env, "enable" if to["enabled"] == "enabled" else "disable", unit)


# --- gpu: one NVML value ----------------------------------------------------------------------
def _gpu_same(key: str, a, b) -> bool:
    if key == "power_limit" and a is not None and b is not None:
        return abs(float(a) - float(b)) < 1.0
    return a == b


def _gpu_idle(env, index: int, what: str) -> None:
    pids = env.gpu.processes(index)
    if pids:
        raise GpuControlError(f"refusing {what} on GPU{index}: processes {', '.join(map(str, pids[:5]))} use it")


# --- mig: one GPU instance created or destroyed --------------------------------------------------
def _mig_find(env, ch, inst: dict | None) -> dict | None:
    if inst is None:
        return None
    for found in env.gpu.mig_instances(ch.extra["index"]):
        if found["profile"] == inst["profile"] and found["start"] == inst["start"] and found["size"] == inst["size"]:
            return found
    return None


# --- the dispatch ----------------------------------------------------------------------------
def state(env: ApplyEnv, ch: Change, result: dict | None = None) -> tuple[str, str]:
    """-> ("after" | "before" | "other", what is there now, as text)."""
    if ch.action == "knob":
        current = _knob_read(env, ch)
        return _classify(current, ch.before, ch.after), str(current)
    if ch.action == "file":
        current = _file_state(env, ch)
        if current == FileState.from_json(ch.after):
            return "after", current.describe()
        if current == FileState.from_json(ch.before):
            return "before", current.describe()
        return "other", current.describe()
    if ch.action == "service":
        current = _unit(env, ch)
        text = f"{current['active']} ({current['enabled']})"
        if _unit_matches(current, ch.after):
            return "after", text
        if _unit_matches(current, ch.before):
            return "before", text
        return "other", text
    if ch.action == "gpu":
        key = ch.extra["key"]
        current = env.gpu.read(ch.extra["index"], key)
        if _gpu_same(key, current, ch.after):
            return "after", str(current)
        if _gpu_same(key, current, ch.before):
            return "before", str(current)
        return "other", str(current)
    if ch.action == "mig":
        if ch.before is None:  # a create: is the instance gpunode made still there?
            made = (result or {}).get("instance")
            if made is None:
                return "before", "no instance recorded"
            present = _mig_find(env, ch, made) is not None
            return ("after" if present else "before"), ("present" if present else "absent")
        present = _mig_find(env, ch, ch.before) is not None  # a destroy
        return ("before" if present else "after"), ("present" if present else "absent")
    raise ApplyError(f"unknown action {ch.action}")


def write(env: ApplyEnv, ch: Change) -> dict | None:
    """Write the change; returns what rollback needs beyond the change (a created MIG id)."""
    result = None
    if ch.action == "knob":
        try:
            env.host.sys.write(ch.target, _knob_text(ch.after))
        except OSError as exc:
            raise ApplyError(f"writing {ch.after!r} was refused: {exc.strerror or exc}") from exc
    elif ch.action == "file":
        write_file_state(env.host.sys, ch.target, FileState.from_json(ch.after))
    elif ch.action == "service":
        _unit_set(env, ch, _unit(env, ch), ch.after)
    elif ch.action == "gpu":
        if ch.gpu_reset_required:
            _gpu_idle(env, ch.extra["index"], f"{ch.extra['key']} change")
        env.gpu.write(ch.extra["index"], ch.extra["key"], ch.after)
    elif ch.action == "mig":
        index = ch.extra["index"]
        _gpu_idle(env, index, "a MIG layout change")
        if ch.before is None:
            result = {"instance": env.gpu.mig_create(index, ch.after["profile"])}
        else:
            found = _mig_find(env, ch, ch.before)
            if found is None:  # assert first: the instance planned for removal must still be there
                raise ApplyError(f"{ch.subject}: the MIG instance changed since the plan; nothing destroyed")
            env.gpu.mig_destroy(index, found["id"])
    else:
        raise ApplyError(f"unknown action {ch.action}")
    _post(env, ch, strict=True)
    return result


def undo(env: ApplyEnv, ch: Change, result: dict | None = None) -> None:
    """Put back what was there before (the caller decides whether it may)."""
    if ch.action == "knob":
        _knob_undo(env, ch)
    elif ch.action == "file":
        write_file_state(env.host.sys, ch.target, FileState.from_json(ch.before))
        for directory in ch.extra.get("created_dirs", []):  # deepest first
            try:
                os.rmdir(env.host.sys.path(directory))
            except OSError:
                break  # not empty: something else lives there now
    elif ch.action == "service":
        _unit_set(env, ch, _unit(env, ch), ch.before)
    elif ch.action == "gpu":
        env.gpu.write(ch.extra["index"], ch.extra["key"], ch.before)
    elif ch.action == "mig":
        index = ch.extra["index"]
        if ch.before is None:
            made = _mig_find(env, ch, (result or {}).get("instance"))
            if made is not None:
                env.gpu.mig_destroy(index, made["id"])
        else:
            env.gpu.mig_create(index, ch.before["profile"], {"start": ch.before["start"], "size": ch.before["size"]})
    _post(env, ch, strict=False)


def _post(env: ApplyEnv, ch: Change, strict: bool) -> None:
    if not env.run_post:
        return
    for argv in ch.post:
        result = env.host.runner.run(argv, timeout=300)
        if not result.ok and strict:
            detail = (result.stderr or result.error or "").strip().splitlines()
            raise ApplyError(f"{' '.join(argv)} failed: {detail[-1] if detail else f'rc {result.rc}'}")
