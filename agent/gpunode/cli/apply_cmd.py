"""`gpunode apply`, `gpunode rollback` (`gpunode history` lives in history_cmd)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from gpunode.cli.common import (
    ResultFormatOption,
    StateDirOption,
    layout_of,
    split_csv,
    stderr_console,
    stdout_console,
)
from gpunode.cli.streams import output_gone, raise_broken_pipe
from gpunode.outputs import discard_output
from gpunode.tune.apply_case import Stopped


def _host(sysroot: Path | None):
    from gpunode.tune.apply_case import host_for

    return host_for(sysroot)


def _gpu_control(host, changes):
    from gpunode.tune.apply_case import gpu_control

    return gpu_control(host, changes)


def apply(
    profile: str = typer.Option(None, "--profile", "-p", help="Profile name (training, inference) or a YAML path."),
    dry_run: bool = typer.Option(False, "--dry-run", "--check", "-n", help="Show the plan (each change from current to target, root?, reboot?, GPU reset?) and change nothing (--check: Ansible's word for it)."),
    only: list[str] = typer.Option(None, "--only", help="Only these settings: KIND or KIND.KEY globs, e.g. 'sysctl.net.*' (repeatable, comma-separated)."),
    skip: list[str] = typer.Option(None, "--skip", help="Leave these settings alone (globs, like --only)."),
    overlay: list[str] = typer.Option(None, "--overlay", help="Per-host YAML overlay on the profile (repeatable)."),
    set_: list[str] = typer.Option(None, "--set", help="Override one setting target: KIND.KEY=VALUE (repeatable)."),
    allow_reboot_settings: bool = typer.Option(False, "--allow-reboot-settings", help="Also edit the kernel command line in /etc/default/grub (takes effect after a reboot)."),
    no_persist: bool = typer.Option(False, "--no-persist", help="Change runtime values only: no /etc/sysctl.d file, no boot unit."),
    boot: bool = typer.Option(False, "--boot", help="Re-apply the runtime settings recorded by earlier applies (run by gpunode-apply.service)."),
    state_dir: StateDirOption = None,
    sysroot: Path = typer.Option(None, "--sysroot", help="Apply to files under this directory instead of / (tests, images)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document (schema gpunode.apply/1)."),
    fmt: ResultFormatOption = None,
    config: str = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Apply to the live host without asking (scripts, playbooks). Without it the plan is shown and confirmed on a terminal."),
    prove: bool = typer.Option(False, "--prove", help="Bench (quick GEMM, HBM, host copies) before and after; keep the change only if no figure got worse beyond the measured noise, else roll it back (exit 3; a signal during the second bench rolls it back too: 128 + its number)."),
) -> None:
    """Change this host to a profile: journaled, verified, rolled back on failure. On the live host
    the plan is shown and confirmed first (--yes for scripts). A journal write that fails (disk full)
    and SIGINT/SIGTERM/SIGHUP (a closed ssh terminal) roll the batch back too. Exit 0 done (or
    nothing to change), 1 done but some changes wait (reboot, GPU reset, refused), 3 bad input, not
    confirmed, or failed and rolled back, 129/130/143 stopped by SIGHUP/SIGINT/SIGTERM and rolled back."""
    from gpunode.tune import apply_case

    req = apply_case.ApplyRequest(
        profile=profile, dry_run=dry_run, only=split_csv(only), skip=split_csv(skip), overlay=overlay or [],
        sets=set_ or [], allow_reboot_settings=allow_reboot_settings, no_persist=no_persist, boot=boot,
        state_dir=state_dir, sysroot=sysroot, config=config, yes=yes, prove=prove)
    job = apply_case.prepare(req, make_host=_host)
    as_json, layout = layout_of(fmt, as_json)
    try:
        outcome, proof = apply_case.run(job, _confirmer(job.host, job.profile.name, as_json, layout), control=_gpu_control)
    except Stopped:  # said by the guard, after what the state dir warns of
        _warn_all(job.state)
        raise
    code = proof.exit_code if proof else outcome.exit_code
    hung_up = outcome.signal is not None or (proof is not None and proof.signal is not None)

    def report() -> None:
        _warn_all(job.state)
        _print_apply(outcome, job.host, job.profile.name, dry_run, as_json, job.state,
                     proof.apply_fields() if proof else None, code, layout)

    _unless_gone(report, hung_up)
    apply_case.trail(job, outcome, proof)
    if proof is not None:
        _unless_gone(lambda: _report_proof(proof, job, as_json), hung_up)
    raise typer.Exit(code)


def _report_proof(proof, job, as_json: bool) -> None:
    """The before/after table (the JSON document holds it), and what the journal could not record
    of the rollback --prove made, as `gpunode rollback` says it."""
    from gpunode.tune.prove import render_prove

    if not as_json:
        render_prove(proof, stdout_console())
    if proof.unrecorded:
        _report_unrecorded_rollback(proof.unrecorded, proof.unrecorded_why, proof.restored, proof.apply.apply_id,
                                    job.host, job.state)


def _unless_gone(report, hung_up: bool) -> None:
    """Run `report` (it prints). When its reader is gone (a terminal closed after SIGHUP, a pipe
    nobody reads: output_gone), the rest of the output is dropped and the command keeps its own
    exit code: the host was changed or restored all the same, and the trail line says so."""
    try:
        report()
    except OSError as exc:
        if not output_gone(exc, hung_up):
            raise
        discard_output()


class NotConfirmed(Stopped):  # exit 3, the state dir's warnings shown with it
    pass


def _confirmer(host, profile_name: str, as_json: bool, layout: str | None = None):
    """Called by apply_profile under the lock with the plan it is about to write: show it, then
    ask on a terminal; without one, refuse (scripts say --yes)."""

    def confirm(rows: list[dict]) -> None:
        from rich.console import Console

        from gpunode.tune.render import render_changes

        console = raise_broken_pipe(Console(stderr=True) if as_json else stdout_console())
        try:
            render_changes(console, f"gpunode plan · {host.facts.hostname} · profile {profile_name}", rows, layout)
        except OSError as exc:  # nobody reads the plan (ssh client gone): none can confirm it
            if not output_gone(exc, False):
                raise
            discard_output()
            raise NotConfirmed("the plan could not be shown (its reader is gone); nothing changed") from None
        n = sum(1 for r in rows if r["status"] == "planned")
        if not sys.stdin.isatty():
            raise NotConfirmed(f"apply would change {n} thing(s) on this live host (plan above); nothing changed. "
                               "Pass --yes to apply without asking (no terminal to ask on)")
        print(f"Apply these {n} change(s) to {host.facts.hostname}? [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise NotConfirmed("not confirmed; nothing changed")

    return confirm


def _warn_all(state) -> None:
    for text in state.warnings:
        print(f"gpunode: warning: {text}", file=sys.stderr)


def _print_apply(outcome, host, profile_name: str, dry_run: bool, as_json: bool, state, extra: dict | None = None,
                 exit_code: int | None = None, layout: str | None = None) -> None:
    from gpunode.outputs import dumps
    from gpunode.tune.render import apply_document, render_changes, render_restores

    meta = _apply_meta(outcome, host, profile_name, dry_run, state, exit_code)
    if outcome.result in ("failed", "interrupted"):
        _report_rolled_back(outcome, host, state)  # on stderr, in both modes
    if as_json:
        typer.echo(dumps({**apply_document(meta, outcome.rows, outcome.plan, outcome.result, outcome.reason,
                                           outcome.restored), **(extra or {})}), nl=False)
        return
    console = stdout_console()
    verb = "plan" if dry_run else "apply"
    notes = raise_broken_pipe(stderr_console()) if layout == "tsv" else console  # tsv: rows only on stdout, the lines below on stderr
    # what is not applicable here is a row too, so the plan tells everything the profile asked
    shown = outcome.rows + [{"setting": sid, "subject": "", "current": "", "target": "", "needs_root": False,
                             "reboot_required": False, "gpu_reset_required": False, "status": "n/a",
                             "note": why.removeprefix("not applicable here: ")} for sid, why in outcome.plan.skipped]
    if shown:
        render_changes(console, f"gpunode {verb} · {host.facts.hostname} · profile {profile_name}", shown, layout)
    skipped = len(outcome.plan.skipped)
    notes.print(f"{len(outcome.plan.satisfied)} setting(s) already as wanted, {skipped} not applicable here")
    proved_worse = (extra or {}).get("result") == "rolled-back"
    line = _result_line(outcome, host, state, dry_run, proved_worse)
    if line:  # the undo command stays on one line, to be pasted
        notes.print(line, soft_wrap=True if outcome.result == "applied" and not proved_worse else None)
    elif outcome.result not in ("nothing-to-change", "planned", "applied") and outcome.restored:
        render_restores(notes, "batch rolled back", outcome.restored, layout)


def _apply_meta(outcome, host, profile_name: str, dry_run: bool, state, exit_code: int | None) -> dict:
    from gpunode.outputs import iso_time

    meta = {"id": outcome.apply_id, "host": host.facts.hostname, "time": iso_time(host.facts.now),
            "profile": profile_name, "root": str(host.sys.root), "dry_run": dry_run, "state_dir": str(state.root),
            "exit_code": outcome.exit_code if exit_code is None else exit_code}
    if outcome.signal is not None:
        meta["signal"] = signal.Signals(outcome.signal).name
    if outcome.unrecorded:
        meta["journal_unrecorded"] = {"records": outcome.unrecorded, "reason": outcome.unrecorded_why}
    return meta


def _result_line(outcome, host, state, dry_run: bool, proved_worse: bool) -> str:
    """The line under the table that says what happened ("" for a failed batch: its restores say it)."""
    from gpunode.tune.session import undo_command

    applied = sum(1 for r in outcome.rows if r["status"] == "applied")
    if outcome.result == "nothing-to-change":
        blocked = sum(1 for r in outcome.rows if r["status"] == "blocked")
        skipped = len(outcome.plan.skipped)
        if dry_run and (blocked or skipped):
            return f"nothing can be changed here: {blocked} blocked, {skipped} not applicable"
        return "[green]nothing to change[/green]"
    if outcome.result == "planned":
        n = sum(1 for r in outcome.rows if r["status"] == "planned")
        return f"dry run: {n} change(s) would be written; nothing changed"
    if outcome.result == "applied" and proved_worse:  # --prove undid them: no undo hint
        return f"applied {applied} change(s) as {outcome.apply_id}, then rolled back by --prove (below)"
    if outcome.result == "applied":
        return (f"[green]applied {applied} change(s)[/green] as {outcome.apply_id}; undo with "
                f"`{undo_command(host, state, outcome.apply_id)}`")
    return ""


def _report_rolled_back(outcome, host, state) -> None:
    """A failed or stopped batch: what was and was not put back, on which root and state dir,
    and what the journal could not record."""
    from gpunode.tune.execute import BACK

    def say(text: str) -> None:
        print(f"gpunode: {text}", file=sys.stderr)

    left = [r for r in outcome.restored if r.status not in BACK]
    for line in _rolled_back_summary(outcome, left, host, state):
        say(line)
    for r in left:
        say(f"error: NOT restored: {r.change.setting_id} {r.change.subject}: {r.detail}")
    if outcome.unrecorded:
        say(f"warning: the journal could not record {len(outcome.unrecorded)} record(s) after the failure "
            f"({outcome.unrecorded_why}): {', '.join(outcome.unrecorded)}")
    if (left or (outcome.unrecorded and outcome.restored)) and outcome.apply_id:
        say(_undo_advice(outcome, bool(left), host, state))


def _rolled_back_summary(outcome, left: list, host, state) -> list[str]:
    """What happened to the batch, then how many changes were restored, found unchanged or left."""
    what = f"interrupted by {signal.Signals(outcome.signal).name}" if outcome.signal is not None else "failed"
    done = "was rolled back" if not left else "was NOT fully rolled back"
    return [f"error: apply {what} and {done}: {outcome.reason}", _restore_counts(outcome.restored, host, state)]


def _undo_advice(outcome, left: bool, host, state) -> str:
    """The rollback to run once the state dir can be written, and what it will do."""
    from gpunode.tune.session import undo_command

    return (f"run `{undo_command(host, state, outcome.apply_id)}` once the state dir can be written again: "
            + ("it restores what is listed above" if left else
               "the host is already restored; it settles the journal (until then the next apply refuses)"))


def rollback(
    apply_id: str = typer.Option(None, "--id", help="The apply to undo (default: the newest that still holds changes)."),
    state_dir: StateDirOption = None,
    sysroot: Path = typer.Option(None, "--sysroot", help="The --sysroot the apply was made with."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document (schema gpunode.rollback/1)."),
    fmt: ResultFormatOption = None,
    force: bool = typer.Option(False, "--force", help="Roll back an apply whose journal lost the line naming its root, onto this root."),
) -> None:
    """Undo an apply exactly, in reverse order. A value someone changed since is left alone (warned).
    Exit 0 all restored (or nothing to roll back), 1 some left as they were, 3 errors."""
    from gpunode.tune import apply_case

    as_json, layout = layout_of(fmt, as_json)
    job = apply_case.prepare_rollback(apply_id, state_dir, sysroot, force, make_host=_host)
    try:
        outcome = apply_case.run_rollback(job, control=_gpu_control)
    except Stopped:  # said by the guard, after what the state dir warns of
        _warn_all(job.state)
        raise
    if outcome.record is None:
        _unless_gone(lambda: _print_nothing_to_roll_back(outcome, as_json), False)
        raise typer.Exit(0)

    def report() -> None:
        apply_case.rollback_trail(job, outcome)  # first: whatever becomes of the terminal, the log says it
        _warn_all(job.state)
        _print_rollback(outcome, as_json, layout)
        if outcome.unrecorded:
            _report_unrecorded_rollback(outcome.unrecorded, outcome.unrecorded_why, outcome.results,
                                        outcome.record.id, job.host, job.state)

    # a signal during the restores only waited: the exit code is the rollback's own, as with Ctrl-C
    _unless_gone(report, outcome.signal is not None)
    raise typer.Exit(outcome.exit_code)


def _print_nothing_to_roll_back(outcome, as_json: bool) -> None:
    from gpunode.outputs import dumps
    from gpunode.tune.render import ROLLBACK_SCHEMA

    print(f"gpunode: {outcome.nothing}", file=sys.stderr)
    if as_json:
        typer.echo(dumps({"schema": ROLLBACK_SCHEMA, "id": None, "profile": None, "result": "nothing-to-roll-back",
                          "exit_code": 0, "restores": []}), nl=False)


def _report_unrecorded_rollback(unrecorded: list[str], why: str, results, apply_id: str, host, state) -> None:
    """The journal failed during the restores (disk full): they went on; say what the host is
    now (the table or JSON lists each), what the journal lacks and how to settle it."""
    from gpunode.tune.session import undo_command

    def say(text: str) -> None:
        print(f"gpunode: {text}", file=sys.stderr)

    say(f"error: the journal could not record {len(unrecorded)} record(s) of this rollback "
        f"({why}): {', '.join(unrecorded)}")
    say(f"the restores went on: {_restore_counts(results, host, state)}")
    say(f"run `{undo_command(host, state, apply_id)}` once the state dir can be written: it "
        "finds each value already back and settles the journal")


def _restore_counts(results, host, state) -> str:
    """How many changes were restored, found unchanged or NOT restored, and where."""
    restored = sum(1 for r in results if r.status == "restored")
    untouched = sum(1 for r in results if r.status == "not-written")
    return (f"{restored} change(s) restored, {untouched} found unchanged, {len(results) - restored - untouched} "
            f"NOT restored under {host.sys.root} (state dir {state.root})")


def _print_rollback(outcome, as_json: bool, layout: str | None = None) -> None:
    from gpunode.outputs import dumps
    from gpunode.tune.render import ROLLBACK_SCHEMA, render_restores
    from gpunode.tune.rollback import rollback_result

    record, results, code = outcome.record, outcome.results, outcome.exit_code
    if as_json:
        typer.echo(dumps({"schema": ROLLBACK_SCHEMA, "id": record.id, "profile": record.begin.get("profile"),
                          "result": rollback_result(results), "exit_code": code,
                          "restores": [r.to_json() for r in results],
                          **({"journal_unrecorded": {"records": outcome.unrecorded, "reason": outcome.unrecorded_why}}
                             if outcome.unrecorded else {})}), nl=False)
        return
    render_restores(stdout_console(), f"gpunode rollback {record.id} (profile {record.begin.get('profile')})", results,
                    layout)
    for r in results:
        if r.status in ("left", "error"):
            print(f"gpunode: warning: {r.change.setting_id} {r.change.subject}: {r.detail}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("rollback")(rollback)
