"""The bounds of gpunode's loaders (gpunode.inputs, gpunode.yaml_bounded) at their edges: what an
operator's file may hold and the first thing past each bound. Each limit is written here as a
number, not read from the module: moving a bound is a change someone must mean (a site's large
baseline or a recorded snapshot that loaded yesterday must load today)."""

from __future__ import annotations

import pytest

from gpunode.inputs import (
    InputError,
    expect_mapping,
    load_json,
    load_yaml,
    parse_json,
    parse_yaml,
    read_bytes,
)

MIB = 1024 * 1024


def _sized_yaml(path, size: int):
    """A YAML document of exactly `size` bytes: one setting and a long comment."""
    head = b"a: 1\n#"
    path.write_bytes(head + b"x" * (size - len(head) - 1) + b"\n")
    return path


def test_a_4_mib_profile_loads_and_one_byte_more_is_refused(tmp_path):
    assert load_yaml(_sized_yaml(tmp_path / "edge.yaml", 4 * MIB)) == {"a": 1}
    with pytest.raises(InputError, match=r"too large \(4194305 bytes; at most 4194304\)"):
        load_yaml(_sized_yaml(tmp_path / "over.yaml", 4 * MIB + 1))


def test_a_64_mib_recording_is_read_and_one_byte_more_is_refused(tmp_path):
    # a snapshot's commands.json holds whole dmesg/nvidia-smi outputs: up to 64 MiB is read (here
    # sparse zeros, which are then not JSON), one byte more is refused before reading
    from gpunode.host.runner import load_commands

    edge, over = tmp_path / "edge.json", tmp_path / "over.json"
    for path, size in ((edge, 64 * MIB), (over, 64 * MIB + 1)):
        with open(path, "wb") as fh:
            fh.truncate(size)
    with pytest.raises(InputError) as read:
        load_commands(edge)
    assert "not valid JSON" in str(read.value)
    with pytest.raises(InputError, match=r"too large \(67108865 bytes; at most 67108864\)"):
        load_commands(over)


def test_a_file_that_says_size_0_is_still_bounded_while_read():
    # procfs reports size 0 for files that hold kilobytes: the bound holds on what is read
    with pytest.raises(InputError, match=r"too large \(more than 16 bytes\)"):
        read_bytes("/proc/self/maps", max_bytes=16)
    assert read_bytes("/proc/self/maps", max_bytes=1 << 22).count(b"\n") > 2  # read whole, past the first chunk


def test_a_file_larger_than_one_read_chunk_is_read_whole(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"a": "' + "x" * (3 * MIB) + '"}')  # three of read_fd's 1 MiB chunks
    assert len(load_json(path)["a"]) == 3 * MIB


@pytest.mark.parametrize("depth", [32, 33])
def test_nesting_of_32_levels_loads_and_33_is_refused(depth):
    yaml_text, json_text = "[" * depth + "]" * depth, "[" * depth + "1" + "]" * depth
    if depth == 32:
        assert parse_yaml(yaml_text) is not None and parse_json(json_text) is not None
        return
    with pytest.raises(InputError, match="nested deeper than 32 levels"):
        parse_yaml(yaml_text)
    with pytest.raises(InputError, match="nested deeper than 32 levels"):
        parse_json(json_text)


def test_100_aliases_load_and_the_101st_is_refused():
    assert parse_yaml("a: &x 1\nb: [" + ", ".join(["*x"] * 100) + "]")["b"] == [1] * 100
    with pytest.raises(InputError, match=r"<yaml>:2: more than 100 aliases"):
        parse_yaml("a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]")


def _nodes(extra: int) -> str:
    """A document of 200,000 + `extra` values once its aliases are expanded: the top mapping,
    its two keys, an anchored list of 10,000 values (the list and 9,999 numbers), 18 aliases of
    it and 9,996 + extra more numbers beside them."""
    anchored = ", ".join(["0"] * 9_999)
    beside = ", ".join(["*x"] * 18 + ["1"] * (9_996 + extra))
    return f"a: &x [{anchored}]\nb: [{beside}]\n"


def test_200000_values_after_aliases_load_and_one_more_is_refused():
    assert len(parse_yaml(_nodes(0))["b"]) == 18 + 9_996
    with pytest.raises(InputError, match="more than 200000 values once aliases are expanded"):
        parse_yaml(_nodes(1))


@pytest.mark.parametrize(("text", "got"), [("", "nothing"), ("- a\n", "list"), ("just text\n", "str")])
def test_a_document_that_is_not_a_mapping_says_what_it_is(text, got):
    # an empty profile is "nothing", not "NoneType": the operator sees what the file holds
    with pytest.raises(InputError, match=f"profile.yaml: expected a mapping at the top level, got {got}$"):
        expect_mapping(parse_yaml(text), "profile.yaml")


def test_without_libyaml_a_nul_byte_is_one_refusal(monkeypatch):
    # PyYAML's pure-Python reader (a minimal install has no libyaml) refuses a NUL as soon as the
    # loader is made: that is still the one refusal, not a crash in the loader's clean-up
    import importlib.util
    import sys

    import gpunode.yaml_bounded

    monkeypatch.setitem(sys.modules, "yaml._yaml", None)
    spec = importlib.util.spec_from_file_location("yaml_without_libyaml", gpunode.yaml_bounded.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(module.Refused, match=r"^profile.yaml: not valid YAML: .*#x0000"):
        module.parse_yaml("a: 1\x00\n", "profile.yaml", 32, 100, 200_000)
