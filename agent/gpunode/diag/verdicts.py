"""What the telemetry of a diag phase means: pure functions of a telemetry summary
(host/gpu/telemetry.py summarize()), so a saved result is judged exactly as a live one.

- Under load, any throttle reason (HW slowdown, HW/SW thermal slowdown, HW power brake) FAILs.
- Any new uncorrectable ECC error, Xid event, row-remap failure or newly remapped row FAILs;
  a pending remap WARNs (the GPU needs a reset to use it).
- Under full load (stress, sustained GEMM), with the SKU's floors from the baseline: SM clocks
  (median) below the floor FAIL; power that never reaches the share of its limit WARNs.
- A process of someone else on the GPU WARNs: the figures are not trustworthy.
- PCIe replays beyond a few per minute WARN (a marginal link retrains and replays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpunode.host.gpu.telemetry import THROTTLE_EVENTS

PCIE_REPLAYS_WARN = 100  # per phase: a healthy Gen5 link replays rarely, if at all


@dataclass(frozen=True)
class Floors:
    """Per-SKU bounds under full load, from the baseline's `diag:` section (None: not judged)."""

    sm_clock_min_mhz: float | None = None
    power_min_ratio: float | None = None  # of the enforced power limit, max over the phase
    source: str = ""

    @classmethod
    def from_mapping(cls, data: dict | None) -> Floors:
        data = data or {}
        return cls(data.get("sm_clock_min_mhz"), data.get("power_min_ratio"), str(data.get("source", "")))


@dataclass(frozen=True)
class Finding:
    status: str  # WARN | FAIL | ERROR
    kind: str  # throttle | errors | clocks | power | interference | pcie | telemetry
    text: str


def errors_findings(tel: dict[str, Any]) -> list[Finding]:
    out = []
    if (tel.get("ecc_uncorrected_delta") or 0) > 0:
        out.append(Finding("FAIL", "errors", f"{tel['ecc_uncorrected_delta']} new uncorrectable ECC error(s)"))
    xids = [x for x in tel.get("xid") or [] if isinstance(x, dict)]
    if xids:
        shown = ", ".join(str(x.get("xid")) for x in xids[:5])
        out.append(Finding("FAIL", "errors", f"Xid event(s) during the run: {shown}"))
    if tel.get("remap_failure"):
        out.append(Finding("FAIL", "errors", "row remapping failed (no spare rows left)"))
    if (tel.get("remap_uncorrectable_delta") or 0) > 0:
        out.append(Finding("FAIL", "errors", f"{tel['remap_uncorrectable_delta']} row(s) newly remapped "
                                             "for uncorrectable errors"))
    if tel.get("remap_pending"):
        out.append(Finding("WARN", "errors", "a row remap is pending: reset the GPU to use the spare row"))
    replays = tel.get("pcie_replay_delta") or 0
    if replays > PCIE_REPLAYS_WARN:
        out.append(Finding("WARN", "pcie", f"{replays} PCIe replays (a marginal link)"))
    return out


def load_findings(tel: dict[str, Any], floors: Floors, full_load: bool) -> list[Finding]:
    """Verdicts on a window in which gpunode loaded the GPU."""
    out = _throttle_findings(tel)
    if full_load:
        out += _clock_floor_findings(tel, floors) + _power_floor_findings(tel, floors)
    return out + _interference_findings(tel) + errors_findings(tel)


def _throttle_findings(tel: dict[str, Any]) -> list[Finding]:
    throttled = [e for e in tel.get("throttle_events") or tel.get("clock_events") or [] if e in THROTTLE_EVENTS]
    if throttled:
        return [Finding("FAIL", "throttle", f"slowed down under load: {', '.join(throttled)}")]
    return []


def _clock_floor_findings(tel: dict[str, Any], floors: Floors) -> list[Finding]:
    """Under full load the median SM clock must reach the floor."""
    sm = (tel.get("sm_clock_mhz") or {}).get("median")
    if floors.sm_clock_min_mhz is not None and sm is not None and sm < floors.sm_clock_min_mhz:
        return [Finding("FAIL", "clocks", f"SM clock {sm:.0f} MHz (median) under full load, "
                                          f"below the {floors.sm_clock_min_mhz:.0f} MHz floor")]
    return []


def _power_floor_findings(tel: dict[str, Any], floors: Floors) -> list[Finding]:
    """Under full load the power must peak at the floor's share of its limit, at least."""
    power, limit = (tel.get("power_w") or {}).get("max"), tel.get("power_limit_w")
    if floors.power_min_ratio is not None and power is not None and limit and power < floors.power_min_ratio * limit:
        return [Finding("WARN", "power", f"power peaked at {power:.0f} W, never reaching "
                                         f"{floors.power_min_ratio:.0%} of its {limit:.0f} W limit")]
    return []


def _interference_findings(tel: dict[str, Any]) -> list[Finding]:
    foreign = [p for p in tel.get("foreign_processes") or [] if isinstance(p, dict)]
    if foreign:
        shown = ", ".join(f"pid {p.get('pid')} ({p.get('name') or '?'})" for p in foreign[:3])
        return [Finding("WARN", "interference", f"not trustworthy: another process used the GPU: {shown}")]
    return []


def telemetry_gap(tel: dict[str, Any] | None, errors: list[str]) -> Finding | None:
    """No telemetry at all: thermal and power cannot be judged (said, not silently passed)."""
    if tel:
        read = tel.get("read_errors")
        if read and read.get("count", 0) * 2 > tel.get("samples", 0):
            return Finding("ERROR", "telemetry", f"most telemetry reads failed: {read.get('first')}")
        return None
    why = "; ".join(errors) or "no samples"
    return Finding("WARN", "telemetry", f"no telemetry: power, clocks and errors were not watched ({why})")
