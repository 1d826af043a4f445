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
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip, warn
from gpunode.checks.gpu_common import nvidia_pci_gpus
from gpunode.host.facts.kernlog import LogRecord, kernel_log

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
}
SAME_EVENT_S = 60.0  # a "fallen off the bus" notice this close to an Xid 79 is the same event

_ADDR = r"(?P<addr>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?"
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?" + _ADDR + r"\): (?P<xid>\d+)(?P<rest>.*)")
_FALLEN = re.compile(r"NVRM: (?:GPU at (?:PCI:)?|The NVIDIA GPU )" + _ADDR + r"\b.*fallen off the bus")
_PID = re.compile(r"\bpid='?(?P<pid>\d+)'?")
_NAME = re.compile(r"\bname=(?P<name>[^,]+)")


@dataclass(frozen=True)
class XidEvent:
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
            pid = _PID.search(rest)
            name = _NAME.search(rest)
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


def judge_events(events: list[XidEvent], window: str, older: int):
    counts = dict(sorted(Counter(e.xid for e in events).items()))
    critical = [e for e in events if e.xid in CRITICAL_XIDS]
    other = [e for e in events if e.xid not in CRITICAL_XIDS and e.xid not in APPLICATION_XIDS]
    application = [e for e in events if e.xid in APPLICATION_XIDS]
    if critical:
        return bad(f"critical {summarize(critical)} ({window})", observed=counts, expected="no critical Xid")
    if other:
        return warn(f"{summarize(other)} ({window})", observed=counts, expected="no Xid")
    if application:
        return ok(f"only application Xids, faults of user programs: {summarize(application)} ({window})",
                  observed=counts)
    older_text = f"; {older} older event(s) outside the window" if older else ""
    return ok(f"no Xid ({window}){older_text}", observed=counts)


@check("gpu.xid", "No critical Xid events in the kernel log (within the window)", area="gpu",
       severity="critical", tags=["gate"], needs_gpu=True, cost="slow",
       remediation="Look the Xid up in NVIDIA's catalog (docs.nvidia.com/deploy/xid-errors). Critical ones: "
                   "drain the node, reset the GPU or reboot; a GPU that repeats them needs service or RMA. "
                   "Application Xids (13, 31, 43, 45) point at the user's program.")
def xid_events(ctx: AuditContext):
    host = ctx.host
    try:
        inv = ctx.inventory()
        gpus, no_nvml = (inv.gpus, None) if inv.available else ([], inv.error or "no NVIDIA driver/NVML")
    except TimeoutError as exc:
        gpus, no_nvml = [], f"NVML hung: {exc}"
    pci = nvidia_pci_gpus(host)
    if not gpus and not pci:
        raise CheckSkipped(no_nvml or "NVML found no GPU")
    log = kernel_log(host)
    if log.source is None:
        if log.denied and not host.facts.is_root:
            return skip(f"needs root: the kernel log is not readable ({log.error})")
        return error(f"cannot read the kernel log: {log.error}")

    hours = ctx.config.xid_window_hours
    since = host.facts.now - hours * 3600.0
    window = f"last {hours:g} h, {log.source}, this boot"
    events, unreadable = parse_events(log.records)

    # One subject per GPU NVML knows; GPUs only the PCI bus shows (NVML lost or missing) by address.
    label_of = {pci_address(g.pci_bus_id): g.label for g in gpus if g.pci_bus_id}
    subjects: dict[str, list[XidEvent]] = {g.label: [] for g in gpus}
    for bdf in pci:
        if pci_address(bdf) not in label_of:
            subjects.setdefault(f"PCI {pci_address(bdf)}", [])
    older: Counter = Counter()
    for e in events:
        label = label_of.get(e.address, f"PCI {e.address}")
        if e.time is not None and e.time < since:
            older[label] += 1
            continue
        subjects.setdefault(label, []).append(e)
    findings = [replace(judge_events(evs, window, older[label]), subject=label) for label, evs in subjects.items()]
    garbled = [rec.text[:120] for rec in unreadable if rec.time is None or rec.time >= since]
    if garbled:
        findings.append(warn(f"{len(garbled)} Xid line(s) too garbled to read, e.g. {garbled[-1]!r} ({window})",
                             observed=garbled, subject="kernel log"))
    return findings
