"""A fleet without hardware for `locate`: N nodes, bad nodes, bad links, stragglers and noise
(each test's result flipped with probability `noise`). benchmarks/locate_sim.py measures the
rounds, tests and accuracy with it; tests/test_fleet_locate.py checks the figures at small N.
The hot loop is one list comprehension per round: no object per test."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gpunode.fleet.locate.algorithm import Judge, Outcome, Round, locate


@dataclass
class Fleet:
    n: int
    bad_nodes: tuple[int, ...] = ()
    bad_links: tuple[tuple[int, int], ...] = ()
    # one bad link among the first matching's pairs (a link is only seen when a test crosses it)
    link_in_matching: bool = False
    stragglers: tuple[int, ...] = ()
    noise: float = 0.0
    figures: bool = False  # simulate figures (1.0 +- 2 %, bad 0.1, straggler 0.85) for the judge

    def run(self, outcome_rng: random.Random, repeat: int = 1) -> tuple[Outcome, tuple[tuple[int, int], ...]]:
        rng = outcome_rng
        bad = [False] * self.n
        for v in self.bad_nodes:
            bad[v] = True
        links = {(min(a, b), max(a, b)) for a, b in self.bad_links}
        chosen: list[tuple[int, int]] = []
        slow = set(self.stragglers)
        noise = self.noise

        def run(rnd: Round) -> None:
            if self.link_in_matching and not chosen:
                a, b = rnd.pairs[rng.randrange(len(rnd.pairs))]
                chosen.append((min(a, b), max(a, b)))
                links.add(chosen[0])
            r = rng.random
            if links:
                faulty = [bad[a] or bad[b] or (min(a, b), max(a, b)) in links for a, b in rnd.pairs]
            else:
                faulty = [bad[a] or bad[b] for a, b in rnd.pairs]
            if not self.figures:
                rnd.passed = [f == (r() < noise) for f in faulty]
                return
            gauss = rng.gauss
            rnd.figures = [(0.1 if f != (r() < noise) else 1.0) * (0.85 if (a in slow or b in slow) else 1.0)
                           * (1 + gauss(0, 0.02)) for f, (a, b) in zip(faulty, rnd.pairs, strict=False)]

        judge = Judge(ratio=0.5, expectation=None) if self.figures else None
        outcome = locate(self.n, run, repeat=repeat, rng=rng, judge=judge)
        return outcome, tuple(sorted(links))


@dataclass
class Score:
    """One trial judged against the truth."""

    rounds: int
    tests: int
    found: bool  # every bad node named a node fault (every bad link a link fault)
    false_nodes: int  # healthy nodes named a node fault
    false_links: int  # healthy pairs named a link fault
    told_apart: bool  # no fault got the other kind (a bad node called a link, a bad link's member a node)


def score(outcome: Outcome, fleet: Fleet, links: tuple[tuple[int, int], ...]) -> Score:
    named_nodes = {v.nodes[0] for v in outcome.verdicts if v.kind == "node"}
    named_links = {(min(v.nodes), max(v.nodes)) for v in outcome.verdicts if v.kind == "link"}
    bad = set(fleet.bad_nodes)
    truth_links = set(links)
    found = bad <= named_nodes and truth_links <= named_links
    apart = (not any(a in bad or b in bad for a, b in named_links)
             and not any(a in named_nodes or b in named_nodes for a, b in truth_links))
    return Score(len(outcome.rounds), outcome.tests, found, len(named_nodes - bad), len(named_links - truth_links),
                 apart)
