"""NVLink and the NVSwitch fabric: every link up, few link errors, fabric registration done.

The nvidia-fabricmanager service itself is a profile setting (service kind, when: nvswitch).
"""

from __future__ import annotations

from collections import defaultdict

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, ok, skip, warn
from gpunode.checks.gpu_common import each_gpu, readable_gpus, uptime_s
from gpunode.tune.kinds import has_nvswitch


def _links_by_model(gpus) -> dict[str | None, int]:
    """The most NVLinks any GPU of each model reports: what its siblings should have too."""
    most: dict[str | None, int] = defaultdict(int)
    for g in gpus:
        most[g.name] = max(most[g.name], len(g.nvlinks))
    return most


@check("gpu.nvlink.state", "Every NVLink of each GPU is active", area="nvlink", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Drain the node; on NVSwitch systems check Fabric Manager and `nvidia-smi nvlink -s`; "
                   "reset the GPUs or reboot; links that stay down need the baseboard serviced.")
def nvlink_state(ctx: AuditContext):
    gpus = readable_gpus(ctx)
    if not any(g.nvlinks for g in gpus) and not any(k.startswith("nvlink") for g in gpus for k in g.field_errors):
        raise CheckSkipped("no NVLink on these GPUs (PCIe-only GPUs or a VM)")
    switched = has_nvswitch(ctx)
    if not switched and not any(link.active for g in gpus for link in g.nvlinks):
        raise CheckSkipped("NVLinks exist but none is active on any GPU and there is no NVSwitch: "
                           "no NVLink bridge connected")
    most = _links_by_model(gpus)

    def judge(g):
        links = g.nvlinks
        expected = most[g.name]
        if not links and not expected:
            return skip("no NVLink on this GPU model")
        if not links:
            return bad(f"reports no NVLink while other {g.name} GPUs have {expected}", observed=0, expected=expected)
        inactive = [link.link for link in links if link.active is False]
        unknown = [link.link for link in links if link.active is None]
        observed = {"links": len(links), "inactive": inactive}
        if inactive and len(inactive) == len(links) and not switched:
            return warn(f"none of its {len(links)} NVLinks is active (no bridge on this GPU?) while other "
                        "GPUs have active links", observed=observed, expected="all active")
        if inactive:
            return bad(f"{len(inactive)} of {len(links)} NVLinks inactive: link(s) {', '.join(map(str, inactive))}",
                       observed=observed, expected="all active")
        if len(links) < expected:
            return bad(f"{len(links)} NVLinks, other {g.name} GPUs have {expected}", observed=observed,
                       expected=expected)
        if unknown:
            return warn(f"state of NVLink(s) {', '.join(map(str, unknown))} unknown", observed=observed)
        versions = sorted({link.version for link in links if link.version is not None})
        version = f" (NVLink {'/'.join(map(str, versions))})" if versions else ""
        return ok(f"all {len(links)} NVLinks active{version}", observed=observed, expected="all active")

    return each_gpu(ctx, judge, needs=("nvlinks",), gpus=ctx.gpus())


# DCGM (dcgm_gpu_hardware_limits.h): any replay or recovery error is over its limit of 1;
# "CRC errors only matter at rates of 100+ per second".
CRC_PER_SECOND = 100.0


@check("gpu.nvlink.errors", "NVLink error counters (replay, recovery, CRC) stay quiet", area="nvlink",
       severity="warning", needs_gpu=True,
       remediation="Watch whether the counters grow (nvidia-smi nvlink -e); recovery errors that recur on a "
                   "link mean a marginal link: reset the GPUs, then service the baseboard.")
def nvlink_errors(ctx: AuditContext):
    gpus = readable_gpus(ctx)
    if not any(g.nvlinks for g in gpus):
        raise CheckSkipped("no NVLink on these GPUs (PCIe-only GPUs or a VM)")
    uptime = uptime_s(ctx.host)

    def judge(g):
        if not g.nvlinks:
            return skip("no NVLink on this GPU")
        totals = {"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}
        noisy = []
        for link in g.nvlinks:
            counts = {"replay": link.replay_errors, "recovery": link.recovery_errors,
                      "crc_flit": link.crc_flit_errors, "crc_data": link.crc_data_errors}
            for key, value in counts.items():
                totals[key] += value or 0
            if link.replay_errors or link.recovery_errors:
                noisy.append(f"link {link.link}: {link.replay_errors or 0} replay, "
                             f"{link.recovery_errors or 0} recovery")
        crc = totals["crc_flit"] + totals["crc_data"]
        if noisy:
            return bad(f"NVLink errors: {'; '.join(noisy)}", observed=totals, expected="no replay/recovery")
        if crc and uptime and crc / uptime >= CRC_PER_SECOND:
            return bad(f"{crc} CRC errors, {crc / uptime:.0f} per second since boot", observed=totals,
                       expected=f"< {CRC_PER_SECOND:.0f}/s")
        note = f"; {crc} CRC errors since boot, below NVIDIA's {CRC_PER_SECOND:.0f}/s concern" if crc else ""
        return ok(f"no replay or recovery errors on {len(g.nvlinks)} links{note}", observed=totals)

    return each_gpu(ctx, judge, needs=("nvlinks",), gpus=ctx.gpus())


@check("gpu.fabric", "NVSwitch fabric registration completed on every GPU", area="nvlink", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Start or restart nvidia-fabricmanager (systemctl status nvidia-fabricmanager; its log in "
                   "/var/log/fabricmanager.log); its version must match the driver's.")
def fabric(ctx: AuditContext):
    gpus = ctx.gpus()
    if not has_nvswitch(ctx):
        raise CheckSkipped("no NVSwitch on this host")

    def judge(g):
        state, status = g.fabric_state, g.fabric_status
        observed = {"state": state, "status": status}
        expected = {"state": "completed", "status": "success"}
        if state in (None, "not_supported"):
            return skip("NVML reports no fabric state for this GPU (before Hopper): "
                        "the nvidia-fabricmanager service setting covers it")
        if state == "completed" and status == "success":
            return ok("fabric registration completed", observed=observed, expected=expected)
        if state == "completed":
            return bad(f"fabric registration completed with error {status}", observed=observed, expected=expected)
        if state == "in_progress":
            return bad("fabric registration still in progress (Fabric Manager starting or stuck)",
                       observed=observed, expected=expected)
        return bad(f"fabric state {state}: Fabric Manager has not registered this GPU", observed=observed,
                   expected=expected)

    return each_gpu(ctx, judge, needs=("fabric_state",), gpus=gpus)
