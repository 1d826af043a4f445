"""`gpunode audit`, `gpunode checks`, `gpunode snapshot`, `gpunode profiles`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpunode.cli.common import (
    FORMAT_HELP,
    Format,
    ResultFormatOption,
    check_outputs,
    die,
    format_name,
    layout_of,
    split_csv,
    stdout_console,
)
from gpunode.layout import show_table


def audit(
    profile: str = typer.Option(None, "--profile", "-p", help="Profile name (training, inference) or a YAML path. Default: config, else training."),
    overlay: list[str] = typer.Option(None, "--overlay", help="Per-host YAML overlay on the profile (repeatable)."),
    set_: list[str] = typer.Option(None, "--set", help="Override one setting target: KIND.KEY=VALUE (repeatable)."),
    only: list[str] = typer.Option(None, "--only", help="Only these check ids (globs like 'gpu.*', comma-separated)."),
    skip: list[str] = typer.Option(None, "--skip", help="Skip these check ids (globs, comma-separated)."),
    tag: list[str] = typer.Option(None, "--tag", help="Only checks with one of these tags (e.g. gate, profile)."),
    area: list[str] = typer.Option(None, "--area", help="Only checks of these areas (gpu, net, memory ...; comma-separated)."),
    skip_area: list[str] = typer.Option(None, "--skip-area", help="Skip the checks of these areas (comma-separated)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report (schema gpunode.audit/1); same as --format json."),
    output: Format = typer.Option(None, "--format", "-f", help=FORMAT_HELP, show_default=False),
    problems: bool = typer.Option(False, "--problems", help="Show only results that are not PASS (the verdict line still counts all)."),
    expand: bool = typer.Option(False, "--expand", help="Every SKIP on its own row (tables fold SKIPs that share one reason)."),
    prometheus: Path = typer.Option(None, "--prometheus", help="Also write a Prometheus textfile here (atomically)."),
    snapshot: Path = typer.Option(None, "--snapshot", help="Audit a recorded snapshot directory instead of this host."),
    sysroot: Path = typer.Option(None, "--sysroot", help="Read host files under this directory instead of /."),
    expected_gpus: int = typer.Option(None, "--expected-gpus", help="GPU count this node must have."),
    xid_window: float = typer.Option(None, "--xid-window", help="Hours of kernel log to search for Xid errors (default 24)."),
    golden: Path = typer.Option(None, "--golden", help="Compare against a golden config YAML (versions, facts)."),
    config: str = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the remediation of each WARN/FAIL."),
) -> None:
    """Is this node tuned and healthy? Read-only. Exit 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN."""
    from gpunode.audit import session
    from gpunode.audit.engine import EXIT_CODES, overall

    fmt = format_name(output, as_json)
    check_outputs(prometheus)
    job = session.prepare(session.AuditRequest(
        profile=profile, overlay=overlay or [], sets=set_ or [], only=split_csv(only), skip=split_csv(skip),
        tags=split_csv(tag), areas=split_csv(area), skip_areas=split_csv(skip_area), snapshot=snapshot,
        sysroot=sysroot, expected_gpus=expected_gpus, xid_window=xid_window, golden=golden, config=config))
    run, document = session.run(job)
    _publish(run, document, fmt, prometheus, verbose=verbose, problems=problems, every_skip=expand)
    warning = session.keep(job, document)
    if warning:
        print(f"gpunode: warning: {warning}", file=sys.stderr)
    raise typer.Exit(EXIT_CODES[overall(run.results)])


def _publish(run, document: dict, fmt: str | None, prometheus: Path | None, **table) -> None:
    """The textfile, then the report in the chosen format (json, nagios, or the layouts)."""
    from gpunode.audit.report import nagios_output, prometheus_text, render_report
    from gpunode.outputs import dumps, write_atomic

    if prometheus is not None:
        try:
            write_atomic(prometheus, prometheus_text(run.results, run.meta))
        except OSError as exc:
            die(f"cannot write {prometheus}: {exc.strerror or exc}", 3)
    if fmt == "json":
        typer.echo(dumps(document), nl=False)
    elif fmt == "nagios":
        typer.echo(nagios_output(run.results, extra_perf={"duration": f"{run.meta.get('duration_s', 0):.2f}s"}))
    else:
        render_report(run.results, run.meta, stdout_console(), fmt, **table)


def checks_list(
    profile: str = typer.Option("training", "--profile", "-p", help="Profile whose settings to list."),
    tag: list[str] = typer.Option(None, "--tag", help="Only checks with one of these tags."),
    as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON (schema gpunode.checks/1)."),
    fmt: ResultFormatOption = None,
) -> None:
    """List the check catalogue: id, area, severity, tags, title."""
    from rich.table import Table

    from gpunode.audit.run import choose_checks
    from gpunode.cli.listings import checks_document
    from gpunode.outputs import dumps
    from gpunode.tune.profiles import ProfileError, load_profile

    try:
        prof = load_profile(profile)
    except ProfileError as exc:
        die(str(exc))
    try:
        checks = choose_checks(prof, tags=split_csv(tag))
    except ValueError as exc:  # `--tag nosuch` lists nothing: an error, not an empty catalogue
        die(str(exc))
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps(checks_document(prof, checks)), nl=False)
        return
    table = Table(title=f"gpunode checks ({len(checks)}, profile {prof.name})")
    for col in ("Id", "Area", "Severity", "Tags", "Title"):
        table.add_column(col, no_wrap=col == "Id")
    for c in checks:
        table.add_row(c.id, c.area, c.severity, ",".join(sorted(c.tags)), c.title)
    show_table(stdout_console(), table, layout)


def snapshot_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (must not exist or be empty)."),
    profile: list[str] = typer.Option(None, "--profile", "-p", help="Profiles whose checks to record (default: all shipped)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON (schema gpunode.snapshot-result/1)."),
) -> None:
    """Record everything an audit reads (files, NVML, command outputs) into DIR, for `audit --snapshot DIR`."""
    from gpunode.audit.run import run_audit
    from gpunode.checks import all_checks
    from gpunode.config import Config
    from gpunode.host.snapshot import prepare_snapshot_dir, recording_host, write_snapshot
    from gpunode.tune.profiles import ProfileError, load_profile, shipped_profiles

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        die(f"{output}: exists and is not an empty directory; choose a new path")
    try:
        profiles = [load_profile(p) for p in (profile or shipped_profiles())]
    except ProfileError as exc:
        die(str(exc))
    prepare_snapshot_dir(output)  # InputError (exit 2) before minutes of audit, not after
    host, sysroot, runner = recording_host()
    seen: set[str] = set()
    for prof in profiles:
        checks = [c for c in all_checks(prof) if c.id not in seen]
        seen.update(c.id for c in checks)
        run_audit(host, "live", prof, checks, Config(), check_timeout=30)
    try:
        write_snapshot(output, host, sysroot, runner)
    except OSError as exc:
        die(f"{output}: cannot write the snapshot: {exc.strerror or exc}", 3)
    if as_json:
        from gpunode.cli.listings import snapshot_document
        from gpunode.outputs import dumps

        typer.echo(dumps(snapshot_document(output, len(sysroot.files), len(runner.recorded))), nl=False)
        return
    typer.echo(f"snapshot written to {output} ({len(sysroot.files)} files, {len(runner.recorded)} commands)")


def profiles_cmd(
    name: str = typer.Argument(None, help="Show this profile's settings (name or YAML path)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON (schema gpunode.profiles/1, or gpunode.profile/1 for one)."),
    fmt: ResultFormatOption = None,
) -> None:
    """List shipped profiles, or show one profile's settings with their reasons."""
    from gpunode.cli.listings import profile_document, profiles_document
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps
    from gpunode.tune.profiles import ProfileError, load_profile, shipped_profiles

    as_json, layout = layout_of(fmt, as_json)
    if name is None:
        profiles = [load_profile(p) for p in shipped_profiles()]
        if as_json:
            typer.echo(dumps(profiles_document(profiles)), nl=False)
            return
        show(stdout_console(), "", [Col("Profile", whole=True), Col("Description", label=False)],
             [[prof.name, prof.description] for prof in profiles], layout)  # fits a terminal, one line each piped
        return
    try:
        prof = load_profile(name)
    except ProfileError as exc:
        die(str(exc))
    if as_json:
        typer.echo(dumps(profile_document(prof)), nl=False)
        return
    show_table(stdout_console(), _profile_table(prof), layout)


def _profile_table(prof):
    from rich.table import Table

    table = Table(title=f"profile {prof.name}: {prof.description}")
    for col in ("Setting", "Target", "When", "Why"):
        table.add_column(col, no_wrap=col == "Setting")
    for s in prof.settings.values():
        table.add_row(s.id, s.target_text, s.when, s.why)
    return table


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("checks")(checks_list)
    app.command("snapshot")(snapshot_cmd)
    app.command("profiles")(profiles_cmd)
