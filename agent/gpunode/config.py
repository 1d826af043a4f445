"""Site configuration (/etc/gpunode/config.yaml or $GPUNODE_CONFIG): facts a host cannot tell."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.inputs import InputError, key_name, load_yaml

DEFAULT_PATH = "/etc/gpunode/config.yaml"


class ConfigError(InputError):
    pass


@dataclass
class Config:
    """The site's facts a host cannot tell; defaults when there is no config file."""

    profile: str = "training"
    overlays: list[str] = field(default_factory=list)
    expected_gpus: int | None = None
    driver_pin: str | None = None
    cuda_pin: str | None = None
    xid_window_hours: float = 24.0
    scratch_dirs: list[str] = field(default_factory=lambda: ["/tmp"])
    min_free_gib: float = 1.0
    data_mounts: list[str] = field(default_factory=list)
    disable_checks: list[str] = field(default_factory=list)
    snapshot: str | None = None  # audit/gate this snapshot instead of the live host (tests, demos)
    baselines_dir: str | None = None  # site hardware baselines, ahead of the shipped ones
    audit_log: str = "/dev/log"  # syslog socket for the audit trail (apply, rollback, drains); "off": none
    allow_job_opt_out: bool = False  # jobs may skip the Slurm gate with gpunode=off (logged); the site decides
    watch: dict = field(default_factory=dict)  # gpunode watch's settings (WATCH_KEYS), validated here
    path: str | None = None

    _TYPES = {
        "profile": str,
        "overlays": list,
        "expected_gpus": int,
        "driver_pin": str,
        "cuda_pin": str,
        "xid_window_hours": (int, float),
        "scratch_dirs": list,
        "min_free_gib": (int, float),
        "data_mounts": list,
        "disable_checks": list,
        "snapshot": str,
        "baselines_dir": str,
        "audit_log": str,
        "allow_job_opt_out": bool,
        "watch": dict,
    }


# watch: key -> (types, the rule a value must meet, said when it does not). Defaults live in
# watch.policy.WatchConfig; unset keys keep them.
WATCH_KEYS = {
    "poll_s": ((int, float), lambda v: 0 < v <= 3600, "a number of seconds in (0, 3600]"),
    "hysteresis_k": (int, lambda v: 1 <= v <= 100, "a whole number from 1 to 100"),
    "breaker_fraction": ((int, float), lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    "breaker_window_s": ((int, float), lambda v: 0 < v <= 7 * 86400, "a number of seconds in (0, 604800]"),
    "escalate_n": (int, lambda v: 1 <= v <= 1000, "a whole number from 1 to 1000"),
    "escalate_days": ((int, float), lambda v: 0 < v <= 365, "a number of days in (0, 365]"),
    "remediate": (str, lambda v: v == "reset", 'null (off) or "reset"'),
    "shadow": (bool, lambda v: True, "true or false"),
    "prove_level": (int, lambda v: v in (1, 2, 3), "a diag level: 1, 2 or 3"),
    "clock_events": (bool, lambda v: True, "true or false"),
}

# Numbers whose wrong sign would silently disable a check (a window of -5 h finds no Xid).
_POSITIVE = {"xid_window_hours"}
_NOT_NEGATIVE = {"expected_gpus", "min_free_gib"}


def load_config(path: str | None = None, cache=None) -> Config:
    """Explicit path > $GPUNODE_CONFIG > /etc/gpunode/config.yaml (if present) > defaults.
    `cache`: the gate's parsed-YAML cache (gpunode.parsed_cache)."""
    explicit = path or os.environ.get("GPUNODE_CONFIG")
    candidate = Path(explicit) if explicit else Path(DEFAULT_PATH)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file not found: {candidate}")
        return Config()
    config = Config(path=str(candidate))
    for key, value in _read_mapping(candidate, cache).items():
        value = _setting(candidate, key, value)
        if value is not None:
            setattr(config, key, value)
    return config


def _read_mapping(candidate: Path, cache) -> dict:
    """The config file's mapping (an empty file: none)."""
    try:
        data = load_yaml(candidate, cache=cache)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{candidate}: expected a mapping")
    return data


def _setting(candidate: Path, key, value):
    """One key's value as the Config keeps it (None: unset, the default stays), or ConfigError."""
    expected = Config._TYPES.get(key)
    if expected is None:
        raise ConfigError(f"{candidate}: unknown key {key_name(key)}; known: {', '.join(sorted(Config._TYPES))}")
    if value is None:
        return None
    if isinstance(value, bool) is not (expected is bool) or not isinstance(value, expected):
        # YAML reads a bare off/on/yes/no as a boolean: say how to write the word itself
        hint = "; a bare off/on/yes/no is a boolean in YAML: quote the word" if isinstance(value, bool) and expected is str else ""
        raise ConfigError(f"{candidate}: {key} has the wrong type ({type(value).__name__}){hint}")
    _check_number(candidate, key, value)
    _check_text(candidate, key, value)
    return _watch_settings(candidate, value) if key == "watch" else value


def _check_number(candidate: Path, key: str, value) -> None:
    if key in _POSITIVE and not value > 0 or key in _NOT_NEGATIVE and not value >= 0:  # nan too
        raise ConfigError(f"{candidate}: {key} must be {'positive' if key in _POSITIVE else '0 or more'}, got {value}")
    if isinstance(value, float) and not math.isfinite(value):  # .inf hours: no window at all
        raise ConfigError(f"{candidate}: {key} must be a finite number, got {value}")


def _check_text(candidate: Path, key: str, value) -> None:
    if isinstance(value, list) and not all(isinstance(item, str) and _one_line(item) for item in value):
        raise ConfigError(f"{candidate}: {key} must be a list of one-line strings")
    if isinstance(value, str) and not _one_line(value):
        raise ConfigError(f"{candidate}: {key} must be one line without control characters")


def _watch_settings(candidate: Path, value: dict) -> dict:
    """The `watch:` mapping, each key known and each value within its rule (NaN fails every rule)."""
    out = {}
    for key, item in value.items():
        rule = WATCH_KEYS.get(key) if isinstance(key, str) else None
        if rule is None:
            raise ConfigError(f"{candidate}: unknown key watch.{key_name(key)}; known: {', '.join(sorted(WATCH_KEYS))}")
        if item is None:
            continue
        types, ok, said = rule
        if isinstance(item, bool) is not (types is bool) or not isinstance(item, types) or not ok(item):
            raise ConfigError(f"{candidate}: watch.{key} must be {said}")
        out[key] = item
    return out


def _one_line(text: str) -> bool:
    return bool(text) and all(char.isprintable() for char in text)
