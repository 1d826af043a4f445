"""Run `locate` rounds on the inventory's hosts: each round is one run of playbooks/locate.yml
through the fleet runner (ansible-runner), with the round's disjoint pair tests as per-host vars:
servers start first, clients second, each client's output comes back as <host>.locate.json."""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunode.fleet.locate.algorithm import Judge, Outcome, Plan, Round, locate
from gpunode.fleet.locate.pairtests import Config, Figure, PairTest
from gpunode.fleet.specs import PlaybookSpec
from gpunode.fleet.validate import FleetError, FleetInventory

SPEC = PlaybookSpec("locate", "pair tests between nodes: which node or link is bad", report_on_stdout=False)
MAX_REPORT_BYTES = 4 * 1024 * 1024


# A host name or an IPv4/IPv6 address: it becomes an argument of iperf3/ib_write_bw/mpirun on
# another node, so nothing that could read as an option (`-R`, `--logfile=...`) or hold a space.
ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_%-]{0,252}")


def address(inventory: FleetInventory, host: str) -> str:
    """Where the partner connects: gpunode_locate_address (a data-network address), else ansible_host."""
    hv = inventory.hostvars.get(host, {})
    value = str(hv.get("gpunode_locate_address") or hv.get("ansible_host") or host)
    if not ADDRESS.fullmatch(value):
        raise FleetError(f"{host}: address {value[:60]!r} is not a host name or IP address "
                         "(gpunode_locate_address / ansible_host)")
    return value


def round_plan(plugin: PairTest, cfg: Config, inventory: FleetInventory, names: list[str],
               pairs: list[tuple[int, int]]) -> dict[str, dict]:
    """gpunode_locate_plan for one round: host -> servers, listens, clients (pure)."""
    plan: dict[str, dict] = {}
    for a, b in pairs:
        ha, hb = names[a], names[b]
        step_a, step_b = plugin.plan(cfg, address(inventory, ha), address(inventory, hb), ha, hb)
        for host, step in ((ha, step_a), (hb, step_b)):
            plan[host] = {"servers": [list(s) for s in step.servers], "clients": [list(c) for c in step.clients],
                          "listens": [str(p) for p in step.listens]}
    return plan


CLIENT_TASK = "Run gpunode locate pair tests"  # playbooks/locate.yml


def read_outputs(artifact_dir: Path) -> dict[str, list[str]]:
    """host -> its clients' stdout, from the run's events (the client task's loop result); a
    host missing here never ran its clients (unreachable, failed before)."""
    from gpunode.inputs import InputError, load_json

    out: dict[str, list[str]] = {}
    for path in sorted((artifact_dir / "job_events").glob("*.json")):
        try:
            event = load_json(path, max_bytes=MAX_REPORT_BYTES)
        except InputError:
            continue
        data = event.get("event_data") if isinstance(event, dict) else None
        if (not isinstance(data, dict) or data.get("task") != CLIENT_TASK
                or event.get("event") not in ("runner_on_ok", "runner_on_failed")):
            continue
        results = (data.get("res") or {}).get("results")
        if isinstance(results, list) and isinstance(data.get("host"), str):
            out[data["host"]] = [str(r.get("stdout") or "") if isinstance(r, dict) else "" for r in results]
    return out


@dataclass
class FleetRounds:
    """The `run` callback of algorithm.locate for real hosts."""

    plugin: PairTest
    cfg: Config
    inventory: FleetInventory
    playbook_dir: Path
    state_dir: Path
    forks: int = 50
    timeout: int = 120
    console: Any = None  # a rich Console on stderr, or None
    names: list[str] = field(default_factory=list)
    details: list[list[Figure]] = field(default_factory=list)  # per round, per test
    runs: list[dict] = field(default_factory=list)  # per round: artifact dir, seconds

    def __post_init__(self) -> None:
        self.names = list(self.inventory.hosts)
        for host in self.names:  # names (srun --nodelist, mpirun -H) and addresses checked before any round
            if not ADDRESS.fullmatch(host):
                raise FleetError(f"inventory host {host[:60]!r} is not a host name a pair test can be given")
            address(self.inventory, host)

    def _play(self, plan: dict[str, dict], phase: str, tests: int):
        from gpunode.fleet.runner import run_playbook

        hosts = [h for h in self.names if h in plan]
        sub = dataclasses.replace(self.inventory, hosts=hosts, limit=":".join(hosts))
        run = run_playbook(SPEC, sub, self.playbook_dir, self.state_dir, forks=self.forks,
                           extravars={"gpunode_locate_plan": plan, "gpunode_locate_timeout": self.timeout},
                           console=None)
        self.runs.append({"round": len(self.runs) + 1, "phase": phase, "tests": tests,
                          "artifact_dir": str(run.artifact_dir), "seconds": run.duration_s, "status": run.status})
        return run

    def run_all(self) -> Figure | None:
        """Round 0: the plug-in's all-nodes test (nccl: all_reduce_perf over every node), started on
        the first node; None when the plug-in has none."""
        step = self.plugin.plan_all(self.cfg, self.names)
        if step is None:
            return None
        first = self.names[0]
        run = self._play({first: {"servers": [], "listens": [], "clients": [list(c) for c in step.clients]}},
                         "all", 1)
        outputs = read_outputs(run.artifact_dir).get(first)
        return self.plugin.parse(outputs, self.cfg) if outputs is not None else Figure(None, error=f"{first}: no output")

    def __call__(self, rnd: Round) -> None:
        plan = round_plan(self.plugin, self.cfg, self.inventory, self.names, rnd.pairs)
        run = self._play(plan, rnd.phase, len(rnd.pairs))
        sent = read_outputs(run.artifact_dir)
        figures = []
        for a, b in rnd.pairs:
            client = next((h for h in (self.names[a], self.names[b]) if plan[h]["clients"]), None)
            outputs = sent.get(client) if client else None
            fig = (self.plugin.parse(outputs, self.cfg) if outputs is not None
                   else Figure(None, error=f"{client}: no output ({run.outcomes[client].message or 'did not run'})"
                               if client and client in run.outcomes else "no output"))
            figures.append(fig)
        self.details.append(figures)
        rnd.figures = [f.value for f in figures]
        if self.console is not None:
            bad = sum(1 for f in figures if f.value is None)
            self.console.print(f"round {len(self.runs)} ({rnd.phase}): {len(rnd.pairs)} tests in {run.duration_s:.1f}s, "
                               f"{bad} without a figure", highlight=False)


def run_locate(rounds: FleetRounds, repeat: int, seed: int | None, ratio: float,
               expectation: float | None) -> tuple[Outcome, Judge]:
    if len(rounds.names) < 2:
        raise FleetError("locate needs at least 2 hosts")
    judge = Judge(ratio=ratio, expectation=expectation)
    outcome = locate(len(rounds.names), rounds, repeat=repeat, rng=random.Random(seed), judge=judge)
    return outcome, judge


def healthy_at_scale(n: int, repeat: int, expectation: float | None) -> tuple[Outcome, Judge]:
    """Round 0 passed: no pair rounds, nothing suspected."""
    return Outcome(n, [], Plan([], [], [], {}, [], repeat), []), Judge(expectation=expectation)


def round0_result(fig: Figure | None, ratio: float, expectation: float) -> dict:
    """The all-nodes test judged: passed at or above ratio x the expectation (no figure: failed)."""
    value = fig.value if fig is not None else None
    return {"figure": value, "passed": value is not None and value >= ratio * expectation,
            "error": fig.error if fig is not None else "no all-nodes test"}
