"""Bench orchestration and `gpunode bench` CLI: steps, GPU mapping, document, exit codes, bad input."""

import json
import os
import shutil
import sys

import pytest
import typer
from bench_fakes import FakeBackend
from test_bench_nccl import fake_binary
from typer.testing import CliRunner

import testkit
from gpunode.bench import run as bench_run
from gpunode.bench.backend import Device
from gpunode.bench.results import SCHEMA, BenchDocument, Metric
from gpunode.cli import app
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.runner import Runner
from testkit import FIXTURES, tree_host

H100_INV = GpuInventory.from_json(json.loads((FIXTURES / "nvml" / "h100-sxm-1gpu.json").read_text()))
cli = CliRunner()


def host_with_h100(tmp_path, cpulist="0-15", runner=None):
    files = {"/sys/bus/pci/devices/0000:00:06.0/local_cpulist": f"{cpulist}\n",
             "/sys/bus/pci/devices/0000:00:06.0/numa_node": "-1\n"}
    host = tree_host(tmp_path, files=files, inventory=H100_INV)
    if runner is not None:
        host.runner = runner
    return host


def opts(**kw):
    base = {"mode": "quick", "environ": {"PATH": ""}}
    return bench_run.BenchOptions(**{**base, **kw})


def fake_find(backend):
    return lambda prefer: (backend, "")


def test_steps_for_one_gpu_and_document(tmp_path):
    fb = FakeBackend(per_op_s=0.0014)
    host = host_with_h100(tmp_path)
    plan = bench_run.prepare(host, opts(only=("gemm", "hbm", "h2d", "p2p")), find=fake_find(fb))
    labels = [s.label for s in plan.steps]
    assert labels == ["GPU0 GEMM bf16", "GPU0 GEMM fp16", "GPU0 GEMM tf32", "GPU0 GEMM fp8", "GPU0 HBM copy",
                      "GPU0 HBM read", "GPU0 h2d pinned", "GPU0 d2h pinned", "GPU0 h2d pageable", "GPU0 d2h pageable",
                      "GEMM on all GPUs at once", "P2P"]
    seen = []
    doc = bench_run.execute(plan, lambda i, step: seen.append(i))
    assert seen == list(range(len(labels)))
    data = doc.to_json()
    assert data["schema"] == SCHEMA and data["mode"] == "quick" and data["host"] == "testhost"
    assert data["gpus"]["devices"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3",
                                        "uuid": "GPU-506c8860-ac90-3cd7-bce4-bf8eac1bf021",
                                        "pci_bus_id": "00000000:00:06.0", "pci_device": "0x2330"}]
    assert data["tools"] == {"fake": "1.0"}
    by = {m.name: m for m in doc.metrics}
    assert by["gemm.bf16"].gpu == 0 and by["gemm.bf16"].status == "PASS"
    assert by["h2d.pinned"].conditions["binding"].startswith(("bound to", "not bound"))
    assert by["p2p"].status == "SKIP" and by["gemm.bf16.concurrent"].status == "SKIP"
    assert doc.status == "OK" and doc.exit_code == 0
    assert BenchDocument.from_json(json.loads(json.dumps(data))).to_json() == data


def test_gpus_are_named_by_nvml_index_matched_on_pci_address(tmp_path):
    # CUDA ordinal 0 is a GPU NVML does not know; ordinal 1 is NVML's GPU 0 (00000000:00:06.0).
    stranger = Device(0, "other", "0000:99:00.0", (9, 0), 1)
    h100 = Device(1, "NVIDIA H100 80GB HBM3", "0000:00:06.0", (9, 0), 80 << 30)
    host = host_with_h100(tmp_path)
    tgts = bench_run.targets(host, FakeBackend(devices=(stranger, h100)), H100_INV, None)
    assert [(t.gpu, t.device.index) for t in tgts] == [(0, 1)]
    assert tgts[0].locality.cpus == list(range(16))


def test_unknown_gpu_index_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no GPU 3"):
        bench_run.prepare(host_with_h100(tmp_path), opts(gpus=[0, 3]), find=fake_find(FakeBackend()))


def test_bad_options():
    with pytest.raises(ValueError, match="unknown benchmark"):
        opts(only=("gemm", "nvbandwidth"))
    with pytest.raises(ValueError, match="broadcast"):
        opts(nccl_tests=("broadcast",))


def test_no_backend_is_one_error_and_unknown_even_beside_a_pass(tmp_path):
    plan = bench_run.prepare(host_with_h100(tmp_path), opts(only=("gemm", "h2d")),
                             find=lambda p: (None, "no torch here"))
    doc = bench_run.execute(plan)
    (m,) = doc.metrics
    assert m.name == "gpu.backend" and m.status == "ERROR"
    assert m.message == "no GPU measured (gemm, h2d): no GPU backend (torch or cupy) found: no torch here"
    assert doc.status == "UNKNOWN" and doc.exit_code == 3  # nothing was measured
    doc.metrics.append(Metric("fio.seq_read", None, 1.0, "GB/s", "PASS"))  # fio measured, the GPUs not
    assert doc.status == "UNKNOWN" and doc.exit_code == 3


def test_no_gpu_visible_to_the_backend_is_unknown(tmp_path):
    plan = bench_run.prepare(host_with_h100(tmp_path), opts(only=("hbm",)), find=fake_find(FakeBackend(devices=[])))
    doc = bench_run.execute(plan)
    assert [(m.name, m.status) for m in doc.metrics] == [("gpu.backend", "ERROR")]
    assert "no GPU selected or visible" in doc.metrics[0].message and doc.exit_code == 3


def test_nccl_step_runs_the_binary_through_the_hosts_runner(tmp_path):
    (tmp_path / "nt").mkdir()
    _, data = fake_binary(tmp_path / "nt")
    host = host_with_h100(tmp_path / "root", runner=Runner())
    o = opts(only=("nccl",), nccl_tests_dir=str(tmp_path / "nt"), gpus=[0],
             environ={"PATH": os.environ["PATH"], "NCCL_ALGO": "Ring"})
    doc = bench_run.execute(bench_run.prepare(host, o))
    (m,) = doc.metrics
    assert m.name == "nccl.all_reduce.busbw" and m.status == "SKIP" and "0 by definition" in m.message
    assert doc.tools["nccl-tests"] == "2.19.6" and doc.tools["nccl"] == "2.28.9"
    args = (data / "argv").read_text().split()
    assert args[args.index("-e") + 1] == str(256 << 20) and args[args.index("-g") + 1] == "1"


def test_nccl_not_installed_skips_with_hint(tmp_path):
    doc = bench_run.execute(bench_run.prepare(host_with_h100(tmp_path), opts(only=("nccl",), mode="full")))
    assert [m.name for m in doc.metrics] == [f"nccl.{t}.busbw" for t in
                                             ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")]
    assert all(m.status == "SKIP" and "nccl-tests" in m.message for m in doc.metrics)


def test_run_steps_wrapper(tmp_path):
    doc = bench_run.run_steps(host_with_h100(tmp_path), opts(only=("hbm",)), find=fake_find(FakeBackend()))
    assert [m.name for m in doc.metrics] == ["hbm.d2d", "hbm.read"] and doc.metrics[0].status == "PASS"


# ---- the CLI, live on this machine (no GPU here) ---------------------------------------------


def test_cli_fio_only_real_run_writes_json(tmp_path):
    testkit.require(shutil.which("fio") is not None, "fio is not installed (apt-get install fio)")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "bench.json"
    result = cli.invoke(app, ["bench", "--quick", "--only", "fio", "--fio-dir", str(scratch), "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == SCHEMA and doc["exit_code"] == 0 and doc["tools"]["fio"]
    assert sorted(m["name"] for m in doc["metrics"]) == ["fio.rand_read.iops", "fio.rand_read.p99_us",
                                                         "fio.seq_read", "fio.seq_write"]
    assert "fio.seq_read" in result.stdout and "OK (exit 0)" in result.stdout
    assert list(scratch.iterdir()) == []  # scratch file removed


def test_cli_without_gpu_backend_is_unknown_though_fio_passed(tmp_path, monkeypatch):
    """Neither torch nor cupy importable: fio's figures do not make a GPU node OK."""
    testkit.require(shutil.which("fio") is not None, "fio is not installed (apt-get install fio)")
    for module in ("torch", "cupy"):
        monkeypatch.setitem(sys.modules, module, None)  # `import torch` raises ImportError
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = cli.invoke(app, ["bench", "--quick", "--only", "hbm,fio", "--fio-dir", str(scratch), "--json", "-",
                              "--no-history"])
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    statuses = {m["name"]: m["status"] for m in doc["metrics"]}
    assert statuses["gpu.backend"] == "ERROR" and statuses["fio.seq_read"] == "PASS" and doc["status"] == "UNKNOWN"
    assert "no GPU backend (torch or cupy) found" in doc["metrics"][0]["message"]


def test_cli_json_to_stdout_nothing_measured_exit_3():
    result = cli.invoke(app, ["bench", "--quick", "--only", "nccl", "--json", "-"])
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["status"] == "UNKNOWN" and doc["metrics"][0]["status"] == "SKIP"


@pytest.mark.parametrize("args,message", [
    (["--only", "gemm,warp"], "unknown benchmark(s) warp"),
    (["--gpus", "zero"], "--gpus 'zero'"),
    (["--quick", "--full"], "give --quick or --full"),
    (["--backend", "jax"], "choose auto, torch or cupy"),
    (["--fio-dir", "/nonexistent/dir"], "not a directory"),
    (["--fio-destructive", "/dev/null"], "not a block device or a regular file"),
    (["--hosts", "n1,n2"], "--hosts needs --nccl-launcher"),
    (["--nccl-launcher", "pdsh"], "choose mpirun or srun"),
    (["--only", "gemm", "--fio-dir", "/tmp"], "need fio among --only"),
])
def test_cli_bad_input_is_one_line_exit_2(args, message):
    result = cli.invoke(app, ["bench", *args])
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("gpunode: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_refuses_mounted_root_device_before_running_anything():
    from test_bench_fio import root_block_device

    dev = root_block_device()
    testkit.require(dev is not None, "the root filesystem is not on a block device visible in /dev")
    result = cli.invoke(app, ["bench", "--only", "fio", "--fio-destructive", dev])
    assert result.exit_code == 3 and "mounted" in result.stderr and result.stdout == ""


def test_compare_hook_on_the_recorded_h100_result(tmp_path):
    """--compare hands the document to gpunode.baselines (another area): it must print verdicts."""
    pytest.importorskip("gpunode.baselines.compare")
    from gpunode.baselines.select import Catalogue
    from gpunode.cli.bench_cmd import _compare
    from gpunode.cli.common import stdout_console

    data = json.loads((FIXTURES / "bench" / "h100-quick.json").read_text())
    console = stdout_console()
    with console.capture() as cap:
        code = _compare(BenchDocument.from_json(data), (Catalogue(), None), console)
    assert code == 0 and "gemm.bf16" in cap.get() and "h100-sxm5-80gb-1gpu" in cap.get()


@pytest.mark.parametrize("args,message", [
    (["--baseline", "/nonexistent/b.yaml"], "baseline file not found"),
    (["--baseline", "h300-sxm"], "no baseline named 'h300-sxm'"),
    (["--baselines", "/nonexistent/dir"], "baselines directory not found"),
    (["--compare", "--baselines", "BROKEN_DIR"], "metrics.gemm.bf16: missing unit"),
])
def test_cli_bad_baseline_is_refused_before_the_bench_runs(args, message, tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nmatch: {gpu_count: 1}\nmetrics: {gemm.bf16: {value: 1}}\n")
    args = [str(tmp_path) if a == "BROKEN_DIR" else a for a in args]
    result = cli.invoke(app, ["bench", "--quick", "--only", "nccl", *args])
    assert result.exit_code == 3, result.output
    assert result.stderr == f"gpunode: error: {result.stderr.removeprefix('gpunode: error: ')}"
    assert message in result.stderr and result.stderr.count("\n") == 1  # no progress line: nothing ran
    assert result.stdout == ""


def test_bench_compare_exit_code_agrees_with_compare_when_no_baseline_fits(tmp_path):
    """No baseline for this hardware (here: no GPU at all) is UNKNOWN (3) for both commands."""
    pytest.importorskip("gpunode.baselines.compare")
    from gpunode.baselines.select import Catalogue
    from gpunode.cli.bench_cmd import _compare
    from gpunode.cli.common import stdout_console

    data = json.loads((FIXTURES / "bench" / "h100-quick.json").read_text())
    data["gpus"] = {"available": False, "error": "no NVIDIA driver", "count": 0, "devices": []}
    saved = tmp_path / "nogpu.json"
    saved.write_text(json.dumps(data))
    offline = cli.invoke(app, ["compare", str(saved), "--baselines", str(tmp_path)])
    with pytest.raises(typer.Exit) as bench_exit:
        _compare(BenchDocument.from_json(data), (Catalogue([tmp_path]), None), stdout_console())
    assert offline.exit_code == bench_exit.value.exit_code == 3, offline.output
