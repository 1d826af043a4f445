"""PCIe link of each GPU: trained to full width and speed, and few link-level replays."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip, warn
from gpunode.checks.gpu_common import counter_growth, each_gpu, gpu_key, is_busy, uptime_s


def _link(gen, width) -> str:
    return f"Gen{gen if gen is not None else '?'} x{width if width is not None else '?'}"


@check("pcie.link", "GPU PCIe link at full width (and full speed when busy)", area="pcie",
       severity="critical", tags=["gate"], needs_gpu=True,
       remediation="A downtrained link: reseat the GPU or riser, check the slot and the BIOS PCIe settings; "
                   "if it persists, RMA the GPU or the baseboard.")
def pcie_link(ctx: AuditContext):
    def judge(g):
        gen, gen_max, width, width_max = g.pcie_gen_current, g.pcie_gen_max, g.pcie_width_current, g.pcie_width_max
        if gen is None and width is None:
            return skip("NVML reports no PCIe link state on this GPU")
        observed, expected = _link(gen, width), _link(gen_max, width_max)
        if width is not None and width_max is not None and width < width_max:
            return bad(f"link downtrained to x{width} of x{width_max}", observed=observed, expected=expected)
        note = ""
        if gen is not None and gen_max is not None and gen < gen_max:
            if is_busy(g):
                return bad(f"link at Gen{gen} of Gen{gen_max} while the GPU is busy", observed=observed,
                           expected=expected)
            note = f"; Gen{gen} of Gen{gen_max} while idle is normal power saving"
        gpu_max = g.pcie_gen_gpu_max
        if gpu_max is not None and gen_max is not None and gen_max < gpu_max:
            return warn(f"the slot limits the link to Gen{gen_max}; the GPU can do Gen{gpu_max}",
                        observed=observed, expected=_link(gpu_max, width_max))
        return ok(f"{observed} of {expected}{note}", observed=observed, expected=expected)

    return each_gpu(ctx, judge, needs=("pcie_gen_current", "pcie_gen_max", "pcie_width_current", "pcie_width_max"))


# DCGM_LIMIT_MAX_PCIREPLAY_RATE (dcgm_gpu_hardware_limits.h): "8 replays per minute is the
# maximum recommended by RM". Judged on the growth since the last audit; on a first reading
# (or without kept state) NVML's count since the driver loaded is averaged over the uptime (the
# driver loads after boot, so the true rate is a little higher).
REPLAYS_PER_MINUTE = 8


@check("pcie.replay", "PCIe replay rate below NVIDIA's limit (8 per minute)", area="pcie",
       severity="warning", needs_gpu=True,
       remediation="Frequent replays mean a marginal link (signal integrity): reseat the GPU or riser, "
                   "check the slot; watch whether the count keeps rising (nvidia-smi -q -d PCIE).")
def pcie_replay(ctx: AuditContext):
    uptime = uptime_s(ctx.host)

    def judge(g):
        count = g.pcie_replay_counter
        if count is None:
            return skip("NVML reports no PCIe replay counter on this GPU")
        growth = counter_growth(ctx, f"{gpu_key(g)}/pcie_replay", count)
        expected = f"<= {REPLAYS_PER_MINUTE}/min"
        if growth.first:
            # Without an uptime, judge the count as if it grew in one minute (strict, never lenient).
            minutes = max(uptime / 60.0, 1.0) if uptime else 1.0
            since = f"over {minutes / 60:.1f} h of uptime" if uptime else "(uptime unknown)"
            text = f"{count} replays {since} ({growth.note()})"
        else:
            minutes = max(growth.hours * 60.0, 1.0)
            count = growth.delta
            text = (f"{count} replays in {growth.hours:.1f} h since the last audit "
                    f"({g.pcie_replay_counter} since the driver loaded)")
        rate = count / minutes
        observed = {"replays": g.pcie_replay_counter, "counted": count, "per_minute": round(rate, 3),
                    "since_last_audit": not growth.first}
        if rate > REPLAYS_PER_MINUTE:
            return bad(f"{rate:.1f} per minute: {text}", observed=observed, expected=expected)
        return ok(text, observed=observed, expected=expected)

    return each_gpu(ctx, judge, needs=("pcie_replay_counter",))
