"""A file that is not gpunode's (`--config /etc/shadow`, a profile link to it) is refused without
its content in the message: /etc/shadow's lines parse as YAML keys, and naming them printed the
password hashes. gpunode's own typos are still named."""

from __future__ import annotations

import pytest

from gpunode.inputs import InputError, parse_json, parse_yaml

SHADOW = "root:$y$j9T$secretsalt$secrethash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def _quiet(message: str) -> None:
    for leaked in ("secret", "daemon", "19000", "$y$"):
        assert leaked not in message, message


def test_config_baseline_golden_and_profile_never_echo_a_foreign_file(tmp_path):
    from gpunode.audit.golden import load_golden
    from gpunode.baselines.schema import load_baseline
    from gpunode.config import load_config
    from gpunode.tune.profiles import load_profile

    path = tmp_path / "shadow.yaml"
    path.write_text(SHADOW)
    for load in (load_config, load_baseline, load_golden, load_profile):
        with pytest.raises(InputError) as err:  # ConfigError, BaselineError, ProfileError are InputErrors
            load(str(path))
        assert "not shown" in str(err.value)
        _quiet(str(err.value))


def test_duplicate_keys_are_named_only_when_they_look_like_keys():
    with pytest.raises(InputError, match="duplicate key 'settings'"):
        parse_yaml("settings: 1\nsettings: 2\n", "p.yaml")
    with pytest.raises(InputError) as err:
        parse_yaml(SHADOW + SHADOW, "shadow")
    _quiet(str(err.value))
    with pytest.raises(InputError, match="duplicate key 'a'"):
        parse_json('{"a": 1, "a": 2}', "x.json")
    with pytest.raises(InputError) as err:
        parse_json('{"root:$y$secret": 1, "root:$y$secret": 2}', "x.json")
    _quiet(str(err.value))


@pytest.mark.parametrize("text", ["010", "1:30", "0b11", "1_000", "-010", "0x1_f", "1:30:00.5", "00"])
def test_numbers_read_differently_by_yaml_11_and_12_are_refused(text):
    with pytest.raises(InputError, match="YAML 1.1 and YAML 1.2 read differently"):
        parse_yaml(f"value: {text}\n", "c.yaml")
    assert parse_yaml(f"value: '{text}'\n", "c.yaml") == {"value": text}  # quoted: text, as written


@pytest.mark.parametrize("text, value", [("10", 10), ("0", 0), ("-5", -5), ("0x1F", 31), ("0.5", 0.5), ("1.5", 1.5),
                                         (".inf", float("inf")), ("0:30", "0:30"), ("1e3", "1e3")])
def test_numbers_both_read_alike_still_load(text, value):
    assert parse_yaml(f"value: {text}\n", "c.yaml") == {"value": value}
