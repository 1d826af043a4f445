"""The bench results contract (schema gpunode.bench/1), shared with the baselines and fleet code.

`gpunode bench --json FILE` writes a BenchDocument. Units: TFLOP/s, GB/s (1e9 bytes/s), IOPS,
us, MB/s (1e6 bytes/s, fio). A metric's status is ok | fail | error | skip; the document's status
follows audit's rules: any fail -> FAIL (exit 2), else any error -> UNKNOWN (3), else OK (0);
a run in which nothing was measured at all (every metric skipped) is UNKNOWN too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from gpunode import status
from gpunode.exits import EXIT_CODES

SCHEMA = "gpunode.bench/1"
# The audit's words (one vocabulary): PASS measured (data right), FAIL wrong data, ERROR the
# benchmark broke, SKIP not run. Results written before that said ok/fail/error/skip.
METRIC_STATUSES = (status.PASS, status.FAIL, status.ERROR, status.SKIP)


def metric_status(raw: object) -> str:
    """A metric's status in today's words, from a document of any age."""
    return status.normalise(raw)
UNITS = ("TFLOP/s", "GB/s", "IOPS", "us", "MB/s")
MODES = ("quick", "full")
LOWER_IS_BETTER_UNITS = ("ns", "us", "ms", "s")  # latencies; every other unit is a rate
# Conditions that say how a figure was timed, not what was measured: they may differ from run to
# run (iterations calibrated to the GPU's speed, fio's measured runtime) and must not split peers.
TIMING_CONDITIONS = frozenset({"aggregate", "iters", "iters_per_batch", "output"})


def lower_is_better(name: str, unit: str | None) -> bool:
    return (unit or "").strip() in LOWER_IS_BETTER_UNITS or name.endswith(("_us", "_ms", ".latency"))


def comparable_conditions(conditions: dict) -> dict:
    """The conditions two figures must share to be compared (timing details left out)."""
    return {k: v for k, v in conditions.items() if k not in TIMING_CONDITIONS}


@dataclass(frozen=True)
class Spread:
    """The spread of the per-repeat figures, in the metric's unit."""

    n: int
    min: float
    max: float
    median: float
    cov: float  # sample standard deviation / mean

    def to_json(self) -> dict:
        return {"n": self.n, "min": self.min, "max": self.max, "median": self.median, "cov": self.cov}

    @classmethod
    def from_json(cls, data: dict) -> Spread:
        if not isinstance(data, dict) or not all(_is_number(data.get(f.name)) for f in fields(cls)):
            raise ValueError(f"spread: expected numbers n, min, max, median, cov, got {data!r:.80}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass
class Metric:
    name: str  # gemm.bf16, hbm.d2d, nccl.all_reduce.busbw, fio.seq_read ...
    gpu: int | None  # NVML index of the GPU measured; None for node-wide metrics
    value: float | None
    unit: str
    status: str  # PASS | FAIL | ERROR | SKIP (old ok/fail/error/skip accepted)
    message: str = ""
    conditions: dict[str, Any] = field(default_factory=dict)
    spread: Spread | None = None
    # Optional extra data (per-size nccl rows, fio job figures). Written only when present, so
    # readers of the contract can ignore it.
    detail: dict[str, Any] | None = None
    # What the GPU(s) did while this metric was measured (bench/watch.py: foreign processes,
    # clocks, power, clock-event reasons, PCIe link, ECC/Xid deltas). Written only when sampled.
    telemetry: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.status = metric_status(self.status)
        if self.status not in METRIC_STATUSES:
            raise ValueError(f"metric {self.name}: status {self.status!r} not in {METRIC_STATUSES}")
        if self.unit not in UNITS and not (self.unit == "" and self.value is None and self.status in ("ERROR", "SKIP")):
            raise ValueError(f"metric {self.name}: unit {self.unit!r} not in {UNITS}")
        if self.status == "PASS" and self.value is None:
            raise ValueError(f"metric {self.name}: status PASS needs a value")

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.name, self.gpu)

    def to_json(self) -> dict:
        data = {
            "name": self.name,
            "gpu": self.gpu,
            "value": self.value,
            "unit": self.unit,
            "status": self.status,
            "message": self.message,
            "conditions": dict(self.conditions),
            "spread": self.spread.to_json() if self.spread else None,
        }
        if self.detail is not None:
            data["detail"] = self.detail
        if self.telemetry is not None:
            data["telemetry"] = self.telemetry
        return data

    @classmethod
    def from_json(cls, data: dict) -> Metric:
        if not isinstance(data, dict):
            raise ValueError(f"bench metric: expected an object, got {type(data).__name__}")
        missing = [k for k in ("name", "gpu", "value", "unit", "status") if k not in data]
        if missing:
            raise ValueError(f"bench metric {data.get('name', '?')!r} lacks {', '.join(missing)}")
        _check_metric_types(data)
        return cls(
            name=data["name"],
            gpu=data["gpu"],
            value=data["value"],
            unit=data["unit"],
            status=data["status"],
            message=data.get("message", ""),
            conditions=dict(data.get("conditions") or {}),
            spread=Spread.from_json(data["spread"]) if data.get("spread") else None,
            detail=data.get("detail"),
            telemetry=data["telemetry"] if isinstance(data.get("telemetry"), dict) else None,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_metric_types(data: dict) -> None:
    """A metric read from a file (compare, baseline record, fleet report): types a verdict relies on."""
    name = data["name"]
    if not isinstance(name, str) or not name or not name.isprintable():
        raise ValueError(f"bench metric name must be a one-line string, got {name!r:.80}")
    if data["gpu"] is not None and (isinstance(data["gpu"], bool) or not isinstance(data["gpu"], int)):
        raise ValueError(f"bench metric {name}: gpu must be a GPU index or null, got {data['gpu']!r:.80}")
    if data["value"] is not None and not _is_number(data["value"]):
        raise ValueError(f"bench metric {name}: value must be a finite number or null, got {data['value']!r:.80}")
    for key in ("conditions", "detail", "telemetry"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"bench metric {name}: {key} must be a mapping, got {type(data[key]).__name__}")
    if not isinstance(data.get("message", ""), str):
        raise ValueError(f"bench metric {name}: message must be a string")


def skipped(name: str, unit: str, reason: str, gpu: int | None = None, **conditions) -> Metric:
    return Metric(name, gpu, None, unit, "SKIP", reason, conditions)


def errored(name: str, unit: str, reason: str, gpu: int | None = None, **conditions) -> Metric:
    return Metric(name, gpu, None, unit, "ERROR", reason, conditions)


def overall(metrics: list[Metric]) -> str:
    statuses = {m.status for m in metrics}
    if "FAIL" in statuses:
        return "FAIL"
    if "ERROR" in statuses:
        return "UNKNOWN"
    if "PASS" not in statuses:
        return "UNKNOWN"  # nothing was measured: not a clean bill of health
    return "OK"


def require_schema(data: Any, schema: str, what: str) -> None:
    """ValueError unless `data` is a mapping that names `schema` (a gpunode document of that kind)."""
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"not a gpunode {what} (schema {found!r}, expected {schema!r})")


@dataclass
class BenchDocument:
    gpunode_version: str
    host: str
    time: str  # ISO 8601, UTC
    time_epoch: float
    mode: str  # quick | full
    gpus: dict  # the audit's meta["gpus"] object
    tools: dict[str, str]
    metrics: list[Metric]
    # What each figure should be on this host's links (gpunode expect), recorded at run time so an
    # offline `gpunode compare` can judge against it when no baseline matches.
    topology: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return overall(self.metrics)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "gpunode_version": self.gpunode_version,
            "host": self.host,
            "time": self.time,
            "time_epoch": self.time_epoch,
            "mode": self.mode,
            "gpus": self.gpus,
            "tools": dict(self.tools),
            "metrics": [m.to_json() for m in self.metrics],
            # absent when nothing was derived (results recorded before gpunode recorded it)
            **({"topology": list(self.topology)} if self.topology else {}),
            "status": self.status,
            "exit_code": self.exit_code,
        }

    @classmethod
    def from_json(cls, data: dict) -> BenchDocument:
        require_schema(data, SCHEMA, "bench result")
        if data.get("mode") not in MODES:
            raise ValueError(f"bench result: mode {data.get('mode')!r} not in {MODES}")
        return cls(
            gpunode_version=str(data.get("gpunode_version", "")),
            host=str(data.get("host", "")),
            time=str(data.get("time", "")),
            time_epoch=float(data.get("time_epoch", 0.0)),
            mode=data["mode"],
            gpus=dict(data.get("gpus") or {}),
            tools=dict(data.get("tools") or {}),
            metrics=[Metric.from_json(m) for m in data.get("metrics", [])],
            topology=topology_entries(data.get("topology")),
        )


_TOPOLOGY_TYPES = {"metric": str, "unit": str, "arithmetic": str}


def topology_entries(data: Any) -> list[dict]:
    """A result's recorded topology expectations, each checked for shape: a figure must be finite
    and positive, texts one line; anything else makes the result unreadable (ValueError)."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"bench result: topology is a {type(data).__name__}, not a list")
    return [_topology_entry(entry) for entry in data]


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _topology_entry(entry: Any) -> dict:
    if not isinstance(entry, dict):
        raise ValueError("bench result: a topology entry is not an object")
    for key, kind in _TOPOLOGY_TYPES.items():
        if not isinstance(entry.get(key), kind) or "\n" in entry[key]:
            raise ValueError(f"bench result: topology entry {key} is not one line of text")
    what = f"bench result: topology {entry['metric']}"
    value, gpu = entry.get("value"), entry.get("gpu")
    if not _positive(value):
        raise ValueError(f"{what}: value {value!r} is not a positive number")
    if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int)):
        raise ValueError(f"{what}: gpu {gpu!r} is not an index")
    limited, limited_value = _topology_limit(entry, what)
    numbers = _topology_numbers(entry, what)
    return {"metric": entry["metric"], "gpu": gpu, "value": value, "unit": entry["unit"],
            **{k: numbers[k] for k in ("raw", "efficiency") if k in numbers},
            "arithmetic": entry["arithmetic"], "limited_by": limited, "limited_value": limited_value,
            **({"max_cov": numbers["max_cov"]} if "max_cov" in numbers else {})}


def _topology_limit(entry: dict, what: str) -> tuple[Any, Any]:
    """What limits the figure (limited_by: one line of text, limited_value: a number), each optional."""
    limited = entry.get("limited_by")
    limited_value = entry.get("limited_value")
    if limited is not None and (not isinstance(limited, str) or "\n" in limited):
        raise ValueError(f"{what}: limited_by is not one line of text")
    if limited_value is not None and not _is_number(limited_value):
        raise ValueError(f"{what}: limited_value is not a number")
    return limited, limited_value


def _topology_numbers(entry: dict, what: str) -> dict:
    """The optional figures of an entry (raw, efficiency, max_cov): positive, max_cov at most 1."""
    numbers = {}
    for key in ("raw", "efficiency", "max_cov"):
        number = entry.get(key)
        if number is None:
            continue
        if not _positive(number):
            raise ValueError(f"{what}: {key} {number!r} is not a positive number")
        numbers[key] = number
    if numbers.get("max_cov", 1) > 1:
        raise ValueError(f"{what}: max_cov {numbers['max_cov']!r} is above 1")
    return numbers
