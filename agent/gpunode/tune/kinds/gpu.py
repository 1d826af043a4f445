"""GPU settings read through the GPU source (NVML): one observation per GPU."""

from __future__ import annotations

import re

from gpunode.tune.kinds.base import BOOT_SPEC, ITSELF, VERIFY_NONE, Observed, SettingKind
from gpunode.tune.kinds.service import SYSTEMD_RUNNING, service_change, unit_state
from gpunode.tune.kinds.values import SettingInvalid, finite_number, one_line

# key -> (GpuInfo field, allowed target type)
KEYS = {
    "persistence_mode": ("persistence_mode", bool),
    "ecc_mode": ("ecc_mode_current", bool),
    "mig_mode": ("mig_mode_current", bool),
    "compute_mode": ("compute_mode", str),
    "power_limit": ("power_limit_w", str),  # "default" or watts as a number
    "mig_layout": ("mig_instances", str),  # "3g.40gb:1,1g.10gb:4" or "none"; needs MIG mode on
    "applications_clocks": ("sm_app_clock_mhz", str),  # "default" or "MEM,SM" MHz, as `nvidia-smi -ac`
}
COMPUTE_MODES = ("default", "exclusive_process", "prohibited")
MIG_OFF = "(MIG mode off)"
MAX_CLOCK_MHZ = 10_000  # HBM3e runs at 2619 MHz, SMs under 2100
MAX_POWER_W = 10_000  # no GPU board takes more; 1e90 or .inf is a typo
PERSISTENCED = "nvidia-persistenced"


def target_problem(key: str, target) -> str | None:
    if key not in KEYS:
        return f"gpu key must be one of {', '.join(KEYS)}"
    _, kind = KEYS[key]
    if kind is bool and not isinstance(target, bool):
        return f"gpu.{key} target must be true or false"
    if key == "compute_mode" and target not in COMPUTE_MODES:
        return f"compute_mode target must be one of {', '.join(COMPUTE_MODES)}"
    if key == "mig_layout":
        return mig_layout_problem(target)
    pair = clock_pair_text(target) if key == "applications_clocks" and target != "default" else "0,0"
    if pair is None or max(map(int, pair.split(","))) > MAX_CLOCK_MHZ:
        return f"applications_clocks target must be 'default' or 'MEM,SM' in MHz up to {MAX_CLOCK_MHZ}, e.g. '2619,1980'"
    if key == "power_limit" and target != "default":
        try:
            finite_number(target, "power_limit target", 1, MAX_POWER_W)
        except SettingInvalid as exc:
            return f"{exc} (or 'default')"
    return None


def observe_gpus(setting, gpus) -> list[Observed]:
    field, _ = KEYS[setting.key]
    observed = []
    for gpu in gpus:
        if gpu.error:
            observed.append(Observed(gpu.label, None, note=gpu.error, extra={"error": gpu.error}))
            continue
        observed.append(_observe_gpu(setting, gpu, field))
    return observed


def _observe_gpu(setting, gpu, field: str) -> Observed:
    err = gpu.field_errors.get(field.replace("_current", "")) or gpu.field_errors.get(field)
    value = getattr(gpu, field)
    if setting.key == "mig_layout":
        if gpu.mig_mode_current is False:
            value = MIG_OFF
        else:
            value = None if value is None else layout_text(layout_counts(value))
    extra = {"error": err} if err else {}
    note = _pending(setting.key, gpu, value, extra)
    if setting.key == "power_limit":
        extra["default"] = gpu.power_default_limit_w
    if setting.key == "applications_clocks":
        value = clock_pair_text(gpu.mem_app_clock_mhz, gpu.sm_app_clock_mhz)
        err = err or gpu.field_errors.get("mem_app_clock_mhz")
        extra = {**({"error": err} if err else {}),
                 "default": clock_pair_text(gpu.mem_app_clock_default_mhz, gpu.sm_app_clock_default_mhz),
                 "max": (gpu.mem_clock_max_mhz, gpu.sm_clock_max_mhz)}
    return Observed(gpu.label, value, note=note, extra=extra)


# The modes a GPU reset switches to their pending value (the field that holds it).
_PENDING = {"ecc_mode": "ecc_mode_pending", "mig_mode": "mig_mode_pending"}


def _pending(key: str, gpu, value, extra: dict) -> str:
    """The note of a mode that changes at the next GPU reset ("" if none); it goes into `extra` too.
    Reads only the pending field of `key` (the GPU may record which fields are read)."""
    attr = _PENDING.get(key)
    pending = None if attr is None else getattr(gpu, attr)
    if pending is None or pending == value:
        return ""
    extra["pending"] = pending
    return f"pending {'on' if pending else 'off'} after a GPU reset"


def gpu_satisfies(setting, obs: Observed) -> bool:
    if setting.key == "power_limit":
        expected = obs.extra.get("default") if setting.target == "default" else float(setting.target)
        if expected is None or obs.value is None:
            return False
        return abs(float(obs.value) - float(expected)) < 1.0
    if setting.key == "mig_layout":
        return obs.value == layout_text(parse_layout(setting.target))
    if setting.key == "applications_clocks":
        expected = obs.extra.get("default") if setting.target == "default" else clock_pair_text(setting.target)
        return expected is not None and obs.value == expected
    return obs.value == setting.target


def clock_pair_text(mem, sm=None) -> str | None:
    """(2619, 1980) or '2619, 1980' -> '2619,1980' (memory first, as `nvidia-smi -ac`); None if not two clocks."""
    parts = [mem, sm] if sm is not None else str(mem).split(",")
    try:
        clocks = [int(str(p).strip()) for p in parts]  # None (not reported) fails here too
    except ValueError:
        return None
    if len(clocks) != 2 or min(clocks) <= 0:
        return None
    return f"{clocks[0]},{clocks[1]}"


# --- MIG layouts: "3g.40gb:1,1g.10gb:4" (profile:count), the same on every GPU of the host ---
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_MIG_PROFILE = r"^(\d+)g\.\d+gb(\+[a-z]+)?"
MIG_SLICES = 7  # compute slices of A100/H100/H200/B200


def parse_layout(target) -> dict[str, int]:
    text = str(target).strip()
    if text in ("none", ""):
        return {}
    counts: dict[str, int] = {}
    for part in text.split(","):
        name, _, count = part.strip().partition(":")
        counts[name.strip()] = counts.get(name.strip(), 0) + int(count or 1)
    return counts


def mig_layout_problem(target) -> str | None:
    if not isinstance(target, str):
        return "mig_layout target must be a string such as '3g.40gb:1,1g.10gb:4' or 'none'"
    try:
        counts = parse_layout(target)
    except ValueError:
        return f"mig_layout {target!r}: counts must be whole numbers, e.g. 1g.10gb:7"
    for name, count in counts.items():
        if not re.fullmatch(_MIG_PROFILE, name) or count < 1:
            return f"mig_layout {target!r}: {name!r} is not a MIG profile like 1g.10gb (count >= 1)"
    slices = layout_slices(counts)
    if slices > MIG_SLICES:
        return f"mig_layout {target!r} needs {slices} compute slices; a GPU has {MIG_SLICES}"
    return None


def layout_slices(counts: dict[str, int]) -> int:
    matches = ((re.fullmatch(_MIG_PROFILE, n), c) for n, c in counts.items())
    return sum(int(m.group(1)) * c for m, c in matches if m)


def layout_counts(instances: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in instances:
        counts[inst["profile"]] = counts.get(inst["profile"], 0) + 1
    return counts


def layout_text(counts: dict[str, int]) -> str:
    return ",".join(f"{n}:{c}" for n, c in sorted(counts.items())) or "none"


# --- write side: one change per GPU and setting, written through a GpuControl (NVML) --------
RESET_KEYS = ("ecc_mode", "mig_mode")  # take effect at the next GPU reset
RUNTIME_KEYS = ("persistence_mode", "power_limit", "compute_mode", "mig_layout", "applications_clocks")  # lost at reboot


def plan_gpus(setting, wrong: list[Observed], gpus) -> list:
    from gpunode.tune.kinds.change import Change

    by_label = {g.label: g for g in gpus}
    changes = []
    for obs in wrong:
        gpu = by_label.get(obs.subject)
        if gpu is None or obs.value is None or obs.extra.get("error"):
            continue
        busy = f"{len(gpu.processes)} GPU process(es) running (pids {', '.join(str(p.pid) for p in gpu.processes[:5])})"
        if setting.key == "mig_layout":
            changes += _plan_mig_layout(setting, gpu, busy if gpu.processes else "")
            continue
        after, blocked = _target_for(setting, obs, gpu, busy)
        changes.append(
            Change(setting.id, gpu.label, "gpu", f"{gpu.label}/{setting.key}", obs.value, after,
                   current_text=_show(setting.key, obs.value), after_text=_show(setting.key, after),
                   gpu_reset_required=setting.key in RESET_KEYS, blocked=blocked,
                   extra={"index": gpu.index, "uuid": gpu.uuid, "key": setting.key})
        )
    return changes


def _target_for(setting, obs: Observed, gpu, busy: str) -> tuple[object, str]:
    """What one GPU's change writes, and why it is blocked ("" when it is not)."""
    if setting.key == "power_limit":
        return _power_target(setting, obs, gpu)
    if setting.key == "applications_clocks":
        return _clocks_target(setting, obs)
    if setting.key in RESET_KEYS:
        if obs.extra.get("pending") == setting.target:
            return setting.target, "already pending; takes effect at the next GPU reset"
        return setting.target, busy if gpu.processes else ""
    return setting.target, ""


def _power_target(setting, obs: Observed, gpu) -> tuple[object, str]:
    after = obs.extra.get("default") if setting.target == "default" else float(setting.target)
    lo, hi = gpu.power_min_limit_w, gpu.power_max_limit_w
    if after is None:
        return after, "default power limit unknown"
    if lo is not None and hi is not None and not lo <= after <= hi:
        return after, f"{after} W is outside this GPU's range {lo}-{hi} W"
    return after, ""


def _clocks_target(setting, obs: Observed) -> tuple[object, str]:
    after = obs.extra["default"] if setting.target == "default" else clock_pair_text(setting.target)
    if after is None:
        return after, "default applications clocks unknown"
    if any(m is not None and int(c) > m for c, m in zip(after.split(","), obs.extra["max"], strict=True)):
        return after, f"{after} MHz is above this GPU's maximum clocks {obs.extra['max'][0]},{obs.extra['max'][1]} MHz"
    return after, ""


def _show(key: str, value) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "applications_clocks":
        return f"{value} MHz"
    return f"{value:g} W" if key == "power_limit" else str(value)


def _plan_mig_layout(setting, gpu, busy: str) -> list:
    """Assert first (MIG on, GPU idle), then only the difference: destroy surplus instances
    (newest first), create missing ones (largest first)."""
    from gpunode.tune.kinds.change import Change

    want = parse_layout(setting.target)
    have = layout_counts(gpu.mig_instances or [])
    blocked = busy
    if gpu.mig_mode_current is not True:
        blocked = f"MIG mode is off on {gpu.label}; set gpu.mig_mode true first (needs a GPU reset)"
    base = {"index": gpu.index, "uuid": gpu.uuid, "key": "mig_layout"}
    changes = []
    for name in sorted(have):
        surplus = have[name] - want.get(name, 0)
        doomed = sorted((i for i in gpu.mig_instances if i["profile"] == name), key=lambda i: -i["id"])[:max(surplus, 0)]
        for inst in doomed:
            changes.append(Change(setting.id, f"{gpu.label} MIG {name} #{inst['id']}", "mig", gpu.label, inst, None,
                                  current_text=f"{name} (id {inst['id']})", after_text="(destroyed)",
                                  blocked=blocked, extra=base))
    for name in sorted(want, key=lambda n: -layout_slices({n: 1})):
        for _ in range(want[name] - have.get(name, 0)):
            changes.append(Change(setting.id, f"{gpu.label} MIG {name}", "mig", gpu.label, None, {"profile": name},
                                  current_text="(none)", after_text=f"{name} + default compute instance",
                                  blocked=blocked, extra=base))
    return changes


class Gpu(SettingKind):
    name = "gpu"
    area = "gpu"
    needs_gpu = True
    verify = VERIFY_NONE  # NVML reads back in the action; ECC/MIG wait for a GPU reset

    def validate_target(self, key, target):
        if isinstance(target, str):
            one_line(target, "target")
        problem = target_problem(key, target)
        if problem:
            raise SettingInvalid(problem)
        return target

    def validate_key(self, key: str) -> None:
        if key not in KEYS:
            raise SettingInvalid(f"gpu key must be one of {', '.join(KEYS)}")

    def persistence(self, setting) -> str:
        return BOOT_SPEC if setting.key in RUNTIME_KEYS else ITSELF

    def observe(self, ctx, setting) -> list[Observed]:
        return observe_gpus(setting, ctx.gpus())

    def satisfied(self, setting, obs) -> bool:
        return gpu_satisfies(setting, obs)

    def show(self, setting, obs) -> str:
        return super().show(setting, obs) + (" W" if setting.key == "power_limit" else "")

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        if setting.key == "persistence_mode" and setting.target is True:
            daemon = persistenced_change(ctx.host, setting)
            if daemon is not None:
                return [daemon]
        return plan_gpus(setting, wrong, ctx.gpus())


def persistenced_change(host, setting):
    """Persistence through nvidia-persistenced where it is installed and systemd runs (the
    driver logs NVML's persistence-mode call as deprecated): one service change for all GPUs."""
    if not host.sys.exists(SYSTEMD_RUNNING):
        return None
    state = unit_state(host, PERSISTENCED)
    if state is None or state.get("LoadState") == "not-found":
        return None
    change = service_change(host, setting.id, PERSISTENCED, "active", state.get("ActiveState", ""))
    change.note = f"through {PERSISTENCED} (NVML's legacy persistence call is deprecated)"
    return change
