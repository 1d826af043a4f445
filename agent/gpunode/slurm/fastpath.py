"""Running `gpunode gate` without typer: the gate starts before every Slurm job, and typer
(with the click and rich it loads) costs ~100 ms of imports, a third of the gate's budget.
`gpunode.cli.main` sends `gpunode gate ...` here. The options are declared once, as data
(GATE_OPTIONS): this module parses them, and gate_cmd builds typer's `gate` command (its help)
from the same list.

In --prolog/--epilog mode a broken gpunode (bad config, a bug, an option it does not know)
must not block jobs: it prints one `gpunode: error: ...` line and exits 0, unless --strict.
Only a FAIL blocks.
"""

from __future__ import annotations

import os
import sys

from gpunode.exits import UNKNOWN_EXIT, UsageError, own_error_exit, worst_exit

SNAPSHOT_ENV = "GPUNODE_SNAPSHOT"
DEFAULT_TIMEOUT_S = 20.0
HELP_FLAGS = ("--help", "-h")
# The Slurm modes, in the order a usage error is attributed to them.
SLURM_MODE_FLAGS = {"--prolog": "prolog", "--epilog": "epilog", "--health-check": "health-check"}

GATE_HELP = """Fast pre-job health gate: the checks tagged `gate`, within --timeout. Where the
site config allows it (allow_job_opt_out), a job opts out with `gpunode=off` in its comment
(`--comment`) or SLURM_JOB_EXTRA (`--extra`); each opt-out is logged.
Exit: check mode 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN or gpunode's own error; --prolog 2 on
FAIL; --epilog 2 when leftovers stay and gpunode could not drain; --health-check 0 (3 when
gpunode failed). In a Slurm mode gpunode's own failures (a bad option, config or snapshot)
never block unless --strict."""


class GateOption:
    """One option of `gpunode gate`: flag, keyword, type (bool: a flag), default, help."""

    __slots__ = ("flag", "key", "kind", "default", "help")

    def __init__(self, flag: str, key: str, kind: type, default: object, help: str) -> None:
        self.flag, self.key, self.kind, self.default, self.help = flag, key, kind, default, help


GATE_OPTIONS = (
    GateOption("--prolog", "prolog", bool, False,
               "Slurm Prolog: exit non-zero on FAIL (Slurm drains the node and requeues the job)."),
    GateOption("--epilog", "epilog", bool, False,
               "Slurm Epilog: wait briefly for leftover GPU processes/memory; drain if they stay."),
    GateOption("--health-check", "health_check", bool, False,
               "Slurm HealthCheckProgram: drain on FAIL, resume only gpunode's own drain."),
    GateOption("--timeout", "timeout", float, DEFAULT_TIMEOUT_S,
               "Total budget in seconds, Slurm calls included."),
    GateOption("--check-timeout", "check_timeout", float, None,
               "Watchdog per check in seconds (default: timeout/4, at most 5)."),
    GateOption("--strict", "strict", bool, False, "An ERROR (a check that could not run) blocks too."),
    GateOption("--json", "as_json", bool, False, "Print the JSON verdict (schema gpunode.gate/1)."),
    GateOption("--format", "fmt", str, None,
               "Output: table, plain (one result per line, a header naming the columns), tsv, json (the verdict "
               "document; --json is the same). Without it: the gate's own lines (no table library loaded)."),
    GateOption("--snapshot", "snapshot", str, None,
               f"Gate a recorded snapshot instead of this host (also ${SNAPSHOT_ENV} or config `snapshot:`)."),
    GateOption("--config", "config", str, None,
               "Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    GateOption("--expected-gpus", "expected_gpus", int, None,
               "GPU count this node must have (instead of the config's expected_gpus or Slurm's gres)."),
    GateOption("--no-scontrol", "no_scontrol", bool, False,
               "Slurm modes without Slurm: the node counts as idle with no reason; drains and resumes are "
               "printed as the scontrol commands they would be, never run (demos, snapshots)."),
    GateOption("--prometheus", "prometheus", str, None,
               "Also write the verdict as a Prometheus textfile here (atomically; node_exporter's textfile dir)."),
)

class GateUsageError(UsageError):
    """An option `gpunode gate` does not know, or a value it cannot read."""


def parse_gate_args(args: list[str]) -> dict:
    """The gate's argv -> keyword arguments for execute(); GateUsageError for anything else."""
    from gpunode.options import parse_options

    try:
        kwargs = parse_options(args, GATE_OPTIONS, "gate")
    except UsageError as exc:
        raise GateUsageError(str(exc)) from None
    kwargs["as_json"] = result_format(kwargs["fmt"], kwargs["as_json"])[0]
    return kwargs


def result_format(fmt: str | None, as_json: bool) -> tuple[bool, str | None]:
    """--format -> (print the JSON document, the layout or None); GateUsageError for one not
    offered. layout.py (the renderer registry) is imported only when a layout is asked for."""
    if fmt in (None, "json"):
        return as_json or fmt == "json", None
    from gpunode.layout import RENDERERS

    if fmt not in RENDERERS:
        raise GateUsageError(f"--format: {fmt!r} is not one of {', '.join(map(repr, (*RENDERERS, 'json')))}")
    return as_json, fmt


def fast_main(args: list[str]) -> int | None:
    """The exit code of `gpunode gate ARGS`; None for help, which typer prints."""
    if any(a in HELP_FLAGS for a in args):
        return None
    # Slurm would drain the node for a non-zero prolog: a usage error is gpunode's own.
    mode = next((m for flag, m in SLURM_MODE_FLAGS.items() if flag in args), "check")
    try:
        kwargs = parse_gate_args(args)
        # A fresh `gpunode watch` state answers without NVML (slurm/from_watcher.py).
        from gpunode.slurm.from_watcher import lean_verdict, watcher_state

        watched = watcher_state(kwargs, mode)
        if watched is not None and kwargs["fmt"] in (None, "json"):  # a layout: the full gate renders it
            code = lean_verdict(watched, mode, kwargs)
            if code is not None:
                return code
        live_gpu = None if watched is not None else _start_nvml(kwargs["snapshot"])
    except Exception as exc:  # noqa: BLE001 - a usage error, or a broken install (an import)
        return gpunode_failed(mode, "--strict" in args, str(exc) or type(exc).__name__)
    return execute(**kwargs, live_gpu=live_gpu, watched=watched)


def _start_nvml(snapshot):
    """Start the NVML read before anything else is imported: nvmlInit spends tens of ms in
    the driver with the GIL released, time the imports and the profile loading can use. A
    config that names a snapshot (rare: tests, demos) makes this read unused; it only reads."""
    if snapshot or os.environ.get(SNAPSHOT_ENV):
        return None
    from gpunode.host.gpu.source import GATE_UNREAD, LiveGpuSource

    source = LiveGpuSource(unread=GATE_UNREAD)
    _prefetch_gpus(source)
    return source


def execute(prolog=False, epilog=False, health_check=False, timeout=DEFAULT_TIMEOUT_S, check_timeout=None,
            strict=False, as_json=False, snapshot=None, config=None, live_gpu=None, prometheus=None,
            no_scontrol=False, expected_gpus=None, watched=None, fmt=None) -> int:
    """Run the gate; print the report; return the exit code. `live_gpu`: an NVML read
    already under way (used unless the gate replays a snapshot). `watched`: a fresh watcher
    state (slurm.from_watcher.Watched) whose poll stands for the checks: no NVML is opened."""
    modes = [m for m, on in (("prolog", prolog), ("epilog", epilog), ("health-check", health_check)) if on]
    mode = modes[0] if modes else "check"
    try:
        as_json, layout = result_format(fmt, as_json)
        if len(modes) > 1:
            raise GateUsageError("give one of --prolog, --epilog, --health-check")
        run = prepare(mode, timeout, check_timeout, strict, snapshot, config, live_gpu, no_scontrol, expected_gpus,
                      watched)
        from gpunode.slurm.gate import run_gate

        verdict = run_gate(run)
        if verdict.opted_out is not None:  # a job skipped the gate: say who, in the audit trail
            from gpunode.slurm.gate import opt_out_fields
            from gpunode.trail import log

            log("opt-out", opt_out_fields(verdict, run.env), run.config, "warning")
        if no_scontrol:
            from gpunode.slurm.dryrun import dry_action

            verdict.slurm = dry_action(verdict.slurm)
        elif verdict.slurm is not None and verdict.slurm.action in ("drained", "resumed"):
            from gpunode.trail import log

            log("drain" if verdict.slurm.action == "drained" else "resume",
                {"mode": mode, "detail": verdict.slurm.detail}, run.config,
                "warning" if verdict.slurm.action == "drained" else "notice")
    except Exception as exc:  # noqa: BLE001 - in Slurm hooks a gpunode failure must not block
        _textfile(prometheus, None, mode, strict)
        return gpunode_failed(mode, strict, str(exc) or type(exc).__name__)
    try:
        report(verdict, as_json, layout)
    except OSError:  # stdout/stderr cannot be written (a pipe whose reader is gone): the verdict
        from gpunode.outputs import discard_output  # stands, only its report is lost; a traceback

        discard_output()  # here would exit 1, and Slurm drains a node for a non-zero prolog
    unwritten = _textfile(prometheus, verdict, mode, strict)
    return worst_exit(verdict.exit_code, unwritten)  # a FAIL stays a FAIL


def _textfile(path, verdict, mode: str, strict: bool = False) -> int:
    """--prometheus: the verdict, or UNKNOWN (3) when the gate itself failed. A textfile that
    cannot be written (a missing directory: gpunode creates none) is gpunode's own error: one
    error line and the mode's own-error exit (3 for check and health-check), returned; in a
    prolog or epilog a warning and 0: it must not turn a passing gate into a blocked job."""
    if not path:
        return 0
    from gpunode.prometheus import gate_families, verdict_families, write_textfile

    try:
        if verdict is None:
            import time

            write_textfile(path, verdict_families("gate", os.uname().nodename, UNKNOWN_EXIT, time.time(),
                                                  labels={"mode": mode}))
        else:
            from gpunode.slurm.gate import gate_document

            write_textfile(path, gate_families(gate_document(verdict)))
    except OSError as exc:
        code = own_error_exit(mode, strict=False)  # a textfile never blocks a job, --strict or not
        print(f"gpunode: {'error' if code else 'warning'}: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return code
    return 0


def prepare(mode, timeout, check_timeout, strict, snapshot, config_path, live_gpu=None, no_scontrol=False,
            expected_gpus=None, watched=None):
    from gpunode.audit.run import Selection, choose, load_audit_profile
    from gpunode.parsed_cache import ParsedCache
    from gpunode.slurm.gate import GateOptions, GateRun
    from gpunode.state_dir import resolve_state_dir

    options = GateOptions(mode, timeout, check_timeout, strict)
    cache = ParsedCache(resolve_state_dir(None, os.environ))  # no PyYAML before each job
    cfg = _gate_config(config_path, cache, expected_gpus)
    snap = str(snapshot) if snapshot else (os.environ.get(SNAPSHOT_ENV) or cfg.snapshot)
    if snap and not os.path.isdir(snap):
        raise ValueError(f"snapshot {snap}: not a directory")
    from_watcher = watched is not None and not snap
    host, source = _gate_host(snap, live_gpu, watched if from_watcher else None)
    _prefetch_gpus(host.gpu)
    profile = load_audit_profile(cfg.profile, cfg, cache=cache)
    chosen = Selection([]) if mode == "epilog" else choose(profile, tags=["gate"], disabled=cfg.disable_checks)
    gpu_factory = None
    if not snap:
        from gpunode.host.gpu.source import GATE_UNREAD, LiveGpuSource

        gpu_factory = lambda: LiveGpuSource(unread=GATE_UNREAD)  # noqa: E731 - the epilog polls: a fresh read each time
    return GateRun(
        host=host, source=source, profile=profile, config=cfg, checks=chosen.checks, options=options,
        gate_not_run=chosen.gate_not_run_json(),
        env=dict(os.environ), slurm=_slurm(mode, no_scontrol), gpu_factory=gpu_factory,
        results=_watched_results(watched) if from_watcher else None,
    )


def _gate_config(config_path, cache, expected_gpus):
    """The site config; `fleet gate` passes the inventory's gpunode_expected_gpus, as audit."""
    from gpunode.config import load_config

    cfg = load_config(config_path, cache=cache)
    if expected_gpus is None:
        return cfg
    if expected_gpus < 0:
        raise GateUsageError(f"--expected-gpus must be 0 or more, got {expected_gpus}")
    from dataclasses import replace

    return replace(cfg, expected_gpus=expected_gpus)


def _gate_host(snap, live_gpu, watched):
    """(host, source) the checks read: the snapshot, else this host with the NVML read under
    way; with a fresh watcher state (`watched`) no NVML is opened, its poll stands for it."""
    from gpunode.audit.run import make_host

    if watched is not None:
        from gpunode.host.gpu.model import GpuInventory
        from gpunode.host.gpu.source import ReplayGpuSource

        live_gpu = ReplayGpuSource(GpuInventory(available=False, error="not read: judged from gpunode watch"))
    host, source = make_host(snapshot=snap, gpu=None if snap else live_gpu)
    return host, (watched.source if watched is not None else source)


def _watched_results(watched):
    from gpunode.slurm.from_watcher import results

    return results(watched)


def _slurm(mode: str, no_scontrol: bool):
    if mode == "check":
        return None
    if no_scontrol:
        from gpunode.slurm.dryrun import DryRunSlurm

        return DryRunSlurm()
    from gpunode.host.runner import Runner
    from gpunode.slurm.scontrol import Slurm

    return Slurm(Runner())


def _prefetch_gpus(gpu) -> None:
    """Start the NVML read now, in its background thread, so driver calls (which release the
    GIL) overlap with loading the profile and the check modules; the checks wait for it."""
    try:
        gpu.inventory(timeout=0)
    except TimeoutError:
        pass


def gpunode_failed(mode: str, strict: bool, message: str) -> int:
    """gpunode could not run the gate: one `gpunode: error:` line and the own-error exit of
    the mode (gpunode.exits.own_error_exit: never 2, never a drain unless --strict)."""
    code = own_error_exit(mode, strict)
    if mode in ("prolog", "epilog"):
        note = "blocking (--strict)" if code else "not blocking the job"
        line = f"gpunode: error: {message} (gate not run; {note})"
    elif mode == "health-check":
        line = f"gpunode: error: {message} (health check not run)"
    else:
        line = f"gpunode: error: {message}"
    try:
        print(line, file=sys.stderr)
    except OSError:  # stderr's reader is gone: the exit code still says it, never a traceback's 1
        pass
    return code


def report(verdict, as_json: bool, layout: str | None = None) -> None:
    from gpunode.slurm.gate import gate_document, render_text

    if as_json:
        import json

        sys.stdout.write(json.dumps(gate_document(verdict), indent=2) + "\n")
    elif layout:
        _show(verdict, layout)
    else:
        sys.stdout.write(render_text(verdict))
    sys.stdout.flush()
    if verdict.blocked and verdict.reason:
        print(verdict.reason, file=sys.stderr)  # the one line Slurm's log keeps
    for problem in verdict.problems:
        print(f"gpunode: warning: {problem}", file=sys.stderr)


def _show(verdict, layout: str) -> None:
    """--format table|plain|tsv: every result a row, the verdict lines below it."""
    from gpunode.slurm.gate import verdict_lines

    rows = [[r.id, r.subject, r.status.value, r.message] for r in verdict.results]
    show_rows(f"gpunode gate ({verdict.mode})", CHECK_COLUMNS, rows, layout, verdict_lines(verdict))


CHECK_COLUMNS = ("Check", "Subject", "Status", "Message")  # a check result as a row (gate, watch --status)


def show_rows(title: str, headers, rows, layout: str, footer=()) -> None:
    """Rows in a layout without typer (the gate, watch --status): the first and the Status column
    whole; tsv keeps stdout to the header and the rows, its footer goes to stderr."""
    from rich.console import Console

    from gpunode.layout import Col, show

    console = Console()
    console.soft_wrap = not console.is_terminal  # piped: one line per row, never wrapped
    cols = [Col(h, whole=i == 0 or h == "Status") for i, h in enumerate(headers)]
    show(console, title, cols, rows, layout, () if layout == "tsv" else footer)
    if layout == "tsv" and footer:
        print("\n".join(footer), file=sys.stderr)
