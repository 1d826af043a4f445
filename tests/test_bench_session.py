"""bench.session, the use case behind `gpunode bench`, called without typer (issue 21 item 2):
bad input is an exits.UsageError carrying exit 3, a request becomes a run and a document."""

import json
import subprocess
import sys

import pytest
from bench_fakes import FakeBackend

from gpunode.bench import session
from gpunode.exits import USAGE_EXIT, GpunodeError, UsageError
from gpunode.host.gpu.model import GpuInventory
from testkit import FIXTURES, tree_host


def host_with_h100(tmp_path):
    inventory = GpuInventory.from_json(json.loads((FIXTURES / "nvml" / "h100-sxm-1gpu.json").read_text()))
    files = {"/sys/bus/pci/devices/0000:00:06.0/local_cpulist": "0-15\n",
             "/sys/bus/pci/devices/0000:00:06.0/numa_node": "-1\n"}
    return tree_host(tmp_path, files=files, inventory=inventory)


def fake_find(backend):
    return lambda prefer: (backend, "")


@pytest.mark.parametrize("fields,message", [
    ({"only": ("gemm", "warp")}, "unknown benchmark(s) warp"),
    ({"gpus": "zero"}, "--gpus 'zero'"),
    ({"gpus": "0,-1"}, "give GPU indices"),
    ({"quick": True, "full": True}, "give --quick or --full"),
    ({"backend": "jax"}, "choose auto, torch or cupy"),
    ({"nccl_tests": ("broadcast",)}, "broadcast"),
    ({"fio_dir": "/nonexistent/dir"}, "not a directory"),
    ({"hosts": ("n1", "n2")}, "--hosts needs --nccl-launcher"),
    ({"nccl_launcher": "pdsh"}, "choose mpirun or srun"),
    ({"only": ("gemm",), "fio_dir": "/tmp"}, "need fio among --only"),
    ({"fio_dir": "/tmp", "fio_destructive": "/dev/null"}, "not both"),
    ({"history_warn": 1.5}, "--history-warn"),
    ({"history_runs": 0}, "--history-runs"),
])
def test_bad_request_is_a_usage_error_with_exit_3(fields, message):
    from pathlib import Path

    fields = {k: Path(v) if k.startswith("fio_") else v for k, v in fields.items()}
    with pytest.raises(UsageError) as caught:
        session.options(session.BenchRequest(**fields))
    assert message in str(caught.value)
    assert isinstance(caught.value, GpunodeError) and caught.value.exit_code == USAGE_EXIT == 3


def test_good_request_gives_the_options():
    opts = session.options(session.BenchRequest(quick=True, only=("hbm",), gpus="1, 0,1"))
    assert opts.mode == "quick" and opts.only == ("hbm",) and opts.gpus == [0, 1]
    assert session.options(session.BenchRequest()).mode == "full"  # the default, as the CLI says


def test_plan_and_run_take_the_steps_into_one_document(tmp_path):
    req = session.BenchRequest(quick=True, only=("hbm",))
    opts = session.options(req)
    opts.environ = {"PATH": ""}
    planned = session.plan(host_with_h100(tmp_path), req, opts, find=fake_find(FakeBackend()))
    seen = []

    def progress(run, take):
        return take(run, lambda i, step: seen.append(step.label))

    doc = session.run(planned, progress, sampler_factory=lambda: None)
    assert seen == ["GPU0 HBM copy", "GPU0 HBM read"] and [m.name for m in doc.metrics] == ["hbm.d2d", "hbm.read"]
    assert doc.exit_code == 0


def test_a_missing_gpu_is_a_usage_error(tmp_path):
    req = session.BenchRequest(quick=True, only=("hbm",), gpus="3")
    with pytest.raises(UsageError, match="no GPU 3"):
        session.plan(host_with_h100(tmp_path), req, session.options(req), find=fake_find(FakeBackend()))


def test_the_use_case_does_not_import_typer():
    code = "import sys; from gpunode.bench import session; print(sorted(m for m in sys.modules if m in ('typer', 'click', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

