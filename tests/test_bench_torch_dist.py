"""torch.distributed all-reduce: the busbw formula, the launcher's result line (real H100 output)."""

import json

import pytest

from gpunode.bench import torch_dist
from gpunode.host.runner import ReplayRunner
from testkit import FIXTURES

REAL = (FIXTURES / "torch_dist" / "launcher_1gpu.h100.txt").read_text()
ARGV = torch_dist.launcher_argv("/usr/bin/python3", [0, 1], [1 << 20, 64 << 20], 10, 3)


def test_busbw_is_the_nccl_tests_formula():
    assert torch_dist.busbw(100.0, 8) == pytest.approx(175.0)
    assert torch_dist.busbw(100.0, 2) == pytest.approx(100.0)
    assert torch_dist.busbw(100.0, 1) == 0.0
    assert torch_dist.algbw(1 << 30, 0.01) == pytest.approx(107.374, rel=1e-4)


def test_parse_real_launcher_output():
    data = torch_dist.parse_output(REAL)
    assert data["world_size"] == 1 and data["nccl"] == "2.28.9"
    assert [r["bytes"] for r in data["sizes"]] == [1048576, 67108864] and all(r["correct"] for r in data["sizes"])


def test_parse_cut_or_missing_result_raises():
    with pytest.raises(ValueError, match="not valid JSON"):
        torch_dist.parse_output(REAL[:120])
    with pytest.raises(ValueError, match="no all-reduce result line"):
        torch_dist.parse_output("Traceback (most recent call last):\n  ...\nRuntimeError: NCCL error\n")


def two_gpu_result(correct=True) -> str:
    rows = [{"bytes": 1 << 20, "time_us": 20.0, "algbw": 52.4, "busbw": 52.4, "correct": True},
            {"bytes": 64 << 20, "time_us": 200.0, "algbw": 335.5, "busbw": 335.5, "correct": correct}]
    return torch_dist.RESULT_PREFIX + json.dumps({"world_size": 2, "sizes": rows, "env": {"NCCL_NVLS_ENABLE": "0"}}) + "\n"


def test_run_two_gpus_reports_largest_size():
    runner = ReplayRunner()
    runner.add(ARGV, 0, two_gpu_result())
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3")
    assert (m.name, m.status, m.value, m.unit) == ("torch.all_reduce.busbw", "PASS", 335.5, "GB/s")
    assert m.conditions["ngpus"] == 2 and m.conditions["largest_bytes"] == 64 << 20
    assert m.conditions["algo env"] == {"NCCL_NVLS_ENABLE": "0"}


def test_wrong_sum_fails():
    runner = ReplayRunner()
    runner.add(ARGV, 0, two_gpu_result(correct=False))
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3")
    assert m.status == "FAIL" and "wrong sum" in m.message


def test_crash_timeout_and_one_gpu():
    runner = ReplayRunner()
    runner.add(ARGV, 1, "", "torch.distributed.DistBackendError: NCCL error in: ...\n")
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3")
    assert m.status == "ERROR" and "DistBackendError" in m.message
    runner.add(ARGV, -9, "", "", timed_out=True)
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3")
    assert m.status == "ERROR" and "timed out" in m.message
    one = torch_dist.run(ReplayRunner(), [0], [1 << 20], 10, 3, 60, {})
    assert one.status == "SKIP" and "2+ GPUs" in one.message


def test_launcher_argv():
    assert ARGV == ["/usr/bin/python3", "-m", "gpunode.bench.torch_dist", "--devices", "0,1",
                    "--sizes", f"{1 << 20},{64 << 20}", "--iters", "10", "--warmup", "3"]


def test_nccl_info_lines_judged_shm_beside_nvlink_fails():
    # Real NCCL INFO lines (NVIDIA/nccl#1232, tests/fixtures/nccl/info/README.md) printed by the workers.
    from gpunode.bench.nccl_log import Fabric

    log = (FIXTURES / "nccl" / "info" / "socket_2node.nccl1232.log").read_text()
    shm = "\n".join(line for line in log.splitlines() if "SHM" in line) + "\n"
    runner = ReplayRunner()
    runner.add(ARGV, 0, shm + two_gpu_result())
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3",
                       fabric=Fabric(nvlink=True))
    assert m.status == "FAIL" and "fell back to host shared memory" in m.message and m.value == 335.5
    assert m.detail["nccl_transport"]["transports"] == {"SHM/direct/direct": 2}
    m = torch_dist.run(runner, [0, 1], [1 << 20, 64 << 20], 10, 3, 60, {}, python="/usr/bin/python3")
    assert m.status == "PASS"
