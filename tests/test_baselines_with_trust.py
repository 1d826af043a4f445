"""The trust pass of a verdict (baselines.compare.with_trust), the branches the compare tests leave
open: the peak share of a lower-is-better figure, and a figure both untrusted and unstable."""

from __future__ import annotations

from baseline_fixtures import bench_doc, gemm, h100_gpus, metric, write_yaml
from test_baselines_compare import TRUST_BASELINE

from gpunode.baselines.compare import judge
from gpunode.baselines.schema import load_baseline
from gpunode.baselines.select import Selection
from gpunode.bench.results import BenchDocument

BASELINE = TRUST_BASELINE + """\
  fio.rand_read.p99_us:
    value: 100
    unit: us
    source: test
    peak: {value: 50, source: a made-up floor}
"""


def only_row(tmp_path, m):
    baseline = load_baseline(write_yaml(tmp_path / "trust.yaml", BASELINE))
    bench = BenchDocument.from_json(bench_doc(h100_gpus(), [m]))
    (row,) = [r for r in judge(bench, Selection(baseline, "file", "test")).rows if r.metric == m["name"]]
    return row


def test_a_lower_is_better_figure_has_no_share_of_a_peak(tmp_path):
    assert only_row(tmp_path, metric("fio.rand_read.p99_us", 100.0, "us", None)).peak_ratio is None
    assert only_row(tmp_path, gemm("bf16", 791.6)).peak_ratio == 0.8


def test_an_untrusted_and_unstable_figure_names_both_untrusted_first(tmp_path):
    foreign = {"foreign_processes": [{"pid": 4242, "name": "python", "used_bytes": 2 << 30}]}
    row = only_row(tmp_path, gemm("bf16", 796.0, cov=0.10) | {"telemetry": foreign})
    assert row.status == "WARN"
    assert row.message == ("not trustworthy: foreign process on the GPU: pid 4242 (python, 2.0 GiB); "
                           "unstable: CoV 10.0% above the 5.0% bound; 100.0% of expected; within 90%/80%")
