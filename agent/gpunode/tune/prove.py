"""`gpunode apply --prove`: bench, apply, bench again; keep the change only if no figure got worse
beyond the measured noise, otherwise roll it back at once.

Noise is what the two runs themselves say: a figure counts as worse when it dropped by more than
`k` times the larger CoV of its repeats (before or after), and never by less than a floor (1 %)
that covers run-to-run drift a single run's spread does not show. A figure measured before but
failing or missing after the change is worse too. Nothing is kept on a doubt: a "before" run that
measured nothing refuses to start, so the host is never changed without a yardstick, and a
SIGINT/SIGTERM/SIGHUP (a closed ssh terminal) or a failure during the bench after the change rolls
the change back, as during the apply itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gpunode.bench.results import BenchDocument, Metric, lower_is_better
from gpunode.layout import show_table
from gpunode.tune.execute import StopSignals
from gpunode.tune.rollback import RollbackUnrecorded
from gpunode.tune.session import ApplyOutcome, Refused, apply_profile, rollback, signal_exit_code

# bench(between=None): `between()` is called before each of its steps and raises to stop the bench
Bench = Callable[..., BenchDocument]

DEFAULT_K = 2.0
DEFAULT_FLOOR = 0.01
BETTER, SAME, WORSE, UNCOMPARED = "better", "same", "worse", "not compared"


@dataclass(frozen=True)
class ProveRow:
    metric: str
    subject: str
    unit: str
    before: float | None
    after: float | None
    change: float | None  # relative, signed so that negative is worse (latencies inverted)
    noise: float | None  # the relative change below which a difference is noise
    verdict: str  # better | same | worse | not compared
    note: str = ""


@dataclass
class ProveOutcome:
    apply: ApplyOutcome
    before: BenchDocument
    after: BenchDocument | None
    rows: list[ProveRow]
    kept: bool
    reason: str
    restored: list = field(default_factory=list)  # RestoreResult of the rollback, when rolled back
    signal: int | None = None  # the SIGINT/SIGTERM/SIGHUP that came during the bench after the change
    unrecorded: list[str] = field(default_factory=list)  # rollback records the journal could not write
    unrecorded_why: str = ""

    @property
    def result(self) -> str:
        if self.apply.result != "applied":
            return self.apply.result
        return "proven" if self.kept else "rolled-back"

    @property
    def exit_code(self) -> int:
        # A change that hurt and was rolled back did not go through: 3, as a failed apply, so that a
        # fleet rollout stops at its canary; stopped by a signal: as an apply the signal stopped.
        if self.signal is not None:
            return signal_exit_code(self.signal)
        return 3 if self.result == "rolled-back" else self.apply.exit_code

    def apply_fields(self) -> dict:
        """What the apply document (gpunode.apply/1) carries: the proof, and a result that says
        the change was rolled back (so nothing reads "applied" for a host left as it was)."""
        if self.result != "rolled-back":
            return {"prove": self.to_json()}
        stopped = {"signal": signal.Signals(self.signal).name} if self.signal is not None else {}
        return {"result": "rolled-back", "reason": self.reason, **stopped, "prove": self.to_json()}

    def to_json(self) -> dict:
        return {"result": self.result, "kept": self.kept, "reason": self.reason, "k": DEFAULT_K,
                "rows": [asdict(r) for r in self.rows],
                "before": self.before.to_json(), "after": self.after.to_json() if self.after else None,
                "restores": [r.to_json() for r in self.restored],
                **({"journal_unrecorded": {"records": self.unrecorded, "reason": self.unrecorded_why}}
                   if self.unrecorded else {})}


def noise(before: Metric, after: Metric, k: float = DEFAULT_K, floor: float = DEFAULT_FLOOR) -> float:
    covs = [m.spread.cov for m in (before, after) if m.spread is not None]
    return max(floor, k * max(covs, default=0.0))


def compare_runs(before: BenchDocument, after: BenchDocument, k: float = DEFAULT_K,
                 floor: float = DEFAULT_FLOOR) -> list[ProveRow]:
    later = {m.key: m for m in after.metrics}
    rows = []
    for b in before.metrics:
        if b.status != "PASS" or b.value is None:
            continue
        subject = f"GPU{b.gpu}" if b.gpu is not None else ""
        a = later.get(b.key)
        if a is None or a.status != "PASS" or a.value is None:
            why = "not measured after the change" if a is None else f"{a.status} after the change: {a.message}"
            rows.append(ProveRow(b.name, subject, b.unit, b.value, None, None, None, WORSE, why))
            continue
        if b.value <= 0 or a.value <= 0:
            rows.append(ProveRow(b.name, subject, b.unit, b.value, a.value, None, None, UNCOMPARED, "zero figure"))
            continue
        change = b.value / a.value - 1 if lower_is_better(b.name, b.unit) else a.value / b.value - 1
        margin = noise(b, a, k, floor)
        verdict = WORSE if change < -margin else BETTER if change > margin else SAME
        rows.append(ProveRow(b.name, subject, b.unit, b.value, a.value, round(change, 5), round(margin, 5), verdict))
    return rows


PROVE_SECTIONS = ("gemm", "hbm", "h2d")  # what a host-level change can move on a GPU node, in seconds


def bench_for_prove(host) -> Bench:
    """The quick in-process bench of this host (with telemetry), each whole run kept in its history."""
    def run(between: Callable[[], None] | None = None) -> BenchDocument:
        from gpunode.bench.run import BenchOptions, run_steps
        from gpunode.bench.watch import live_sampler
        from gpunode.history import record
        from gpunode.outputs import iso_time

        started = time.time()  # host.facts.now is the command's start: the same for both runs
        sampler = live_sampler() if host.sys.is_live else None
        try:
            doc = run_steps(host, BenchOptions(mode="quick", only=PROVE_SECTIONS),
                            on_step=(lambda _i, _step: between()) if between else None, sampler=sampler)
        finally:
            if sampler is not None:
                sampler.stop()
        doc.time_epoch, doc.time = started, iso_time(started)
        if host.sys.is_live:
            record("bench", doc.to_json())
        return doc

    return run


def prove_apply(env, profile, settings, state, bench: Bench, *, k: float = DEFAULT_K,
                floor: float = DEFAULT_FLOOR, **apply_kwargs) -> ProveOutcome:
    """Bench, apply, bench; roll back when a figure got worse, or when a signal or a failure cut
    the second bench. Refused (nothing changed) when the first bench measured nothing."""
    before = bench()
    if not any(m.status == "PASS" for m in before.metrics):
        raise Refused("--prove: the bench before the change measured nothing (see `gpunode bench`); nothing changed")
    outcome = apply_profile(env, profile, settings, state, **apply_kwargs)
    if outcome.result != "applied":
        return ProveOutcome(outcome, before, None, [], kept=False, reason=f"apply {outcome.result}: nothing to prove")
    with StopSignals() as stop:  # the change stands unproven until the verdict: a signal rolls it back
        after, failed = _bench_after(bench, stop)
        rows = [] if after is None else compare_runs(before, after, k, floor)
        worse = [r for r in rows if r.verdict == WORSE]
        if stop.signum is None and not failed and not worse:
            return ProveOutcome(outcome, before, after, rows, kept=True,
                                reason=f"no figure worse beyond the noise ({len(rows)} compared)")
        proof = ProveOutcome(outcome, before, after, rows, kept=False, signal=stop.signum,
                             reason=_why_not_kept(stop.signum, failed, worse))
        return _roll_back(env, state, proof)


class _BenchStopped(Exception):
    """A signal came during the bench after the change: it ends before its next step."""


def _bench_after(bench: Bench, stop: StopSignals) -> tuple[BenchDocument | None, str]:
    """The bench after the change -> (its document or None, why it failed). A signal is looked
    at between its steps; a KeyboardInterrupt out of it is a SIGINT all the same."""
    def between() -> None:
        if stop.signum is not None:
            raise _BenchStopped

    try:
        return bench(between=between), ""
    except _BenchStopped:
        return None, ""
    except KeyboardInterrupt:
        stop.signum = stop.signum or signal.SIGINT
        return None, ""
    except Exception as exc:  # noqa: BLE001 - whatever stopped the bench, nothing is kept on a doubt
        return None, f"the bench after the change failed: {type(exc).__name__}: {exc}"


def _why_not_kept(signum: int | None, failed: str, worse: list[ProveRow]) -> str:
    if signum is not None:
        return f"stopped by {signal.Signals(signum).name} during the bench after the change"
    if failed:
        return failed
    return "worse after the change: " + ", ".join(f"{r.metric}{' ' + r.subject if r.subject else ''}"
                                                  for r in worse[:4])


def _roll_back(env, state, proof: ProveOutcome) -> ProveOutcome:
    """Undo the change; a journal that cannot record the rollback does not stop its restores
    (the outcome lists what it lacks, as `gpunode rollback` does)."""
    apply_id = proof.apply.apply_id
    try:
        _record, proof.restored = rollback(env, state, apply_id)  # its own StopSignals: a signal waits
    except RollbackUnrecorded as exc:
        proof.restored, proof.unrecorded, proof.unrecorded_why = exc.results, exc.unrecorded, exc.why
    proof.reason += f"; rolled back {apply_id}"
    return proof


def render_prove(outcome: ProveOutcome, console) -> None:
    """The before/after table and one line saying what was kept."""
    from rich.markup import escape
    from rich.table import Table

    if outcome.rows:
        table = Table(title="apply --prove: before and after the change", expand=False)
        for col in ("Metric", "GPU", "Before", "After", "Change", "Noise", "Verdict"):
            table.add_column(col, justify="left" if col in ("Metric", "GPU", "Verdict") else "right", no_wrap=True)
        style = {BETTER: "green", SAME: "", WORSE: "bold red", UNCOMPARED: "dim"}
        for r in outcome.rows:
            verdict = f"[{style[r.verdict]}]{r.verdict}[/]" if style[r.verdict] else r.verdict
            table.add_row(escape(r.metric), r.subject, _num(r.before), _num(r.after),
                          "" if r.change is None else f"{r.change:+.1%}",
                          "" if r.noise is None else f"±{r.noise:.1%}", verdict + (f" {escape(r.note)}" if r.note else ""))
        show_table(console, table)
    colour = "green" if outcome.kept else "bold red" if outcome.result == "rolled-back" else "yellow"
    console.print(f"[{colour}]{outcome.result}[/]: {escape(outcome.reason)}")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"
