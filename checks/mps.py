"""CUDA MPS (several processes sharing a GPU, e.g. inference): is the control daemon running,
and is each GPU in the compute mode MPS wants (EXCLUSIVE_PROCESS: only the MPS server creates
contexts, so no client bypasses it)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.host.facts.processes import processes_named

MPS_CONTROL = "nvidia-cuda-mps-control"
MPS_SERVER = "nvidia-cuda-mps-server"
PIPE_DIR = "/tmp/nvidia-mps"  # CUDA_MPS_PIPE_DIRECTORY's default (MPS docs)
WANTED = "exclusive_process"


@check("mps.daemon", "MPS control daemon and GPU compute mode agree", area="mps", needs_gpu=True,
       remediation="With MPS: nvidia-smi -c EXCLUSIVE_PROCESS on each GPU it serves, then start "
                   "nvidia-cuda-mps-control -d (or the nvidia-mps.service the inference profile manages); "
                   "without MPS, EXCLUSIVE_PROCESS lets only one process use each GPU (NVIDIA MPS docs).")
def daemon(ctx: AuditContext):
    gpus = ctx.gpus()
    running = processes_named(ctx.host.sys, (MPS_CONTROL, MPS_SERVER))
    if running is None:
        return skip("the process list is not readable here (/proc): MPS daemon state unknown")
    control = running.get(MPS_CONTROL, [])
    pipe = ctx.host.sys.exists(f"{PIPE_DIR}/control")
    modes = {g.label: g.compute_mode for g in gpus}
    observed = {"control_pids": control, "servers": len(running.get(MPS_SERVER, [])), "pipe_dir": pipe,
                "compute_modes": modes}
    if control:
        other = {label: mode for label, mode in modes.items() if mode != WANTED}
        if other:
            shown = ", ".join(f"{label} {mode}" for label, mode in other.items())
            return bad(f"MPS control daemon runs (pid {control[0]}) but {shown}: clients may bypass MPS",
                       observed=observed, expected=WANTED)
        return ok(f"MPS control daemon runs (pid {control[0]}{'' if pipe else f', no pipe in {PIPE_DIR}'}); "
                  f"all {len(gpus)} GPU(s) {WANTED}", observed=observed)
    exclusive = [label for label, mode in modes.items() if mode == WANTED]
    if exclusive:
        return ok(f"no MPS daemon; {', '.join(exclusive)} {WANTED}: one process per GPU", observed=observed)
    return ok("no MPS daemon; GPUs shared by time-slicing (compute mode "
              f"{', '.join(sorted({str(m) for m in modes.values()}))})", observed=observed)
