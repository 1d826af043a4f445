"""One generic check per profile setting (sysctl, sysfs, limits, cmdline, service, gpu, irq)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import Check
from gpunode.tune.profiles import Profile, Setting

_KIND_AREA = {"limits": "memory", "cmdline": "kernel", "service": "services", "gpu": "gpu", "irq": "net"}
_SYSCTL_AREA = {"vm": "memory", "kernel": "kernel", "net": "net", "fs": "kernel"}


def area_of(setting: Setting) -> str:
    if setting.area:
        return setting.area
    if setting.kind == "sysctl":
        return _SYSCTL_AREA.get(setting.key.split(".")[0], "kernel")
    return _KIND_AREA.get(setting.kind, "host")


def _runner(setting: Setting):
    def run(ctx: AuditContext):
        from gpunode.tune.kinds import judge

        return judge(ctx, setting)

    return run


def setting_checks(profile: Profile) -> list[Check]:
    checks = []
    for setting in profile.settings.values():
        checks.append(
            Check(
                id=setting.id,
                title=f"{setting.key} {setting.target_text}",
                area=area_of(setting),
                func=_runner(setting),
                severity=setting.severity,
                tags=frozenset({"profile", *setting.tags}),
                remediation=(f"gpunode apply --profile {profile.name} --only {setting.id}"
                             + (f"  ({setting.why})" if setting.why else "")),
                needs_gpu=setting.kind == "gpu",
            )
        )
    return checks
