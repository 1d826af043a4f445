#!/usr/bin/env python3
"""Wall time of `gpunode gate` (process start to exit) beside what it cannot be faster than,
measured side by side in one run, interleaved so every command sees the same machine state:

- `python3 -c pass`: the interpreter's start;
- a bare NVML script (`import pynvml; nvmlInit(); one query`): the least any Python gate pays;
- `nvidia-smi --query-gpu=...`: what a hand-made prolog would run.

gpunode's own cost is the gate's median minus the bare NVML script's (target <= 0.03 s).
With a resident `gpunode watch` (issue 22) two more rows: the gate judging from a fresh watcher
state (target: <= `python3 -c pass` + 0.02 s) and the installed Slurm prolog hook answering from
the watcher's one-line verdict in shell (target: <= nvidia-smi's one query). The state is the
result of one real poll of the gate checks on this host, rewritten before each round so it stays
fresh; each row says whether the fast path was really taken.
Bytecode is compiled first (compileall), as an installed package has it. With --profile the
run also keeps `-X importtime` (the slowest imports) and a cProfile summary of one gate run.
A benchmark, not a test: run it on a real GPU node (the lent H200):

    PYTHONPATH=agent python3 benchmarks/gate_speed.py --runs 21 --profile -o gate-speed.json
    PYTHONPATH=agent python3 benchmarks/gate_speed.py --dry --json out.json   # 3 runs, no GPU needed
"""

from __future__ import annotations

import argparse
import compileall
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=name,persistence_mode,ecc.errors.uncorrected.volatile.total",
                    "--format=csv"]
BARE_NVML = ("import pynvml; pynvml.nvmlInit(); "
             "h = pynvml.nvmlDeviceGetHandleByIndex(0); pynvml.nvmlDeviceGetTemperature(h, 0)")
# What the console script `gpunode` (pip's entry point, what Slurm's Prolog runs) executes;
# `python -m gpunode` adds runpy's imports (~5 ms), shown on a row of its own.
ENTRY_POINT = "import sys; from gpunode.cli import main; sys.argv[0] = 'gpunode'; sys.exit(main())"
TARGET_OWN_COST_S = 0.03
# The gate's reads asked of nvidia-smi, NVIDIA's C tool: what the same NVML reads cost a fresh
# process without Python (names this driver's nvidia-smi does not know are dropped).
GATE_FIELDS_SMI = ("name,pci.bus_id,driver_version,persistence_mode,ecc.mode.current,"
                   "ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total,"
                   "retired_pages.pending,remapped_rows.pending,remapped_rows.failure,"
                   "clocks_event_reasons.active,clocks_event_reasons.supported,pstate,clocks.sm,clocks.mem,"
                   "clocks.max.sm,clocks.max.mem,clocks.applications.graphics,clocks.applications.memory,"
                   "clocks.default_applications.graphics,clocks.default_applications.memory,temperature.gpu,"
                   "pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,"
                   "mig.mode.current,compute_mode,memory.used,memory.total")
MIN_RUNS = 15
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def once(argv: list[str], env: dict | None = None) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)  # noqa: S603
    return time.perf_counter() - started, proc.returncode, proc.stdout


def summarise(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"runs": len(times), "median_s": round(statistics.median(times), 4), "min_s": round(ordered[0], 4),
            "max_s": round(ordered[-1], 4), "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4)}


def import_times(gate: list[str], top: int = 25) -> list[dict]:
    """The slowest imports of one gate run (`-X importtime`: self and cumulative µs)."""
    proc = subprocess.run([gate[0], "-X", "importtime", *gate[1:]], capture_output=True, text=True,  # noqa: S603
                          check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append({"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative_us)})
    return sorted(rows, key=lambda r: r["cumulative_us"], reverse=True)[:top]


def cprofile_summary(gate: list[str], top: int = 30) -> str:
    """cProfile of one gate run, the imports included (`-m cProfile` prints nothing when the
    program ends with sys.exit, as gpunode does)."""
    code = ("import cProfile, io, pstats, sys\n"
            "sys.argv = ['gpunode', *sys.argv[1:]]\n"
            "profile = cProfile.Profile()\n"
            "profile.enable()\n"
            "try:\n    from gpunode.cli import main\n    main()\n"
            "except SystemExit:\n    pass\n"
            "profile.disable()\n"
            "out = io.StringIO()\n"
            f"pstats.Stats(profile, stream=out).sort_stats('cumulative').print_stats({top})\n"
            "sys.stderr.write(out.getvalue())\n")
    proc = subprocess.run([gate[0], "-c", code, *gate[3:]], capture_output=True, text=True,  # noqa: S603
                          check=False)
    lines = proc.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
    return "\n".join(lines[start:])


def smi_fields() -> str:
    """GATE_FIELDS_SMI less what this nvidia-smi does not know (`--help-query-gpu` lists them)."""
    known = subprocess.run(["nvidia-smi", "--help-query-gpu"], capture_output=True, text=True,  # noqa: S603, S607
                           check=False).stdout
    return ",".join(f for f in GATE_FIELDS_SMI.split(",") if f'"{f}"' in known)


class WatcherState:
    """A fresh `gpunode watch` state in a temp dir: one real poll of the gate checks here, written
    as the watcher writes it (this process stands for the watcher: its pid is alive), plus the
    installed prolog hook rendered to trust its verdict line."""

    def __init__(self, directory: Path) -> None:
        from gpunode.audit.run import choose, load_audit_profile
        from gpunode.config import load_config
        from gpunode.slurm.install import WatchVerdict, hook_scripts
        from gpunode.watch.loop import Watcher
        from gpunode.watch.sources import Poll
        from gpunode.watch.state import VERDICT_FILE

        cfg = load_config()
        profile = load_audit_profile(cfg.profile, cfg)
        poll = Poll(cfg, profile, choose(profile, tags=["gate"], disabled=cfg.disable_checks).checks)
        results = poll.run_checks_now()

        class Once:
            def run_checks_now(self):
                return results

            def events(self, found, now):
                return []

        self.directory = directory
        self.watcher = Watcher(str(directory), Once(), 60.0, notify=lambda m: True)
        self.status = None
        self.refresh()
        self.status = self.watcher.last_poll["status"]
        (prolog,) = [h for h in hook_scripts(directory, sys.executable,
                                             watch=WatchVerdict(str(directory / VERDICT_FILE), 120))
                     if h.mode == "prolog"]
        self.hook = directory / "gpunode-prolog"
        self.hook.write_text(prolog.text)
        self.hook.chmod(0o755)

    def refresh(self) -> None:
        self.watcher.tick(time.time())
        self.watcher.next_poll = 0.0  # the next refresh polls (the same results) and rewrites

    def fast_path_taken(self, env: dict) -> dict:
        """Whether each row really took its fast path (else its time means something else)."""
        self.refresh()
        gate = subprocess.run([sys.executable, "-m", "gpunode", "gate"], capture_output=True, text=True, env=env,
                              check=False)
        hook = subprocess.run(["/bin/sh", "-x", str(self.hook)], capture_output=True, text=True, env=env, check=False)
        return {"watcher_poll_status": self.status,
                "gate_said_source_watcher": "source: watcher (age" in gate.stdout,
                "hook_answered_from_verdict": hook.returncode == 0 and '"$python"' not in hook.stderr
                and "-m gpunode gate" not in hook.stderr}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help=f"timed runs per command (>= {MIN_RUNS})")
    parser.add_argument("--profile", action="store_true", help="also keep -X importtime and a cProfile summary")
    parser.add_argument("-o", "--output", "--json", dest="output", help="write the figures as JSON here")
    parser.add_argument("--dry", action="store_true", help="3 runs, for a test on a machine without a GPU")
    parser.add_argument("--no-watcher", action="store_true", help="leave out the rows of a fresh watcher state")
    args = parser.parse_args()
    if args.dry:
        args.runs = 3
    elif args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS} (the median is the figure)")
    compileall.compile_dir(str(PACKAGE_ROOT / "agent"), quiet=1)
    compileall.compile_dir(str(PACKAGE_ROOT / "checks"), quiet=1)
    gate = [sys.executable, "-c", ENTRY_POINT, "gate"]
    commands = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "bare NVML script": [sys.executable, "-c", BARE_NVML],
        "gpunode gate": gate,
        "python3 -m gpunode gate": [sys.executable, "-m", "gpunode", "gate"],
    }
    has_smi = shutil.which("nvidia-smi") is not None
    if has_smi:
        commands["nvidia-smi --query-gpu"] = NVIDIA_SMI_QUERY
        commands["nvidia-smi, the gate's fields"] = ["nvidia-smi", f"--query-gpu={smi_fields()}", "--format=csv"]
    else:
        print("nvidia-smi not found: no reference figure (run this on a GPU node)", file=sys.stderr)

    import os
    import tempfile

    watched = None
    scratch = tempfile.TemporaryDirectory()
    envs: dict[str, dict | None] = dict.fromkeys(commands)
    if not args.no_watcher:
        watched = WatcherState(Path(scratch.name))
        from gpunode.slurm.from_watcher import WATCH_DIR_ENV

        watch_env = dict(os.environ, **{WATCH_DIR_ENV: scratch.name})
        commands["gpunode gate, fresh watcher state"] = gate
        envs["gpunode gate, fresh watcher state"] = watch_env
        commands["prolog hook, watcher verdict"] = ["/bin/sh", str(watched.hook)]
        envs["prolog hook, watcher verdict"] = watch_env
    times: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, set[int]] = {name: set() for name in commands}
    for name, argv in commands.items():
        once(argv, envs.get(name))  # warm-up: page cache, NVML/driver state
    for _ in range(args.runs):
        if watched is not None:
            watched.refresh()  # a watcher rewrites its state every poll
        for name, argv in commands.items():  # interleaved: same conditions for each command
            seconds, rc, _out = once(argv, envs.get(name))
            times[name].append(seconds)
            codes[name].add(rc)
    _, _, gate_json = once([*gate, "--json"])
    fast = watched.fast_path_taken(envs["gpunode gate, fresh watcher state"]) if watched is not None else None
    scratch.cleanup()

    rows = {name: {"argv": argv, **summarise(times[name]), "exit_codes": sorted(codes[name])}
            for name, argv in commands.items()}
    gate_s = rows["gpunode gate"]["median_s"]
    bare_s = rows["bare NVML script"]["median_s"]
    own = round(gate_s - bare_s, 4)
    verdict = {"gate_median_s": gate_s, "bare_nvml_median_s": bare_s, "own_cost_s": own,
               "target_own_cost_s": TARGET_OWN_COST_S, "meets_target": own <= TARGET_OWN_COST_S}
    if fast is not None:
        pass_s = rows["python3 -c pass"]["median_s"]
        watched_s = rows["gpunode gate, fresh watcher state"]["median_s"]
        hook_s = rows["prolog hook, watcher verdict"]["median_s"]
        smi = rows.get("nvidia-smi --query-gpu", {}).get("median_s")
        verdict["watcher"] = {
            **fast, "gate_median_s": watched_s, "over_python_pass_s": round(watched_s - pass_s, 4),
            "target_over_python_pass_s": 0.02, "gate_meets_target": watched_s - pass_s <= 0.02,
            "hook_median_s": hook_s, "nvidia_smi_median_s": smi,
            "hook_meets_target": None if smi is None else hook_s <= smi}
    try:
        doc = json.loads(gate_json)
        gate_info = {"status": doc.get("status"), "in_process_s": doc.get("duration_s"),
                     "checks": len(doc.get("checks", [])), "summary": doc.get("summary")}
    except ValueError:
        gate_info = {"error": "gpunode gate --json did not print JSON"}

    width = max(len(n) for n in rows)
    print(f"{'command':{width}s}  median    min      p90      max     exit")
    for name, row in rows.items():
        print(f"{name:{width}s}  {row['median_s']:.3f} s  {row['min_s']:.3f} s  {row['p90_s']:.3f} s  "
              f"{row['max_s']:.3f} s  {','.join(map(str, row['exit_codes']))}")
    print(f"gate in-process (checks + verdict): {gate_info.get('in_process_s')} s, "
          f"{gate_info.get('checks')} results, status {gate_info.get('status')}")
    print(f"gpunode's own cost over the bare NVML script: {own:.3f} s (target <= {TARGET_OWN_COST_S} s): "
          f"{'met' if verdict['meets_target'] else 'MISSED'}")
    if fast is not None:
        w = verdict["watcher"]
        print(f"with a fresh watcher state (poll {w['watcher_poll_status']}; gate from the watcher: "
              f"{w['gate_said_source_watcher']}, hook from the verdict: {w['hook_answered_from_verdict']}): gate "
              f"{w['gate_median_s']:.3f} s = python3 -c pass + {w['over_python_pass_s']:.3f} s (target <= 0.02); "
              f"prolog hook {w['hook_median_s']:.4f} s (target <= nvidia-smi {w['nvidia_smi_median_s']})")
    result = {"schema": "gpunode.gate_speed/2", "host": platform.node(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
              "commands": rows, "verdict": verdict, "gate": gate_info}
    if has_smi:
        result["gpus"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,  # noqa: S603
                                        check=False).stdout.splitlines()
    if args.profile:
        result["import_times"] = import_times(gate)
        result["cprofile"] = cprofile_summary(gate)
        print("slowest imports (cumulative µs):")
        for row in result["import_times"][:12]:
            print(f"  {row['cumulative_us']:>8d}  {row['module']}")
        print(result["cprofile"])
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
