"""Pair tests for `gpunode fleet locate`: one interface, three plug-ins. Each is pure: argv from
the config and the two nodes' addresses, and a parse of what the client printed into one figure
(higher is better) or None (the test broke: a failed test).

    tcp   iperf3 (server on B, client on A), Gb/s received
    ib    perftest ib_write_bw per rail (one server/client pair per HCA, each on its own port),
          the pair's figure is its slowest rail's BW average in Gb/s (every rail is kept)
    nccl  nccl-tests all_reduce_perf across the two nodes through mpirun or srun, started on A,
          bus bandwidth of the largest message in GB/s
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gpunode.bench import nccl as nccl_tests
from gpunode.bench.perftest import parse_ib_write_bw


@dataclass(frozen=True)
class Config:
    seconds: int = 2  # per test (iperf3 -t, ib_write_bw -D)
    port: int = 5201  # first port; rail i uses port + i
    rails: tuple[str, ...] = ()  # ib: HCAs (mlx5_0 ...); empty: ib_write_bw's default device
    gpus_per_node: int = 8  # nccl: processes per node
    launcher: str = "mpirun"  # nccl: mpirun | srun
    nccl_bin: str = "all_reduce_perf"
    nccl_bytes: int = 1 << 30
    streams: int = 1  # tcp: iperf3 -P
    env_names: tuple[str, ...] = ()  # nccl with mpirun: variables passed on with -x (NCCL_IB_HCA ...)


@dataclass
class Figure:
    """One pair test's result: the figure, each rail's, and why there is none."""

    value: float | None
    rails: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Step:
    """What one host runs for one test: servers start first (in the background), then clients."""

    servers: tuple[tuple[str, ...], ...]
    clients: tuple[tuple[str, ...], ...]
    # Ports this host's servers listen on: the round waits until they do (checked on the host with
    # `ss`, not by connecting: a probe connection would be a one-off server's only client).
    listens: tuple[int, ...] = ()


class PairTest:
    name = ""
    unit = ""

    def plan(self, cfg: Config, a_addr: str, b_addr: str, a_name: str, b_name: str) -> tuple[Step, Step]:
        """(what A runs, what B runs) for the test A <-> B."""
        raise NotImplementedError

    def parse(self, outputs: list[str], cfg: Config) -> Figure:
        """The client outputs of one test (one per rail) -> its figure."""
        raise NotImplementedError

    def plan_all(self, cfg: Config, names: list[str]) -> Step | None:
        """Round 0: one test over all nodes, run on the first (None: this test has none)."""
        return None


class Tcp(PairTest):
    name, unit = "tcp", "Gb/s"

    def plan(self, cfg, a_addr, b_addr, a_name, b_name):
        server = ("iperf3", "--server", "--one-off", "--port", str(cfg.port))
        client = ("iperf3", "--client", b_addr, "--port", str(cfg.port), "--time", str(cfg.seconds),
                  "--parallel", str(cfg.streams), "--json")
        return Step((), (client,)), Step((server,), (), (cfg.port,))

    def parse(self, outputs, cfg):
        if len(outputs) != 1:
            return Figure(None, error="no iperf3 output")
        return parse_iperf3(outputs[0])


def parse_iperf3(text: str) -> Figure:
    """iperf3 --json: end.sum_received.bits_per_second (what arrived), or its "error"."""
    try:
        doc = json.loads(text)
    except ValueError:
        return Figure(None, error="iperf3 printed no JSON (cut off?)")
    if not isinstance(doc, dict):
        return Figure(None, error="iperf3 JSON is not an object")
    if doc.get("error"):
        return Figure(None, error=f"iperf3: {str(doc['error'])[:200]}")
    try:
        bps = float(doc["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        return Figure(None, error="iperf3 JSON without end.sum_received")
    if not bps > 0:
        return Figure(None, error="iperf3 received nothing")
    return Figure(round(bps / 1e9, 4))


class Ib(PairTest):
    name, unit = "ib", "Gb/s"

    def _rails(self, cfg: Config) -> list[tuple[str, int]]:
        return [(rail, cfg.port + i) for i, rail in enumerate(cfg.rails or ("",))]

    def plan(self, cfg, a_addr, b_addr, a_name, b_name):
        servers, clients, ports = [], [], []
        for rail, port in self._rails(cfg):
            common = ["ib_write_bw", "--report_gbits", "-D", str(cfg.seconds), "-p", str(port)]
            if rail:
                common += ["-d", rail]
            servers.append(tuple(common))
            clients.append((*common, b_addr))
            ports.append(port)
        return Step((), tuple(clients)), Step(tuple(servers), (), tuple(ports))

    def parse(self, outputs, cfg):
        names = [rail or "default" for rail, _ in self._rails(cfg)]
        rails = {name: parse_ib_write_bw(text) for name, text in zip(names, outputs, strict=False)}
        for name in names[len(outputs):]:
            rails[name] = None
        values = list(rails.values())
        if any(v is None for v in values):
            broken = ", ".join(n for n, v in rails.items() if v is None)
            return Figure(None, rails, f"ib_write_bw gave no figure on {broken}")
        return Figure(min(v for v in values if v is not None), rails)


class Nccl(PairTest):
    name, unit = "nccl", "GB/s"

    def plan(self, cfg, a_addr, b_addr, a_name, b_name):
        # Started on A for both nodes; the launcher reaches B by its name (mpirun over ssh, srun).
        return Step((), (self._argv(cfg, [a_name, b_name]),)), Step((), ())

    def plan_all(self, cfg, names):
        return Step((), (self._argv(cfg, names),))

    def _argv(self, cfg: Config, names: list[str]) -> tuple[str, ...]:
        prefix = nccl_tests.launcher_prefix(cfg.launcher, names, cfg.gpus_per_node, cfg.env_names)
        run = nccl_tests.argv(cfg.nccl_bin, nccl_tests.NcclConfig(ngpus=1, min_bytes=cfg.nccl_bytes,
                                                                  max_bytes=cfg.nccl_bytes))
        return tuple(prefix + run)

    def parse(self, outputs, cfg):
        if len(outputs) != 1:
            return Figure(None, error="no nccl-tests output")
        return parse_nccl(outputs[0])


def parse_nccl(text: str) -> Figure:
    """bench/nccl.py's parser: bus bandwidth of the largest message, only from a complete run
    (footer, no failure line, no wrong data) over more than one rank."""
    run = nccl_tests.parse_text(text)
    if run.failures:
        return Figure(None, error=f"nccl-tests: {run.failures[0][:200]}")
    if not run.footer or run.largest is None:
        return Figure(None, error="nccl-tests output cut off (no footer)")
    if run.wrong:
        return Figure(None, error=f"nccl-tests: {run.wrong} wrong values")
    if run.ranks < 2:
        return Figure(None, error=f"nccl-tests ran on {run.ranks} rank(s): not across the pair")
    busbw = run.largest.busbw
    return Figure(busbw if busbw > 0 else None, error=None if busbw > 0 else "bus bandwidth 0")


PLUGINS: dict[str, PairTest] = {p.name: p for p in (Tcp(), Ib(), Nccl())}
