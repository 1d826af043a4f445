"""The gate's parsed-YAML cache: a hit is the document the same text parsed to, never anything
else; an unsafe directory or a damaged entry is a miss; the gate imports no PyYAML on a hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpunode.config import load_config
from gpunode.inputs import InputError, load_yaml
from gpunode.parsed_cache import ParsedCache, exact_json
from gpunode.tune.profiles import load_profile


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def entries(state) -> list[str]:
    cache = state / "cache"
    return sorted(os.listdir(cache)) if cache.exists() else []


def cached_once(tmp_path, state):
    """A config parsed once through the cache: (its path, the cache, its one entry)."""
    src = tmp_path / "c.yaml"
    src.write_text("profile: inference\n")
    cache = ParsedCache(state)
    load_yaml(src, cache=cache)
    return src, cache, state / "cache" / entries(state)[0]


def test_a_second_load_is_a_hit_with_the_same_document(tmp_path, state):
    src = tmp_path / "c.yaml"
    src.write_text("profile: inference\nmin_free_gib: 2.5\nscratch_dirs: [/scratch]\n")
    cache = ParsedCache(state)
    first = load_yaml(src, cache=cache)
    assert len(entries(state)) == 1 and oct(os.stat(state / "cache").st_mode & 0o777) == "0o700"
    entry = state / "cache" / entries(state)[0]
    assert oct(os.stat(entry).st_mode & 0o777) == "0o600"
    key = cache.key(src.read_text(), ())
    assert cache.get(key) == (True, first) == (True, {"profile": "inference", "min_free_gib": 2.5,
                                                      "scratch_dirs": ["/scratch"]})
    assert load_yaml(src, cache=cache) == first


def test_a_changed_file_is_a_new_key_never_the_old_document(tmp_path, state):
    src = tmp_path / "c.yaml"
    cache = ParsedCache(state)
    src.write_text("profile: training\n")
    assert load_yaml(src, cache=cache) == {"profile": "training"}
    src.write_text("profile: inference\n")
    assert load_yaml(src, cache=cache) == {"profile": "inference"}
    assert len(entries(state)) == 2


def test_bad_yaml_is_refused_as_before_and_nothing_is_kept(tmp_path, state):
    src = tmp_path / "c.yaml"
    src.write_text("a: 1\na: 2\n")
    with pytest.raises(InputError, match="duplicate key"):
        load_yaml(src, cache=ParsedCache(state))
    assert entries(state) == []


@pytest.mark.parametrize("text", ["when: 2026-12-01\n", "1: one\n", "x: .inf\n", "s: !!binary aGk=\n",
                                  "? [a, b]\n: 1\n"])
def test_documents_json_cannot_hold_exactly_are_parsed_every_time(tmp_path, state, text):
    src = tmp_path / "c.yaml"
    src.write_text(text)
    document = load_yaml(src, cache=ParsedCache(state)) if "? [" not in text else None
    assert entries(state) == []
    if document is not None:
        assert not exact_json(document)


def test_exact_json():
    assert exact_json({"a": [1, 2.5, "x", True, None, {"b": []}]})
    for value in ({1: "a"}, {"a": float("nan")}, {"a": (1, 2)}, {"a": b"x"}, {"a": {1, 2}}):
        assert not exact_json(value)


def test_a_damaged_or_foreign_entry_is_a_miss_and_is_rewritten(tmp_path, state):
    src, cache, entry = cached_once(tmp_path, state)
    for damage in ("{not json", json.dumps({"key": "other", "document": {"profile": "evil"}}), "[]"):
        entry.write_text(damage)
        assert cache.get(entry.stem) == (False, None)
        assert load_yaml(src, cache=cache) == {"profile": "inference"}
        assert json.loads(entry.read_text())["document"] == {"profile": "inference"}


def test_a_linked_entry_is_not_followed(tmp_path, state):
    src, cache, entry = cached_once(tmp_path, state)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"key": entry.stem, "document": {"profile": "evil"}}))
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert cache.get(entry.stem) == (False, None)
    assert load_yaml(src, cache=cache) == {"profile": "inference"}


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_can_write_is_neither_read_nor_written(tmp_path, state, mode):
    src, cache, entry = cached_once(tmp_path, state)
    key = entry.stem
    os.chmod(state / "cache", mode)
    assert cache.get(key) == (False, None)
    os.chmod(state / "cache", 0o700)
    os.chmod(state, mode)
    assert cache.get(key) == (False, None)
    other = tmp_path / "d.yaml"
    other.write_text("profile: training\n")
    assert load_yaml(other, cache=cache) == {"profile": "training"}
    assert len(entries(state)) == 1  # not written either


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_directory_of_another_user_is_not_trusted(tmp_path, state):
    _, cache, entry = cached_once(tmp_path, state)
    assert cache.get(entry.stem)[0]
    os.chown(state / "cache", 65534, 65534)
    assert cache.get(entry.stem) == (False, None)


def test_a_new_state_dir_is_made_private(tmp_path):
    src = tmp_path / "c.yaml"
    src.write_text("profile: inference\n")
    state = tmp_path / "var" / "lib" / "gpunode"
    load_yaml(src, cache=ParsedCache(state))
    assert oct(os.stat(state).st_mode & 0o777) == oct(os.stat(state / "cache").st_mode & 0o777) == "0o700"
    assert len(entries(state)) == 1


def test_the_cache_keeps_at_most_max_entries_the_newest(tmp_path, state, monkeypatch):
    import gpunode.parsed_cache as parsed_cache

    monkeypatch.setattr(parsed_cache, "MAX_ENTRIES", 3)
    cache = ParsedCache(state)
    keys = []
    for i in range(5):
        src = tmp_path / f"c{i}.yaml"
        src.write_text(f"min_free_gib: {i}\n")
        load_yaml(src, cache=cache)
        keys.append(cache.key(src.read_text(), ()))
        os.utime(state / "cache" / f"{keys[-1]}.json", ns=(i * 10**9, i * 10**9))  # written in order
    assert entries(state) == sorted(f"{k}.json" for k in keys[2:])
    assert cache.get(keys[4]) == (True, {"min_free_gib": 4}) and cache.get(keys[0]) == (False, None)


def test_an_unwritable_state_dir_is_no_error(tmp_path):
    src = tmp_path / "c.yaml"
    src.write_text("profile: inference\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert load_yaml(src, cache=ParsedCache(blocker)) == {"profile": "inference"}


def test_profile_and_config_through_the_cache_equal_a_fresh_parse(tmp_path, state):
    cache = ParsedCache(state)
    for name in ("training", "inference"):
        fresh = load_profile(name)
        assert load_profile(name, cache=cache) == fresh
        assert load_profile(name, cache=cache) == fresh  # from the cache this time
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profile: inference\nexpected_gpus: 8\n")
    assert load_config(str(cfg), cache=cache) == load_config(str(cfg))
    assert load_config(str(cfg), cache=cache).expected_gpus == 8


def test_a_cached_profile_is_still_validated(tmp_path, state):
    """The cache keeps parsed text, not a verdict: a bad setting fails on every load."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsettings:\n  - {kind: sysctl, key: vm.swappiness, target: -5}\n")
    cache = ParsedCache(state)
    for _ in range(2):
        with pytest.raises(InputError, match="vm.swappiness"):
            load_profile(str(bad), cache=cache)
    assert len(entries(state)) == 1


def test_the_gate_imports_no_yaml_once_its_profile_is_cached(tmp_path, state):
    code = ("import sys\nfrom gpunode.cli import main\nsys.argv = ['gpunode', 'gate']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('YAML:%s' % ('yaml' in sys.modules))\n")
    env = dict(os.environ, GPUNODE_STATE_DIR=str(state), GPUNODE_SNAPSHOT="", GPUNODE_CONFIG="")
    env.pop("GPUNODE_SNAPSHOT")
    env.pop("GPUNODE_CONFIG")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "YAML:True" in first.stderr, first.stderr
    assert "YAML:False" in second.stderr, second.stderr
    assert first.stdout.splitlines()[-1].split(";")[0] == second.stdout.splitlines()[-1].split(";")[0]
