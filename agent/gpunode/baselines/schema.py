"""Baseline files: load one YAML (yaml.safe_load), follow `extends:`, validate every field.

    schema: gpunode.baseline/1
    name: h100-sxm5-80gb-1gpu
    extends: other-baseline            # optional: a name (site dir, then shipped) or a path
    match: {gpu_name: "NVIDIA H100 80GB HBM3", pci_device: [0x2330], gpu_count: 1}
    defaults: {warn: 0.90, fail: 0.80}
    metrics:
      gemm.bf16:                       # key: the bench metric name (or a glob: p2p.*)
        value: 796                     # optionally `name@variant` with `metric: NAME`
        unit: TFLOP/s
        conditions: {dtype: bf16, m: 8192}
        source: "measured ..."

Errors name the file and the field (BaselineError, a ValueError); docs/baselines.md has the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from gpunode.inputs import InputError, load_yaml, unknown_keys

SCHEMA = "gpunode.baseline/1"
UNITS = ("TFLOP/s", "GB/s", "MB/s", "IOPS", "us")  # as in the bench contract (gpunode.bench/1)
# Metric families and their unit, first match wins: a baseline cannot say GB/s for a GEMM.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("gemm.*", "TFLOP/s"),
    ("hbm.*", "GB/s"),
    ("h2d.*", "GB/s"),
    ("d2h.*", "GB/s"),
    ("p2p.*", "GB/s"),
    ("nccl.*.busbw", "GB/s"),
    ("torch.*.busbw", "GB/s"),
    ("fio.*.iops", "IOPS"),
    ("fio.*_us", "us"),
    ("fio.*", "MB/s"),
)
BETTER = ("higher", "lower")
BASIS = ("measured", "public", "derived", "gate", "recorded")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
_TOP_KEYS = {"schema", "name", "description", "extends", "match", "defaults", "metrics", "recorded", "notes", "diag"}
# `gpunode diag` floors under full load (optional): {sm_clock_min_mhz, power_min_ratio, source}
_DIAG_KEYS = {"sm_clock_min_mhz", "power_min_ratio", "source"}
_MATCH_KEYS = {"gpu_name", "gpu_name_regex", "pci_device", "gpu_count"}
_DEFAULT_KEYS = {"warn", "fail", "max_cov", "untrusted"}
_METRIC_KEYS = {"metric", "value", "unit", "better", "warn", "fail", "conditions", "source", "basis", "note", "remove",
               "max_cov", "untrusted", "peak"}
UNTRUSTED_LEVELS = ("warn", "fail")  # a figure measured under interference or throttling
_RANGE_KEYS = {"min", "max"}
MAX_EXTENDS_DEPTH = 8


class BaselineError(InputError):
    """A baseline that cannot be used; the message names the file and the field."""


def family_unit(metric: str) -> str | None:
    for pattern, unit in FAMILIES:
        if fnmatchcase(metric, pattern):
            return unit
    return None


@dataclass(frozen=True)
class Match:
    """Which hardware a baseline is for. Every given criterion must hold for every GPU."""

    gpu_name: tuple[str, ...] = ()  # globs, case-insensitive; any one may match
    gpu_name_regex: tuple[str, ...] = ()  # regular expressions, full match, case-insensitive
    pci_device: tuple[str, ...] = ()  # "0x2330"
    gpu_count: tuple[int, ...] = ()

    @property
    def criteria(self) -> int:
        return sum(1 for v in (self.gpu_name, self.gpu_name_regex, self.pci_device, self.gpu_count) if v)

    def check(self, gpus: dict) -> str | None:
        """None when `gpus` (the bench/audit "gpus" object) matches, else why not."""
        devices = gpus.get("devices") or []
        if not gpus.get("available") or not devices:
            return f"no GPU identity in the results ({gpus.get('error') or 'no GPU listed'})"
        count = gpus.get("count", len(devices))
        if self.gpu_count and count not in self.gpu_count:
            return f"{count} GPU(s), baseline is for {_or(self.gpu_count)}"
        for d in devices:
            why = self._device_differs(d)
            if why:
                return why
        return None

    def _device_differs(self, d: dict) -> str | None:
        """None when one GPU of the results is this hardware, else why not."""
        name = str(d.get("name") or "")
        if self.gpu_name and not any(fnmatchcase(name.lower(), p.lower()) for p in self.gpu_name):
            return f"GPU{d.get('index')} is {name!r}, baseline is for {_or(self.gpu_name)}"
        if self.gpu_name_regex and not any(re.fullmatch(p, name, re.IGNORECASE) for p in self.gpu_name_regex):
            return f"GPU{d.get('index')} is {name!r}, baseline is for /{'/ or /'.join(self.gpu_name_regex)}/"
        device = str(d.get("pci_device") or "").lower()
        if self.pci_device and device not in self.pci_device:
            return f"GPU{d.get('index')} has PCI device {device or 'unknown'}, baseline is for {_or(self.pci_device)}"
        return None

    def describe(self) -> str:
        parts = []
        if self.gpu_count:
            parts.append(f"{_or(self.gpu_count)} ×")
        if self.gpu_name:
            parts.append(_or(self.gpu_name))
        if self.gpu_name_regex:
            parts.append("/" + "/ or /".join(self.gpu_name_regex) + "/")
        if self.pci_device:
            parts.append(f"({_or(self.pci_device)})")
        return " ".join(parts)


def _or(values) -> str:
    return " or ".join(str(v) for v in values)


@dataclass(frozen=True)
class Expectation:
    """What one metric should measure under stated conditions, and when to warn or fail."""

    key: str  # the key in the file: the metric name, or name@variant
    metric: str  # the bench metric name or a glob (p2p.*)
    value: float
    unit: str
    better: str  # higher | lower
    warn: float  # ratio at or above which the figure PASSes
    fail: float  # ratio below which it FAILs (WARN in between)
    conditions: dict[str, Any]
    source: str
    basis: str = ""
    note: str = ""
    max_cov: float | None = None  # spread bound (CoV) above which the figure is "unstable"
    untrusted: str = "warn"  # verdict for a figure measured beside a foreign process or throttled
    peak: float | None = None  # the datasheet peak, in the metric's unit
    peak_source: str = ""

    def matches_name(self, name: str) -> bool:
        return fnmatchcase(name, self.metric)


@dataclass(frozen=True)
class Baseline:
    name: str
    path: Path
    description: str = ""
    match: Match | None = None  # None: only used through --baseline or extends
    expectations: tuple[Expectation, ...] = ()
    chain: tuple[Path, ...] = ()  # this file and the ones it extends, child first
    recorded: dict | None = None
    diag: dict | None = None  # gpunode diag floors (validated by _validate_diag)

    def for_metric(self, name: str) -> list[Expectation]:
        """Expectations for a bench metric: exact names first, then globs, each in file order."""
        exact = [e for e in self.expectations if e.metric == name]
        globbed = [e for e in self.expectations if e.metric != name and e.matches_name(name)]
        return exact + globbed


# ---------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict:
    try:
        data = load_yaml(path)  # regular files only; duplicate keys, alias bombs, depth refused
    except InputError as exc:
        raise BaselineError(str(exc)) from None
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: a baseline must be a mapping (name, match, metrics)")
    return data


def load_baseline(path: str | Path, find=None) -> Baseline:
    """Load, follow `extends:` (resolved by `find(name, relative_to) -> Path`), validate."""
    path = Path(path)
    chain: list[Path] = []
    merged = _load_chain(path, find, chain)
    return _build(path, merged, tuple(chain))


def _load_chain(path: Path, find, chain: list[Path]) -> dict:
    resolved = path.resolve()
    if resolved in [p.resolve() for p in chain]:
        cycle = " -> ".join(str(p) for p in [*chain, path])
        raise BaselineError(f"{chain[0]}: extends forms a cycle: {cycle}")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise BaselineError(f"{chain[0]}: extends is nested deeper than {MAX_EXTENDS_DEPTH} files")
    chain.append(path)
    data = read_yaml(path)
    _validate_own(path, data)
    parent_ref = data.get("extends")
    if parent_ref is None:
        return data
    parent_path = _resolve_parent(path, str(parent_ref), find)
    parent = _load_chain(parent_path, find, chain)
    return _merge(parent, data)


def _resolve_parent(path: Path, ref: str, find) -> Path:
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        candidate = Path(ref)
        if not candidate.is_absolute():
            candidate = path.parent / candidate
        if not candidate.exists():
            raise BaselineError(f"{path}: extends: {ref!r}: no such file ({candidate})")
        return candidate
    sibling = path.parent / f"{ref}.yaml"
    found = find(ref, path) if find is not None else None
    if found is None and sibling.exists():
        found = sibling
    if found is None:
        raise BaselineError(f"{path}: extends: no baseline named {ref!r} (site directories, shipped, or beside the file)")
    return found


def _merge(parent: dict, child: dict) -> dict:
    """Child over parent: match and defaults per key, metrics per key and field; `remove` drops."""
    out = {k: v for k, v in parent.items() if k not in ("extends", "recorded")}
    for key, value in child.items():
        if key in ("match", "defaults"):
            out[key] = {**(parent.get(key) or {}), **(value or {})}
        elif key == "metrics":
            metrics = dict(parent.get("metrics") or {})
            for name, entry in (value or {}).items():
                if entry.get("remove"):
                    metrics.pop(name, None)
                else:
                    metrics[name] = {**(metrics.get(name) or {}), **entry}
            out["metrics"] = metrics
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- validation of one file


def _validate_own(path: Path, data: dict) -> None:
    """Shape and value checks on what this one file says (completeness is checked after merging)."""
    where = str(path)
    _validate_header(where, data)
    if "match" in data:
        _parse_match(where, data["match"])
    if "diag" in data:
        _validate_diag(where, data["diag"])
    if data.get("defaults") is not None:
        _validate_defaults(where, data["defaults"])
    metrics = data.get("metrics")
    if metrics is None:
        if "extends" not in data:
            raise BaselineError(f"{where}: metrics: required (a mapping of metric name to expectation)")
        return
    if not isinstance(metrics, dict):
        raise BaselineError(f"{where}: metrics: must be a mapping of metric name to expectation")
    for key, entry in metrics.items():
        _validate_entry(where, str(key), entry)


def _validate_header(where: str, data: dict) -> None:
    """The top-level keys, schema, name, description, extends and recorded."""
    if set(data) - _TOP_KEYS:
        raise BaselineError(f"{where}: {unknown_keys(data, _TOP_KEYS)}")  # never echoes a foreign file
    if "schema" in data and data["schema"] != SCHEMA:
        raise BaselineError(f"{where}: schema: {data['schema']!r} is not {SCHEMA!r}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BaselineError(f"{where}: name: required, letters, digits, '.', '_', '-' (got {name!r})")
    for key in ("description", "extends"):
        if key in data and not isinstance(data[key], str):
            raise BaselineError(f"{where}: {key}: must be a string")
    if "recorded" in data and not isinstance(data["recorded"], dict):
        raise BaselineError(f"{where}: recorded: must be a mapping")


def _validate_defaults(where: str, defaults: Any) -> None:
    if not isinstance(defaults, dict):
        raise BaselineError(f"{where}: defaults: must be a mapping with warn, fail")
    _unknown(where, "defaults", defaults, _DEFAULT_KEYS)
    _levels(where, "defaults", defaults)


def _validate_diag(where: str, diag: Any) -> None:
    if not isinstance(diag, dict):
        raise BaselineError(f"{where}: diag: must be a mapping (sm_clock_min_mhz, power_min_ratio, source)")
    _unknown(where, "diag", diag, _DIAG_KEYS)
    clock = diag.get("sm_clock_min_mhz")
    if clock is not None and (isinstance(clock, bool) or not isinstance(clock, (int, float))
                              or not math.isfinite(clock) or not 0 < clock < 10000):
        raise BaselineError(f"{where}: diag.sm_clock_min_mhz: a clock in MHz, got {clock!r}")
    if diag.get("power_min_ratio") is not None:
        _ratio(where, "diag.power_min_ratio", diag["power_min_ratio"])
    if not isinstance(diag.get("source"), str) or not diag["source"].strip():
        raise BaselineError(f"{where}: diag.source: required (where the floors come from)")


def _validate_entry(where: str, key: str, entry: Any) -> None:
    field_ = f"metrics.{key}"
    metric = _entry_metric(where, field_, key, entry)
    if entry.get("remove"):
        return
    _entry_figure(where, field_, metric, entry)
    if "better" in entry and entry["better"] not in BETTER:
        raise BaselineError(f"{where}: {field_}.better: {entry['better']!r} not in {BETTER}")
    _levels(where, field_, entry)
    _entry_texts(where, field_, entry)


def _entry_metric(where: str, field_: str, key: str, entry: Any) -> str:
    """The bench metric (or glob) an entry is for, once the entry is a mapping of known keys."""
    if not isinstance(entry, dict):
        raise BaselineError(f"{where}: {field_}: must be a mapping (value, unit, conditions, source ...)")
    _unknown(where, field_, entry, _METRIC_KEYS)
    if entry.get("remove") is not None and not isinstance(entry.get("remove"), bool):
        raise BaselineError(f"{where}: {field_}.remove: must be true or false")
    metric = entry.get("metric", key.split("@", 1)[0])
    if not isinstance(metric, str) or not metric:
        raise BaselineError(f"{where}: {field_}.metric: must be a metric name")
    return metric


def _entry_figure(where: str, field_: str, metric: str, entry: dict) -> None:
    """The metric is of a known family; its value is positive and its unit that family's."""
    expected_unit = family_unit(metric)
    if expected_unit is None:
        families = ", ".join(p for p, _ in FAMILIES)
        raise BaselineError(f"{where}: {field_}: unknown metric {metric!r}; known families: {families}")
    if "value" in entry:
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise BaselineError(f"{where}: {field_}.value: must be a positive number (got {value!r})")
    if "unit" in entry:
        unit = entry["unit"]
        if unit not in UNITS:
            raise BaselineError(f"{where}: {field_}.unit: {unit!r} is not a unit; use one of {', '.join(UNITS)}")
        if unit != expected_unit:
            raise BaselineError(f"{where}: {field_}.unit: {unit!r} is wrong for {metric} (it is measured in {expected_unit})")


def _levels(where: str, field_: str, mapping: dict) -> None:
    """warn and fail ratios (warn >= fail), and the trust keys, of the defaults or one entry."""
    for key in ("warn", "fail"):
        if key in mapping:
            _ratio(where, f"{field_}.{key}", mapping[key])
    _ordered(where, field_, mapping.get("warn"), mapping.get("fail"))
    _trust_keys(where, field_, mapping)


def _entry_texts(where: str, field_: str, entry: dict) -> None:
    """The peak, conditions, source, note and basis of one entry."""
    if "peak" in entry:
        _peak(where, f"{field_}.peak", entry["peak"])
    if "conditions" in entry:
        _validate_conditions(where, f"{field_}.conditions", entry["conditions"])
    for key_ in ("source", "note"):
        if key_ in entry and (not isinstance(entry[key_], str) or not entry[key_].strip()):
            raise BaselineError(f"{where}: {field_}.{key_}: must be a non-empty string")
    if "basis" in entry and entry["basis"] not in BASIS:
        raise BaselineError(f"{where}: {field_}.basis: {entry['basis']!r} not in {BASIS}")


def _trust_keys(where: str, field_: str, mapping: dict) -> None:
    if "max_cov" in mapping:
        _ratio(where, f"{field_}.max_cov", mapping["max_cov"])
    if "untrusted" in mapping and mapping["untrusted"] not in UNTRUSTED_LEVELS:
        raise BaselineError(f"{where}: {field_}.untrusted: {mapping['untrusted']!r} not in {UNTRUSTED_LEVELS}")


def _peak(where: str, field_: str, peak: Any) -> None:
    if not isinstance(peak, dict):
        raise BaselineError(f"{where}: {field_}: must be a mapping {{value, source}}")
    _unknown(where, field_, peak, {"value", "source"})
    value = peak.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BaselineError(f"{where}: {field_}.value: must be a positive number (got {value!r})")
    if not isinstance(peak.get("source"), str) or not peak["source"].strip():
        raise BaselineError(f"{where}: {field_}.source: required, where the datasheet figure comes from")


def _unknown(where: str, field_: str, mapping: dict, known: set[str]) -> None:
    unknown = set(mapping) - known
    if unknown:
        raise BaselineError(
            f"{where}: {field_}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(known))}"
        )


def _ratio(where: str, field_: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BaselineError(f"{where}: {field_}: must be a ratio between 0 and 1 (got {value!r})")
    if value > 1:
        raise BaselineError(f"{where}: {field_}: {value} is above 1; a ratio is measured/expected, e.g. 0.9 for 90 %")
    if value <= 0:
        raise BaselineError(f"{where}: {field_}: {value} must be above 0")
    return float(value)


def _ordered(where: str, field_: str, warn: Any, fail: Any) -> None:
    if warn is not None and fail is not None and warn < fail:
        raise BaselineError(f"{where}: {field_}: warn ({warn}) is below fail ({fail}); warn must be >= fail")


def _validate_conditions(where: str, field_: str, conditions: Any) -> None:
    if not isinstance(conditions, dict):
        raise BaselineError(f"{where}: {field_}: must be a mapping of condition to value")
    for key, value in conditions.items():
        sub = f"{field_}.{key}"
        if isinstance(value, dict):
            _validate_range(where, sub, value)
        elif isinstance(value, list):
            if not value or not all(_scalar(v) for v in value):
                raise BaselineError(f"{where}: {sub}: a list of allowed values must hold plain values")
        elif not _scalar(value):
            raise BaselineError(f"{where}: {sub}: must be a value, a list of values or {{min, max}}")


def _validate_range(where: str, sub: str, value: dict) -> None:
    """A condition given as {min, max}: numbers, at least one, min not above max."""
    _unknown(where, sub, value, _RANGE_KEYS)
    if not value:
        raise BaselineError(f"{where}: {sub}: a range needs min and/or max")
    for bound in value.values():
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise BaselineError(f"{where}: {sub}: range bounds must be numbers (got {bound!r})")
    if "min" in value and "max" in value and value["min"] > value["max"]:
        raise BaselineError(f"{where}: {sub}: min is above max")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _parse_match(where: str, raw: Any) -> Match:
    if not isinstance(raw, dict):
        raise BaselineError(f"{where}: match: must be a mapping (gpu_name, gpu_name_regex, pci_device, gpu_count)")
    _unknown(where, "match", raw, _MATCH_KEYS)
    names = _strings(where, "match.gpu_name", raw.get("gpu_name"))
    regexes = _strings(where, "match.gpu_name_regex", raw.get("gpu_name_regex"))
    for pattern in regexes:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise BaselineError(f"{where}: match.gpu_name_regex: {pattern!r} is not a valid regex: {exc}") from exc
    devices = tuple(_pci_device(where, v) for v in _as_list(raw.get("pci_device")))
    counts = []
    for v in _as_list(raw.get("gpu_count")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BaselineError(f"{where}: match.gpu_count: must be a positive whole number or a list of them (got {v!r})")
        counts.append(v)
    match = Match(names, regexes, devices, tuple(counts))
    if not match.criteria:
        raise BaselineError(f"{where}: match: give at least one of gpu_name, gpu_name_regex, pci_device, gpu_count")
    return match


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _strings(where: str, field_: str, value: Any) -> tuple[str, ...]:
    items = _as_list(value)
    if not all(isinstance(v, str) and v for v in items):
        raise BaselineError(f"{where}: {field_}: must be a string or a list of strings")
    return tuple(items)


def _pci_device(where: str, value: Any) -> str:
    """0x2330 (YAML reads it as the number 8752), "0x2330" or "2330" -> "0x2330"."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value, 16)
        except ValueError:
            number = None
    else:
        number = None
    if number is None or not 0 <= number <= 0xFFFF:
        raise BaselineError(f"{where}: match.pci_device: {value!r} is not a 16-bit PCI device id like 0x2330")
    return f"0x{number:04x}"


# ---------------------------------------------------------------- the merged result


def _build(path: Path, data: dict, chain: tuple[Path, ...]) -> Baseline:
    where = str(path)
    defaults = data.get("defaults") or {}
    expectations = []
    for key, entry in (data.get("metrics") or {}).items():
        expectations.append(_expectation(where, str(key), entry, defaults))
    if not expectations:
        raise BaselineError(f"{where}: metrics: no metric left to compare")
    match = _parse_match(where, data["match"]) if data.get("match") else None
    return Baseline(
        name=data["name"],
        path=path,
        description=data.get("description", ""),
        match=match,
        expectations=tuple(expectations),
        chain=chain,
        recorded=data.get("recorded"),
        diag=data.get("diag"),
    )


def _expectation(where: str, key: str, entry: dict, defaults: dict) -> Expectation:
    field_ = f"metrics.{key}"
    for required in ("value", "unit", "source"):
        if required not in entry:
            raise BaselineError(f"{where}: {field_}: missing {required}")
    warn = entry.get("warn", defaults.get("warn"))
    fail = entry.get("fail", defaults.get("fail"))
    if warn is None or fail is None:
        raise BaselineError(f"{where}: {field_}: missing {'warn' if warn is None else 'fail'} ratio (set it or defaults)")
    _ordered(where, field_, warn, fail)
    unit = entry["unit"]
    return Expectation(
        key=key,
        metric=entry.get("metric", key.split("@", 1)[0]),
        value=float(entry["value"]),
        unit=unit,
        better=entry.get("better", "lower" if unit == "us" else "higher"),
        warn=float(warn),
        fail=float(fail),
        conditions=dict(entry.get("conditions") or {}),
        source=entry["source"].strip(),
        basis=entry.get("basis", ""),
        note=entry.get("note", ""),
        max_cov=_optional_float(entry.get("max_cov", defaults.get("max_cov"))),
        untrusted=entry.get("untrusted", defaults.get("untrusted", "warn")),
        peak=float(entry["peak"]["value"]) if entry.get("peak") else None,
        peak_source=entry["peak"]["source"].strip() if entry.get("peak") else "",
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
