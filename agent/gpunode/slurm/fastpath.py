"""Running `gpunode gate` without typer: the gate starts before every Slurm job, and typer
(with the pydantic it loads to coerce options) costs ~100 ms of imports, a third of the
gate's budget. `gpunode.cli.main` sends `gpunode gate ...` here; help, and anything this
small parser does not understand, goes to the typer command in gate_cmd (same options).

In --prolog/--epilog mode a broken gpunode (bad config, a bug) must not block jobs: it prints
one `gpunode: error: ...` line and exits 0, unless --strict. Only a FAIL blocks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SNAPSHOT_ENV = "GPUNODE_SNAPSHOT"
USAGE_EXIT = 2

# The options of `gpunode gate` (gate_cmd.gate declares the same, with help texts).
FLAGS = {"--prolog": "prolog", "--epilog": "epilog", "--health-check": "health_check", "--strict": "strict",
         "--json": "as_json"}
VALUES = {"--timeout": ("timeout", float), "--check-timeout": ("check_timeout", float),
          "--snapshot": ("snapshot", Path), "--config": ("config", str)}
DEFAULTS = {"prolog": False, "epilog": False, "health_check": False, "strict": False, "as_json": False,
            "timeout": 20.0, "check_timeout": None, "snapshot": None, "config": None}


def parse_fast(args: list[str]) -> dict | None:
    """The gate's options -> keyword arguments; None for anything else (help, typos, bad
    numbers), which typer then answers with its usual messages."""
    kwargs = dict(DEFAULTS)
    items = iter(args)
    for arg in items:
        name, sep, inline = arg.partition("=")
        if arg in FLAGS:
            kwargs[FLAGS[arg]] = True
        elif name in VALUES:
            value = inline if sep else next(items, None)
            if value is None or (not sep and value.startswith("--")):
                return None
            key, kind = VALUES[name]
            try:
                kwargs[key] = kind(value)
            except ValueError:
                return None
        else:
            return None
    return kwargs


def fast_main(args: list[str]) -> int | None:
    kwargs = parse_fast(args)
    return None if kwargs is None else execute(**kwargs)


def execute(prolog=False, epilog=False, health_check=False, timeout=20.0, check_timeout=None, strict=False,
            as_json=False, snapshot=None, config=None) -> int:
    """Run the gate; print the report; return the exit code."""
    modes = [m for m, on in (("prolog", prolog), ("epilog", epilog), ("health-check", health_check)) if on]
    if len(modes) > 1:
        return _error("give one of --prolog, --epilog, --health-check")
    mode = modes[0] if modes else "check"
    try:
        run = prepare(mode, timeout, check_timeout, strict, snapshot, config)
        from gpunode.slurm.gate import run_gate

        verdict = run_gate(run)
    except Exception as exc:  # noqa: BLE001 - in Slurm hooks a gpunode failure must not block
        return gpunode_failed(mode, strict, str(exc) or type(exc).__name__)
    report(verdict, as_json)
    return verdict.exit_code


def prepare(mode, timeout, check_timeout, strict, snapshot, config_path):
    from gpunode.audit.run import audit_config, choose_checks, load_audit_profile, make_host
    from gpunode.config import load_config
    from gpunode.host.runner import Runner
    from gpunode.slurm.gate import GateOptions, GateRun
    from gpunode.slurm.scontrol import Slurm

    options = GateOptions(mode, timeout, check_timeout, strict)
    cfg = load_config(config_path)
    snap = str(snapshot) if snapshot else (os.environ.get(SNAPSHOT_ENV) or cfg.snapshot)
    if snap and not Path(snap).is_dir():
        raise ValueError(f"snapshot {snap}: not a directory")
    host, source = make_host(snapshot=snap)
    _prefetch_gpus(host)
    profile = load_audit_profile(cfg.profile, cfg)
    checks = [] if mode == "epilog" else choose_checks(profile, tags=["gate"], skip_ids=cfg.disable_checks)
    gpu_factory = None
    if not snap:
        from gpunode.host.gpu.source import LiveGpuSource

        gpu_factory = LiveGpuSource  # the epilog polls: a fresh NVML read each time
    return GateRun(
        host=host, source=source, profile=profile, config=audit_config(cfg), checks=checks, options=options,
        env=dict(os.environ), slurm=Slurm(Runner()) if mode != "check" else None, gpu_factory=gpu_factory,
    )


def _prefetch_gpus(host) -> None:
    """Start the NVML read now, in its background thread, so driver calls (which release the
    GIL) overlap with loading the profile and the check modules; the checks wait for it."""
    try:
        host.gpu.inventory(timeout=0)
    except TimeoutError:
        pass


def gpunode_failed(mode: str, strict: bool, message: str) -> int:
    """check: bad input is exit 2. Slurm hooks: never block a job or drain for our own failure
    unless --strict; the health check says UNKNOWN (3), which Slurm only logs."""
    if mode == "check":
        return _error(message)
    if mode in ("prolog", "epilog"):
        note = "blocking (--strict)" if strict else "not blocking the job"
        print(f"gpunode: error: {message} (gate not run; {note})", file=sys.stderr)
        return USAGE_EXIT if strict else 0
    print(f"gpunode: error: {message} (health check not run)", file=sys.stderr)
    return 3


def _error(message: str) -> int:
    print(f"gpunode: error: {message}", file=sys.stderr)
    return USAGE_EXIT


def report(verdict, as_json: bool) -> None:
    from gpunode.slurm.gate import gate_document, render_text

    if as_json:
        import json

        sys.stdout.write(json.dumps(gate_document(verdict), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(verdict))
    sys.stdout.flush()
    if verdict.blocked and verdict.reason:
        print(verdict.reason, file=sys.stderr)  # the one line Slurm's log keeps
    for problem in verdict.problems:
        print(f"gpunode: warning: {problem}", file=sys.stderr)
