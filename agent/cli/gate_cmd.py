"""`gpunode gate` (the pre-job health gate) and `gpunode slurm install`.

In --prolog/--epilog mode a broken gpunode (bad config, a bug) must not block jobs: it
prints one `gpunode: error: ...` line and exits 0, unless --strict. Only a FAIL blocks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from gpunode.cli.common import die

SNAPSHOT_ENV = "GPUNODE_SNAPSHOT"


def gate(
    prolog: bool = typer.Option(False, "--prolog", help="Slurm Prolog: exit non-zero on FAIL (Slurm drains the node and requeues the job)."),
    epilog: bool = typer.Option(False, "--epilog", help="Slurm Epilog: wait briefly for leftover GPU processes/memory; drain if they stay."),
    health_check: bool = typer.Option(False, "--health-check", help="Slurm HealthCheckProgram: drain on FAIL, resume only gpunode's own drain."),
    timeout: float = typer.Option(20.0, "--timeout", help="Total budget in seconds, Slurm calls included."),
    check_timeout: float = typer.Option(None, "--check-timeout", help="Watchdog per check in seconds (default: timeout/4, at most 5)."),
    strict: bool = typer.Option(False, "--strict", help="An ERROR (a check that could not run) blocks too."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON verdict (schema gpunode.gate/1)."),
    snapshot: Path = typer.Option(None, "--snapshot", help=f"Gate a recorded snapshot instead of this host (also ${SNAPSHOT_ENV} or config `snapshot:`)."),
    config: str = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
) -> None:
    """Fast pre-job health gate: the checks tagged `gate`, within --timeout. A job opts out
    with `gpunode=off` in its comment (`--comment`) or SLURM_JOB_EXTRA (`--extra`)."""
    modes = [m for m, on in (("prolog", prolog), ("epilog", epilog), ("health-check", health_check)) if on]
    if len(modes) > 1:
        die("give one of --prolog, --epilog, --health-check")
    mode = modes[0] if modes else "check"
    try:
        run = _prepare(mode, timeout, check_timeout, strict, snapshot, config)
        from gpunode.gate import run_gate

        verdict = run_gate(run)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - in Slurm hooks a gpunode failure must not block
        _gpunode_failed(mode, strict, str(exc) or type(exc).__name__)
    _report(verdict, as_json)
    raise typer.Exit(verdict.exit_code)


def _prepare(mode, timeout, check_timeout, strict, snapshot, config_path):
    from gpunode.audit import audit_config, choose_checks, load_audit_profile, make_host
    from gpunode.config import load_config
    from gpunode.gate import GateOptions, GateRun
    from gpunode.runner import Runner
    from gpunode.slurm import Slurm

    options = GateOptions(mode, timeout, check_timeout, strict)
    cfg = load_config(config_path)
    snap = str(snapshot) if snapshot else (os.environ.get(SNAPSHOT_ENV) or cfg.snapshot)
    if snap and not Path(snap).is_dir():
        raise ValueError(f"snapshot {snap}: not a directory")
    profile = load_audit_profile(cfg.profile, cfg)
    host, source = make_host(snapshot=snap)
    checks = [] if mode == "epilog" else choose_checks(profile, tags=["gate"], skip_ids=cfg.disable_checks)
    gpu_factory = None
    if not snap:
        from gpunode.gpu.source import LiveGpuSource

        gpu_factory = LiveGpuSource
    return GateRun(
        host=host, source=source, profile=profile, config=audit_config(cfg), checks=checks, options=options,
        env=dict(os.environ), slurm=Slurm(Runner()) if mode != "check" else None, gpu_factory=gpu_factory,
    )


def _gpunode_failed(mode: str, strict: bool, message: str) -> None:
    """check: bad input is exit 2. Slurm hooks: never block a job or drain for our own failure
    unless --strict; the health check says UNKNOWN (3), which Slurm ignores."""
    if mode == "check":
        die(message)
    if mode in ("prolog", "epilog"):
        note = "blocking (--strict)" if strict else "not blocking the job"
        print(f"gpunode: error: {message} (gate not run; {note})", file=sys.stderr)
        raise typer.Exit(2 if strict else 0)
    print(f"gpunode: error: {message} (health check not run)", file=sys.stderr)
    raise typer.Exit(3)


def _report(verdict, as_json: bool) -> None:
    from gpunode.gate import gate_document, render_text

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


slurm_app = typer.Typer(help="Slurm integration: the gate as Prolog, Epilog and HealthCheckProgram.",
                        no_args_is_help=True)


@slurm_app.command("install")
def slurm_install(
    prefix: Path = typer.Option(Path("/etc/slurm"), "--prefix", help="Directory for the hook scripts."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the scripts and the slurm.conf lines; write nothing."),
    config: Path = typer.Option(None, "--config", help="Bake this GPUNODE_CONFIG default into the hooks."),
    snapshot: Path = typer.Option(None, "--snapshot", help="Bake this GPUNODE_SNAPSHOT default into the hooks (tests, demos)."),
    timeout: float = typer.Option(None, "--timeout", help="Gate budget passed to the hooks (default: the gate's 20 s)."),
    strict: bool = typer.Option(False, "--strict", help="Hooks block on ERROR too."),
    interval: int = typer.Option(300, "--interval", help="HealthCheckInterval in seconds."),
    slurm_conf: Path = typer.Option(None, "--slurm-conf", help="Bake this SLURM_CONF default into the hooks (slurm.conf not in the default place)."),
) -> None:
    """Install gpunode-prolog, gpunode-epilog, gpunode-healthcheck (0755, root-owned) under
    --prefix and print the slurm.conf lines that use them."""
    from gpunode.slurm_install import hook_scripts, install_script, slurm_conf_lines

    prefix = prefix.absolute()
    for value, what in ((config, "--config"), (snapshot, "--snapshot"), (slurm_conf, "--slurm-conf")):
        if value is not None and not value.exists():
            die(f"{what} {value}: does not exist")
    if timeout is not None and timeout <= 0:
        die("--timeout must be positive")
    if interval <= 0:
        die("--interval must be positive")
    scripts = hook_scripts(prefix, sys.executable, str(config.absolute()) if config else None,
                           str(snapshot.absolute()) if snapshot else None, timeout, strict,
                           str(slurm_conf.absolute()) if slurm_conf else None)
    if dry_run:
        for s in scripts:
            typer.echo(f"# would write {s.path} (0755, root:root)\n{s.text}")
    else:
        if not prefix.is_dir():
            die(f"--prefix {prefix}: not a directory")
        as_root = os.geteuid() == 0
        if not as_root:
            print("gpunode: warning: not root: the hooks will not be root-owned; slurmd runs them as root",
                  file=sys.stderr)
        for s in scripts:
            try:
                state = install_script(s, as_root)
            except OSError as exc:
                die(f"cannot write {s.path}: {exc.strerror or exc}", 3)
            typer.echo(f"{state}: {s.path}")
    typer.echo("\n# Add to slurm.conf (merge PrologFlags with existing flags), then `scontrol reconfigure`:")
    for line in slurm_conf_lines(prefix, interval):
        typer.echo(line)


def register(app) -> None:
    app.command("gate")(gate)
    app.add_typer(slurm_app, name="slurm")
