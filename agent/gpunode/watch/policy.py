"""What gpunode watch does about what it sees: pure, so every rule is tested without a node.

decide(state, event, config, now) -> list[Action], by the class of the fault
(watch.xid_catalog, from NVIDIA's Xid catalog):
- restart-app / ignore: record (the actor attributes a restart-app fault to the running job);
- reset: drain; where the site allows it (`remediate: reset`) reset the GPU when idle, then
  resume, which the actor does only after the gate and diag prove the fix;
- reboot: `scontrol reboot ASAP nextstate=RESUME` (the actor);
- contact-support: drain and write an evidence bundle; the node stays drained.
Safety, as NVSentinel and GPUd learned it:
- hysteresis: a polled check drains only after failing K polls in a row (events act at once);
- circuit breaker: no new drain (or reboot) while >= breaker_fraction of the partition's nodes
  carry a `gpunode:` drain set within breaker_window_s, or while that cannot be read;
- escalation: a GPU (by serial) remediated escalate_n times within escalate_days is a lemon:
  contact-support instead of another reset or reboot;
- shadow: every action is marked shadow (the actor logs would-<kind> and takes none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from gpunode.checks.xid import DESCRIPTIONS, XidEvent, recovery_target
from gpunode.watch import xid_catalog as catalog
from gpunode.watch.events import Action, Event, PolicyState

SOURCE_KEYS = frozenset({"clock_events"})  # `watch:` keys of the sources (cli/watch_cmd.build_watcher)
WATCH_REASON = "gpunode: watch:"  # the prefix of every reason the watcher sets (slurm.scontrol knows it)
DRAIN = "drain"  # the class of a polled check that failed K polls: drain, no remediation


@dataclass(frozen=True)
class PartitionView:
    """This node's partition(s) as sinfo shows them (the actor's Slurm reader fills it)."""

    total: int  # nodes
    ours_recent: int  # of them, drained with a `gpunode:` reason set within the breaker window


@dataclass(frozen=True)
class WatchConfig:
    """The site's `watch:` settings, plus facts the CLI fills in (serials, the partition reader)."""

    poll_s: float = 10.0
    hysteresis_k: int = 3
    breaker_fraction: float = 0.20
    breaker_window_s: float = 300.0
    escalate_n: int = 5
    escalate_days: float = 7.0
    remediate: str | None = None  # None | "reset": reset a GPU of the reset class when idle
    shadow: bool = False
    prove_level: int = 1  # the diag level that proves a fix before the node returns
    # GPU UUID / PCI address / label -> board serial (escalation memory is per serial).
    serials: Mapping[str, str] = field(default_factory=dict)
    # now -> PartitionView, or None when sinfo cannot be read; None: no Slurm (no breaker to hold).
    partition: Callable[[float], PartitionView | None] | None = None
    # -> whether a drain of the watcher's stands now (Slurm's word; None: unknown). The operator
    # may have resumed the node, or the reboot happened: PolicyState.drained_by_us alone goes stale.
    own_drain: Callable[[], bool | None] | None = None

    @classmethod
    def from_site(cls, settings: Mapping | None, **facts) -> WatchConfig:
        """The config file's `watch:` mapping (validated by gpunode.config) -> WatchConfig; the
        sources' own keys (SOURCE_KEYS) are read where the sources are built, not here."""
        known = {k: v for k, v in (settings or {}).items() if v is not None and k not in SOURCE_KEYS}
        return cls(**known, **facts)


def classify(event: Event) -> str | None:
    """The class of action for an event (watch.xid_catalog's classes); None for a polled check."""
    if event.kind == "check":
        return None
    if event.kind == "fallen_off_bus":
        return catalog.xid_class(79)
    if event.kind == "xid" and event.code is not None:
        recovery = recovery_target(XidEvent(None, "", event.code, detail=event.text)) if event.code == 154 else None
        return catalog.xid_class(event.code, recovery)
    if event.kind == "ecc_dbe":
        return catalog.xid_class(48)
    if event.kind == "recovery_action":
        return catalog.recovery_class(event.code)
    return catalog.IGNORE  # sbe, sxid, aer, mlx5, clocks, power, processes: the gate judges them


def decide(state: PolicyState, event: Event, config: WatchConfig | None, now: float) -> list[Action]:
    config = config or WatchConfig()
    if event.kind == "check":
        actions = _polled(state, event, config, now)
    else:
        actions = _event(state, event, config, now)
    return [replace(a, shadow=True) for a in actions] if config.shadow else actions


def _event(state: PolicyState, event: Event, config: WatchConfig, now: float) -> list[Action]:
    cls = classify(event) or catalog.IGNORE
    what = _what(event)
    if cls in (catalog.IGNORE, catalog.RESTART_APP):
        return [Action("record", f"{WATCH_REASON} {what}: {cls}", event.gpu, event)]
    serial = _serial(event, config)
    if cls in (catalog.RESET, catalog.REBOOT):
        done = remediations(state, serial, config, now)
        if done >= config.escalate_n:  # a lemon: another reset or reboot will not fix it
            cls, what = catalog.CONTACT_SUPPORT, f"{what}, {done} remediations in {config.escalate_days:g} d"
    actions = _node_actions(state, event, cls, f"{WATCH_REASON} {what}: {cls}", config, now)
    if cls in (catalog.RESET, catalog.REBOOT) and any(a.kind in ("drain", "reset", "reboot") for a in actions):
        state.remediations.append((serial, now, cls))
    return actions


def _polled(state: PolicyState, event: Event, config: WatchConfig, now: float) -> list[Action]:
    key = f"{event.check_id}/{event.gpu or ''}"
    if event.status == "FAIL":
        count = state.consecutive_failures.get(key, 0) + 1
        state.consecutive_failures[key] = count
        if count != config.hysteresis_k:  # not yet, or acted on already when it reached K
            return []
        reason = f"{WATCH_REASON} {event.check_id}{' ' + event.gpu if event.gpu else ''}: failed {count} polls"
        actions = _node_actions(state, event, DRAIN, reason, config, now)
        if [a.kind for a in actions] == ["none"]:  # the breaker held: the next failed poll asks again
            state.consecutive_failures[key] = count - 1
        return actions
    if event.status != "ERROR":  # gpunode's own failure neither counts nor clears a streak
        state.consecutive_failures.pop(key, None)
    return []


def _node_actions(state: PolicyState, event: Event, cls: str, reason: str, config: WatchConfig,
                  now: float) -> list[Action]:
    gpu = event.gpu
    actions: list[Action] = []
    standing = _ask(config.own_drain)
    if standing is not None:
        state.drained_by_us = standing
    if not state.drained_by_us:  # a new drain: the breaker decides
        held = breaker_holds(config, now)
        if held:
            return [Action("none", f"{WATCH_REASON} breaker held ({held}): not {cls} for {reason[len(WATCH_REASON) + 1:]}",
                           gpu, event)]
    if cls == catalog.REBOOT:
        state.drained_by_us = True
        return [Action("reboot", reason, gpu, event)]
    if not state.drained_by_us:
        actions.append(Action("drain", reason, gpu, event))
        state.drained_by_us = True
    if cls == catalog.RESET and config.remediate == "reset":
        actions += [Action("reset", reason, gpu, event), Action("resume", reason, gpu, event)]
        state.drained_by_us = False  # the resume is ours to make (it stays drained if the proof fails)
    elif cls == catalog.CONTACT_SUPPORT:
        actions.append(Action("evidence", reason, gpu, event))
    return actions


def breaker_holds(config: WatchConfig, now: float) -> str | None:
    """Why no new drain may be made now, or None. Without a partition reader (no Slurm) there is
    nothing to hold; an unreadable partition holds (the gate still keeps jobs off a bad node)."""
    if config.partition is None:
        return None
    try:
        view = config.partition(now)
    except Exception as exc:  # noqa: BLE001 - a reader's failure holds, it never lets a drain through
        return f"partition unreadable: {exc}"
    if view is None or view.total <= 0:
        return "partition unreadable"
    # Divide, never multiply: 0.07 * 100 is 7.000000000000001, which 7 drains would not reach.
    if view.ours_recent / view.total >= config.breaker_fraction:
        return (f"{view.ours_recent} of {view.total} nodes drained by gpunode within "
                f"{config.breaker_window_s:g} s, limit {config.breaker_fraction:.0%}")
    return None


def _ask(reader: Callable[[], bool | None] | None) -> bool | None:
    if reader is None:
        return None
    try:
        return reader()
    except Exception:  # noqa: BLE001 - unknown: keep what the state remembers
        return None


def remediations(state: PolicyState, serial: str, config: WatchConfig, now: float) -> int:
    """Remediations of this GPU (serial) within escalate_days."""
    since = now - config.escalate_days * 86400.0
    return sum(1 for s, t, _ in state.remediations if s == serial and t >= since)


def _serial(event: Event, config: WatchConfig) -> str:
    gpu = event.gpu or "node"
    return config.serials.get(gpu, gpu)


def _what(event: Event) -> str:
    where = f" {event.gpu}" if event.gpu else ""
    if event.kind in ("xid", "fallen_off_bus") and event.code is not None:
        name = DESCRIPTIONS.get(event.code)
        return f"Xid {event.code}{' (' + name + ')' if name else ''}{where}"
    return f"{event.kind}{' ' + str(event.code) if event.code is not None else ''}{where}"
