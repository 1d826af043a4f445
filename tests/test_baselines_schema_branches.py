"""Baseline validation messages and hardware matching that the schema tests leave open: each bad
field gives its own one-line message naming the file and field, and a GPU that is not the
baseline's hardware is named with what differs."""

from __future__ import annotations

import pytest
from baseline_fixtures import write_yaml

from gpunode.baselines.schema import BaselineError, Match, load_baseline

GOOD = """\
name: site-h100
defaults: {warn: 0.9, fail: 0.8}
metrics:
  gemm.bf16:
    value: 796
    unit: TFLOP/s
    conditions: {dtype: bf16, k: 8192}
    source: measured here
"""

CASES = [
    (("k: 8192}", "k: {min: x}}"), "metrics.gemm.bf16.conditions.k: range bounds must be numbers (got 'x')"),
    (("k: 8192}", "k: {min: 9, max: 8}}"), "metrics.gemm.bf16.conditions.k: min is above max"),
    (("k: 8192}", "k: {}}"), "metrics.gemm.bf16.conditions.k: a range needs min and/or max"),
    (("k: 8192}", "k: []}"), "metrics.gemm.bf16.conditions.k: a list of allowed values must hold plain values"),
    (("k: 8192}", "k: [[1]]}"), "metrics.gemm.bf16.conditions.k: a list of allowed values must hold plain values"),
    (("conditions: {dtype: bf16, k: 8192}", "conditions: [1]"),
     "metrics.gemm.bf16.conditions: must be a mapping of condition to value"),
    (("    source: measured here\n", "    source: measured here\n    remove: 1\n"),
     "metrics.gemm.bf16.remove: must be true or false"),
    (("    source: measured here\n", "    source: measured here\n    metric: 5\n"),
     "metrics.gemm.bf16.metric: must be a metric name"),
    (("  gemm.bf16:\n    value: 796\n", "  gemm.bf16: 796\n  gemm.x:\n    value: 796\n"),
     "metrics.gemm.bf16: must be a mapping (value, unit, conditions, source ...)"),
    (("{warn: 0.9, fail: 0.8}", "[0.9]"), "defaults: must be a mapping with warn, fail"),
    (("{warn: 0.9, fail: 0.8}", "{warn: 0.9, fail: 0.8, untrusted: never}"),
     "defaults.untrusted: 'never' not in ('warn', 'fail')"),
    (("{warn: 0.9, fail: 0.8}", "{warn: 0.9, fail: 0.8, max_cov: 2}"), "defaults.max_cov: 2 is above 1"),
    (("    source: measured here\n", "    source: measured here\n    warn: 0.7\n    fail: 0.8\n"),
     "metrics.gemm.bf16: warn (0.7) is below fail (0.8); warn must be >= fail"),
    (("    source: measured here\n", "    source: measured here\n    basis: guessed\n"), "metrics.gemm.bf16.basis: 'guessed'"),
    (("    source: measured here\n", "    source: measured here\n    note: ''\n"),
     "metrics.gemm.bf16.note: must be a non-empty string"),
    (("    source: measured here\n", "    source: measured here\n    peak: {value: 1}\n"),
     "metrics.gemm.bf16.peak.source: required"),
    (("name: site-h100\n", "name: site-h100\nrecorded: [1]\n"), "recorded: must be a mapping"),
    (("name: site-h100\n", "name: site-h100\ndescription: 5\n"), "description: must be a string"),
    (("metrics:\n  gemm.bf16:\n    value: 796\n    unit: TFLOP/s\n    conditions: {dtype: bf16, k: 8192}\n"
      "    source: measured here\n", ""), "metrics: required (a mapping of metric name to expectation)"),
]


@pytest.mark.parametrize(("change", "message"), CASES)
def test_each_bad_field_has_its_own_message(tmp_path, change, message):
    assert change[0] in GOOD
    path = write_yaml(tmp_path / "bad.yaml", GOOD.replace(*change, 1))
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_a_removed_entry_is_not_validated_as_a_figure(tmp_path):
    write_yaml(tmp_path / "parent.yaml", GOOD.replace("site-h100", "parent"))
    child = write_yaml(tmp_path / "child.yaml", "name: child\nextends: parent\nmetrics:\n  gemm.bf16: {remove: true}\n"
                                                "  retired.metric: {remove: true, value: -1}\n"
                                                "  hbm.d2d: {value: 3000, unit: GB/s, source: here}\n")
    assert [e.key for e in load_baseline(child).expectations] == ["hbm.d2d"]


def gpus(*devices, count=None):
    doc = {"available": True, "devices": [{"index": i, **d} for i, d in enumerate(devices)]}
    return doc | ({"count": count} if count is not None else {})


H100 = {"name": "NVIDIA H100 80GB HBM3", "pci_device": "0x2330"}


@pytest.mark.parametrize(("match", "found", "why"), [
    (Match(gpu_name=("nvidia h100*",)), gpus(H100), None),
    (Match(gpu_name=("NVIDIA H100*",)), gpus(H100, {"name": "NVIDIA A100"}),
     "GPU1 is 'NVIDIA A100', baseline is for NVIDIA H100*"),
    (Match(gpu_name_regex=("nvidia h100 .*",)), gpus(H100), None),
    (Match(gpu_name_regex=("A100.*", "B200")), gpus(H100), "GPU0 is 'NVIDIA H100 80GB HBM3', baseline is for /A100.*/ or /B200/"),
    (Match(pci_device=("0x2330",)), gpus({**H100, "pci_device": "0X2330"}), None),
    (Match(pci_device=("0x2335", "0x2324")), gpus(H100), "GPU0 has PCI device 0x2330, baseline is for 0x2335 or 0x2324"),
    (Match(pci_device=("0x2330",)), gpus({"name": "x"}), "GPU0 has PCI device unknown, baseline is for 0x2330"),
    (Match(gpu_count=(8,), pci_device=("0x1",)), gpus(H100, count=2), "2 GPU(s), baseline is for 8"),
    (Match(gpu_count=(1,)), {"available": False, "error": "no driver", "devices": [H100]},
     "no GPU identity in the results (no driver)"),
])
def test_match_names_what_differs(match, found, why):
    assert match.check(found) == why
