"""Pair, then anchor: which node or which link of N is bad, from disjoint two-node tests.

Pure: nodes are ints 0..n-1, a round is a list of disjoint pairs and what each test said.
Phase A: `repeat` fresh random perfect matchings (one round each, avoiding pairs already tested).
Repeat 1 (a quiet fabric): each member of every failing pair, and a node no matching tested (the
odd one out), meets one anchor (a node that passed every test), all in one round: a node that
fails with its anchor too failed with two different partners, a node fault; a failing pair whose
members both pass with their anchors is a link fault. One bad node: 2 rounds, N/2 + 2 tests.
Repeat r > 1 (a noisy fabric): phase B asks, round by round, until each question is decided
(`Confirm`): is this node bad (a suspect, one that failed a majority of its r tests, against
distinct anchors) and is this pair bad (a failing pair of two non-suspects, retested as it is).
Each question takes at most 3r tests and is decided at 2r failures (yes) or r + 1 passes (no):
at 5 % false results and r = 3 a healthy node is called bad with probability 1.1e-6, a bad node
missed with 6e-4 (docs/fleet.md, "Accuracy"). A suspect its anchors clear has its failing pairs
retested (a link with noise on top); a confirmed pair's members meet anchors too (a bad node
that noise kept from suspicion fails them, a link's members pass them); a node whose pairs with
two different partners are confirmed is a node fault. Kept free of per-test objects: the
simulator runs it 10,000 times at N = 4,096 (benchmarks/locate_sim.py).
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
    """Phase B: who is tested against whom, and why."""

    suspects: list[int]
    untested: list[int]
    candidates: list[Pair]  # failing pairs of two non-suspects, retested as they are (repeat > 1)
    anchors: dict[int, list[int]]  # node -> its anchors, in round order
    rounds: list[Round]
    repeat: int = 1


def random_matching(n: int, rng: random.Random) -> tuple[list[Pair], int | None]:
    """A uniformly random perfect matching of n nodes; the odd one out when n is odd."""
    perm = list(range(n))
    rng.shuffle(perm)
    return list(zip(perm[0::2], perm[1::2], strict=False)), (perm[-1] if n % 2 else None)


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


def _suspects(tests: list[int], fails: list[int]) -> list[int]:
    """Nodes that failed a majority of their tests (repeat 1: both members of a failing pair)."""
    return [v for v in range(len(tests)) if tests[v] and 2 * fails[v] > tests[v]]


def _pool(tests: list[int], fails: list[int]) -> list[int]:
    """Anchors: nodes that passed every test they took."""
    return [v for v in range(len(tests)) if tests[v] and not fails[v]]


def plan_anchors(n: int, matches: list[Round]) -> Plan:
    """Repeat 1: each suspect and each untested node against one anchor; as many per round as
    there are anchors (each needs its own)."""
    tests, fails = tally(n, matches)
    suspects = _suspects(tests, fails)
    untested = [v for v in range(n) if not tests[v]]
    pool = _pool(tests, fails)
    retested = suspects + untested if pool else []  # no passed node: nothing to anchor against
    anchors: dict[int, list[int]] = {v: [] for v in suspects + untested}
    rounds = []
    width = max(1, min(len(retested), len(pool)))
    for start in range(0, len(retested), width):
        pairs = [(v, pool[i % len(pool)]) for i, v in enumerate(retested[start:start + width])]
        for v, anchor in pairs:
            anchors[v].append(anchor)
        rounds.append(Round("anchor", pairs, roles=["anchor"] * len(pairs)))
    return Plan(suspects, untested, [], anchors, rounds, 1)


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
    """Repeat 1: node faults, link faults and inconclusive nodes from both phases."""
    tests, fails = tally(n, matches)
    a_tests, a_fails = [0] * n, [0] * n
    for rnd in anchored:  # the node judged is the first of each anchor pair
        for (a, _b), ok in zip(rnd.pairs, rnd.passed, strict=False):
            a_tests[a] += 1
            a_fails[a] += not ok
    out: list[Verdict] = []
    cleared: set[int] = set()
    for v in plan.suspects + plan.untested:
        verdict = _anchored(v, tests[v] + a_tests[v], fails[v] + a_fails[v], a_tests[v], a_fails[v],
                            plan.anchors.get(v, []))
        if verdict is None:
            cleared.add(v)
        else:
            out.append(verdict)
    for rnd in matches:  # a failing pair whose members both passed with their anchors
        for (a, b), ok in zip(rnd.pairs, rnd.passed, strict=False):
            if not ok and a in cleared and b in cleared:
                out.append(Verdict("link", (a, b), 1, 1, plan.anchors[a] + plan.anchors[b], 0,
                                   "the pair failed; each member passed with its anchor"))
    return out


def _anchored(v: int, total: int, failed: int, a_tests: int, a_fails: int, anchors: list[int]) -> Verdict | None:
    """One node's verdict from its tests with anchors; None: cleared (its failures were its partners')."""
    verdict = Verdict("node", (v,), failed, total, anchors, a_fails)
    if not a_tests:
        verdict.kind, verdict.why = "inconclusive", "no passed node to test it against"
    elif not a_fails or 2 * failed < total:
        return None
    elif 2 * failed > total:
        verdict.why = f"failed {failed} of {total} tests, {a_fails} of {a_tests} with anchors"
    else:
        verdict.kind, verdict.why = "inconclusive", f"failed {failed} of {total} tests: evidence split"
    return verdict


@dataclass
class Tally:
    """Confirmation tests of one question (a node against anchors, or a pair retested)."""

    tests: int = 0
    fails: int = 0

    def decided(self, repeat: int) -> bool | None:
        """True: a fault (2r failures); False: none (r + 1 passes); None: not yet. At most 3r tests."""
        if self.fails >= 2 * repeat:
            return True
        if self.tests - self.fails >= repeat + 1:
            return False
        return None


class Confirm:
    """Phase B for repeat r > 1: one round at a time, each open question one test per round,
    nodes first (each against its own anchor, a new one while the pool has one), then the pairs
    whose members are free; a question leaves when decided (module docstring)."""

    def __init__(self, n: int, matches: list[Round], repeat: int) -> None:
        self.repeat = repeat
        self.tests, self.fails = tally(n, matches)
        self.failing = [_key(p) for rnd in matches for p, ok in zip(rnd.pairs, rnd.passed, strict=False) if not ok]
        suspects = _suspects(self.tests, self.fails)
        untested = [v for v in range(n) if not self.tests[v]]
        self.pool = _pool(self.tests, self.fails)
        self.cursor = 0  # where the next anchor search starts: spreads the anchors over the pool
        candidates = [p for p in self.failing if p[0] not in suspects and p[1] not in suspects]
        self.plan = Plan(suspects, untested, candidates, {}, [], repeat)
        self.nodes: dict[int, Tally] = {}  # node -> its tests with anchors
        self.pairs: dict[Pair, Tally] = {}  # pair -> its retests
        self.open_nodes: list[int] = []
        self.open_pairs: list[Pair] = []
        for v in suspects + untested:
            self._open_node(v)
        for p in candidates:
            self._open_pair(p)

    def _open_node(self, v: int) -> None:
        if v not in self.nodes:
            self.nodes[v] = Tally()
            self.plan.anchors.setdefault(v, [])
            self.open_nodes.append(v)

    def _open_pair(self, pair: Pair) -> None:
        if pair not in self.pairs:
            self.pairs[pair] = Tally()
            self.open_pairs.append(pair)

    def faults(self) -> set[int]:
        return {v for v, t in self.nodes.items() if t.decided(self.repeat)}

    def next_round(self) -> Round | None:
        """The next round's tests; None when every question is decided (or none can be asked)."""
        busy: set[int] = set()
        pairs: list[Pair] = []
        roles: list[str] = []
        for v in self.open_nodes:
            anchor = self._anchor(v, busy)
            if anchor is not None:
                busy.update((v, anchor))
                pairs.append((v, anchor))
                roles.append("anchor")
        for pair in self.open_pairs:
            if pair[0] not in busy and pair[1] not in busy:
                busy.update(pair)
                pairs.append(pair)
                roles.append("retest")
        return Round("anchor", pairs, roles=roles) if pairs else None

    def _anchor(self, v: int, busy: set[int]) -> int | None:
        """A free anchor v has not met; None while those are busy; one it met once it met them all."""
        met = self.plan.anchors[v]
        size = len(self.pool)
        waiting, again = False, None
        for j in range(size):
            a = self.pool[(self.cursor + j) % size]
            if a not in met:
                if a not in busy:
                    self.cursor = (self.cursor + j + 1) % size
                    met.append(a)
                    return a
                waiting = True
            elif again is None and a not in busy:
                again = a
        if waiting or again is None:
            return None
        met.append(again)
        return again

    def record(self, rnd: Round) -> None:
        """What a round said; the questions it decided leave, and raise the next ones."""
        self.plan.rounds.append(rnd)
        for (a, b), ok, role in zip(rnd.pairs, rnd.passed, rnd.roles, strict=False):
            got = self.nodes[a] if role == "anchor" else self.pairs[(a, b)]
            got.tests += 1
            got.fails += not ok
        cleared = [v for v in self.open_nodes if self.nodes[v].decided(self.repeat) is False]
        self.open_nodes = [v for v in self.open_nodes if self.nodes[v].decided(self.repeat) is None]
        faults = self.faults()
        for v in cleared:  # its failures were its partners' or a link's: retest them as they are
            for pair in self.failing:
                if v in pair and not faults & set(pair):
                    self._open_pair(pair)
        self._settle_pairs(faults)

    def _settle_pairs(self, faults: set[int]) -> None:
        """Pairs explained by a node fault or decided leave; a confirmed one's members meet anchors."""
        still: list[Pair] = []
        for pair in self.open_pairs:
            if faults & set(pair):
                continue
            state = self.pairs[pair].decided(self.repeat)
            if state is None:
                still.append(pair)
            elif state:  # a link, or a bad node that noise kept from suspicion
                self._open_node(pair[0])
                self._open_node(pair[1])
        self.open_pairs = still

    def verdicts(self) -> list[Verdict]:
        out = [self._node_verdict(v, t) for v, t in self.nodes.items() if t.decided(self.repeat) is not False]
        faults = self.faults()
        partners: dict[int, list[int]] = {}
        confirmed = [p for p, t in self.pairs.items() if t.decided(self.repeat) and not faults & set(p)]
        for a, b in confirmed:
            partners.setdefault(a, []).append(b)
            partners.setdefault(b, []).append(a)
        for v, others in sorted(partners.items()):
            if len(others) >= 2:  # failed, and failed its retests, with two different partners
                out = [x for x in out if x.nodes != (v,)]
                out.append(Verdict("node", (v,), 0, 0, others, 0,
                                   f"failed and failed its retests with {len(others)} different partners"))
                faults.add(v)
        out += [self._pair_verdict(p) for p in self.pairs if not faults & set(p)]
        return [v for v in out if v is not None]

    def _node_verdict(self, v: int, t: Tally) -> Verdict:
        anchors = self.plan.anchors.get(v, [])
        failed, total = self.fails[v] + t.fails, self.tests[v] + t.tests
        if t.decided(self.repeat):
            return Verdict("node", (v,), failed, total, anchors, t.fails,
                           f"failed {t.fails} of {t.tests} tests with anchors, {self.fails[v]} of {self.tests[v]} before")
        why = "no passed node to test it against" if not t.tests else f"undecided after {t.tests} tests with anchors"
        return Verdict("inconclusive", (v,), failed, total, anchors, t.fails, why)

    def _pair_verdict(self, pair: Pair) -> Verdict | None:
        t = self.pairs[pair]
        state = t.decided(self.repeat)
        if state is False:
            return None
        anchors = [a for v in pair for a in self.plan.anchors.get(v, [])]
        if state:
            return Verdict("link", pair, t.fails + 1, t.tests + 1, anchors, 0,
                           f"the pair failed, then {t.fails} of {t.tests} retests; each member passed with others")
        return Verdict("inconclusive", pair, t.fails + 1, t.tests + 1, anchors, 0, f"retests undecided: {t.fails} of {t.tests}")


def _key(pair: Pair) -> Pair:
    return (pair[0], pair[1]) if pair[0] < pair[1] else (pair[1], pair[0])


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


def _low_pairs(rounds: list[Round], z: float) -> list[Pair]:
    """Passing tests whose figure is low against all passing figures."""
    tests: list[tuple[Pair, float]] = [(p, f) for rnd in rounds for p, ok, f in zip(rnd.pairs, rnd.passed, rnd.figures, strict=False)
                                       if ok and f is not None]
    low = robust_low([f for _, f in tests], z)
    return [p for (p, _), is_low in zip(tests, low, strict=False) if is_low]


def stragglers(rounds: list[Round], faults: set[int], z: float = -3.5) -> list[Verdict]:
    """Passing tests whose figure is low against all passing figures; a node low with two or more
    partners is a straggler node, a lone low pair a straggler pair (either member)."""
    partners: dict[int, set[int]] = {}
    low_pairs = _low_pairs(rounds, z)
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
    """Phase A, then phase B, then the verdicts. run(round) fills round.passed (or round.figures
    for judge(rounds) to turn into passed: the expectation comes from phase A's figures)."""
    if n < 2 or repeat < 1:
        raise ValueError("locate needs at least 2 nodes and repeat >= 1")
    rng = rng or random.Random()
    met: set[Pair] = set()
    matches = []
    for _ in range(repeat):  # each drawn after the one before ran (the simulator shares the rng)
        pairs = fresh_matching(n, rng, met)
        matches.append(Round("match", pairs, roles=["match"] * len(pairs)))
        run(matches[-1])
    if judge is not None:
        judge(matches)
    if repeat == 1:
        plan = plan_anchors(n, matches)
        _run(plan.rounds, run, judge)
        return Outcome(n, matches, plan, classify(n, matches, plan, plan.rounds))
    confirm = Confirm(n, matches, repeat)
    while (rnd := confirm.next_round()) is not None:
        _run([rnd], run, judge)
        confirm.record(rnd)
    return Outcome(n, matches, confirm.plan, confirm.verdicts())


def _run(rounds: list[Round], run, judge) -> None:
    for rnd in rounds:
        run(rnd)
    if judge is not None:
        judge(rounds)


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
