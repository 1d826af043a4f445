"""One telemetry reading of one GPU: NVML's reader (host/gpu/nvml.py) makes it, the sampler
(host/gpu/telemetry.py) keeps the trace that bench and diag attach to their figures. A module
of its own beside the GPU model: the gate imports the model before every job and never samples
(issue 21)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Sample:
    """One reading of one GPU. None: NVML does not support the field here (or it failed)."""

    t: float  # seconds, monotonic clock of the sampler
    gpu: int
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temp_c: float | None = None
    mem_temp_c: float | None = None
    utilization_pct: float | None = None
    clock_events: tuple[str, ...] = ()
    pcie_gen: int | None = None
    pcie_width: int | None = None
    pcie_max_gen: int | None = None
    pcie_max_width: int | None = None
    pcie_replay: int | None = None  # cumulative replay counter
    ecc_uncorrected: int | None = None  # volatile totals, cumulative
    ecc_corrected: int | None = None
    remap_uncorrectable: int | None = None  # rows remapped for uncorrectable errors, cumulative
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    processes: tuple[tuple[int, str | None, int | None], ...] | None = None  # (pid, name, bytes); None: not read
    error: str | None = None  # the whole read failed (GPU fell off the bus, NVML error)

    def to_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v is not None and v != ()}
        data["t"] = round(self.t, 3)
        if self.processes is not None:
            data["processes"] = [list(p) for p in self.processes]
        if self.clock_events:
            data["clock_events"] = list(self.clock_events)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Sample:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["clock_events"] = tuple(str(e) for e in kw.get("clock_events") or ())
        if kw.get("processes") is not None:
            kw["processes"] = tuple((int(p[0]), p[1], p[2]) for p in kw["processes"])
        return cls(**kw)
