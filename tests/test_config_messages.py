"""Each way a site config can be wrong has its own one-line message naming the file and key
(gpunode.config.load_config), and an empty value keeps the default."""

from __future__ import annotations

import re

import pytest

from gpunode.config import ConfigError, load_config


@pytest.mark.parametrize(("text", "message"), [
    ("profile: [a]\n", "profile has the wrong type (list)"),
    ("expected_gpus: true\n", "expected_gpus has the wrong type (bool)"),
    ("audit_log: off\n", "audit_log has the wrong type (bool); a bare off/on/yes/no is a boolean in YAML: quote"),
    ("allow_job_opt_out: 1\n", "allow_job_opt_out has the wrong type (int)"),
    ("xid_window_hours: -1\n", "xid_window_hours must be positive, got -1"),
    ("xid_window_hours: .nan\n", "xid_window_hours must be positive, got nan"),
    ("min_free_gib: -0.5\n", "min_free_gib must be 0 or more, got -0.5"),
    ("xid_window_hours: .inf\n", "xid_window_hours must be a finite number, got inf"),
    ("min_free_gib: .inf\n", "min_free_gib must be a finite number, got inf"),
    ("overlays: [a, 1]\n", "overlays must be a list of one-line strings"),
    ("scratch_dirs: ['']\n", "scratch_dirs must be a list of one-line strings"),
    ('profile: "a\\tb"\n', "profile must be one line without control characters"),
    ("audit_log: ''\n", "audit_log must be one line without control characters"),
    ("watch: {poll_s: 0}\n", "watch.poll_s must be a number of seconds in (0, 3600]"),
    ("watch: {shadow: 1}\n", "watch.shadow must be true or false"),
    ("watch: {pol_s: 1}\n", "unknown key watch.'pol_s'; known: breaker_fraction, "),
    ("profiles: x\n", "unknown key 'profiles'; known: allow_job_opt_out, audit_log"),
    ("profiles: null\n", "unknown key 'profiles'; known: "),
    ("- a\n", "expected a mapping"),
])
def test_each_mistake_has_its_message(tmp_path, text, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path))}/config.yaml: {re.escape(message)}"):
        load_config(config_file(tmp_path, text))


def test_the_quote_hint_is_given_for_a_yaml_boolean_in_a_text_key_only(tmp_path):
    for text in ("profile: 1\n", "expected_gpus: true\n"):
        with pytest.raises(ConfigError) as caught:
            load_config(config_file(tmp_path, text))
        assert str(caught.value).endswith(")"), str(caught.value)


def test_an_empty_value_keeps_the_default_and_the_rest_is_taken(tmp_path):
    config = load_config(config_file(tmp_path, "profile: null\nexpected_gpus: 8\nmin_free_gib: 0\n"
                                               "watch: {poll_s: 2.5, prove_level: null}\n"))
    assert (config.profile, config.expected_gpus, config.min_free_gib) == ("training", 8, 0)
    assert config.watch == {"poll_s": 2.5} and config.path == f"{tmp_path}/config.yaml"
    assert load_config(config_file(tmp_path, "")).path == f"{tmp_path}/config.yaml"


def config_file(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)
