"""The write side of settings: a Change is one planned write, with what it replaces.

Each kind's `plan(...)` turns the Observed subjects that are not satisfied into Changes;
gpunode.tune journals, writes, verifies and restores them. `action` says how a change is
written and restored (one implementation per action in gpunode.tune.actions):

- knob:    a one-value file under /proc or /sys; before/after are the active values.
- file:    a whole config file; before/after are file states (see FileState) so a rollback
           is byte-exact, including "the file did not exist" and symlinks.
- service: a systemd unit; before/after are {"active": ..., "enabled": ...}.
- gpu:     one NVML setting of one GPU; before/after are the values.
- mig:     create or destroy one MIG GPU instance.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Change:
    setting_id: str  # kind/key, or persist/<what> for boot persistence
    subject: str  # what the operator sees: a path, GPU0, a unit, a NIC's IRQ
    action: str  # a name in gpunode.tune.actions.REGISTRY (knob, file, enable, service, grubby, gpu, mig)
    target: str  # the path, unit or GPU field the action writes
    before: Any
    after: Any
    current_text: str = ""  # for the plan table
    after_text: str = ""
    needs_root: bool = True
    reboot_required: bool = False
    gpu_reset_required: bool = False
    blocked: str = ""  # why this change is planned but will not be written now
    note: str = ""
    post: list[list[str]] = field(default_factory=list)  # commands after a write or restore (live only)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Change:
        return cls(**data)


@dataclass(frozen=True)
class FileState:
    """A file exactly as it was: absent, a symlink, or bytes with a mode."""

    exists: bool
    data: bytes | None = None
    mode: int | None = None
    link: str | None = None

    def to_json(self) -> dict:
        return {
            "exists": self.exists,
            "data": None if self.data is None else base64.b64encode(self.data).decode("ascii"),
            "mode": self.mode,
            "link": self.link,
        }

    @classmethod
    def from_json(cls, data: dict) -> FileState:
        raw = data.get("data")
        return cls(data["exists"], None if raw is None else base64.b64decode(raw), data.get("mode"), data.get("link"))

    def describe(self) -> str:
        if not self.exists:
            return "(absent)"
        if self.link is not None:
            return f"-> {self.link}"
        return f"{len(self.data or b'')} bytes"


def read_file_state(sysroot, path: str) -> FileState:
    """The exact state of a file under the SysRoot (bytes, mode, or symlink target), read
    through its openat chain: the fd that is read is the one whose mode is recorded."""
    found = sysroot.file_state(path)
    if found is None:
        return FileState(False)
    data, mode, link = found
    return FileState(True, link=link) if link is not None else FileState(True, data, mode)


class PlannedFiles:
    """File states as they will be once the changes planned so far are written, so several
    settings can edit one file in sequence (each change's before is the previous one's after)."""

    def __init__(self, sysroot):
        self.sys = sysroot
        self.states: dict[str, FileState] = {}

    def state(self, path: str) -> FileState:
        if path not in self.states:
            self.states[path] = read_file_state(self.sys, path)
        return self.states[path]

    def text(self, path: str) -> str | None:
        st = self.state(path)
        if not st.exists:
            return None
        if st.link is not None:
            return self.sys.read(path)
        return (st.data or b"").decode("utf-8", errors="replace")

    def change(self, setting_id: str, path: str, new: FileState, **kw) -> Change | None:
        before = self.state(path)
        if before == new:
            return None
        if not kw.get("blocked"):  # a change that will not be written must not shape later ones
            self.states[path] = new
        if not kw.get("current_text"):
            kw["current_text"] = before.describe()
        return Change(
            setting_id=setting_id,
            subject=path,
            action="file",
            target=path,
            before=before.to_json(),
            after=new.to_json(),
            **kw,
        )

    def write_text(self, setting_id: str, path: str, text: str, mode: int = 0o644, **kw) -> Change | None:
        before = self.state(path)
        keep_mode = before.mode if before.exists and before.link is None and before.mode is not None else mode
        return self.change(setting_id, path, FileState(True, text.encode("utf-8"), keep_mode), **kw)
