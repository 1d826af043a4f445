"""Profiles: YAML files that say what "tuned" means, one line per setting.

    name: training
    extends: base            # optional: another profile by name or path
    settings:
      - {kind: sysctl, key: vm.swappiness, op: "<=", target: 10, why: "..."}

A setting's id is `kind/key`; a child replaces a parent's setting of the same id, and
`{kind: K, key: X, remove: true}` drops it. Audit and apply read the same Setting objects.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gpunode.audit.engine import SEVERITIES
from gpunode.ids import normalise
from gpunode.ids import setting_id as make_setting_id
from gpunode.inputs import InputError, load_yaml, parse_yaml, unknown_keys
from gpunode.model.profile import Profile, Setting

SHIPPED_DIR = Path(__file__).parent / "shipped_profiles"
OPS = ("=", ">=", "<=")
CONDITIONS = ("always", "gpu", "nvswitch", "imex", "infiniband", "nvme", "docker", "mps_unit")
_FIELDS = {"kind", "key", "target", "op", "why", "path", "severity", "area", "tags", "when", "remove"}


class ProfileError(InputError):
    """A profile or overlay that cannot be used; the message names the file and the setting."""


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def _resolve(name_or_path: str, relative_to: Path | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_absolute() and relative_to is not None and not candidate.exists():
            candidate = relative_to / candidate
        if not candidate.exists():
            raise ProfileError(f"profile file not found: {name_or_path}")
        return candidate
    shipped = SHIPPED_DIR / f"{name_or_path}.yaml"
    if not shipped.exists():
        raise ProfileError(f"unknown profile {name_or_path!r}; shipped profiles: {', '.join(shipped_profiles())}")
    return shipped


def _read_yaml(path: Path, cache=None) -> dict:
    try:
        data = load_yaml(path, cache=cache)  # regular files only; duplicate keys, alias bombs, depth refused
    except InputError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    unknown = unknown_keys(data, ("name", "description", "extends", "settings"))
    if unknown:
        raise ProfileError(f"{path}: {unknown}")
    return data


def parse_setting(raw: Any, source: str, index: int | None = None) -> Setting | tuple[str, None]:
    """One settings entry -> Setting (or (id, None) for a removal), its target validated by its
    kind. Raises ProfileError as one line `<source>: <setting id>: <problem>`."""
    from gpunode.tune.kinds.registry import KINDS
    from gpunode.tune.kinds.values import SettingInvalid

    where = source if index is None else f"{source}: settings[{index}]"
    kind_name, key = _kind_and_key(raw, where)
    kind = KINDS[kind_name]
    where = f"{source}: {make_setting_id(kind_name, key)!r}" if not key.isprintable() else \
        f"{source}: {make_setting_id(kind_name, key)}"
    if raw.get("remove"):
        return (make_setting_id(kind_name, key), None)
    target = _target(raw, where, key)
    op = raw.get("op", "=")
    if op not in OPS:
        raise ProfileError(f"{where}: op {op!r} not one of {', '.join(OPS)}")
    if op != "=" and not _numeric_target(target):
        raise ProfileError(f"{where}: op {op!r} needs a numeric target (or 'unlimited'), got {target!r}")
    severity, when, tags, area, why = _labels(raw, where)
    setting = Setting(kind=kind_name, key=key, target=target, op=op, why=why, path=raw.get("path"),
                      severity=severity, area=area, tags=tuple(tags), when=when)
    try:
        return kind.validate(setting)
    except SettingInvalid as exc:
        raise ProfileError(f"{where}: {exc}") from None


def _kind_and_key(raw: Any, where: str) -> tuple[str, str]:
    """A settings entry is a mapping of known fields with a known kind and a key."""
    from gpunode.tune.kinds.registry import KINDS

    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: a setting must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ProfileError(f"{where}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    kind_name, key = raw.get("kind"), raw.get("key")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        raise ProfileError(f"{where}: unknown kind {kind_name!r}; kinds: {', '.join(KINDS)}")
    if not isinstance(key, str) or not key.strip():
        raise ProfileError(f"{where}: missing or empty 'key'")
    return kind_name, key


def _target(raw: dict, where: str, key: str) -> str | int | float | bool:
    """The target: a scalar, and (like the key) one line, whatever the kind: a newline would
    split what is rendered into GRUB, sysctl.d ..."""
    from gpunode.tune.kinds.values import SettingInvalid, one_line

    if "target" not in raw:
        raise ProfileError(f"{where}: missing 'target'")
    target = raw["target"]
    if not isinstance(target, (str, int, float, bool)):
        raise ProfileError(f"{where}: target must be a string, number or boolean, got {type(target).__name__}")
    try:
        one_line(key, "key")
        if isinstance(target, str):
            one_line(target, "target")
    except SettingInvalid as exc:
        raise ProfileError(f"{where}: {exc}") from None
    return target


def _labels(raw: dict, where: str) -> tuple[Any, Any, list, Any, Any]:
    """severity, when, tags, area and why of a settings entry, each checked."""
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ProfileError(f"{where}: severity {severity!r} not one of {', '.join(SEVERITIES)}")
    when = raw.get("when", "always")
    if when not in CONDITIONS:
        raise ProfileError(f"{where}: when {when!r} not one of {', '.join(CONDITIONS)}")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.isprintable() for t in tags):
        raise ProfileError(f"{where}: tags must be a list of strings")
    area, why = raw.get("area"), raw.get("why", "")
    if area is not None and (not isinstance(area, str) or not area.isidentifier()):
        raise ProfileError(f"{where}: area must be a word such as net")
    if not isinstance(why, str) or not why.isprintable():
        raise ProfileError(f"{where}: why must be one line of text")
    return severity, when, tags, area, why


def _numeric_target(target: Any) -> bool:
    if isinstance(target, bool):
        return False
    if isinstance(target, (int, float)) or target == "unlimited":
        return True
    parts = str(target).split()
    return bool(parts) and all(p.isdigit() for p in parts)


def _merge_settings(profile: Profile, entries: Any, path: Path) -> None:
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ProfileError(f"{path}: 'settings' must be a list")
    for i, raw in enumerate(entries):
        parsed = parse_setting(raw, str(path), i)
        if isinstance(parsed, tuple):
            profile.settings.pop(parsed[0], None)
        else:
            profile.settings[parsed.id] = replace(parsed, source=str(path))


def load_profile(
    name_or_path: str,
    overlays: list[str | Path] = (),
    sets: dict[str, str] | None = None,
    _seen: tuple[Path, ...] = (),
    cache=None,
) -> Profile:
    """Load a profile with its parents, then per-host overlays, then `--set id=value`.
    `cache`: the gate's parsed-YAML cache (gpunode.parsed_cache); validation is the same."""
    path = _resolve(name_or_path, _seen[-1].parent if _seen else None).resolve()
    if path in _seen:
        raise ProfileError(f"{path}: 'extends' loops back to itself")
    data = _read_yaml(path, cache)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"{path}: 'extends' must be a profile name or path")
        profile = load_profile(parent, _seen=(*_seen, path), cache=cache)
    else:
        profile = Profile(name=path.stem)
    profile.name = str(data.get("name", path.stem))
    profile.description = str(data.get("description", profile.description))
    profile.files.append(str(path))
    _merge_settings(profile, data.get("settings"), path)
    for overlay in overlays:
        overlay_path = Path(overlay)
        if not overlay_path.exists():
            raise ProfileError(f"overlay file not found: {overlay}")
        overlay_data = _read_yaml(overlay_path, cache)
        profile.files.append(str(overlay_path))
        _merge_settings(profile, overlay_data.get("settings"), overlay_path)
    for setting_id, value in (sets or {}).items():
        apply_set(profile, setting_id, value)
    return profile


def apply_set(profile: Profile, setting_id: str, value: str) -> None:
    """`--set sysctl.vm.swappiness=5` (or the old `sysctl/vm.swappiness=5`): change the target of
    a setting the profile has."""
    from gpunode.tune.kinds.registry import kind_names

    given, setting_id = setting_id, normalise(setting_id)
    existing = profile.settings.get(setting_id)
    if existing is None:
        kind, _, key = setting_id.partition(".")
        raise ProfileError(
            f"--set {given}: the profile has no such setting"
            + ("" if kind in kind_names() and key else " (ids look like sysctl.vm.swappiness)")
        )
    try:
        target: Any = parse_yaml(value, f"--set {setting_id}") if value.strip() else value
    except InputError as exc:
        raise ProfileError(str(exc)) from None
    raw = {
        "kind": existing.kind,
        "key": existing.key,
        "target": target,
        "op": existing.op,
        "why": f"--set on the command line (was {existing.target_text})",
        "severity": existing.severity,
        "when": existing.when,
        "tags": list(existing.tags),
    }
    if existing.path:
        raw["path"] = existing.path
    if existing.area:
        raw["area"] = existing.area
    parsed = parse_setting(raw, "--set")
    profile.settings[setting_id] = replace(parsed, source="--set")


def parse_set_options(items: list[str]) -> dict[str, str]:
    sets = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfileError(f"--set {item!r}: expected KIND.KEY=VALUE, e.g. sysctl.vm.swappiness=5")
        sets[key.strip()] = value.strip()
    return sets
