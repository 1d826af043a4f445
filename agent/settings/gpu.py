"""GPU settings read through the GPU source (NVML): one observation per GPU."""

from __future__ import annotations

from gpunode.settings.base import Observed

# key -> (GpuInfo field, allowed target type)
KEYS = {
    "persistence_mode": ("persistence_mode", bool),
    "ecc_mode": ("ecc_mode_current", bool),
    "mig_mode": ("mig_mode_current", bool),
    "compute_mode": ("compute_mode", str),
    "power_limit": ("power_limit_w", str),  # "default" or watts as a number
}
COMPUTE_MODES = ("default", "exclusive_process", "prohibited")


def validate(key: str, target) -> str | None:
    if key not in KEYS:
        return f"gpu key must be one of {', '.join(KEYS)}"
    _, kind = KEYS[key]
    if kind is bool and not isinstance(target, bool):
        return f"gpu/{key} target must be true or false"
    if key == "compute_mode" and target not in COMPUTE_MODES:
        return f"compute_mode target must be one of {', '.join(COMPUTE_MODES)}"
    if key == "power_limit" and target != "default" and (isinstance(target, bool) or not isinstance(target, (int, float))):
        return "power_limit target must be 'default' or a number of watts"
    return None


def observe(host, setting, gpus) -> list[Observed]:
    field, _ = KEYS[setting.key]
    observed = []
    for gpu in gpus:
        if gpu.error:
            observed.append(Observed(gpu.label, None, note=gpu.error, extra={"error": gpu.error}))
            continue
        err = gpu.field_errors.get(field.replace("_current", "")) or gpu.field_errors.get(field)
        value = getattr(gpu, field)
        extra = {"error": err} if err else {}
        note = ""
        if setting.key == "ecc_mode" and gpu.ecc_mode_pending is not None and gpu.ecc_mode_pending != value:
            note = f"pending {'on' if gpu.ecc_mode_pending else 'off'} after a GPU reset"
            extra["pending"] = gpu.ecc_mode_pending
        if setting.key == "mig_mode" and gpu.mig_mode_pending is not None and gpu.mig_mode_pending != value:
            note = f"pending {'on' if gpu.mig_mode_pending else 'off'} after a GPU reset"
            extra["pending"] = gpu.mig_mode_pending
        if setting.key == "power_limit":
            extra["default"] = gpu.power_default_limit_w
        observed.append(Observed(gpu.label, value, note=note, extra=extra))
    return observed


def gpu_satisfies(setting, obs: Observed) -> bool:
    if setting.key == "power_limit":
        expected = obs.extra.get("default") if setting.target == "default" else float(setting.target)
        if expected is None or obs.value is None:
            return False
        return abs(float(obs.value) - float(expected)) < 1.0
    return obs.value == setting.target
