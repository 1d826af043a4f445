"""bench/results.topology_entries: every refusal with its own message, and an entry without its
optional figures read as it was (pinned when it was split into helpers, issue 21). The entry is
one that bench.run.topology_expectations writes for the recorded H200 host."""

import pytest

from gpunode.bench.results import topology_entries

ENTRY = {"metric": "hbm.d2d", "gpu": 0, "value": 4326.728, "unit": "GB/s", "raw": 4916.736, "efficiency": 0.88,
         "arithmetic": "6144-bit (datasheet) x 3201 MHz x 2 = 4,916.7 GB/s x 0.88 = 4,326.7 GB/s",
         "limited_by": None, "limited_value": None, "max_cov": 0.06}


def test_a_recorded_entry_reads_back_as_it_was_and_none_is_no_entries():
    assert topology_entries([ENTRY]) == [ENTRY]
    assert topology_entries(None) == []


def test_the_optional_figures_may_be_absent():
    bare = {k: v for k, v in ENTRY.items() if k not in ("raw", "efficiency", "max_cov", "limited_by", "gpu")}
    bare["limited_by"], bare["limited_value"] = "PCIe Gen4 x8", 15.75
    assert topology_entries([bare]) == [{"metric": "hbm.d2d", "gpu": None, "value": 4326.728, "unit": "GB/s",
                                         "arithmetic": ENTRY["arithmetic"], "limited_by": "PCIe Gen4 x8",
                                         "limited_value": 15.75}]


@pytest.mark.parametrize("data, message", [
    ({"a": 1}, "bench result: topology is a dict, not a list"),
    (["x"], "bench result: a topology entry is not an object"),
    ([{**ENTRY, "unit": 3}], "bench result: topology entry unit is not one line of text"),
    ([{**ENTRY, "value": 0}], "bench result: topology hbm.d2d: value 0 is not a positive number"),
    ([{**ENTRY, "gpu": True}], "bench result: topology hbm.d2d: gpu True is not an index"),
    ([{**ENTRY, "limited_by": "a\nb"}], "bench result: topology hbm.d2d: limited_by is not one line of text"),
    ([{**ENTRY, "limited_value": "5"}], "bench result: topology hbm.d2d: limited_value is not a number"),
    ([{**ENTRY, "efficiency": float("nan")}], "bench result: topology hbm.d2d: efficiency nan is not a positive number"),
    ([{**ENTRY, "max_cov": 1.5}], "bench result: topology hbm.d2d: max_cov 1.5 is above 1"),
])
def test_each_refusal_says_what_is_wrong(data, message):
    with pytest.raises(ValueError) as err:
        topology_entries(data)
    assert str(err.value) == message
