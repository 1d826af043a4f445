"""GPUDirect RDMA step (bench/perftest.py): ib_write_bw --use_cuda argv, its documented output
(tests/fixtures/perftest/README.md), skipped with why where it cannot run."""

from __future__ import annotations

from gpunode.bench import perftest
from gpunode.host.facts.infiniband import IbPort
from gpunode.host.runner import ReplayRunner
from testkit import FIXTURES

FIX = FIXTURES / "perftest"
CUDA_OUT = (FIX / "ib_write_bw_use_cuda.doc.txt").read_text()
HELP = (FIX / "help_use_cuda.doc.txt").read_text()
REFUSED = (FIXTURES / "locate" / "ib_write_bw_refused.txt").read_text()
PORT = IbPort("mlx5_0", 1, "4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)", "InfiniBand", "MT4129")
DOWN = IbPort("mlx5_1", 1, "1: DOWN", "2: Polling", None, "InfiniBand", "MT4129")


def test_argv_is_pure_and_puts_the_buffers_on_the_gpu():
    server = perftest.argv("/usr/bin/ib_write_bw", "mlx5_0", 1, 3, 18615, 5)
    assert server == ["/usr/bin/ib_write_bw", "-d", "mlx5_0", "-i", "1", "--use_cuda=3", "--report_gbits", "-D", "5",
                      "-p", "18615"]
    assert perftest.argv("/usr/bin/ib_write_bw", "mlx5_0", 1, 3, 18615, 5, "localhost") == [*server, "localhost"]


def test_parse_documented_cuda_output():
    assert perftest.parse_ib_write_bw(CUDA_OUT) == 392.05
    assert perftest.parse_ib_write_bw(REFUSED) is None
    assert perftest.supports_cuda(HELP) and not perftest.supports_cuda(HELP.replace("--use_cuda", "--use_xx"))


def _runner(client_out: str, rc: int = 0) -> ReplayRunner:
    runner = ReplayRunner()
    runner.add(perftest.argv("/x/ib_write_bw", "mlx5_0", 1, 0, perftest.BASE_PORT, 3), 0, "")
    runner.add(perftest.argv("/x/ib_write_bw", "mlx5_0", 1, 0, perftest.BASE_PORT, 3, "localhost"), rc, client_out)
    return runner


def test_run_gdr_reports_gb_per_second_and_a_failed_client_is_an_error():
    m = perftest.run_gdr(_runner(CUDA_OUT), "/x/ib_write_bw", "mlx5_0", 1, 0, 0, 3, start_delay=0)
    assert (m.name, m.status, m.value, m.unit, m.gpu) == ("rdma.gdr_write_bw", "PASS", 49.006, "GB/s", 0)
    assert m.conditions["device"] == "mlx5_0/1" and m.detail["gbits"] == 392.05
    m = perftest.run_gdr(_runner(REFUSED, rc=1), "/x/ib_write_bw", "mlx5_0", 1, 0, 0, 3, start_delay=0)
    assert m.status == "ERROR" and m.value is None and "no figure (exit 1" in m.message
    m = perftest.run_gdr(_runner(CUDA_OUT, rc=1), "/x/ib_write_bw", "mlx5_0", 1, 0, 0, 3, start_delay=0)
    assert m.status == "ERROR"  # a table followed by a failure exit is no figure to trust


def _binary(tmp_path):
    b = tmp_path / "ib_write_bw"
    b.write_text("#!/bin/sh\n")
    b.chmod(0o755)
    return str(b)


def test_steps_skip_with_why(tmp_path):
    [(_, call)] = perftest.steps(ReplayRunner(), [PORT], [0], path_env=str(tmp_path))
    [m] = call()
    assert m.status == "SKIP" and "not installed" in m.message
    binary = _binary(tmp_path)
    [(_, call)] = perftest.steps(ReplayRunner(), [DOWN], [0], path_env=str(tmp_path))
    assert call()[0].message == "no active RDMA port"
    runner = ReplayRunner()
    runner.add([binary, "--help"], 0, HELP.replace("--use_cuda", "--use_rocm"))
    [(_, call)] = perftest.steps(runner, [PORT], [0], path_env=str(tmp_path))
    assert call()[0].status == "SKIP" and "built without CUDA" in call()[0].message


def test_steps_one_per_active_port(tmp_path):
    binary = _binary(tmp_path)
    runner = ReplayRunner()
    runner.add([binary, "--help"], 0, HELP)
    found = perftest.steps(runner, [PORT, DOWN], [2, 3], path_env=str(tmp_path))
    assert [label for label, _ in found] == ["GPUDirect RDMA mlx5_0/1"]
