"""`gpunode fleet locate -i INVENTORY` (or `--slurm`: the nodes of a Slurm allocation, tested with
srun): which node or which link of the fleet is bad, from disjoint two-node tests (tcp: iperf3, ib: ib_write_bw per rail, nccl: all_reduce_perf across the pair),
pair then anchor (gpunode/fleet/locate/). Registered by cli/fleet_cmd.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gpunode.cli.common import FORMAT_HELP, Format, die, stderr_console, stdout_console


def locate(
    inventory: Path = typer.Option(None, "--inventory", "-i", help="Ansible inventory (INI or YAML file, or a directory)."),
    slurm: bool = typer.Option(False, "--slurm", help="Instead of -i: the nodes of this Slurm allocation (SLURM_JOB_NODELIST; run it in salloc), pair tests as job steps with srun."),
    job: str = typer.Option(None, "--job", help="Like --slurm, for a running job from beside it: its nodes from `scontrol show job JOBID`, steps with srun --jobid."),
    drain: bool = typer.Option(False, "--drain", help="Drain each node fault (gpunode slurm drain: a 'gpunode: drain:' reason, which gpunode never lifts; never over someone else's). Off: the report only suggests it."),
    limit: str = typer.Option(None, "--limit", "-l", help="With -i: only these hosts or groups (an Ansible pattern)."),
    test: str = typer.Option("tcp", "--test", help="Pair test: tcp (iperf3), ib (ib_write_bw per rail) or nccl (all_reduce_perf across the pair)."),
    repeat: int = typer.Option(1, "--repeat", min=1, max=9, help="Fresh random matchings (and anchors per suspect): 3 for a noisy fabric."),
    seed: int = typer.Option(None, "--seed", help="Seed of the random matchings (the same seed, the same pairs)."),
    ratio: float = typer.Option(0.8, "--ratio", help="A test fails below this fraction of the expectation."),
    expect: float = typer.Option(None, "--expect", help="Expected figure per pair test in the test's unit (e.g. `gpunode expect`'s nic.<name> x 8 for Gb/s); default: the fleet's median of round 1."),
    seconds: int = typer.Option(2, "--seconds", min=1, max=600, help="Duration of one pair test (iperf3 -t, ib_write_bw -D)."),
    port: int = typer.Option(5201, "--port", min=1024, max=65000, help="First port of the test servers (rail i: port + i)."),
    rail: list[str] = typer.Option(None, "--rail", help="ib: an HCA to test on its own (repeatable: mlx5_0, mlx5_1 ...)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", min=1, max=64, help="nccl: processes (GPUs) per node."),
    launcher: str = typer.Option("mpirun", "--launcher", help="nccl: mpirun or srun."),
    nccl_bin: str = typer.Option("all_reduce_perf", "--nccl-bin", help="nccl: the all_reduce_perf binary on the nodes (built with MPI=1 for mpirun), a name on PATH or a path."),
    round0: bool = typer.Option(False, "--round0", help="First one test over all nodes at once (nccl); if it reaches --expect x --ratio, stop: healthy at scale."),
    timeout: int = typer.Option(120, "--timeout", min=1, help="Seconds before one pair test is given up (a failed test)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (schema gpunode.fleet.locate/1)."),
    fmt: Format = typer.Option(None, "--format", help=FORMAT_HELP, show_default=False),
    html: Path = typer.Option(None, "--html", help="Also write the report as one self-contained HTML page."),
    forks: int = typer.Option(50, "--forks", min=2, max=500, help="Hosts worked on in parallel (a round's tests run at once)."),
    playbooks: Path = typer.Option(None, "--playbooks", help="With -i: the playbook directory (default $GPUNODE_PLAYBOOKS, else the shipped playbooks)."),
    state_dir: Path = typer.Option(None, "--state-dir", help="With -i: where runs are kept (default /var/lib/gpunode as root, else ~/.local/state/gpunode)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-round progress on stderr."),
) -> None:
    """Find the bad node or the bad link: random pairs, then each member of a failing pair against a
    passed node (2 rounds, N/2 + 2 tests for one bad node). Suggests drain lines; drains only with --drain."""
    from gpunode.fleet.locate import session

    name = "json" if as_json else (fmt.value if fmt is not None else None)
    if name == "nagios":
        die("--format nagios: locate reports table, plain, tsv or json")
    req = session.LocateRequest(
        inventory=inventory, limit=limit, test=test, repeat=repeat, seed=seed, ratio=ratio, expect=expect,
        seconds=seconds, port=port, rails=tuple(rail or ()), gpus_per_node=gpus_per_node, launcher=launcher,
        nccl_bin=nccl_bin, round0=round0, timeout=timeout, forks=forks, playbooks=playbooks, state_dir=state_dir,
        slurm=slurm, job=job, drain=drain)
    cfg = session.check(req)
    inv, pdir = session.hosts(req)
    doc = session.run(req, cfg, inv, pdir, console=None if quiet else stderr_console())
    _publish(doc, html, name)
    raise typer.Exit(doc["exit_code"])


def _publish(doc: dict, html: Path | None, name: str | None) -> None:
    """The HTML page (--html), then the report in the chosen format."""
    from gpunode.fleet.locate.report import locate_html, render_table, render_text
    from gpunode.outputs import dumps, write_atomic

    if html is not None:
        try:
            write_atomic(html, locate_html(doc))
        except OSError as exc:
            die(f"cannot write {html}: {exc.strerror or exc}")
    out = stdout_console()
    if name == "json":
        typer.echo(dumps(doc), nl=False)
    elif name in ("plain", "tsv") or (name is None and not out.is_terminal):
        typer.echo(render_text(doc, name or "plain"), nl=False)
    else:
        render_table(doc, out)
