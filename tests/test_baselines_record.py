"""`gpunode baseline record`: medians and observed spread -> a baseline that loads, matches this
host, passes the runs it came from and flags a degraded one; and the shipped files install."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest
from baseline_fixtures import bench_doc, gemm, h100_gpus, h100_metrics, host_copy, metric, nccl
from typer.testing import CliRunner

from gpunode.baselines.compare import judge
from gpunode.baselines.record import build_baseline, margins, pinned_conditions, to_yaml
from gpunode.baselines.schema import BaselineError, load_baseline
from gpunode.baselines.select import Catalogue, Selection
from gpunode.bench.results import BenchDocument
from gpunode.cli import app
from testkit import FIXTURES


def runs(*scales: float, count: int = 1) -> list[dict]:
    gpus = h100_gpus(count)
    return [bench_doc(gpus, [m for g in range(count) for m in h100_metrics(s, gpu=g)]) for s in scales]


def test_margins_from_the_observed_spread():
    assert margins([100, 100, 100], "higher", 0.001, "gemm.bf16") == (0.95, 0.9)  # floors
    assert margins([100, 96, 100], "higher", None, "gemm.bf16") == (0.92, 0.84)  # 4 % drop seen
    assert margins([100, 70, 100], "higher", None, "gemm.bf16") == (0.5, 0.2)  # capped
    assert margins([100, 104, 100], "lower", None, "fio.rand_read.p99_us") == (0.9, 0.75)  # fio floors
    assert margins([100], "higher", 0.04, "hbm.d2d") == (0.92, 0.84)  # one figure: its repeats' CoV
    assert margins([100, 99], "higher", 0.085, "gemm.fp8") == (0.83, 0.66)  # noisy repeats widen it
    warn, fail = margins([55.3, 55.0, 55.5], "higher", None, "h2d.pinned")
    assert 55.0 / 55.3 >= warn and 0 < fail <= warn


def test_build_baseline_takes_medians_and_matches_exactly_this_hardware():
    mapping, notes = build_baseline(runs(1.0, 0.98, 1.01), "node42")
    assert notes == []
    assert mapping["match"] == {"gpu_name": "NVIDIA H100 80GB HBM3", "pci_device": ["0x2330"], "gpu_count": 1}
    bf16 = mapping["metrics"]["gemm.bf16"]
    assert bf16["value"] == 710.0 and bf16["basis"] == "recorded"
    assert bf16["conditions"] == {"data": "randn", "dtype": "bf16", "k": 8192,
                                  "layout": "row-major A and B, out= preallocated", "m": 8192, "n": 8192}
    assert "median of 3 figures (3 run(s) x 1 GPU(s))" in bf16["source"] and "695.8..717.1" in bf16["source"]
    assert mapping["recorded"]["runs"] == 3 and mapping["recorded"]["host"] == "testhost"
    assert "h2d.pageable" in mapping["metrics"]  # a host's own baseline keeps its information metrics too


def test_recorded_baseline_round_trips_passes_its_runs_and_flags_a_slow_one(tmp_path):
    docs = runs(1.0, 0.99, 1.0, count=2)
    mapping, _ = build_baseline(docs, "node42")
    path = tmp_path / "node42.yaml"
    path.write_text(to_yaml(mapping))
    baseline = load_baseline(path)
    assert Catalogue([tmp_path], include_shipped=False).select(h100_gpus(2)).baseline.name == "node42"
    for doc in docs:
        v = judge(BenchDocument.from_json(doc), Selection(baseline, "file", "test"))
        assert v.status == "OK", [(r.metric, r.ratio) for r in v.rows if r.status != "PASS"]
    slow = runs(0.85, count=2)[0]
    v = judge(BenchDocument.from_json(slow), Selection(baseline, "file", "test"))
    assert v.status == "FAIL"  # 15 % down is past the 10 % fail floor


def test_failed_and_skipped_metrics_are_left_out_with_a_note():
    doc = bench_doc(h100_gpus(), [gemm("bf16", 796.0), metric("gemm.fp8", None, "TFLOP/s", status="skip",
                                                               message="no fp8 here"),
                                  nccl("all_reduce", None, 1, 1 << 30, status="error", message="hung")])
    mapping, notes = build_baseline([doc], "x")
    assert list(mapping["metrics"]) == ["gemm.bf16"]
    assert any("gemm.fp8 GPU0: SKIP (no fp8 here)" in n for n in notes)
    assert any("nccl.all_reduce.busbw: ERROR (hung)" in n for n in notes)


def test_nothing_measured_or_no_runs_is_an_error():
    with pytest.raises(BaselineError, match="nothing to record"):
        build_baseline([bench_doc(h100_gpus(), [metric("gemm.bf16", None, "TFLOP/s", status="error", message="x")])], "x")
    with pytest.raises(BaselineError, match="no bench runs"):
        build_baseline([], "x")


def test_pinned_conditions_keep_what_defines_the_test():
    a = nccl("all_reduce", 400.0, 8, 1 << 32)["conditions"]
    b = nccl("all_reduce", 401.0, 8, 1 << 32, algo={"NCCL_ALGO": "Ring"})["conditions"]
    assert pinned_conditions([a]) == {"algo env.NCCL_ALGO": None, "dtype": "float", "largest_bytes": 1 << 32,
                                      "ngpus": 8, "nprocs": 1, "op": "sum", "test": "all_reduce"}
    assert "algo env.NCCL_ALGO" not in pinned_conditions([a, b])  # differs between runs: not pinned
    h2d = host_copy("h2d.pinned", 50.0)["conditions"]
    assert pinned_conditions([h2d]) == {"bytes": 1 << 30, "counting": "bytes transferred once", "host_memory": "pinned"}


def test_cli_record_from_saved_results(tmp_path):
    files = []
    for i, doc in enumerate(runs(1.0, 0.99)):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(doc))
    out_file = tmp_path / "site" / "node42.yaml"
    out_file.parent.mkdir()
    args = ["baseline", "record", "--name", "node42", "-o", str(out_file)] + [a for f in files for a in ("--from", str(f))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "baseline node42 written" in result.stderr
    assert load_baseline(out_file).recorded["runs"] == 2
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 3 and "exists; choose another path or pass --force" in again.stderr
    compare = CliRunner().invoke(app, ["compare", str(files[0]), "--baselines", str(out_file.parent)])
    assert compare.exit_code == 0, compare.output
    assert "baseline node42" in compare.stdout


def test_cli_record_rejects_bad_names_and_inputs(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps(runs(1.0)[0]))
    result = CliRunner().invoke(app, ["baseline", "record", "--name", "bad name!", "--from", str(good)])
    assert result.exit_code == 3 and "--name 'bad name!': use letters" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "gpunode.bench/1", "mode": "slow", "metrics": []}))
    result = CliRunner().invoke(app, ["baseline", "record", "--name", "x", "--from", str(bad)])
    assert result.exit_code == 3 and "mode 'slow'" in result.stderr


def test_cli_list_and_show():
    runner = CliRunner()
    listed = runner.invoke(app, ["baseline", "list"])
    assert listed.exit_code == 0 and "h200-141gb-8gpu" in listed.stdout and "shipped" in listed.stdout
    shown = runner.invoke(app, ["baseline", "show", "a100-sxm4-80gb-8gpu"])
    assert shown.exit_code == 0 and "nccl.all_reduce.busbw" in shown.stdout and "derived" in shown.stdout
    missing = runner.invoke(app, ["baseline", "show", "nope"])
    assert missing.exit_code == 3 and "no baseline named 'nope'" in missing.stderr


def test_pip_install_of_the_wheel_carries_the_shipped_baselines(tmp_path):
    """A non-editable install finds the YAML files: baselines/ is the package gpunode.shipped_baselines.
    Built from a copy of the sources, so no build/ directory is left in the checkout."""
    root = FIXTURES.parent.parent
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("agent", "checks", "baselines", "playbooks"):
        shutil.copytree(root / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        if (root / name).exists():
            shutil.copy(root / name, src / name)
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(src)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("gpunode-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("gpunode/shipped_baselines/") and n.endswith(".yaml"))
    in_repo = sorted(f"gpunode/shipped_baselines/{p.name}" for p in (root / "baselines").glob("*.yaml"))
    assert shipped == in_repo and len(shipped) >= 6
    assert "gpunode/baselines/compare.py" in names and "gpunode/audit/golden.py" in names and "gpunode/checks/gpu.py" in names
    # the whole tree of playbooks too, so `gpunode fleet` works from a wheel-installed controller
    playbooks = sorted(n.removeprefix("gpunode/shipped_playbooks/") for n in names
                       if n.startswith("gpunode/shipped_playbooks/") and not n.endswith(".py"))
    in_repo_pb = sorted(str(p.relative_to(root / "playbooks")) for p in (root / "playbooks").rglob("*")
                        if p.is_file() and p.suffix in (".yml", ".cfg"))
    assert playbooks == in_repo_pb and "audit.yml" in playbooks and "tasks/report.yml" in playbooks
    assert {"gpunode/tune/shipped_profiles/training.yaml", "gpunode/tune/shipped_profiles/inference.yaml"} <= set(names)


def test_record_from_the_real_h100_recordings_and_compare_them(tmp_path):
    """The two runs recorded on the lent H100 (quick and full) make a baseline that both PASS."""
    paths = [FIXTURES / "bench" / "h100-quick.json", FIXTURES / "bench" / "h100-full.json"]
    if not all(p.exists() for p in paths):
        pytest.skip("bench recordings not present")
    docs = [json.loads(p.read_text()) for p in paths]
    mapping, notes = build_baseline(docs, "lent-h100")
    assert mapping["match"] == {"gpu_name": "NVIDIA H100 80GB HBM3", "pci_device": ["0x2330"], "gpu_count": 1}
    assert {"gemm.bf16", "hbm.d2d", "h2d.pinned"} <= set(mapping["metrics"])
    assert any(n.startswith("nccl.all_reduce.busbw: SKIP") for n in notes)  # 1 GPU: no bus bandwidth
    (tmp_path / "lent-h100.yaml").write_text(to_yaml(mapping))
    baseline = load_baseline(tmp_path / "lent-h100.yaml")
    for doc in docs:
        v = judge(BenchDocument.from_json(doc), Selection(baseline, "file", "test"))
        assert v.status == "OK", [(r.metric, r.ratio, r.warn, r.message) for r in v.rows if r.status not in ("PASS", "SKIP")]


def test_information_only_metrics_are_not_recorded_so_a_later_run_does_not_warn_on_them(tmp_path):
    """Pageable copies are information (the shipped baselines have no figure for them): a host's own
    baseline must not judge them either; the later alone run on the same H100 then PASSes."""
    docs = [json.loads((FIXTURES / "bench" / f"h100-{m}.json").read_text()) for m in ("quick", "full")]
    mapping, notes = build_baseline(docs, "lent-h100")
    assert not {"h2d.pageable", "d2h.pageable"} & set(mapping["metrics"])
    assert "h2d.pageable: information: pageable copies are staged by the driver, not recorded" in notes
    assert sum(n.startswith("h2d.pageable:") for n in notes) == 1
    (tmp_path / "lent-h100.yaml").write_text(to_yaml(mapping))
    later = json.loads((FIXTURES / "bench" / "h100-quick-compare-alone.json").read_text())
    v = judge(BenchDocument.from_json(later), Selection(load_baseline(tmp_path / "lent-h100.yaml"), "file", "test"))
    assert v.status == "OK", [(r.metric, r.ratio, r.warn, r.message) for r in v.rows if r.status not in ("PASS", "SKIP")]
