"""One generic check per profile setting, judged by its kind (gpunode.tune.kinds)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import Check
from gpunode.model.profile import Profile, Setting
from gpunode.tune.kinds.registry import kind_of


def area_of(setting: Setting) -> str:
    return kind_of(setting).area_of(setting)


def _runner(setting: Setting):
    def run(ctx: AuditContext):
        from gpunode.tune.kinds import judge_setting

        return judge_setting(ctx, setting)

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
                needs_gpu=kind_of(setting).needs_gpu,
            )
        )
    return checks
