"""`gpunode watch`: the resident watcher in the foreground (systemd runs it as
gpunode-watch.service; docs/watch.md)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import typer

from gpunode.cli.common import die

WATCH_HELP = """Watch this node between checks: NVML events (Xid, ECC, clocks, power, recovery
action), the kernel log (/dev/kmsg: Xid, SXid, fallen off the bus, PCIe AER, mlx5) and the gate's
checks every --poll seconds. Keeps --state-dir/health.json (the gate judges from it while it is
fresh) and a one-line verdict for the Slurm prolog hook; acts by NVIDIA's Xid catalog (--shadow:
logs would-<action>, takes none). Runs until SIGTERM/SIGINT; under systemd it sends READY=1 and
WATCHDOG=1. --status prints the state document's summary instead (exit by its verdict)."""


def register(app: typer.Typer) -> None:
    app.command("watch", help=WATCH_HELP)(watch)


def watch(
    state_dir: Path = typer.Option(Path("/run/gpunode"), "--state-dir", help="Where health.json and the verdict go."),
    poll: float = typer.Option(None, "--poll", help="Seconds between polls of the gate checks (default: config watch.poll_s, else 10)."),
    shadow: bool = typer.Option(False, "--shadow", help="Log every action as would-<action>; take none."),
    config: Path = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    kmsg: str = typer.Option("/dev/kmsg", "--kmsg", help="Kernel log device (or a FIFO fed the same records)."),
    no_nvml: bool = typer.Option(False, "--no-nvml", help="Do not open NVML events (the polls still read NVML)."),
    textfile: Path = typer.Option(None, "--textfile", help="Keep this Prometheus textfile current (e.g. /var/lib/prometheus/node-exporter/gpunode-watch.prom)."),
    metrics_port: int = typer.Option(None, "--metrics-port", help="Serve /metrics on 127.0.0.1:PORT (needs the `watch` extra: prometheus_client)."),
    status: bool = typer.Option(False, "--status", help="Print the state in --state-dir and exit 0/1/2/3 by its verdict."),
    as_json: bool = typer.Option(False, "--json", help="--status: the whole document as JSON."),
    unit: bool = typer.Option(False, "--unit", help="Print the systemd unit gpunode-watch.service for this installation (with --poll, --shadow, --textfile, --config) and exit."),
) -> None:
    if status:
        raise typer.Exit(print_status(state_dir, as_json))
    if unit:
        _print_unit(poll, shadow, textfile, config)
        return
    cfg, poll_s = _settings(config, poll, metrics_port)
    watcher = build_watcher(str(state_dir), cfg, poll_s, shadow, kmsg, not no_nvml,
                            str(textfile) if textfile else None)
    if metrics_port is not None:
        _serve(watcher, metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: watcher.stop.set())
    watcher.log(f"watching (poll {poll_s:g} s, state {state_dir}{', shadow' if shadow else ''})")
    watcher.run()


def _print_unit(poll: float | None, shadow: bool, textfile: Path | None, config: Path | None) -> None:
    from gpunode.watch.unit import unit_text

    try:
        typer.echo(unit_text(sys.executable, poll if poll is not None else 10.0, shadow,
                             str(textfile) if textfile else None, str(config.absolute()) if config else None),
                   nl=False)
    except ValueError as exc:
        die(str(exc))


def _settings(config: Path | None, poll: float | None, metrics_port: int | None):
    """-> (the config, the poll interval); bad values are usage errors, said before anything starts."""
    from gpunode.config import load_config

    try:
        cfg = load_config(str(config) if config else None)
    except Exception as exc:  # noqa: BLE001 - a config it cannot load is a usage error
        die(str(exc))
    poll_s = poll if poll is not None else _config_poll(cfg)
    if not 1.0 <= poll_s <= 600.0:
        die(f"the poll interval (--poll or the config's watch.poll_s) must be 1-600 seconds, got {poll_s:g}")
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        die(f"--metrics-port must be 1-65535, got {metrics_port}")
    return cfg, poll_s


def _serve(watcher, port: int) -> None:
    try:
        serve_metrics(watcher, port)
    except ImportError:
        die("--metrics-port needs prometheus_client: pip install 'gpunode[watch]'")
    except OSError as exc:
        die(f"cannot serve /metrics on 127.0.0.1:{port}: {exc.strerror or exc}")


def _config_poll(cfg) -> float:
    value = (cfg.watch or {}).get("poll_s")  # validated by gpunode.config
    return float(value) if value is not None else 10.0


def log_line(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z gpunode watch: {line}", file=sys.stderr, flush=True)


def build_watcher(state_dir: str, cfg, poll_s: float, shadow: bool, kmsg: str, nvml: bool, textfile: str | None):
    import os
    import queue

    from gpunode.audit.run import choose, load_audit_profile
    from gpunode.state_dir import resolve_state_dir
    from gpunode.watch import memory
    from gpunode.watch.loop import Watcher
    from gpunode.watch.sources import Kmsg, NvmlEvents, Poll

    profile = load_audit_profile(cfg.profile, cfg)
    checks = choose(profile, tags=["gate"], disabled=cfg.disable_checks).checks
    gpunode_state = resolve_state_dir(None, os.environ)
    try:  # escalation memory and our own drain, kept across restarts; refused, never repaired
        policy_state = memory.load(gpunode_state)
    except memory.WatchMemoryError as exc:
        die(str(exc), 3)
    events: queue.Queue = queue.Queue()
    sources: list = []
    nvml_source = NvmlEvents(events) if nvml else None
    if nvml_source is not None:
        sources.append(nvml_source)

    def gpu_of(address: str) -> str:  # kernel lines name a GPU by PCI address; NVML by UUID
        bus = {b: u for u, b in (nvml_source.bus_ids if nvml_source else {}).items()}
        return bus.get(address, address)

    sources.append(Kmsg(events, kmsg, gpu_of=gpu_of))
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
        die(f"cannot set up the Slurm actions: {exc}", 3)
    return actor, actor.policy_config(config)  # the breaker's partition view and whether our drain stands


def serve_metrics(watcher, port: int) -> None:
    """/metrics on 127.0.0.1 through prometheus_client, from the same families as the textfile."""
    from gpunode.watch.metrics import serve

    serve(lambda: watcher.document(watcher.clock()), port)


def print_status(state_dir: Path, as_json: bool) -> int:
    import json

    from gpunode.exits import EXIT_CODES, UNKNOWN_EXIT
    from gpunode.watch.state import SCHEMA, STATE_FILE, StateRefused, read_document, read_fresh, validate

    path = state_dir / STATE_FILE
    try:
        doc = validate(read_document(str(path)))
    except (OSError, StateRefused) as exc:
        why = f"{path}: {getattr(exc, 'strerror', None) or exc}"
        print(f"gpunode: error: {why}", file=sys.stderr)
        if as_json:  # still a report for the fleet: this host has no watcher state to trust
            sys.stdout.write(json.dumps({"schema": SCHEMA, "status": "UNKNOWN", "exit_code": UNKNOWN_EXIT,
                                         "fresh": f"no state: {why}", "checks": [], "events": [], "actions": []},
                                        indent=1, sort_keys=True) + "\n")
        return UNKNOWN_EXIT
    try:
        _, age = read_fresh(str(state_dir), time.time())
        fresh = f"fresh (last poll {age:.1f} s ago)"
    except StateRefused as exc:
        fresh = f"stale: {exc}"
    verdict = str(doc.get("verdict")) if fresh.startswith("fresh") and doc.get("verdict") in EXIT_CODES else "UNKNOWN"
    if as_json:  # a fleet report reads "status" and "exit_code" (gpunode fleet watch status)
        out = {**doc, "fresh": fresh, "status": verdict, "exit_code": EXIT_CODES[verdict]}
        sys.stdout.write(json.dumps(out, indent=1, sort_keys=True) + "\n")
    else:
        print(f"gpunode watch on {doc.get('host')}: {doc.get('verdict')}; {fresh}; pid {doc['pid']}")
        for name, said in sorted((doc.get("sources") or {}).items()):
            print(f"source {name}: {said}")
        for c in doc["checks"]:
            if c["status"] not in ("PASS", "SKIP"):
                print(f"{c['status']:5s} {c['id']}{' ' + c['subject'] if c.get('subject') else ''}: {c['message']}")
        for e in doc["events"][-10:]:
            print(f"event {e['kind']} gpu={e.get('gpu')} code={e.get('code')}: {e['text']}")
        for a in (doc.get("actions") or [])[-10:]:
            print(f"action {a.get('action')}: {a.get('reason')}")
    return EXIT_CODES[verdict]
