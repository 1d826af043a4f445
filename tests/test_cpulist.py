"""host/facts/cpulist.py: the one cpulist parser and formatter, on real kernel texts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpunode.host.facts.cpulist import format_cpulist, parse_cpulist, read_cpulist


@pytest.mark.parametrize(("text", "cpus"), [
    ("0-223\n", set(range(224))),  # /sys/devices/system/cpu/online of the recorded H200 host
    ("0-55,112-167\n", set(range(56)) | set(range(112, 168))),  # node0/cpulist of a 2-socket host
    ("5", {5}), ("0-6:2", {0, 2, 4, 6}), ("", set()), ("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}),
])
def test_parse(text, cpus):
    assert parse_cpulist(text) == cpus == read_cpulist(text)


@pytest.mark.parametrize("text", ["a-b", "3-1", "0-4:0", "1,,x", "-1", "0-"])
def test_garbage_is_an_error_or_none(text):
    with pytest.raises(ValueError, match="bad cpulist"):
        parse_cpulist(text)
    assert read_cpulist(text) is None


def test_missing_file_reads_as_none():
    assert read_cpulist(None) is None


def test_format():
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_cpulist([5]) == "5" and format_cpulist(set()) == ""


@given(st.sets(st.integers(min_value=0, max_value=4096), max_size=200))
def test_round_trip(cpus):
    assert parse_cpulist(format_cpulist(cpus)) == cpus


@pytest.mark.parametrize("text", ["0-999999999", "65536", "0-65536", "0-70000:2", "1-" + "9" * 5000])
def test_cpu_ids_are_bounded(text):
    # a damaged or hostile snapshot: 0-999999999 took 2.8 GB before the bound
    with pytest.raises(ValueError, match="bad cpulist"):
        parse_cpulist(text)
    assert read_cpulist(text) is None


def test_the_largest_cpu_id_still_parses():
    assert parse_cpulist("65535") == {65535} and len(parse_cpulist("0-65535")) == 65536
