"""Baseline files: the shipped ones load, and every kind of bad file is a clear error that names
the file and the field (exit 2 from the CLI)."""

from __future__ import annotations

import json

import pytest
from baseline_fixtures import bench_doc, h100_gpus, h100_metrics, write_yaml
from typer.testing import CliRunner

from gpunode.baselines.schema import BaselineError, load_baseline
from gpunode.baselines.select import Catalogue, shipped_dir
from gpunode.cli import app

GOOD = """\
schema: gpunode.baseline/1
name: site-h100
match: {gpu_name: "NVIDIA H100*", pci_device: [0x2330], gpu_count: 1}
defaults: {warn: 0.9, fail: 0.8}
metrics:
  gemm.bf16:
    value: 796
    unit: TFLOP/s
    conditions: {dtype: bf16, m: 8192, n: 8192, k: 8192}
    source: measured here
"""


def test_every_shipped_baseline_loads_with_sources_and_sane_ratios():
    catalogue = Catalogue()
    names = {e.name for e in catalogue.entries()}
    assert {"h100-sxm5-80gb-1gpu", "h100-sxm5-80gb-8gpu", "h200-141gb-1gpu", "h200-141gb-8gpu",
            "a100-sxm4-80gb-8gpu", "h100-pcie-80gb"} <= names
    for entry in catalogue.entries():
        b = catalogue.load(entry.path)
        assert b.match is not None, b.name
        for e in b.expectations:
            assert 0 < e.fail <= e.warn <= 1, (b.name, e.key)
            assert e.source and e.basis in ("measured", "public", "derived", "gate"), (b.name, e.key)


@pytest.mark.parametrize("name,recorded", [("h100-sxm5-80gb-1gpu", "h100"), ("h200-141gb-1gpu", "h200")])
def test_figures_a_source_quotes_from_the_recordings_are_the_recorded_ones(name, recorded):
    """A source that quotes "N (--quick" or "N (--full" cites tests/fixtures/bench: N must be what the file holds."""
    import re

    from testkit import FIXTURES

    checked = 0
    for e in Catalogue().resolve(name).baseline.expectations:
        for mode in ("quick", "full"):
            doc = json.loads((FIXTURES / "bench" / f"{recorded}-{mode}.json").read_text())
            for quoted in re.findall(rf"([\d.]+) \(--{mode}\b", e.source):
                value = next(m["value"] for m in doc["metrics"] if m["name"] == e.metric and m["status"] == "ok")
                assert float(quoted) == round(value, 1), f"{name} {e.key}: quotes {quoted} (--{mode}), file has {value}"
                checked += 1
    assert checked >= 8


def test_shipped_8gpu_extends_1gpu_and_adds_node_metrics():
    b = Catalogue().resolve("h100-sxm5-80gb-8gpu").baseline
    keys = [e.key for e in b.expectations]
    assert "gemm.bf16" in keys and "nccl.all_reduce.busbw" in keys and "nccl.all_reduce.busbw@ring" in keys
    assert b.match.gpu_count == (8,) and b.match.pci_device == ("0x2330",)
    assert [p.name for p in b.chain] == ["h100-sxm5-80gb-8gpu.yaml", "h100-sxm5-80gb-1gpu.yaml"]
    ring = next(e for e in b.expectations if e.key == "nccl.all_reduce.busbw@ring")
    assert ring.metric == "nccl.all_reduce.busbw" and ring.value == 370


def test_a_good_file_loads(tmp_path):
    b = load_baseline(write_yaml(tmp_path / "b.yaml", GOOD))
    (e,) = b.expectations
    assert (e.metric, e.value, e.unit, e.better, e.warn, e.fail) == ("gemm.bf16", 796.0, "TFLOP/s", "higher", 0.9, 0.8)
    assert b.match.pci_device == ("0x2330",) and b.match.gpu_count == (1,)


def test_latency_defaults_to_lower_is_better(tmp_path):
    text = GOOD.replace("gemm.bf16:", "fio.rand_read.p99_us:").replace("TFLOP/s", "us").replace(
        "conditions: {dtype: bf16, m: 8192, n: 8192, k: 8192}", "conditions: {bs: 4k}")
    (e,) = load_baseline(write_yaml(tmp_path / "b.yaml", text)).expectations
    assert e.better == "lower"


BAD_CASES = [
    ("wrong unit for the family", ("unit: TFLOP/s", "unit: GB/s"), "metrics.gemm.bf16.unit: 'GB/s' is wrong for gemm.bf16"),
    ("not a unit at all", ("unit: TFLOP/s", "unit: TFLOPS"), "metrics.gemm.bf16.unit: 'TFLOPS' is not a unit"),
    ("missing value", ("    value: 796\n", ""), "metrics.gemm.bf16: missing value"),
    ("missing unit", ("    unit: TFLOP/s\n", ""), "metrics.gemm.bf16: missing unit"),
    ("missing source", ("    source: measured here\n", ""), "metrics.gemm.bf16: missing source"),
    ("missing ratios", ("defaults: {warn: 0.9, fail: 0.8}\n", ""), "metrics.gemm.bf16: missing warn ratio"),
    ("a ratio above 1", ("warn: 0.9", "warn: 1.1"), "defaults.warn: 1.1 is above 1"),
    ("a percentage, not a ratio", ("fail: 0.8", "fail: 80"), "defaults.fail: 80 is above 1"),
    ("zero ratio", ("fail: 0.8", "fail: 0"), "defaults.fail: 0 must be above 0"),
    ("warn below fail", ("{warn: 0.9, fail: 0.8}", "{warn: 0.7, fail: 0.8}"), "warn (0.7) is below fail (0.8)"),
    ("negative value", ("value: 796", "value: -5"), "metrics.gemm.bf16.value: must be a positive number"),
    ("value as text", ("value: 796", "value: fast"), "metrics.gemm.bf16.value: must be a positive number"),
    ("unknown top-level key", ("defaults:", "defualts:"), "unknown key(s) defualts"),
    ("unknown metric key", ("    source: measured here\n", "    source: measured here\n    wran: 0.5\n"),
     "metrics.gemm.bf16: unknown key(s) wran"),
    ("unknown match key", ("gpu_count: 1}", "gpus: 1}"), "match: unknown key(s) gpus"),
    ("unknown metric family", ("gemm.bf16:", "gmem.bf16:"), "unknown metric 'gmem.bf16'"),
    ("pci id too long", ("[0x2330]", "[0x233010de]"), "match.pci_device: 590352606 is not a 16-bit PCI device id"),
    ("pci id not hex", ("[0x2330]", "[h100]"), "match.pci_device: 'h100' is not a 16-bit PCI device id"),
    ("bad regex", ('gpu_name: "NVIDIA H100*"', 'gpu_name_regex: "NVIDIA (H100"'), "is not a valid regex"),
    ("gpu count zero", ("gpu_count: 1}", "gpu_count: 0}"), "match.gpu_count: must be a positive whole number"),
    ("wrong schema", ("schema: gpunode.baseline/1", "schema: gpunode.baseline/9"), "schema: 'gpunode.baseline/9'"),
    ("no name", ("name: site-h100\n", ""), "name: required"),
    ("better typo", ("    source: measured here\n", "    source: measured here\n    better: more\n"), ".better: 'more'"),
    ("condition range typo", ("k: 8192}", "k: {least: 8192}}"), "conditions.k: unknown key(s) least"),
    ("empty source", ("source: measured here", "source: '  '"), ".source: must be a non-empty string"),
]


@pytest.mark.parametrize(("case", "change", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_files_are_clear_errors_naming_file_and_field(tmp_path, case, change, expected):
    old, new = change
    assert old in GOOD, case
    path = write_yaml(tmp_path / "bad.yaml", GOOD.replace(old, new, 1))
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(BaselineError, match=r"not valid YAML"):
        load_baseline(write_yaml(tmp_path / "a.yaml", "name: [unclosed\n"))
    with pytest.raises(BaselineError, match=r"must be a mapping"):
        load_baseline(write_yaml(tmp_path / "b.yaml", "- just\n- a list\n"))
    with pytest.raises(BaselineError, match=r"missing.yaml: cannot read"):
        load_baseline(tmp_path / "missing.yaml")


def test_extends_overrides_fields_and_removes_metrics(tmp_path):
    write_yaml(tmp_path / "parent.yaml", GOOD.replace("name: site-h100", "name: parent") + """\
  gemm.fp16:
    value: 763
    unit: TFLOP/s
    source: measured here
""")
    child = write_yaml(tmp_path / "child.yaml", """\
name: child
extends: parent
match: {gpu_count: 8}
defaults: {warn: 0.95}
metrics:
  gemm.bf16: {warn: 0.97, fail: 0.9}
  gemm.fp16: {remove: true}
  nccl.all_reduce.busbw: {value: 480, unit: GB/s, source: public, fail: 0.9, conditions: {ngpus: 8}}
""")
    b = load_baseline(child)
    by_key = {e.key: e for e in b.expectations}
    assert set(by_key) == {"gemm.bf16", "nccl.all_reduce.busbw"}
    assert (by_key["gemm.bf16"].value, by_key["gemm.bf16"].warn, by_key["gemm.bf16"].fail) == (796, 0.97, 0.9)
    assert by_key["gemm.bf16"].conditions["dtype"] == "bf16"  # inherited field by field
    assert by_key["nccl.all_reduce.busbw"].warn == 0.95  # child's defaults
    assert b.match.gpu_count == (8,) and b.match.pci_device == ("0x2330",)  # match merged per key


def test_extends_errors(tmp_path):
    write_yaml(tmp_path / "a.yaml", "name: a\nextends: b\n")
    write_yaml(tmp_path / "b.yaml", "name: b\nextends: a\n")
    with pytest.raises(BaselineError, match=r"extends forms a cycle"):
        load_baseline(tmp_path / "a.yaml")
    write_yaml(tmp_path / "c.yaml", "name: c\nextends: nowhere\n")
    with pytest.raises(BaselineError, match=r"extends: no baseline named 'nowhere'"):
        load_baseline(tmp_path / "c.yaml")
    write_yaml(tmp_path / "d.yaml", "name: d\nextends: ./missing.yaml\n")
    with pytest.raises(BaselineError, match=r"no such file"):
        load_baseline(tmp_path / "d.yaml")
    write_yaml(tmp_path / "e.yaml", "name: e\nmetrics: {}\n")
    with pytest.raises(BaselineError, match=r"no metric left"):
        load_baseline(tmp_path / "e.yaml")


def test_a_child_error_names_the_child_and_the_inherited_field(tmp_path):
    write_yaml(tmp_path / "parent.yaml", GOOD.replace("name: site-h100", "name: parent"))
    child = write_yaml(tmp_path / "child.yaml", "name: child\nextends: parent\nmetrics:\n  gemm.bf16: {warn: 0.7}\n")
    with pytest.raises(BaselineError, match=r"child.yaml: metrics.gemm.bf16: warn \(0.7\) is below fail \(0.8\)"):
        load_baseline(child)


def test_shipped_dir_is_the_repository_baselines_directory():
    assert (shipped_dir() / "h100-sxm5-80gb-1gpu.yaml").is_file()


@pytest.mark.parametrize("kind", ["wrong unit", "ratio above 1", "missing field"])
def test_cli_compare_with_a_bad_baseline_exits_2_with_one_line(tmp_path, kind):
    change = {"wrong unit": ("unit: TFLOP/s", "unit: GB/s"), "ratio above 1": ("warn: 0.9", "warn: 1.5"),
              "missing field": ("    value: 796\n", "")}[kind]
    bad = write_yaml(tmp_path / "bad.yaml", GOOD.replace(*change, 1))
    results = tmp_path / "r.json"
    results.write_text(json.dumps(bench_doc(h100_gpus(), h100_metrics())))
    out = CliRunner().invoke(app, ["compare", str(results), "--baseline", str(bad)])
    assert out.exit_code == 3, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpunode: error: {bad}: "), out.stderr


def test_cli_bad_site_directory_exits_2(tmp_path):
    write_yaml(tmp_path / "broken.yaml", "name: broken\nmetrics: [1]\n")
    results = tmp_path / "r.json"
    results.write_text(json.dumps(bench_doc(h100_gpus(), h100_metrics())))
    out = CliRunner().invoke(app, ["compare", str(results), "--baselines", str(tmp_path)])
    assert out.exit_code == 3
    assert "broken.yaml: metrics: must be a mapping" in out.stderr
