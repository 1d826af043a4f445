"""Auto-selection of the baseline from a bench result's "gpus" object: the recorded H100 NVML
inventory, synthetic H200/A100/H100 PCIe and 8-GPU ones, and site directories taking precedence."""

from __future__ import annotations

import pytest
from baseline_fixtures import (
    bench_doc,
    gpus_of,
    h100_gpus,
    h100_inventory,
    h100_metrics,
    inventory_like,
    write_yaml,
)

from gpunode.baselines.schema import BaselineError
from gpunode.baselines.select import (
    BaselineMismatchError,
    Catalogue,
    NoBaselineError,
    describe_gpus,
    site_dirs,
)

SITE = """\
name: {name}
{extends}match: {{gpu_name: "NVIDIA H100 80GB HBM3", gpu_count: 1}}
metrics:
  gemm.bf16: {{value: 700, unit: TFLOP/s, warn: 0.9, fail: 0.8, source: site}}
"""


def test_recorded_h100_inventory_selects_the_h100_sxm_baseline():
    gpus = gpus_of(h100_inventory())
    assert gpus["devices"][0]["pci_device"] == "0x2330"  # from NVML's 0x233010de
    chosen = Catalogue().select(gpus)
    assert chosen.baseline.name == "h100-sxm5-80gb-1gpu" and chosen.origin == "shipped"
    assert "1 × NVIDIA H100 80GB HBM3 (0x2330)" in chosen.reason


@pytest.mark.parametrize(("name", "device", "count", "expected"), [
    ("NVIDIA H100 80GB HBM3", 0x2330, 8, "h100-sxm5-80gb-8gpu"),
    ("NVIDIA H100 80GB HBM3", 0x2330, 4, "h100-sxm5-80gb-1gpu"),  # per-GPU figures for other counts
    ("NVIDIA H200", 0x2335, 1, "h200-141gb-1gpu"),
    ("NVIDIA H200", 0x2335, 8, "h200-141gb-8gpu"),
    ("NVIDIA A100-SXM4-80GB", 0x20B2, 8, "a100-sxm4-80gb-8gpu"),
    ("NVIDIA H100 PCIe", 0x2331, 2, "h100-pcie-80gb"),
])
def test_synthetic_inventories_select_their_baseline(name, device, count, expected):
    assert Catalogue().select(gpus_of(inventory_like(name, device, count))).baseline.name == expected


@pytest.mark.parametrize(("name", "device", "count", "why"), [
    ("NVIDIA A100-SXM4-80GB", 0x20B2, 4, "4 × NVIDIA A100-SXM4-80GB (0x20b2)"),  # the A100 baseline is for 8
    ("NVIDIA H200 NVL", 0x233B, 1, "1 × NVIDIA H200 NVL (0x233b)"),  # another board with an H200 name
    ("NVIDIA L40S", 0x26B9, 1, "1 × NVIDIA L40S (0x26b9)"),
])
def test_hardware_without_a_baseline_is_no_baseline_error(name, device, count, why):
    with pytest.raises(NoBaselineError, match=r"no baseline matches " + why.replace("(", r"\(").replace(")", r"\)")):
        Catalogue().select(gpus_of(inventory_like(name, device, count)))


def test_no_gpus_or_mixed_gpus_match_nothing():
    with pytest.raises(NoBaselineError, match=r"no GPUs \(no NVIDIA driver\)"):
        Catalogue().select({"available": False, "error": "no NVIDIA driver", "count": 0, "devices": []})
    mixed = gpus_of(inventory_like("NVIDIA H100 80GB HBM3", 0x2330, 2))
    mixed["devices"][1].update(name="NVIDIA H200", pci_device="0x2335")
    with pytest.raises(NoBaselineError):
        Catalogue().select(mixed)


def test_a_site_baseline_for_the_same_hardware_wins(tmp_path):
    write_yaml(tmp_path / "ours.yaml", SITE.format(name="ours", extends=""))
    chosen = Catalogue([tmp_path]).select(h100_gpus())
    assert (chosen.baseline.name, chosen.origin) == ("ours", "site")
    # for hardware the site has nothing for, the shipped ones still apply
    assert Catalogue([tmp_path]).select(h100_gpus(8)).baseline.name == "h100-sxm5-80gb-8gpu"


def test_a_site_file_with_a_shipped_name_hides_it_and_may_extend_it(tmp_path):
    write_yaml(tmp_path / "tuned.yaml", SITE.format(name="h100-sxm5-80gb-1gpu", extends="extends: h100-sxm5-80gb-1gpu\n"))
    catalogue = Catalogue([tmp_path])
    entry = next(e for e in catalogue.entries() if e.name == "h100-sxm5-80gb-1gpu")
    assert entry.origin == "site"
    b = catalogue.resolve("h100-sxm5-80gb-1gpu").baseline
    by_key = {e.key: e for e in b.expectations}
    assert by_key["gemm.bf16"].value == 700 and by_key["hbm.d2d"].value == 3010  # the rest inherited
    assert [p.parent for p in b.chain] == [tmp_path, Catalogue().shipped]


def test_equally_specific_site_baselines_are_ambiguous(tmp_path):
    write_yaml(tmp_path / "a.yaml", SITE.format(name="a", extends=""))
    write_yaml(tmp_path / "b.yaml", SITE.format(name="b", extends=""))
    with pytest.raises(BaselineError, match=r"several baselines match .* equally: a \(.*\), b \("):
        Catalogue([tmp_path]).select(h100_gpus())


def test_duplicate_names_in_one_directory_are_an_error(tmp_path):
    write_yaml(tmp_path / "a.yaml", SITE.format(name="same", extends=""))
    write_yaml(tmp_path / "b.yaml", SITE.format(name="same", extends=""))
    with pytest.raises(BaselineError, match=r"name 'same' is also used by"):
        Catalogue([tmp_path]).entries()


def test_resolve_by_name_or_file_and_unknown_names(tmp_path):
    catalogue = Catalogue()
    assert catalogue.resolve("h200-141gb-8gpu").baseline.name == "h200-141gb-8gpu"
    path = write_yaml(tmp_path / "x.yaml", SITE.format(name="x", extends=""))
    assert catalogue.resolve(str(path)).origin == "file"
    with pytest.raises(BaselineError, match=r"no baseline named 'h300'; known: a100-sxm4-80gb-8gpu"):
        catalogue.resolve("h300")
    with pytest.raises(BaselineError, match=r"baseline file not found"):
        catalogue.resolve(str(tmp_path / "missing.yaml"))


def test_a_named_baseline_for_other_hardware_is_refused_unless_forced():
    # The recorded 1 x H100 judged against the 8 x A100 baseline used to pass silently.
    catalogue = Catalogue()
    with pytest.raises(BaselineMismatchError) as info:
        catalogue.resolve("a100-sxm4-80gb-8gpu", gpus=h100_gpus())
    text = str(info.value)
    assert info.value.exit_code == 3 and "\n" not in text
    assert text.startswith("baseline a100-sxm4-80gb-8gpu is for 8 × NVIDIA A100-SXM4-80GB (0x20b2), but the results "
                           "are from 1 × NVIDIA H100 80GB HBM3 (0x2330) (1 GPU(s), baseline is for 8)")
    assert text.endswith("or pass --force-baseline to judge against it anyway")
    forced = catalogue.resolve("a100-sxm4-80gb-8gpu", gpus=h100_gpus(), force=True)
    assert forced.baseline.name == "a100-sxm4-80gb-8gpu"
    assert forced.reason.startswith("--baseline a100-sxm4-80gb-8gpu, forced: baseline a100-sxm4-80gb-8gpu is for 8 ×")
    # Matching hardware, or no GPU identity asked for: as before.
    assert catalogue.resolve("h100-sxm5-80gb-1gpu", gpus=h100_gpus()).reason == "--baseline h100-sxm5-80gb-1gpu"
    assert catalogue.resolve("a100-sxm4-80gb-8gpu").reason == "--baseline a100-sxm4-80gb-8gpu"
    # Same model, other count: 1 x H100 results against the 8-GPU node baseline (the 1-GPU
    # baseline's per-GPU figures fit any count, so 8 x H100 against it is no mismatch).
    with pytest.raises(BaselineMismatchError, match=r"1 GPU\(s\), baseline is for 8"):
        catalogue.resolve("h100-sxm5-80gb-8gpu", gpus=h100_gpus())
    assert catalogue.resolve("h100-sxm5-80gb-1gpu", gpus=h100_gpus(8)).baseline.name == "h100-sxm5-80gb-1gpu"


def test_compare_refuses_a_named_baseline_for_other_hardware_unless_forced():
    """The one comparison (`gpunode compare`, `bench --compare`): 1 x H100 results named against
    the 8 x A100 baseline are refused; forced, the report says it was forced."""
    from gpunode.baselines.compare import compare
    from gpunode.bench.results import BenchDocument

    bench = BenchDocument.from_json(bench_doc(h100_gpus(), h100_metrics()))
    with pytest.raises(BaselineMismatchError, match="pass --force-baseline"):
        compare(bench, Catalogue(), "a100-sxm4-80gb-8gpu")
    verdicts = compare(bench, Catalogue(), "a100-sxm4-80gb-8gpu", force=True)
    assert verdicts.baseline == "a100-sxm4-80gb-8gpu" and "forced: baseline a100-sxm4-80gb-8gpu is for 8 ×" in verdicts.reason
    assert compare(bench, Catalogue()).baseline == "h100-sxm5-80gb-1gpu"  # chosen from the GPUs: as before


def test_a_baseline_file_without_match_cannot_be_checked_and_is_used(tmp_path):
    text = SITE.format(name="x", extends="").replace('match: {gpu_name: "NVIDIA H100 80GB HBM3", gpu_count: 1}\n', "")
    chosen = Catalogue().resolve(str(write_yaml(tmp_path / "x.yaml", text)), gpus=h100_gpus(8))
    assert chosen.baseline.match is None and chosen.reason == f"--baseline {tmp_path / 'x.yaml'}"


def test_site_dirs_order(tmp_path):
    assert site_dirs(tmp_path, "/nonexistent") == [tmp_path]
    assert site_dirs(None, str(tmp_path)) == [tmp_path]
    with pytest.raises(BaselineError, match="baselines directory not found"):
        site_dirs(tmp_path / "nope")
    with pytest.raises(BaselineError, match="baselines_dir from the config is not a directory"):
        site_dirs(None, str(tmp_path / "nope"))


def test_config_baselines_dir_is_used_by_compare(tmp_path, monkeypatch):
    from baseline_fixtures import bench_doc, h100_metrics

    from gpunode.baselines.compare import compare_document

    site = tmp_path / "site"
    site.mkdir()
    write_yaml(site / "ours.yaml", SITE.format(name="ours", extends=""))
    config = write_yaml(tmp_path / "config.yaml", f"baselines_dir: {site}\n")
    monkeypatch.setenv("GPUNODE_CONFIG", str(config))
    v = compare_document(bench_doc(h100_gpus(), h100_metrics()))
    assert v.baseline == "ours" and v.origin == "site"


def test_describe_gpus():
    assert describe_gpus(h100_gpus(8)) == "8 × NVIDIA H100 80GB HBM3 (0x2330)"


def test_cli_compare_and_bench_refuse_other_hardware_unless_forced(tmp_path):
    import json

    from typer.testing import CliRunner

    from gpunode.cli import app

    results = tmp_path / "h100.json"
    results.write_text(json.dumps(bench_doc(h100_gpus(), h100_metrics())))
    runner = CliRunner()
    out = runner.invoke(app, ["compare", str(results), "--baseline", "a100-sxm4-80gb-8gpu"])
    assert out.exit_code == 3 and out.stdout == ""
    assert out.stderr.startswith("gpunode: error: baseline a100-sxm4-80gb-8gpu is for 8 × NVIDIA A100-SXM4-80GB")
    assert out.stderr.count("\n") == 1
    out = runner.invoke(app, ["compare", str(results), "--baseline", "a100-sxm4-80gb-8gpu", "--force-baseline", "--json"])
    doc = json.loads(out.stdout)
    assert doc["baseline"] == "a100-sxm4-80gb-8gpu" and "forced: baseline a100-sxm4-80gb-8gpu" in doc["selected"]
    assert "--force-baseline" in runner.invoke(app, ["bench", "--help"]).stdout
