"""Setting kinds: how each kind of profile setting is validated, observed, judged and planned
(one SettingKind class per kind, by name in gpunode.tune.kinds.registry).

Audit and apply share `assess`, so what apply plans (or calls not applicable here) is exactly
what audit judges (or SKIPs with the same why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode.audit.engine import CheckSkipped
from gpunode.host.facts.nvswitch import NVL_TRAY, has_nvswitch, is_nvl_tray
from gpunode.model.profile import Setting
from gpunode.tune.kinds.base import Observed
from gpunode.tune.kinds.registry import kind_of

NOT_APPLICABLE = "not applicable here"


def condition_holds(ctx, when: str) -> tuple[bool, str]:
    """-> (applies, why not)."""
    if when == "always":
        return True, ""
    host = ctx.host
    if when in ("gpu", "nvswitch", "imex"):
        return _gpu_condition(ctx, when)
    if when == "infiniband":
        return bool(host.sys.listdir("/sys/class/infiniband")), "no InfiniBand device"
    if when == "nvme":
        return bool(host.sys.glob("/sys/block/nvme*")), "no NVMe device"
    if when == "docker":
        from gpunode.host.facts.docker import DOCKERD

        return any(host.sys.exists(p) for p in DOCKERD), f"Docker is not installed (no {DOCKERD[0]})"
    if when == "mps_unit":
        from gpunode.tune.kinds.unit import UNIT_DIRS

        return any(host.sys.exists(f"{d}/{MPS_UNIT}") for d in UNIT_DIRS), MPS_UNIT_HOW
    return False, f"unknown condition {when}"


def _gpu_condition(ctx, when: str) -> tuple[bool, str]:
    """gpu: the host has GPUs; nvswitch: ... and an NVSwitch, not on an NVL tray (its switch
    trays run Fabric Manager); imex: ... on an NVL tray."""
    host = ctx.host
    inv = ctx.inventory()
    if not inv.available or not inv.gpus:
        return False, inv.error or "no GPU"
    if when == "nvswitch" and not has_nvswitch(host.sys, inv.gpus):
        return False, "no NVSwitch on this host"
    if when == "nvswitch" and is_nvl_tray(host.sys, inv.gpus):
        return False, f"{NVL_TRAY}: Fabric Manager runs on the NVLink switch trays"
    if when == "imex" and not is_nvl_tray(host.sys, inv.gpus):
        return False, f"not a {NVL_TRAY} (IMEX serves multi-node NVLink domains)"
    return True, ""


# The inference profile runs MPS through this unit where the site installed one; gpunode does
# not write it (ExecStart, user and pipe directory are the site's choice).
MPS_UNIT = "nvidia-mps.service"
MPS_UNIT_HOW = (f"no {MPS_UNIT} on this host; to run MPS as a unit, install one with Type=forking, "
                "ExecStartPre=nvidia-smi -c EXCLUSIVE_PROCESS, ExecStart=nvidia-cuda-mps-control -d, "
                "ExecStop=/bin/sh -c 'echo quit | nvidia-cuda-mps-control' (docs/profiles.md)")


@dataclass
class Assessment:
    """One setting on one host: not applicable (why), absent (why), or its observations and
    the subjects not at the target (`wrong`)."""

    setting: Setting
    not_applicable: str = ""
    absent: str = ""
    observed: list[Observed] = field(default_factory=list)
    wrong: list[Observed] = field(default_factory=list)

    @property
    def skip_reason(self) -> str:
        return f"{NOT_APPLICABLE}: {self.not_applicable}" if self.not_applicable else self.absent


def assess(ctx, setting: Setting) -> Assessment:
    kind = kind_of(setting)
    applies, unmet = condition_holds(ctx, setting.when)
    if not applies:
        return Assessment(setting, not_applicable=unmet)
    why_not = kind.precondition(ctx, setting)
    if why_not:
        return Assessment(setting, not_applicable=why_not)
    observed = kind.observe(ctx, setting)
    readable = [o for o in observed if o.value is not None and not o.extra.get("error")]
    if not readable:
        note = (observed[0].note or observed[0].extra.get("error", "")) if observed else ""
        absent = f"knob absent on this host: {kind.where(setting)}" + (f" ({note})" if note else "")
        return Assessment(setting, absent=absent, observed=observed)
    wrong = [o for o in readable if not kind.satisfied(setting, o)]
    why_not = kind.cannot_apply(ctx, setting, wrong) if wrong else None
    return Assessment(setting, not_applicable=why_not or "", observed=observed, wrong=wrong)


def observe(ctx, setting: Setting) -> list[Observed]:
    return kind_of(setting).observe(ctx, setting)


def is_satisfied(setting: Setting, obs: Observed) -> bool:
    return kind_of(setting).satisfied(setting, obs)


__all__ = ["Assessment", "CheckSkipped", "Observed", "assess", "condition_holds", "is_satisfied",
           "kind_of", "observe"]
