"""Can a bench figure be trusted? Reads what the telemetry saw while the metric ran, and its spread.

A figure measured while another process used the GPU, while the GPU throttled (hardware or
thermal slowdown) or while it logged new ECC/Xid errors says little about the hardware: such a
figure is "not trustworthy". A spread (CoV) above the baseline's bound is "unstable". A low
figure names its likely cause when the telemetry shows one. Pure functions of the stored JSON,
so `gpunode compare` on a saved result judges exactly as `bench --compare` did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpunode.host.gpu.telemetry import THROTTLE_EVENTS  # SW power cap is not one: sustained GEMM sits at it

DEFAULT_MAX_COV = 0.05  # the spread bound when a baseline gives none
UNTRUSTED = ("interference", "throttle", "errors")  # kinds that make a figure not trustworthy


@dataclass(frozen=True)
class Concern:
    kind: str  # interference | throttle | errors | unstable
    text: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "text": self.text}


def _mib(nbytes: Any) -> str:
    return f", {nbytes / (1 << 30):.1f} GiB" if isinstance(nbytes, (int, float)) and nbytes > 0 else ""


def foreign_text(procs: list[dict]) -> str:
    shown = [f"pid {p.get('pid')}" + (f" ({p.get('name')}{_mib(p.get('used_bytes'))})" if p.get("name") else "")
             for p in procs[:3]]
    more = f" +{len(procs) - 3} more" if len(procs) > 3 else ""
    return f"foreign process on the GPU: {', '.join(shown)}{more}"


def concerns(telemetry: dict | None, cov: float | None, max_cov: float = DEFAULT_MAX_COV) -> list[Concern]:
    """Everything that makes this measurement doubtful, most serious first."""
    tel = telemetry or {}
    found = [("interference", _interference(tel)), ("throttle", _throttle(tel)), ("errors", _errors(tel)),
             ("unstable", _unstable(cov, max_cov))]
    return [Concern(kind, text) for kind, text in found if text]


def _interference(tel: dict) -> str | None:
    foreign = [p for p in tel.get("foreign_processes") or [] if isinstance(p, dict)]
    return foreign_text(foreign) if foreign else None


def _throttle(tel: dict) -> str | None:
    throttled = [e for e in tel.get("clock_events") or [] if e in THROTTLE_EVENTS]
    return f"GPU throttled: {', '.join(throttled)}" if throttled else None


def _errors(tel: dict) -> str | None:
    """New uncorrectable ECC errors, Xids, and HBM row remapping for uncorrectable errors."""
    errors = []
    if (tel.get("ecc_uncorrected_delta") or 0) > 0:
        errors.append(f"{tel['ecc_uncorrected_delta']} new uncorrectable ECC error(s)")
    xids = [x for x in tel.get("xid") or [] if isinstance(x, dict)]
    if xids:
        errors.append("Xid " + ", ".join(str(x.get("xid")) for x in xids[:3]))
    if (tel.get("remap_uncorrectable_delta") or 0) > 0 or tel.get("remap_failure"):
        errors.append("HBM row remapping for uncorrectable errors")
    return "; ".join(errors) if errors else None


def _unstable(cov: float | None, max_cov: float) -> str | None:
    if cov is not None and cov > max_cov:
        return f"unstable: CoV {cov:.1%} above the {max_cov:.1%} bound"
    return None


def untrusted(found: list[Concern]) -> list[Concern]:
    return [c for c in found if c.kind in UNTRUSTED]


def likely_cause(telemetry: dict | None) -> str | None:
    """Why a figure may be low, from what the telemetry saw; None when it shows nothing."""
    tel = telemetry or {}
    found = concerns(tel, None)
    if found:
        return found[0].text
    return _pcie_below_capability(tel) or _power_capped(tel)


def _pcie_below_capability(tel: dict) -> str | None:
    pcie = tel.get("pcie") or {}
    gen, width, max_gen, max_width = (pcie.get(k) for k in ("gen", "width", "max_gen", "max_width"))
    if gen and max_gen and gen < max_gen or width and max_width and width < max_width:
        return f"PCIe link at Gen{gen} x{width} during the copy (capable of Gen{max_gen} x{max_width})"
    return None


def _power_capped(tel: dict) -> str | None:
    power, limit = (tel.get("power_w") or {}).get("median"), tel.get("power_limit_w")
    if power and limit and power >= 0.97 * limit:
        return f"power-capped: {power:.0f} W of a {limit:.0f} W limit"
    if "sw_power_cap" in (tel.get("clock_events") or []):
        return "clocks held down by the power cap (sw_power_cap)"
    return None


def describe(telemetry: dict | None) -> str:
    """One short line of conditions for tables: clocks, power, temperature."""
    tel = telemetry or {}
    parts = []
    sm = (tel.get("sm_clock_mhz") or {}).get("median")
    if sm:
        parts.append(f"SM {sm:.0f} MHz")
    power = (tel.get("power_w") or {}).get("median")
    if power:
        parts.append(f"{power:.0f} W")
    temp = (tel.get("temp_c") or {}).get("max")
    if temp:
        parts.append(f"{temp:.0f} °C")
    return ", ".join(parts)
