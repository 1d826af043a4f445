"""Run `gpunode diag` exactly as the CLI builds it, and also keep the raw telemetry trace
(trimmed) for fixtures. Evidence helper for issue 14 on the lent GPU machine:

    PYTHONPATH=agent python3 benchmarks/diag_record.py --level 3 --doc OUT/l3.json --trace OUT/l3-trace.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gpunode.cli import diag_cmd
from gpunode.cli.common import stdout_console
from gpunode.diag.run import DiagOptions

MAX_SAMPLES_PER_GPU = 240


def trimmed(trace: dict) -> dict:
    by_gpu: dict[int, list] = {}
    for s in trace["samples"]:
        by_gpu.setdefault(s["gpu"], []).append(s)
    keep, step = [], 1
    for rows in by_gpu.values():
        step = max(1, len(rows) // MAX_SAMPLES_PER_GPU)
        keep += rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    return {**trace, "samples": sorted(keep, key=lambda s: (s["t"], s["gpu"])),
            "trimmed": f"every {step}th sample of {len(trace['samples'])}"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--no-xid", action="store_true", help="NVML event set off (if it crashes the driver's NVML)")
    a = ap.parse_args()
    opts = DiagOptions(level=a.level, duration=a.duration)
    ctx, selection, note = diag_cmd._context(opts, None, None, None, 1)
    if a.no_xid:
        from gpunode.host.gpu.telemetry import TelemetrySampler

        ctx.sampler = TelemetrySampler.live(xid_events=False, gpus=sorted(ctx.devices))
    started = time.monotonic()
    doc = diag_cmd._run(ctx)
    wall = time.monotonic() - started
    if note:
        doc.notes.append(note)
    data = doc.to_json()
    data["wall_s_measured_by_script"] = round(wall, 1)
    Path(a.doc).write_text(json.dumps(data, indent=1))
    Path(a.trace).write_text(json.dumps(trimmed(ctx.sampler.trace().to_json())))
    diag_cmd.render(data, stdout_console())
    code = doc.exit_code
    if a.compare and selection is not None:
        from gpunode.baselines.compare import render_verdicts
        from gpunode.diag.compare import judge_document

        verdicts = judge_document(data, selection)
        render_verdicts(verdicts, stdout_console())
        data["compare"] = verdicts.to_json()
        Path(a.doc).write_text(json.dumps(data, indent=1))
        code = max(code, verdicts.exit_code, key=(0, 1, 3, 2).index)
    print(f"level {a.level}: {data['status']} in {wall:.1f} s (planned {data['planned_s']})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
