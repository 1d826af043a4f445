"""`gpunode gate` (the pre-job health gate; its work is in gate_run) and `gpunode slurm install`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from gpunode.cli.common import die
from gpunode.slurm.fastpath import SNAPSHOT_ENV, execute


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
    with `gpunode=off` in its comment (`--comment`) or SLURM_JOB_EXTRA (`--extra`).
    Exit: check mode 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN; --prolog 2 on FAIL; --epilog 2 when
    leftovers stay and gpunode could not drain; --health-check 0 (3 when gpunode failed)."""
    # Normally `gpunode gate` runs through gate_run.fast_main without typer; same code.
    raise typer.Exit(execute(prolog=prolog, epilog=epilog, health_check=health_check, timeout=timeout,
                             check_timeout=check_timeout, strict=strict, as_json=as_json, snapshot=snapshot,
                             config=config))


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
    from gpunode.slurm.install import hook_scripts, install_script, slurm_conf_lines

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
