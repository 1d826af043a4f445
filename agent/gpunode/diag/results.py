"""The diag results contract (schema gpunode.diag/1).

A document holds one result per test and subject (gate, gemm.correctness GPU0, hbm.memtest GPU0,
load.stress GPU0 ...), each PASS/WARN/FAIL/ERROR/SKIP like an audit check. The document's status is
the one vocabulary of every gpunode document: any FAIL -> FAIL (exit 2); else any ERROR -> UNKNOWN
(3); else any WARN -> WARN (1); else OK (0). A run that tested nothing, or was interrupted, is
UNKNOWN: never a clean bill of health.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gpunode import status
from gpunode.bench.results import require_schema
from gpunode.diag.metrics import metrics_of
from gpunode.exits import EXIT_CODES

SCHEMA = "gpunode.diag/1"
STATUSES = status.RESULTS
LEVELS = (1, 2, 3)


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    name: str  # gate | gemm.correctness | gemm.cross_gpu | gemm.sustained | hbm.memtest | stress.* | pcie.copy ...
    gpu: int | None  # NVML index; None for node-wide tests
    status: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)  # numbers an operator compares (TFLOP/s, GB/s ...)
    detail: dict[str, Any] | None = None  # what failed exactly (iterations, addresses, gate checks)
    telemetry: dict[str, Any] | None = None  # host/gpu/telemetry.py summary of the test's window

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"diag result {self.name}: status {self.status!r} not in {STATUSES}")

    @property
    def subject(self) -> str:
        return "" if self.gpu is None else f"GPU{self.gpu}"

    def to_json(self) -> dict:
        data: dict[str, Any] = {"name": self.name, "gpu": self.gpu, "status": self.status, "message": self.message,
                                "figures": self.figures}
        optional = {"detail": self.detail, "telemetry": self.telemetry}  # written only when present
        return {**data, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_json(cls, data: Any) -> TestResult:
        if not isinstance(data, dict):
            raise ValueError(f"diag result: expected an object, got {type(data).__name__}")
        name, gpu, status = data.get("name"), data.get("gpu"), data.get("status")
        _check_identity(name, gpu, status)
        _check_sections(name, data)
        return cls(name, gpu, status, str(data.get("message", "")), dict(data.get("figures") or {}),
                   data.get("detail"), data.get("telemetry"))


def _check_identity(name: Any, gpu: Any, status: Any) -> None:
    """A stored result's name (one printable line), GPU (an index or null) and status word."""
    if not isinstance(name, str) or not name.isprintable() or not name:
        raise ValueError(f"diag result name must be a one-line string, got {name!r:.80}")
    if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int)):
        raise ValueError(f"diag result {name}: gpu must be an index or null, got {gpu!r:.80}")
    if status not in STATUSES:
        raise ValueError(f"diag result {name}: status {status!r:.40} not in {STATUSES}")


def _check_sections(name: str, data: dict) -> None:
    """figures, detail and telemetry are mappings where present; every float figure is finite."""
    for key in ("figures", "detail", "telemetry"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"diag result {name}: {key} must be a mapping")
    for key, value in (data.get("figures") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"diag result {name}: figure {key} is not finite")


def overall(results: list[TestResult], interrupted: bool = False) -> str:
    statuses = {r.status for r in results}
    if "FAIL" in statuses:
        return "FAIL"
    if "ERROR" in statuses or interrupted or not statuses - {"SKIP"}:
        return "UNKNOWN"
    if "WARN" in statuses:
        return "WARN"
    return "OK"


@dataclass
class DiagDocument:
    gpunode_version: str
    host: str
    time: str  # ISO 8601, UTC
    time_epoch: float
    level: int
    duration_s: float  # wall time of the run
    planned_s: float | None  # --duration (or the level's default)
    gpus: dict  # the audit's meta["gpus"] object
    tools: dict[str, str]
    results: list[TestResult]
    interrupted: bool = False
    telemetry: dict[str, Any] | None = None  # per GPU summary of the whole run {"0": {...}}
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return overall(self.results, self.interrupted)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA, "gpunode_version": self.gpunode_version, "host": self.host, "time": self.time,
            "time_epoch": self.time_epoch, "level": self.level, "duration_s": round(self.duration_s, 2),
            "planned_s": self.planned_s, "gpus": self.gpus, "tools": dict(self.tools),
            "summary": {s: n for s in STATUSES if (n := sum(1 for r in self.results if r.status == s))},
            "results": [r.to_json() for r in self.results], "metrics": metrics_of(self.results),
            "interrupted": self.interrupted,
            "telemetry": self.telemetry, "notes": list(self.notes),
            "status": self.status, "exit_code": self.exit_code,
        }

    @classmethod
    def from_json(cls, data: Any) -> DiagDocument:
        require_schema(data, SCHEMA, "diag result")
        if data.get("level") not in LEVELS:
            raise ValueError(f"diag result: level {data.get('level')!r} not in {LEVELS}")
        results = data.get("results")
        if not isinstance(results, list):
            raise ValueError("diag result: results must be a list")
        return cls(
            gpunode_version=str(data.get("gpunode_version", "")), host=str(data.get("host", "")),
            time=str(data.get("time", "")), time_epoch=float(data.get("time_epoch") or 0.0), level=data["level"],
            duration_s=float(data.get("duration_s") or 0.0),
            planned_s=data.get("planned_s") if isinstance(data.get("planned_s"), (int, float)) else None,
            gpus=dict(data.get("gpus") or {}), tools=dict(data.get("tools") or {}),
            results=[TestResult.from_json(r) for r in results], interrupted=bool(data.get("interrupted")),
            telemetry=data.get("telemetry") if isinstance(data.get("telemetry"), dict) else None,
            notes=[str(n) for n in data.get("notes") or []],
        )
