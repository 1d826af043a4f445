"""How each kind of Change is written, checked and undone: one class per action type, in a
registry keyed by Change.action (the only place that compares action names).

Every action answers `state(env, change, result)`: does the target hold what gpunode wrote
("after"), what was there before ("before"), what an interrupted write of gpunode's left
("torn": restorable like "after"), or something else ("other")? Apply verifies with it,
rollback restores from "after"/"torn" only, and anything else is left alone. `clean` removes
what a kill in the middle of a write can leave besides the target (temporary files,
directories made for it); rollback calls it for every journaled change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

from gpunode.host.gpu.control import GpuControl, GpuControlError
from gpunode.host.runner import Runner
from gpunode.tune.kinds.base import satisfies
from gpunode.tune.kinds.change import Change, FileState, read_file_state

from .files import clean_after, write_file_state

RESTORABLE = ("after", "torn")  # what rollback may put back


class ApplyError(RuntimeError):
    """A write that failed or did not stick; the batch is rolled back."""


@dataclass
class ApplyEnv:
    host: object  # gpunode.host.Host
    gpu: GpuControl
    run_post: bool = False  # run post commands (update-grub, daemon-reload): live hosts only
    # Runs tools that only edit files under a root other than / (`systemctl --root=DIR`): an
    # offline host's own runner replays recordings and runs nothing.
    tools: Runner = field(default_factory=Runner)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return satisfies("=", a, b)


def _classify(current, before, after, same=_same) -> str:
    if same(current, after):
        return "after"
    if same(current, before):
        return "before"
    return "other"


def _missing_dirs(sysroot, path: str) -> list[str]:
    """The directories writing `path` will create (deepest first), journaled so that rollback
    removes them again even when a kill came before the file was there."""
    return sysroot.missing_dirs(os.path.dirname(path))


def _run(env, argv: list[str], timeout: float = 90, runner=None) -> str:
    result = (runner or env.host.runner).run(argv, timeout=timeout)
    if not result.ok:
        detail = (result.stderr or result.error or "").strip().splitlines()
        raise ApplyError(f"{' '.join(argv)} failed: {detail[-1] if detail else f'rc {result.rc}'}")
    return result.stdout


class Action:
    """One action type. Subclasses set `name` and implement write/state/undo."""

    name: ClassVar[str]
    needs_gpu: ClassVar[bool] = False  # written through NVML (GPU control needed)
    whole_file: ClassVar[bool] = False  # before/after are FileState documents, shown as text

    def prepare(self, env: ApplyEnv, ch: Change) -> None:
        """Record in ch.extra, just before the journal entry, what undo and clean need."""

    def write(self, env: ApplyEnv, ch: Change) -> dict | None:
        raise NotImplementedError

    def state(self, env: ApplyEnv, ch: Change, result: dict | None) -> tuple[str, str]:
        raise NotImplementedError

    def undo(self, env: ApplyEnv, ch: Change, result: dict | None) -> None:
        raise NotImplementedError

    def clean(self, env: ApplyEnv, ch: Change) -> None:
        """Remove leftovers of an interrupted write (nothing for most actions)."""


class KnobAction(Action):
    """A one-value file under /proc or /sys; before/after are the active values."""

    name = "knob"

    @staticmethod
    def text(value) -> str:
        return f"{value}\n"

    def prepare(self, env, ch):
        ch.extra["raw_before"] = env.host.sys.read(ch.target)

    def write(self, env, ch):
        try:
            env.host.sys.write(ch.target, self.text(ch.after))
        except OSError as exc:
            raise ApplyError(f"writing {ch.after!r} was refused: {exc.strerror or exc}") from exc
        return None

    def state(self, env, ch, result):
        raw = env.host.sys.read(ch.target)
        if raw == "" and ch.extra.get("raw_before"):
            # A knob never reads empty; an emulated one (a --sysroot file) does when a kill hit
            # between truncate and write: gpunode's own half-write, so rollback restores it.
            return "torn", "(empty: an interrupted write)"
        current = env.host.sys.read_active(ch.target)
        return _classify(current, ch.before, ch.after), str(current)

    def undo(self, env, ch, result):
        """Put back the exact bytes when the file holds exactly what gpunode wrote or was left
        empty (a plain file, or a kernel knob that prints values as written); otherwise write the
        old value (a kernel knob such as THP prints `always [madvise] never`, which it would not accept)."""
        raw_before = ch.extra.get("raw_before")
        if raw_before is not None and env.host.sys.read(ch.target) in (self.text(ch.after), ""):
            env.host.sys.write(ch.target, raw_before)
        else:
            env.host.sys.write(ch.target, self.text(ch.before))


class FileAction(Action):
    """A whole config file, byte-exact: before/after are FileState documents."""

    name = "file"
    whole_file = True

    def prepare(self, env, ch):
        ch.extra["created_dirs"] = _missing_dirs(env.host.sys, ch.target)

    def write(self, env, ch):
        write_file_state(env.host.sys, ch.target, FileState.from_json(ch.after))
        return None

    def state(self, env, ch, result):
        current = read_file_state(env.host.sys, ch.target)
        if current == FileState.from_json(ch.after):
            return "after", current.describe()
        if current == FileState.from_json(ch.before):
            return "before", current.describe()
        return "other", current.describe()

    def undo(self, env, ch, result):
        write_file_state(env.host.sys, ch.target, FileState.from_json(ch.before))
        self.clean(env, ch)

    def clean(self, env, ch):
        clean_after(env.host.sys, ch.target, ch.extra.get("created_dirs", []))


class EnableAction(Action):
    """`systemctl [--root=DIR] enable UNIT` (the way distributions enable a unit, not a
    hand-made wants/ link); target is the unit, extra["link"] the symlink enabling creates,
    which tells the state without systemd running (offline roots, images)."""

    name = "enable"

    def _systemctl(self, env, verb: str, unit: str) -> None:
        root = env.host.sys.root
        if str(root) == "/":
            _run(env, ["systemctl", verb, unit])
        else:
            _run(env, ["systemctl", f"--root={root}", verb, unit], runner=env.tools)

    def prepare(self, env, ch):
        ch.extra["created_dirs"] = _missing_dirs(env.host.sys, ch.extra["link"])

    def write(self, env, ch):
        self._systemctl(env, "enable", ch.target)
        return None

    def state(self, env, ch, result):
        enabled = env.host.sys.exists(ch.extra["link"])
        return ("after" if enabled else "before"), ("enabled" if enabled else "disabled")

    def undo(self, env, ch, result):
        self._systemctl(env, "disable", ch.target)
        self.clean(env, ch)

    def clean(self, env, ch):
        clean_after(env.host.sys, ch.extra["link"], ch.extra.get("created_dirs", []))


class ServiceAction(Action):
    """A systemd unit through the runner; before/after are {"active": ..., "enabled": ...}."""

    name = "service"

    @staticmethod
    def _unit(env, ch) -> dict:
        from gpunode.tune.kinds.service import unit_state

        state = unit_state(env.host, ch.target)
        if state is None:
            raise ApplyError(f"cannot read the state of {ch.target} (systemctl failed)")
        active = "not-installed" if state.get("LoadState") == "not-found" else state.get("ActiveState", "")
        return {"active": active, "enabled": state.get("UnitFileState", "")}

    @staticmethod
    def _matches(current: dict, wanted: dict) -> bool:
        from gpunode.tune.kinds.service import service_satisfies

        active_ok = current["active"] == wanted["active"] or (
            wanted["active"] in ("inactive", "failed", "not-installed")
            and service_satisfies("inactive", current["active"])
        )
        return active_ok and current["enabled"] == wanted["enabled"]

    def _set(self, env, unit: str, frm: dict, to: dict) -> None:
        toggle = to["enabled"] != frm["enabled"] and to["enabled"] in ("enabled", "disabled")
        verb = "enable" if to["enabled"] == "enabled" else "disable"
        if to["active"] == "active":  # enable first, then start
            if toggle:
                _run(env, ["systemctl", verb, unit])
            if frm["active"] != "active":
                _run(env, ["systemctl", "start", unit])
        else:  # stop first, then disable
            if frm["active"] == "active":
                _run(env, ["systemctl", "stop", unit])
            if toggle:
                _run(env, ["systemctl", verb, unit])

    def write(self, env, ch):
        self._set(env, ch.target, self._unit(env, ch), ch.after)
        return None

    def state(self, env, ch, result):
        current = self._unit(env, ch)
        text = f"{current['active']} ({current['enabled']})"
        if self._matches(current, ch.after):
            return "after", text
        if self._matches(current, ch.before):
            return "before", text
        return "other", text

    def undo(self, env, ch, result):
        self._set(env, ch.target, self._unit(env, ch), ch.before)


class GrubbyAction(Action):
    """A kernel argument on RHEL-style BLS hosts through grubby: extra["do"] is the argv that
    adds it, extra["undo"] the argv (or list of argvs) that puts the old arguments back;
    after/before are the token written and the one it replaced (None: none)."""

    name = "grubby"

    @staticmethod
    def _argvs(value) -> list[list[str]]:
        return [value] if value and isinstance(value[0], str) else list(value or [])

    def write(self, env, ch):
        for argv in self._argvs(ch.extra["do"]):
            _run(env, argv, timeout=120)
        return None

    def state(self, env, ch, result):
        out = _run(env, ["grubby", "--info=ALL"], timeout=60)
        args = [line.partition("=")[2].strip().strip('"').split() for line in out.splitlines()
                if line.startswith("args=")]
        if args and all(ch.after in a for a in args):
            return "after", str(ch.after)
        had_old = ch.before is None or all(ch.before in a for a in args)
        if had_old and not any(ch.after in a for a in args):
            return "before", str(ch.before or "(absent)")
        return "other", "differs between boot entries"

    def undo(self, env, ch, result):
        for argv in self._argvs(ch.extra["undo"]):
            _run(env, argv, timeout=120)


class GpuAction(Action):
    """One NVML setting of one GPU; before/after are the values."""

    name = "gpu"
    needs_gpu = True

    @staticmethod
    def _same(key: str, a, b) -> bool:
        if key == "power_limit" and a is not None and b is not None:
            return abs(float(a) - float(b)) < 1.0
        return a == b

    def write(self, env, ch):
        if ch.gpu_reset_required:
            gpu_idle(env, ch.extra["index"], f"{ch.extra['key']} change")
        env.gpu.write(ch.extra["index"], ch.extra["key"], ch.after)
        return None

    def state(self, env, ch, result):
        key = ch.extra["key"]
        current = env.gpu.read(ch.extra["index"], key)
        return _classify(current, ch.before, ch.after, lambda a, b: self._same(key, a, b)), str(current)

    def undo(self, env, ch, result):
        env.gpu.write(ch.extra["index"], ch.extra["key"], ch.before)


def gpu_idle(env, index: int, what: str) -> None:
    pids = env.gpu.processes(index)
    if pids:
        raise GpuControlError(f"refusing {what} on GPU{index}: processes {', '.join(map(str, pids[:5]))} use it")


class MigAction(Action):
    """Create or destroy one MIG GPU instance (before None: a create)."""

    name = "mig"
    needs_gpu = True

    @staticmethod
    def _find(env, ch, inst: dict | None) -> dict | None:
        if inst is None:
            return None
        for found in env.gpu.mig_instances(ch.extra["index"]):
            if (found["profile"], found["start"], found["size"]) == (inst["profile"], inst["start"], inst["size"]):
                return found
        return None

    def write(self, env, ch):
        index = ch.extra["index"]
        gpu_idle(env, index, "a MIG layout change")
        if ch.before is None:
            return {"instance": env.gpu.mig_create(index, ch.after["profile"])}
        found = self._find(env, ch, ch.before)
        if found is None:  # assert first: the instance planned for removal must still be there
            raise ApplyError(f"{ch.subject}: the MIG instance changed since the plan; nothing destroyed")
        env.gpu.mig_destroy(index, found["id"])
        return None

    def state(self, env, ch, result):
        if ch.before is None:  # a create: is the instance gpunode made still there?
            made = (result or {}).get("instance")
            if made is None:
                return "before", "no instance recorded"
            present = self._find(env, ch, made) is not None
            return ("after" if present else "before"), ("present" if present else "absent")
        present = self._find(env, ch, ch.before) is not None  # a destroy
        return ("before" if present else "after"), ("present" if present else "absent")

    def undo(self, env, ch, result):
        index = ch.extra["index"]
        if ch.before is None:
            made = self._find(env, ch, (result or {}).get("instance"))
            if made is not None:
                env.gpu.mig_destroy(index, made["id"])
        else:
            env.gpu.mig_create(index, ch.before["profile"], {"start": ch.before["start"], "size": ch.before["size"]})


REGISTRY: dict[str, Action] = {
    cls.name: cls()
    for cls in (KnobAction, FileAction, EnableAction, ServiceAction, GrubbyAction, GpuAction, MigAction)
}


def action_of(ch: Change) -> Action:
    try:
        return REGISTRY[ch.action]
    except KeyError:
        raise ApplyError(f"{ch.setting_id}: unknown action {ch.action!r}") from None


# --- what execute and rollback call ------------------------------------------------------------
def prepare(env: ApplyEnv, ch: Change) -> None:
    action_of(ch).prepare(env, ch)


def state(env: ApplyEnv, ch: Change, result: dict | None = None) -> tuple[str, str]:
    """-> ("after" | "torn" | "before" | "other", what is there now, as text)."""
    return action_of(ch).state(env, ch, result)


def write(env: ApplyEnv, ch: Change) -> dict | None:
    """Write the change; returns what rollback needs beyond the change (a created MIG id)."""
    result = action_of(ch).write(env, ch)
    _post(env, ch, strict=True)
    return result


def undo(env: ApplyEnv, ch: Change, result: dict | None = None) -> None:
    """Put back what was there before (the caller decides whether it may)."""
    action_of(ch).undo(env, ch, result)
    _post(env, ch, strict=False, argvs=ch.extra.get("undo_post"))  # e.g. modprobe -r, not the write's modprobe


def clean(env: ApplyEnv, ch: Change) -> None:
    action_of(ch).clean(env, ch)


def _post(env: ApplyEnv, ch: Change, strict: bool, argvs: list[list[str]] | None = None) -> None:
    if not env.run_post:
        return
    for argv in ch.post if argvs is None else argvs:
        result = env.host.runner.run(argv, timeout=300)
        if not result.ok and strict:
            detail = (result.stderr or result.error or "").strip().splitlines()
            raise ApplyError(f"{' '.join(argv)} failed: {detail[-1] if detail else f'rc {result.rc}'}")
