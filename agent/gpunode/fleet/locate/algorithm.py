"""Pair, then anchor: which node or which link of N is bad, from disjoint two-node tests.

Pure: nodes are ints 0..n-1, a round is a list of disjoint pairs and what each test said.
Phase A: `repeat` fresh random perfect matchings (one round each, avoiding pairs already tested);
a node that failed in a majority of its tests is a suspect (with repeat 1: both members of every
failing pair).
Phase B: each suspect (and a node no matching tested: the odd one out) against `repeat`
distinct anchors (nodes that passed every test), one anchor per round; with repeat > 1 each
failing pair is also retested 2 x repeat + 1 times as it is, in the first rounds where both
members are free.
Verdicts: a suspect that failed a majority of all its tests, anchors included, and with at
least one anchor, is a node fault (it failed with different partners); a failing pair whose
members both passed with anchors (repeat 1), or whose retests mostly fail (repeat > 1), is a
link fault, once each member has passed a majority of 2 x repeat + 1 anchors (repeat > 1: a bad
node that noise kept from suspicion fails them); evidence that splits evenly is inconclusive. Kept free of per-test objects:
the simulator runs it 10,000 times at N = 4,096 (benchmarks/locate_sim.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

Pair = tuple[int, int]


@dataclass
class Round:
    """One round: disjoint pair tests, run at the same time. figures[i] None: no figure (error)."""

    phase: str  # "match" | "anchor" | "all"
    pairs: list[Pair]
    passed: list[bool] = field(default_factory=list)
    figures: list[float | None] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)  # per test: match | anchor | retest


@dataclass
class Plan:
    """Phase B: who is retested against whom, and why."""

    suspects: list[int]
    untested: list[int]
    candidates: list[Pair]  # failing pairs retested as they are (repeat > 1)
    anchors: dict[int, list[int]]  # suspect -> its anchors, in round order
    rounds: list[Round]
    repeat: int = 1
    # repeat > 1: members of pairs whose retests failed, each then against 2 x repeat + 1 anchors:
    # a bad node that noise kept from being a suspect fails them; a link's members pass them.
    link_members: list[int] = field(default_factory=list)


def random_matching(n: int, rng: random.Random) -> tuple[list[Pair], int | None]:
    """A uniformly random perfect matching of n nodes; the odd one out when n is odd."""
    perm = list(range(n))
    rng.shuffle(perm)
    return list(zip(perm[0::2], perm[1::2], strict=False)), (perm[-1] if n % 2 else None)


def _schedule_retests(pairs: list[Pair], repeat: int, layers: list[list[Pair]], roles: list[list[str]],
                      busy: list[set[int]]) -> None:
    """A retested pair needs a clear majority at 5 % noise: 2 x repeat + 1 retests (7 for repeat 3),
    each in the first round after its previous one where both members are free."""
    for pair in pairs:
        at = -1
        for _ in range(2 * repeat + 1):
            at += 1
            while at < len(layers) and (pair[0] in busy[at] or pair[1] in busy[at]):
                at += 1
            if at == len(layers):
                layers.append([])
                roles.append([])
                busy.append(set())
            layers[at].append(pair)
            roles[at].append("retest")
            busy[at].update(pair)


def plan_followup(matches: list[Round], plan: Plan, verdicts: list[Verdict]) -> list[Round]:
    """repeat > 1: failing pairs with a suspect member that its anchors cleared: a link whose
    member had noise on top, retested as the other failing pairs were."""
    if plan.repeat == 1:
        return []
    named = {v for verdict in verdicts if verdict.kind in ("node", "inconclusive") for v in verdict.nodes}
    suspects = set(plan.suspects)
    pairs = [p for rnd in matches for p, ok in zip(rnd.pairs, rnd.passed, strict=False)
             if not ok and set(p) & suspects and not set(p) & named]
    layers: list[list[Pair]] = []
    roles: list[list[str]] = []
    _schedule_retests(pairs, plan.repeat, layers, roles, [])
    return [Round("retest", ps, roles=r) for ps, r in zip(layers, roles, strict=False)]


def fresh_matching(n: int, rng: random.Random, met: set[Pair], tries: int = 20) -> list[Pair]:
    """A random matching that repeats as few already tested pairs as a few draws find (none, at
    any N where that is easy): each repeat would test the same link twice and give a node one
    witness fewer. Adds its pairs to `met`."""
    best: list[Pair] = []
    best_repeats = n
    for _ in range(tries):
        pairs, _odd = random_matching(n, rng)
        repeats = sum(1 for a, b in pairs if (a, b) in met or (b, a) in met)
        if repeats < best_repeats:
            best, best_repeats = pairs, repeats
        if not repeats:
            break
    met.update(best)
    return best


def tally(n: int, rounds: list[Round]) -> tuple[list[int], list[int]]:
    """Per node: tests taken and tests failed."""
    tests, fails = [0] * n, [0] * n
    for rnd in rounds:
        for (a, b), ok in zip(rnd.pairs, rnd.passed, strict=False):
            tests[a] += 1
            tests[b] += 1
            if not ok:
                fails[a] += 1
                fails[b] += 1
    return tests, fails


def plan_anchors(n: int, matches: list[Round], repeat: int) -> Plan:
    """Phase B from phase A's results (see the module docstring)."""
    tests, fails = tally(n, matches)
    suspects = [v for v in range(n) if tests[v] and 2 * fails[v] > tests[v]]
    untested = [v for v in range(n) if not tests[v]]
    pool = [v for v in range(n) if tests[v] and not fails[v]]
    candidates: list[Pair] = []
    suspect_set = set(suspects)
    if repeat > 1:  # failing pairs of two non-suspects: a link or noise (pairs with a suspect wait)
        for rnd in matches:
            candidates += [p for p, ok in zip(rnd.pairs, rnd.passed, strict=False)
                           if not ok and p[0] not in suspect_set and p[1] not in suspect_set]
    retested = suspects + untested if pool else []  # no passed node: nothing to anchor against
    anchors: dict[int, list[int]] = {v: [] for v in suspects + untested}
    layers: list[list[Pair]] = []
    roles: list[list[str]] = []
    busy: list[set[int]] = []
    width = max(1, min(len(retested), len(pool)))  # suspects per round: each needs its own anchor
    chunks = [retested[i:i + width] for i in range(0, len(retested), width)]
    # Offset by layer: a suspect meets `repeat` distinct anchors whenever the pool has that many;
    # spread over the whole pool when it is large enough for every anchor to be used once.
    step = width if len(pool) >= width * repeat else 1
    for layer in range(repeat):
        for chunk in chunks:
            pairs = []
            for i, v in enumerate(chunk):
                anchor = pool[(i + layer * step) % len(pool)]
                anchors[v].append(anchor)
                pairs.append((v, anchor))
            layers.append(pairs)
            roles.append(["anchor"] * len(pairs))
            busy.append({x for p in pairs for x in p})
    _schedule_retests(candidates, repeat, layers, roles, busy)
    rounds = [Round("anchor", pairs, roles=r) for pairs, r in zip(layers, roles, strict=False) if pairs]
    return Plan(suspects, untested, candidates, anchors, rounds, repeat)


@dataclass
class Verdict:
    kind: str  # node | link | inconclusive | straggler
    nodes: tuple[int, ...]
    fails: int = 0  # tests of this node (or pair) that failed
    tests: int = 0
    anchors: list[int] = field(default_factory=list)
    anchors_failed: int = 0
    why: str = ""


def classify(n: int, matches: list[Round], plan: Plan, anchored: list[Round]) -> list[Verdict]:
    """Node faults, link faults and inconclusive nodes/pairs from both phases."""
    tests, fails = tally(n, matches)
    a_tests, a_fails = [0] * n, [0] * n
    retest: dict[Pair, list[int]] = {}  # candidate pair -> [tests, fails]
    for rnd in anchored:
        for (a, b), ok, role in zip(rnd.pairs, rnd.passed, rnd.roles, strict=False):
            if role == "retest":
                got = retest.setdefault((a, b), [0, 0])
                got[0] += 1
                got[1] += not ok
                continue
            a_tests[a] += 1
            a_fails[a] += not ok
    out: list[Verdict] = []
    cleared: set[int] = set()
    node_faults: set[int] = set()
    for v in plan.suspects + plan.untested:
        total, failed = tests[v] + a_tests[v], fails[v] + a_fails[v]
        verdict = Verdict("node", (v,), failed, total, plan.anchors.get(v, []), a_fails[v])
        if not a_tests[v]:
            verdict.kind, verdict.why = "inconclusive", "no passed node to test it against"
        elif not a_fails[v]:  # passed with every anchor: its failures were its partners'
            cleared.add(v)
            continue
        elif 2 * failed > total:
            verdict.why = f"failed {failed} of {total} tests, {a_fails[v]} of {a_tests[v]} with anchors"
            node_faults.add(v)
        elif 2 * failed == total:
            verdict.kind, verdict.why = "inconclusive", f"failed {failed} of {total} tests: evidence split"
        else:
            cleared.add(v)
            continue
        out.append(verdict)
    if plan.repeat == 1:  # a failing pair whose members both passed with their anchors
        for rnd in matches:
            for (a, b), ok in zip(rnd.pairs, rnd.passed, strict=False):
                if not ok and a in cleared and b in cleared:
                    out.append(Verdict("link", (a, b), 1, 1, plan.anchors[a] + plan.anchors[b], 0,
                                       "the pair failed; each member passed with its anchor"))
    for v in plan.link_members:
        if v not in node_faults and a_tests[v] and 2 * a_fails[v] > a_tests[v]:
            out = [x for x in out if x.nodes != (v,)]
            out.append(Verdict("node", (v,), fails[v] + a_fails[v], tests[v] + a_tests[v], plan.anchors.get(v, []),
                               a_fails[v], f"its pair failed its retests, then it failed {a_fails[v]} of "
                               f"{a_tests[v]} tests with anchors"))
            node_faults.add(v)
    confirmed: dict[int, list[int]] = {}  # node -> partners of its pairs that failed their retests
    for (a, b), (t, f) in retest.items():
        if 2 * f > t:
            confirmed.setdefault(a, []).append(b)
            confirmed.setdefault(b, []).append(a)
    for v, partners in sorted(confirmed.items()):
        if len(partners) >= 2 and v not in node_faults:  # failed, retested, with two different partners
            out = [x for x in out if x.nodes != (v,)]
            out.append(Verdict("node", (v,), 0, 0, partners, 0,
                               f"failed and failed its retests with {len(partners)} different partners"))
            node_faults.add(v)
    for pair, (t, f) in retest.items():
        if node_faults & set(pair):
            continue  # explained by its bad member
        if 2 * f > t:
            out.append(Verdict("link", pair, f + 1, t + 1, [], 0,
                               f"the pair failed, then {f} of {t} retests; each member passed with others"))
        elif 2 * f == t:
            out.append(Verdict("inconclusive", pair, f + 1, t + 1, [], 0, f"retests split {f} of {t}"))
    return out


MIN_FIGURES = 8  # fewer passing figures than this: no distribution to be low against


def robust_low(values: list[float], z: float = -3.5, min_drop: float = 0.10) -> list[bool]:
    """Which values sit below their own distribution: robust z = 0.6745 (x - median) / MAD under z,
    and at least min_drop below the median (a tight fleet's MAD would flag a few % of wobble)."""
    if len(values) < MIN_FIGURES:
        return [False] * len(values)
    med = _median(values)
    mad = _median([abs(x - med) for x in values])
    floor = med * (1 - min_drop)
    if mad <= 0:  # more than half identical: anything clearly below them is the outlier
        return [x < floor for x in values]
    return [x < floor and 0.6745 * (x - med) / mad < z for x in values]


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def stragglers(rounds: list[Round], faults: set[int], z: float = -3.5) -> list[Verdict]:
    """Passing tests whose figure is low against all passing figures; a node low with two or more
    partners is a straggler node, a lone low pair a straggler pair (either member)."""
    tests: list[tuple[Pair, float]] = [(p, f) for rnd in rounds for p, ok, f in zip(rnd.pairs, rnd.passed, rnd.figures, strict=False)
                                       if ok and f is not None]
    low = robust_low([f for _, f in tests], z)
    partners: dict[int, set[int]] = {}
    low_pairs = [p for (p, _), is_low in zip(tests, low, strict=False) if is_low]
    for a, b in low_pairs:
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    nodes = {v for v, ps in partners.items() if len(ps) >= 2 and v not in faults}
    out = [Verdict("straggler", (v,), 0, 0, sorted(partners[v]), 0,
                   f"passed, but low with {len(partners[v])} partners") for v in sorted(nodes)]
    out += [Verdict("straggler", p, 0, 0, [], 0, "passed, but low (which member: retest with --repeat)")
            for p in low_pairs if p[0] not in nodes and p[1] not in nodes and not set(p) & faults]
    return out


@dataclass
class Outcome:
    n: int
    matches: list[Round]
    plan: Plan
    verdicts: list[Verdict]

    @property
    def rounds(self) -> list[Round]:
        return self.matches + self.plan.rounds

    @property
    def tests(self) -> int:
        return sum(len(r.pairs) for r in self.rounds)


def locate(n: int, run, repeat: int = 1, rng: random.Random | None = None, judge=None) -> Outcome:
    """Run phase A, then phase B, then classify. run(round) fills round.passed (or round.figures
    for judge(rounds) to turn into passed: the expectation comes from phase A's figures)."""
    if n < 2 or repeat < 1:
        raise ValueError("locate needs at least 2 nodes and repeat >= 1")
    rng = rng or random.Random()
    matches: list[Round] = []
    met: set[Pair] = set()
    for _ in range(repeat):
        pairs = fresh_matching(n, rng, met)
        rnd = Round("match", pairs, roles=["match"] * len(pairs))
        run(rnd)
        matches.append(rnd)
    if judge is not None:
        judge(matches)
    plan = plan_anchors(n, matches, repeat)
    for rnd in plan.rounds:
        run(rnd)
    if judge is not None:
        judge(plan.rounds)
    verdicts = classify(n, matches, plan, plan.rounds)
    followup = plan_followup(matches, plan, verdicts)
    for rnd in followup:
        run(rnd)
    if followup:
        if judge is not None:
            judge(followup)
        plan.rounds += followup
        verdicts = classify(n, matches, plan, plan.rounds)
    anchored = plan_link_anchors(n, matches, plan, verdicts)
    for rnd in anchored:
        run(rnd)
    if anchored:
        if judge is not None:
            judge(anchored)
        plan.rounds += anchored
        verdicts = classify(n, matches, plan, plan.rounds)
    return Outcome(n, matches, plan, verdicts)


def plan_link_anchors(n: int, matches: list[Round], plan: Plan, verdicts: list[Verdict]) -> list[Round]:
    """repeat > 1: each member of a link fault against 2 x repeat + 1 anchors (nodes that passed
    every test and are in no verdict), one anchor per round."""
    if plan.repeat == 1:
        return []
    members = sorted({v for verdict in verdicts if verdict.kind == "link" for v in verdict.nodes})
    if not members:
        return []
    tests, fails = tally(n, matches)
    named = {v for verdict in verdicts for v in verdict.nodes}
    pool = [v for v in range(n) if tests[v] and not fails[v] and v not in named and v not in plan.anchors]
    pool = pool or [v for v in range(n) if tests[v] and not fails[v] and v not in named]
    if len(pool) < len(members):
        return []  # too few clean nodes: the link verdicts stand on their retests
    plan.link_members = members
    rounds = []
    for layer in range(2 * plan.repeat + 1):  # a clear majority, as for the retests
        pairs = []
        taken: set[int] = set()
        for i, v in enumerate(members):
            met = plan.anchors.setdefault(v, [])
            start = i + layer * len(members)
            anchor = first_free = -1  # the pool outnumbers the members: a free one exists
            for j in range(len(pool)):
                a = pool[(start + j) % len(pool)]
                if a in taken:
                    continue
                first_free = a if first_free < 0 else first_free
                if a not in met:  # a new anchor while there is one
                    anchor = a
                    break
            anchor = anchor if anchor >= 0 else first_free
            taken.add(anchor)
            met.append(anchor)
            pairs.append((v, anchor))
        rounds.append(Round("anchor", pairs, roles=["anchor"] * len(pairs)))
    return rounds


@dataclass
class Judge:
    """A figure passes at or above ratio x the expectation: the given one (the topology's), else
    the median of phase A's figures (the fleet's own). No figure (the test broke) fails."""

    ratio: float = 0.8
    expectation: float | None = None
    source: str = "given"

    def __call__(self, rounds: list[Round]) -> None:
        if self.expectation is None:
            figures = [f for r in rounds for f in r.figures if f is not None]
            self.expectation = _median(figures) if figures else 0.0
            self.source = "fleet median"
        floor = self.ratio * self.expectation
        for rnd in rounds:
            rnd.passed = [f is not None and f > 0 and f >= floor for f in rnd.figures]
