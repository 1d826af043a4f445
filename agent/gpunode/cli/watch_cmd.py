"""`gpunode watch`: the resident watcher in the foreground (systemd runs it as
gpunode-watch.service; docs/watch.md).

The watcher runs for months, so it runs without typer: `gpunode.cli.main` sends `gpunode watch`
here (fast_main), as it sends the gate to slurm.fastpath. typer, with the click, rich and
pydantic it loads, held ~20 MB of the watcher's resident memory (tests/test_watch_cli.py guards
the import set). The options are declared once, as data (WATCH_OPTIONS): fast_main parses them
(gpunode.options), and register() builds typer's command (its help, --status, --unit) from the
same table. Nothing here imports typer at module level.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from gpunode.exits import GpunodeError, UsageError, internal_error
from gpunode.options import parse_options
from gpunode.slurm.fastpath import CHECK_COLUMNS, GateOption, result_format, show_rows

WATCH_HELP = """Watch this node between checks: NVML events (Xid, ECC, clocks, power, recovery
action), the kernel log (/dev/kmsg, else journald: Xid, SXid, fallen off the bus, PCIe AER, mlx5)
and the gate's checks every --poll seconds. Keeps --state-dir/health.json (the gate judges from it while it is
fresh) and a one-line verdict for the Slurm prolog hook; acts by NVIDIA's Xid catalog (--shadow:
logs would-<action>, takes none). Runs until SIGTERM/SIGINT; under systemd it sends READY=1 and
WATCHDOG=1. --status prints the state document's summary instead (exit by its verdict)."""

WATCH_OPTIONS = (
    GateOption("--state-dir", "state_dir", Path, Path("/run/gpunode"), "Where health.json and the verdict go."),
    GateOption("--poll", "poll", float, None,
               "Seconds between polls of the gate checks (default: config watch.poll_s, else 10)."),
    GateOption("--shadow", "shadow", bool, False, "Log every action as would-<action>; take none."),
    GateOption("--config", "config", Path, None,
               "Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    GateOption("--kmsg", "kmsg", str, "/dev/kmsg",
               "Kernel log device (or a FIFO fed the same records); where it cannot be opened, the "
               "kernel log is read through journald (journalctl -k -f)."),
    GateOption("--no-nvml", "no_nvml", bool, False, "Do not open NVML events (the polls still read NVML)."),
    GateOption("--textfile", "textfile", Path, None,
               "Keep this Prometheus textfile current (e.g. /var/lib/prometheus/node-exporter/gpunode-watch.prom)."),
    GateOption("--metrics-port", "metrics_port", int, None,
               "Serve /metrics on 127.0.0.1:PORT (needs the `watch` extra: prometheus_client)."),
    GateOption("--status", "status", bool, False,
               "Print the state in --state-dir and exit 0/1/2/3 by its verdict."),
    GateOption("--json", "as_json", bool, False, "--status: the whole document as JSON."),
    GateOption("--format", "fmt", str, None,
               "--status: table, plain (a header naming the columns), tsv, json (the whole document; --json is "
               "the same). Without it: the summary lines."),
    GateOption("--unit", "unit", bool, False,
               "Print the systemd unit gpunode-watch.service for this installation (with --poll, --shadow, "
               "--textfile, --config) and exit."),
)
TYPER_ONLY = ("--help", "-h", "--status", "--unit")  # short-lived answers: typer gives them


def register(app) -> None:
    from gpunode.cli.common import options_command

    app.command("watch", help=WATCH_HELP)(options_command(WATCH_OPTIONS, watch, WATCH_HELP))


def fast_main(args: list[str]) -> int | None:
    """The exit code of `gpunode watch ARGS`, run without typer; None for what typer answers."""
    if any(a in TYPER_ONLY for a in args):
        return None
    try:
        return watch(**parse_options(args, WATCH_OPTIONS, "watch"))
    except GpunodeError as exc:  # bad input, a config it cannot load: nothing started
        print(f"gpunode: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - as cli.common's guard: one line, never a traceback
        if os.environ.get("GPUNODE_TRACEBACK"):
            raise
        print(f"gpunode: error: {internal_error(exc)}", file=sys.stderr)
        return GpunodeError.exit_code


def watch(state_dir: Path, poll: float | None, shadow: bool, config: Path | None, kmsg: str, no_nvml: bool,
          textfile: Path | None, metrics_port: int | None, status: bool, as_json: bool, unit: bool,
          fmt: str | None = None) -> int:
    if status:
        return print_status(state_dir, as_json, fmt)
    if fmt is not None:
        raise UsageError("--format goes with --status (the watcher itself prints log lines)")
    if unit:
        _print_unit(poll, shadow, textfile, config)
        return 0
    cfg, poll_s = _settings(config, poll, metrics_port)
    watcher = build_watcher(str(state_dir), cfg, poll_s, shadow, kmsg, not no_nvml,
                            str(textfile) if textfile else None)
    if metrics_port is not None:
        _serve(watcher, metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: watcher.stop.set())
    watcher.log(f"watching (poll {poll_s:g} s, state {state_dir}{', shadow' if shadow else ''})")
    watcher.run()
    return 0


def _print_unit(poll: float | None, shadow: bool, textfile: Path | None, config: Path | None) -> None:
    from gpunode.watch.unit import unit_text

    try:
        text = unit_text(sys.executable, poll if poll is not None else 10.0, shadow,
                         str(textfile) if textfile else None, str(config.absolute()) if config else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(text)


def _settings(config: Path | None, poll: float | None, metrics_port: int | None):
    """-> (the config, the poll interval); bad values are usage errors, said before anything starts."""
    from gpunode.config import load_config

    try:
        cfg = load_config(str(config) if config else None)
    except Exception as exc:  # noqa: BLE001 - a config it cannot load is a usage error
        raise UsageError(str(exc)) from None
    poll_s = poll if poll is not None else _config_poll(cfg)
    if not 1.0 <= poll_s <= 600.0:
        raise UsageError(f"the poll interval (--poll or the config's watch.poll_s) must be 1-600 seconds, got {poll_s:g}")
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be 1-65535, got {metrics_port}")
    return cfg, poll_s


def _serve(watcher, port: int) -> None:
    try:
        serve_metrics(watcher, port)
    except ImportError:
        raise UsageError("--metrics-port needs prometheus_client: pip install 'gpunode[watch]'") from None
    except OSError as exc:
        raise UsageError(f"cannot serve /metrics on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def _config_poll(cfg) -> float:
    value = (cfg.watch or {}).get("poll_s")  # validated by gpunode.config
    return float(value) if value is not None else 10.0


def log_line(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z gpunode watch: {line}", file=sys.stderr, flush=True)


def build_watcher(state_dir: str, cfg, poll_s: float, shadow: bool, kmsg: str, nvml: bool, textfile: str | None):
    import queue

    from gpunode.audit.run import choose, load_audit_profile
    from gpunode.state_dir import resolve_state_dir
    from gpunode.watch import memory
    from gpunode.watch.loop import Watcher
    from gpunode.watch.sources import Journald, KernelLog, Kmsg, NvmlEvents, Poll

    profile = load_audit_profile(cfg.profile, cfg)
    checks = choose(profile, tags=["gate"], disabled=cfg.disable_checks).checks
    gpunode_state = resolve_state_dir(None, os.environ)
    try:  # escalation memory and our own drain, kept across restarts; refused, never repaired
        policy_state = memory.load(gpunode_state)
    except memory.WatchMemoryError as exc:
        raise GpunodeError(str(exc)) from None
    events: queue.Queue = queue.Queue()
    sources: list = []
    clock_events = (cfg.watch or {}).get("clock_events") is True  # validated by gpunode.config
    nvml_source = NvmlEvents(events, clock_events=clock_events) if nvml else None
    if nvml_source is not None:
        sources.append(nvml_source)

    def gpu_of(address: str) -> str:  # kernel lines name a GPU by PCI address; NVML by UUID
        bus = {b: u for u, b in (nvml_source.bus_ids if nvml_source else {}).items()}
        return bus.get(address, address)

    sources.append(KernelLog(Kmsg(events, kmsg, gpu_of=gpu_of), Journald(events, gpu_of=gpu_of)))
    poll_source = Poll(cfg, profile, checks, state_dir=gpunode_state)
    serials = nvml_source.serials if nvml_source is not None else {}
    actor, policy_config = build_actor(cfg, poll_s, shadow, str(gpunode_state), policy_state, serials)
    return Watcher(state_dir, poll_source, poll_s, sources, config=policy_config, actor=actor,
                   stop=threading.Event(), events=events, textfile=textfile, log=log_line,
                   policy_state=policy_state)


def build_actor(cfg, poll_s: float, shadow: bool, gpunode_state: str, policy_state, serials):
    """The Slurm actions (slurm/watch_actions.py) and the policy's settings (the config's
    `watch:` keys; --poll and --shadow win); the circuit breaker reads the partition through
    the actor's sinfo."""
    from dataclasses import replace

    from gpunode.host.runner import Runner
    from gpunode.slurm.scontrol import Slurm, SlurmError
    from gpunode.slurm.watch_actions import WatchActor
    from gpunode.watch.policy import WatchConfig

    config = WatchConfig.from_site(cfg.watch, serials=serials)
    config = replace(config, poll_s=poll_s, shadow=shadow or config.shadow)
    runner = Runner()
    try:
        actor = WatchActor(Slurm(runner), runner, gpunode_state, config, site_config=cfg, state=policy_state,
                           log=log_line)
    except SlurmError as exc:
        raise GpunodeError(f"cannot set up the Slurm actions: {exc}") from None
    return actor, actor.policy_config(config)  # the breaker's partition view and whether our drain stands


def serve_metrics(watcher, port: int) -> None:
    """/metrics on 127.0.0.1 through prometheus_client, from the same families as the textfile."""
    from gpunode.watch.metrics import serve

    serve(lambda: watcher.document(watcher.clock()), port)


def print_status(state_dir: Path, as_json: bool, fmt: str | None = None) -> int:
    from gpunode.exits import EXIT_CODES
    from gpunode.watch.state import STATE_FILE, StateRefused, read_document, validate

    as_json, layout = result_format(fmt, as_json)
    path = state_dir / STATE_FILE
    try:
        doc = validate(read_document(str(path)))
    except (OSError, StateRefused) as exc:
        return _no_state(f"{path}: {getattr(exc, 'strerror', None) or exc}", as_json)
    fresh = _freshness(state_dir)
    verdict = str(doc.get("verdict")) if fresh.startswith("fresh") and doc.get("verdict") in EXIT_CODES else "UNKNOWN"
    if as_json:  # a fleet report reads "status" and "exit_code" (gpunode fleet watch status)
        _print_json({**doc, "fresh": fresh, "status": verdict, "exit_code": EXIT_CODES[verdict]})
    elif layout:
        _show_status(doc, fresh, layout)
    else:
        _print_summary(doc, fresh)
    return EXIT_CODES[verdict]


def _no_state(why: str, as_json: bool) -> int:
    from gpunode.exits import UNKNOWN_EXIT
    from gpunode.watch.state import SCHEMA

    print(f"gpunode: error: {why}", file=sys.stderr)
    if as_json:  # still a report for the fleet: this host has no watcher state to trust
        _print_json({"schema": SCHEMA, "status": "UNKNOWN", "exit_code": UNKNOWN_EXIT,
                     "fresh": f"no state: {why}", "checks": [], "events": [], "actions": []})
    return UNKNOWN_EXIT


def _freshness(state_dir: Path) -> str:
    from gpunode.watch.state import StateRefused, read_fresh

    try:
        _, age = read_fresh(str(state_dir), time.time())
    except StateRefused as exc:
        return f"stale: {exc}"
    return f"fresh (last poll {age:.1f} s ago)"


def _print_json(document: dict) -> None:
    import json

    sys.stdout.write(json.dumps(document, indent=1, sort_keys=True) + "\n")


def _print_summary(doc: dict, fresh: str) -> None:
    print(f"gpunode watch on {doc.get('host')}: {doc.get('verdict')}; {fresh}; pid {doc['pid']}")
    for name, said in sorted((doc.get("sources") or {}).items()):
        print(f"source {name}: {said}")
    for c in doc["checks"]:
        if c["status"] not in ("PASS", "SKIP"):
            print(f"{c['status']:5s} {c['id']}{' ' + c['subject'] if c.get('subject') else ''}: {c['message']}")
    for line in _event_lines(doc):
        print(line)


def _event_lines(doc: dict) -> list[str]:
    """The last events and actions, a line each."""
    return ([f"event {e['kind']} gpu={e.get('gpu')} code={e.get('code')}: {e['text']}" for e in doc["events"][-10:]]
            + [f"action {a.get('action')}: {a.get('reason')}" for a in (doc.get("actions") or [])[-10:]])


def _show_status(doc: dict, fresh: str, layout: str) -> None:
    """--status --format table|plain|tsv: every check a row, then the events and actions the
    summary shows, each a table; the summary's head and sources under the checks. tsv keeps
    stdout to one table (the checks): the events and actions go with the head to stderr."""
    head = [f"gpunode watch on {doc.get('host')}: {doc.get('verdict')}; {fresh}; pid {doc['pid']}"]
    head += [f"source {name}: {said}" for name, said in sorted((doc.get("sources") or {}).items())]
    if layout == "tsv":
        head += _event_lines(doc)
    show_rows("gpunode watch --status", CHECK_COLUMNS,
              [[c["id"], c.get("subject") or "", c["status"], c["message"]] for c in doc["checks"]], layout, head)
    if layout == "tsv":
        return
    if doc["events"]:
        show_rows("events", ("Kind", "GPU", "Code", "Text"),
                  [[e["kind"], e.get("gpu"), e.get("code"), e["text"]] for e in doc["events"][-10:]], layout)
    if doc.get("actions"):
        show_rows("actions", ("Action", "Reason"),
                  [[a.get("action"), a.get("reason")] for a in doc["actions"][-10:]], layout)
