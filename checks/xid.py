"""Xid events (NVIDIA driver error reports) in the kernel log within a time window.

A line looks like `NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python, GPU has fallen off the
bus.` (older drivers: `NVRM: Xid (0000:03:00): 14, Channel 00000001`). Newer drivers may report a
GPU lost from the bus without an Xid line ("NVRM: GPU at ... has fallen off the bus" or "The
NVIDIA GPU ... has fallen off the bus"); that counts as Xid 79. The kernel log is the current
boot's (journalctl -k / dmesg), shared through gpunode.host.facts.kernlog.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from typing import NamedTuple

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip, warn
from gpunode.checks.gpu_common import nvidia_pci_gpus
from gpunode.host.facts.kernlog import LogRecord, kernel_log
from gpunode.host.gpu.model import RECOVERY_ACTIONS

# Hardware/driver Xids that need a reset, a reboot or service (the list public health checkers
# such as Azure's use), plus 95: an uncontained ECC error, which NVIDIA resolves with a GPU reset.
CRITICAL_XIDS = frozenset({48, 56, 57, 58, 62, 63, 64, 65, 68, 69, 73, 74, 79, 80, 81, 92, 95, 119, 120})
# Faults of the user's program; the GPU itself is fine (NVIDIA Xid catalog).
APPLICATION_XIDS = frozenset({13, 31, 43, 45})
DESCRIPTIONS = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    48: "double-bit ECC error",
    56: "display engine error",
    57: "video memory interface error",
    58: "unstable video memory interface",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remap recorded",
    64: "ECC page retirement or row remap failed",
    65: "video processor exception",
    68: "NVDEC0 exception",
    69: "graphics engine class error",
    73: "NVENC2 error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    80: "corrupted data sent to the GPU",
    81: "VGA subsystem error",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    154: "GPU recovery action changed",
}
RECOVERY_XID = 154  # "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
SAME_EVENT_S = 60.0  # a "fallen off the bus" notice this close to an Xid 79 is the same event

_ADDR = r"(?P<addr>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?"
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?" + _ADDR + r"\): (?P<xid>\d+)(?P<rest>.*)")
_FALLEN = re.compile(r"NVRM: (?:GPU at (?:PCI:)?|The NVIDIA GPU )" + _ADDR + r"\b.*fallen off the bus")
# Compiled at first use (re's own cache): only Xid lines need them, the gate imports this before
# every job (issue 21).
_PID = r"\bpid='?(?P<pid>\d+)'?"
_NAME = r"\bname=(?P<name>[^,]+)"
_ACTION = r"recovery action changed (?:from 0x[0-9a-fA-F]+ \([^)]*\) )?to 0x(?P<code>[0-9a-fA-F]+)"
# The driver (re)loaded: every GPU was initialised afresh after this line.
_DRIVER_LOAD = re.compile(r"NVRM: loading NVIDIA UNIX")


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class XidEvent(NamedTuple):
    """One `NVRM: Xid` line of the kernel log: when, which GPU (PCI address), which Xid."""

    time: float | None
    address: str  # 0000:18:00, the form the driver prints
    xid: int
    pid: int | None = None
    name: str | None = None
    detail: str = ""  # the driver's words after the pid/name fields
    inferred: bool = False  # a "fallen off the bus" notice without an Xid line


def pci_address(text: str) -> str:
    """00000000:18:00.0 / 0000:18:00 -> 0000:18:00 (domain, bus, device), lower case."""
    domain, bus, device = text.lower().split(".")[0].split(":")[:3]
    return f"{domain[-4:].zfill(4)}:{bus}:{device}"


def parse_events(records: list[LogRecord]) -> tuple[list[XidEvent], list[LogRecord]]:
    """-> (Xid events, Xid lines too garbled to read)."""
    events: list[XidEvent] = []
    unreadable: list[LogRecord] = []
    inferred: list[XidEvent] = []
    for rec in records:
        match = _XID.search(rec.text)
        if match:
            rest = match.group("rest")
            pid = re.search(_PID, rest)
            name = re.search(_NAME, rest)
            events.append(XidEvent(
                time=rec.time,
                address=pci_address(match.group("addr")),
                xid=int(match.group("xid")),
                pid=int(pid.group("pid")) if pid else None,
                name=name.group("name").strip() if name and "<unknown>" not in name.group("name") else None,
                detail=_detail(rest),
            ))
        elif "NVRM: Xid" in rec.text:
            unreadable.append(rec)
        else:
            fallen = _FALLEN.search(rec.text)
            if fallen:
                inferred.append(XidEvent(rec.time, pci_address(fallen.group("addr")), 79,
                                         detail=rec.text[fallen.start():], inferred=True))
    for extra in inferred:
        if not any(e.xid == 79 and e.address == extra.address and _close(e.time, extra.time) for e in events):
            events.append(extra)
    return events, unreadable


def _detail(rest: str) -> str:
    """', pid=1234, name=python, GPU has fallen off the bus.' -> 'GPU has fallen off the bus.'"""
    fields = [f.strip() for f in rest.split(",")]
    while fields and (not fields[0] or fields[0].startswith(("pid=", "name="))):
        fields.pop(0)
    return ", ".join(fields)


def _close(a: float | None, b: float | None) -> bool:
    return a is None or b is None or abs(a - b) <= SAME_EVENT_S


def recovery_target(event: XidEvent) -> int | None:
    """The recovery action an Xid 154 changed to (0: none any more), or None when unreadable."""
    match = re.search(_ACTION, event.detail)
    return int(match.group("code"), 16) if match else None


def is_critical(event: XidEvent) -> bool:
    """A critical Xid; an Xid 154 is one unless it says the recovery action went back to none."""
    if event.xid == RECOVERY_XID:
        return recovery_target(event) != 0
    return event.xid in CRITICAL_XIDS


def driver_loaded_at(records: list[LogRecord]) -> float | None:
    """When the NVIDIA driver last loaded in this boot's log (None: not in the log)."""
    times = [rec.time for rec in records if rec.time is not None and _DRIVER_LOAD.search(rec.text)]
    return max(times) if times else None


def _when(t: float | None) -> str:
    if t is None:
        return "time unknown"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def summarize(events: list[XidEvent]) -> str:
    """'Xid 79 (GPU has fallen off the bus) x2, last 2026-11-22 10:00:00Z pid 1234 python; ...'"""
    parts = []
    for xid in sorted({e.xid for e in events}):
        same = [e for e in events if e.xid == xid]
        last = max(same, key=lambda e: e.time if e.time is not None else float("inf"))
        what = DESCRIPTIONS.get(xid) or last.detail[:60]
        what = f" ({what})" if what else ""
        how = " from a 'fallen off the bus' notice" if all(e.inferred for e in same) else ""
        who = f" pid {last.pid}" if last.pid is not None else ""
        who += f" {last.name}" if last.name else ""
        parts.append(f"Xid {xid}{what}{how} x{len(same)}, last {_when(last.time)}{who}")
    return "; ".join(parts)


def judge_events(events: list[XidEvent], window: str, older: int, recovery: int | None = None,
                 recovery_error: str | None = None, before_load: int = 0):
    """recovery: NVML's recovery action for this GPU now (None: not reported). When it is 0 (none),
    critical Xids up to the GPU's last Xid 154 were dealt with (the reset or reboot it asked for
    happened): they warn instead of failing, so a reset GPU is not drained for the rest of the window."""
    counts = dict(sorted(Counter(e.xid for e in events).items()))
    critical, other, benign = _classify(events)
    observed: dict = counts if recovery is None else {**counts, "recovery_action": recovery}
    if recovery:
        action = RECOVERY_ACTIONS.get(recovery, f"action {recovery}")
        seen = f"; {summarize(critical)} ({window})" if critical else ""
        return bad(f"NVML recovery action: {action}{seen}", observed=observed, expected="recovery action none")
    critical, resolved = _dealt_with(events, critical, recovery)
    if critical:
        return bad(f"critical {summarize(critical)} ({window})", observed=observed, expected="no critical Xid")
    tail = _notes(before_load, older, recovery_error)
    if resolved:
        return warn(f"{summarize(resolved)} ({window}); dealt with: NVML reports no recovery action pending "
                    f"since{tail}", observed=observed, expected="no critical Xid")
    if other:
        return warn(f"{summarize(other)} ({window}){tail}", observed=observed, expected="no Xid")
    if benign:
        what = ("only application Xids, faults of user programs" if all(e.xid in APPLICATION_XIDS for e in benign)
                else "only Xids that need no service")
        return ok(f"{what}: {summarize(benign)} ({window}){tail}", observed=observed)
    return ok(f"no Xid ({window}){tail}", observed=observed)


def _classify(events: list[XidEvent]) -> tuple[list[XidEvent], list[XidEvent], list[XidEvent]]:
    """(critical, other that may need service, benign: application Xids and recovery notices)."""
    critical = [e for e in events if is_critical(e)]
    other = [e for e in events if not is_critical(e) and e.xid not in APPLICATION_XIDS and e.xid != RECOVERY_XID]
    benign = [e for e in events if e not in critical and e not in other]
    return critical, other, benign


def _dealt_with(events: list[XidEvent], critical: list[XidEvent],
                recovery: int | None) -> tuple[list[XidEvent], list[XidEvent]]:
    """(critical Xids still standing, those dealt with): with NVML's recovery action back at 0
    (none), the critical Xids up to the last Xid 154 were resolved by the reset or reboot it asked for."""
    if recovery != 0:
        return critical, []
    asked = [e.time for e in events if e.xid == RECOVERY_XID and e.time is not None]
    if not asked:
        return critical, []
    resolved = [e for e in critical if e.time is not None and e.time <= max(asked)]
    return [e for e in critical if e not in resolved], resolved


def _notes(before_load: int, older: int, recovery_error: str | None) -> str:
    """'; N event(s) before the driver last loaded; ...' or ''."""
    notes = []
    if before_load:
        notes.append(f"{before_load} event(s) before the driver last loaded")
    if older:
        notes.append(f"{older} older event(s) outside the window")
    if recovery_error:
        notes.append(f"recovery action not read: {recovery_error}")
    return f"; {'; '.join(notes)}" if notes else ""


@check("gpu.xid", "No critical Xid in the kernel log (within the window) and no recovery action pending", area="gpu",
       severity="critical", tags=["gate"], needs_gpu=True, cost="slow",
       remediation="Look the Xid up in NVIDIA's catalog (docs.nvidia.com/deploy/xid-errors). Critical ones: "
                   "drain the node, reset the GPU or reboot; a GPU that repeats them needs service or RMA. "
                   "Application Xids (13, 31, 43, 45) point at the user's program.")
def xid_events(ctx: AuditContext):
    host = ctx.host
    pci = nvidia_pci_gpus(host)
    if pci:  # read the log (kept for the run) while the NVML pass, tens of ms before a job, goes on
        kernel_log(host)
    gpus, no_nvml = _nvml_gpus(ctx)
    if not gpus and not pci:
        raise CheckSkipped(no_nvml or "NVML found no GPU")
    log = kernel_log(host)
    if log.source is None:
        return _without_log(host, gpus, log)

    hours = ctx.config.xid_window_hours
    since = host.facts.now - hours * 3600.0
    window = f"last {hours:g} h, {log.source}, this boot"
    events, unreadable = parse_events(log.records)
    label_of, subjects = _subjects(gpus, pci)
    older, before_load = _file_events(events, label_of, subjects, since, driver_loaded_at(log.records))
    gpu_of = {g.label: g for g in gpus}
    findings = []
    for label, evs in subjects.items():
        g = gpu_of.get(label)
        recovery = g.recovery_action if g is not None else None
        problem = g.field_errors.get("recovery_action") if g is not None else None
        findings.append(replace(judge_events(evs, window, older[label], recovery, problem, before_load[label]),
                                subject=label))
    garbled = [rec.text[:120] for rec in unreadable if rec.time is None or rec.time >= since]
    if garbled:
        findings.append(warn(f"{len(garbled)} Xid line(s) too garbled to read, e.g. {garbled[-1]!r} ({window})",
                             observed=garbled, subject="kernel log"))
    return findings


def _nvml_gpus(ctx: AuditContext) -> tuple[list, str | None]:
    """(the GPUs NVML lists, why it lists none)."""
    try:
        inv = ctx.inventory()
        return (inv.gpus, None) if inv.available else ([], inv.error or "no NVIDIA driver/NVML")
    except TimeoutError as exc:
        return [], f"NVML hung: {exc}"


def _without_log(host, gpus: list, log) -> list:
    """The kernel log is unreadable: SKIP (not root) or ERROR; the driver's own word on a GPU that
    needs a reset or reboot does not need the log."""
    pending = [replace(judge_events([], "kernel log unreadable", 0, g.recovery_action), subject=g.label)
               for g in gpus if g.recovery_action]
    if log.denied and not host.facts.is_root:
        return [*pending, skip(f"needs root: the kernel log is not readable ({log.error})")]
    return [*pending, error(f"cannot read the kernel log: {log.error}")]


def _subjects(gpus: list, pci: list[str]) -> tuple[dict[str, str], dict[str, list[XidEvent]]]:
    """({PCI address: GPU label}, {subject: []}): one subject per GPU NVML knows; GPUs only the
    PCI bus shows (NVML lost or missing) by address."""
    label_of = {pci_address(g.pci_bus_id): g.label for g in gpus if g.pci_bus_id}
    subjects: dict[str, list[XidEvent]] = {g.label: [] for g in gpus}
    for bdf in pci:
        if pci_address(bdf) not in label_of:
            subjects.setdefault(f"PCI {pci_address(bdf)}", [])
    return label_of, subjects


def _file_events(events: list[XidEvent], label_of: dict[str, str], subjects: dict[str, list[XidEvent]],
                 since: float, loaded: float | None) -> tuple[Counter, Counter]:
    """Put each event in the window under its subject; -> (older events, events from before the
    driver last loaded), counted per subject."""
    older: Counter = Counter()
    before_load: Counter = Counter()
    for e in events:
        label = label_of.get(e.address, f"PCI {e.address}")
        if e.time is not None and e.time < since:
            older[label] += 1
            continue
        if e.time is not None and loaded is not None and e.time < loaded:
            before_load[label] += 1  # the GPUs were initialised afresh when the driver loaded
            continue
        subjects.setdefault(label, []).append(e)
    return older, before_load
