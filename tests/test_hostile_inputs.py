"""Hostile and careless input everywhere gpunode reads: the corpus in tests/hostile/ and
property-based tests (hypothesis, derandomized, bounded) over every loader and validator.

The contract, for each input: it loads into a valid value, or it is refused with ONE line
`gpunode: error: <file>[:line]: ...` and exit 2 — never a traceback, never a hang on a FIFO or
device, never a write outside the sysroot/state dir, never a change at all for a refused input.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from apply_fixtures import make_tree, picture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpunode.audit.golden import load_golden
from gpunode.baselines.schema import load_baseline
from gpunode.cli import app
from gpunode.config import Config, load_config
from gpunode.inputs import MAX_BYTES, InputError, load_json, load_yaml, parse_json, parse_yaml
from gpunode.model.profile import Profile
from gpunode.tune.profiles import ProfileError, apply_set, load_profile
from testkit import FIXTURES

CORPUS = Path(__file__).parent / "hostile"
SNAPSHOT = FIXTURES / "hosts" / "h200-1gpu"
BENCH_DOC = FIXTURES / "bench" / "h200-quick.json"
PWNED = Path("/tmp/gpunode-pwned")  # what the shell-injection entries of the corpus would create
PROPERTY = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
cli = CliRunner()

# Entries a loader must refuse outright (the rest may load; then the result must be valid).
REFUSED_BY_ANY_LOADER = {
    "alias_bomb.yaml", "recursive_alias.yaml", "duplicate_keys.yaml", "duplicate_nested_keys.yaml",
    "deep_nesting.yaml", "deep_nesting.json", "non_utf8.yaml", "binary_garbage.bin", "json_nan.json",
    "json_huge_exponent.json", "json_duplicate_keys.json", "json_long_integer.json", "json_truncated.json",
    "yaml_tab_indent.yaml", "yaml_python_tag.yaml", "nul_bytes.yaml",
}
# Profile entries whose values are dangerous: the setting kinds must refuse each of them.
REFUSED_AS_PROFILE = REFUSED_BY_ANY_LOADER | {
    "control_characters.yaml", "newline_in_value.yaml", "nan.yaml", "inf.yaml", "huge_number.yaml",
    "negative.yaml", "shell_metacharacters.yaml", "command_substitution.yaml", "path_traversal.yaml",
    "relative_key.yaml", "not_a_mapping.yaml", "wrong_types.yaml",
}
REFUSED_AS_CONFIG = REFUSED_BY_ANY_LOADER | {
    "config_overlays_numbers.yaml", "config_nan_window.yaml", "config_inf_window.yaml",
    "config_newline_profile.yaml", "not_a_mapping.yaml",
}


def corpus() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.name != "README.md")


def one_line_naming(exc: BaseException, path: Path | str) -> None:
    text = str(exc)
    assert "\n" not in text and text.isprintable(), repr(text)
    assert str(path) in text or Path(path).name in text, text


def valid_or_one_line(load, named: Path | str, check, refused: bool = False) -> None:
    """The contract: `load()` gives a value that passes `check`, or one InputError line naming the file."""
    try:
        value = load()
    except InputError as exc:
        one_line_naming(exc, named)
    else:
        assert not refused, f"{named} was accepted"
        check(value)


def as_yaml_file(tmp_path: Path, source: Path) -> Path:
    """Profiles and overlays are found by their .yaml suffix: every corpus entry under that name."""
    target = tmp_path / f"{source.stem}.yaml"
    shutil.copyfile(source, target)
    return target


# ---------------------------------------------------------------- the bounded loader itself


@pytest.mark.parametrize("source", corpus(), ids=lambda p: p.name)
def test_corpus_through_the_raw_loaders(source):
    own = {".yaml": load_yaml, ".json": load_json}.get(source.suffix)
    for loader in (load_yaml, load_json):
        try:
            loader(source)
        except InputError as exc:
            one_line_naming(exc, source)
        else:  # a JSON entry may be plain YAML; in its own format it must be refused
            assert source.name not in REFUSED_BY_ANY_LOADER or own not in (None, loader), (
                f"{loader.__name__} accepted {source.name}")


def test_alias_bomb_fails_fast_and_small():
    # 1 KB that expands to 9**9 strings: refused while composing, long before any list is built
    with pytest.raises(InputError, match=r"alias_bomb.yaml:\d+: more than .* values once aliases are expanded"):
        load_yaml(CORPUS / "alias_bomb.yaml")


def test_duplicate_keys_name_the_line():
    with pytest.raises(InputError, match=r"duplicate_keys.yaml:3: duplicate key 'settings'"):
        load_yaml(CORPUS / "duplicate_keys.yaml")
    with pytest.raises(InputError, match=r"duplicate key 'a'"):
        parse_json('{"a": 1, "a": 2}')


def test_merge_keys_and_plain_aliases_still_load():
    assert parse_yaml("base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n") == {
        "base": {"x": 1, "y": 2}, "child": {"x": 1, "y": 3}}
    assert parse_yaml("a: &a [1, 2]\nb: *a\nc: *a\n")["c"] == [1, 2]


@pytest.mark.parametrize("make", ["fifo", "char_device", "directory", "link_to_device", "huge_sparse"])
def test_special_files_are_refused_without_reading(tmp_path, make):
    path = tmp_path / "input.yaml"
    if make == "fifo":
        os.mkfifo(path)  # opening it blocking would wait for a writer forever
    elif make == "char_device":
        path = Path("/dev/zero")  # reading it would never end
    elif make == "directory":
        path.mkdir()
    elif make == "link_to_device":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as fh:
            fh.truncate(MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(InputError) as info:
        load_yaml(path)
    one_line_naming(info.value, path)
    assert "not a regular file" in str(info.value) or "too large" in str(info.value)


# ---------------------------------------------------------------- every loader over the corpus


@pytest.mark.parametrize("source", corpus(), ids=lambda p: p.name)
def test_corpus_as_profile_and_overlay(tmp_path, source):
    path = as_yaml_file(tmp_path, source)
    for load in (lambda: load_profile(str(path)), lambda: load_profile("training", overlays=[path])):
        valid_or_one_line(load, path, assert_valid_profile, refused=source.name in REFUSED_AS_PROFILE)


@pytest.mark.parametrize("source", corpus(), ids=lambda p: p.name)
def test_corpus_as_site_config(source):
    valid_or_one_line(lambda: load_config(str(source)), source, assert_valid_config,
                      refused=source.name in REFUSED_AS_CONFIG)


@pytest.mark.parametrize("source", corpus(), ids=lambda p: p.name)
def test_corpus_as_baseline_and_golden(source):
    for load in (load_baseline, load_golden):
        with pytest.raises(InputError) as info:  # none of them is a usable baseline or golden file
            load(source)
        one_line_naming(info.value, source)


def assert_valid_profile(profile: Profile) -> None:
    """What every loaded setting must be, whatever file it came from."""
    for setting in profile.settings.values():
        for text in (setting.key, setting.path or "", *(v for v in [setting.target] if isinstance(v, str))):
            assert text == "" or text.isprintable(), (setting.id, text)
        if isinstance(setting.target, float):
            assert math.isfinite(setting.target), setting.id
        if setting.path is not None:
            assert os.path.normpath(setting.path) == setting.path.rstrip("/") and setting.path.startswith("/sys/")


def assert_valid_config(config: Config) -> None:
    for name in ("profile", "driver_pin", "cuda_pin", "snapshot", "baselines_dir"):
        value = getattr(config, name)
        assert value is None or isinstance(value, str) and value.isprintable() and value
    for name in ("overlays", "scratch_dirs", "data_mounts", "disable_checks"):
        assert all(isinstance(v, str) and v.isprintable() for v in getattr(config, name))
    assert math.isfinite(config.xid_window_hours) and config.xid_window_hours > 0
    assert math.isfinite(config.min_free_gib) and config.min_free_gib >= 0


# ---------------------------------------------------------------- the command line, end to end


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUNODE_")}
    full_env.update({"COLUMNS": "100", **(env or {})})
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True,
                          errors="replace", env=full_env, timeout=120, cwd=Path(__file__).parent.parent)


def assert_one_line_error(proc: subprocess.CompletedProcess, names: str = "") -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunode: error: "), proc.stderr[-2000:]
    assert names in lines[0], lines[0]


def snapshot_copy(tmp_path: Path) -> Path:
    target = tmp_path / "snap"
    shutil.copytree(SNAPSHOT, target, symlinks=True)
    return target


CLI_CASES = {
    # issue 11 item 7, one by one
    "set_not_yaml": (lambda t: ["apply", "--dry-run", "--set", "sysctl.vm.swappiness=[1,"], "--set"),
    "set_alias_bomb": (lambda t: ["apply", "--dry-run", "--set",
                                  "sysctl.vm.swappiness=" + (CORPUS / "alias_bomb.yaml").read_text()], "--set"),
    "deep_yaml_profile": (lambda t: ["apply", "--dry-run", "--profile", str(CORPUS / "deep_nesting.yaml")],
                          "deep_nesting.yaml"),
    "overlay_dev_zero": (lambda t: ["apply", "--dry-run", "--overlay", "/dev/zero"], "/dev/zero"),
    "overlay_fifo": (lambda t: ["apply", "--dry-run", "--overlay", str(t.parent / "fifo" / "fifo.yaml")],
                     "fifo.yaml"),
    "overlay_non_utf8": (lambda t: ["apply", "--dry-run", "--overlay", str(CORPUS / "non_utf8.yaml")],
                         "non_utf8.yaml:1"),
    "config_overlays_numbers": (lambda t: ["audit", "--config", str(CORPUS / "config_overlays_numbers.yaml")],
                                "overlays"),
    "config_alias_bomb": (lambda t: ["audit", "--config", str(CORPUS / "alias_bomb.yaml")], "alias_bomb.yaml"),
    "golden_duplicate_keys": (lambda t: ["audit", "--golden", str(CORPUS / "duplicate_keys.yaml")],
                              "duplicate_keys.yaml:3"),
    "compare_deep_json": (lambda t: ["compare", str(CORPUS / "deep_nesting.json")], "deep_nesting.json"),
    "compare_dev_zero": (lambda t: ["compare", "/dev/zero"], "/dev/zero"),
    "compare_string_value": (lambda t: ["compare", str(bench_doc(t, value="fast"))], "value"),
    "compare_list_value": (lambda t: ["compare", str(bench_doc(t, value=[1, 2]))], "value"),
    "compare_nan_value": (lambda t: ["compare", str(bench_doc(t, value=float("nan")))], "value"),
    "snapshot_output_in_proc": (lambda t: ["snapshot", "-o", "/proc/gpunode-test/x"], "/proc/gpunode-test/x"),
    "snapshot_meta_not_json": (lambda t: ["audit", "--snapshot", str(bad_snapshot(t, "meta.json", "{"))],
                               "meta.json:1"),
    "snapshot_meta_facts_missing": (lambda t: ["audit", "--snapshot", str(bad_snapshot(t, "meta.json", "{}"))],
                                    "facts"),
    "snapshot_meta_wrong_type": (lambda t: ["audit", "--snapshot", str(bad_snapshot(
        t, "meta.json", '{"facts": {"is_root": "yes", "hostname": "h", "now": 1}}'))], "facts.is_root"),
    "snapshot_gpus_not_json": (lambda t: ["audit", "--snapshot", str(bad_snapshot(t, "gpus.json", "[1"))],
                               "gpus.json"),
    "snapshot_gpus_list": (lambda t: ["audit", "--snapshot", str(bad_snapshot(t, "gpus.json", "[]"))],
                           "gpus.json"),
    "snapshot_commands_wrong": (lambda t: ["audit", "--snapshot", str(bad_snapshot(
        t, "commands.json", '[{"argv": "nvidia-smi", "rc": 0}]'))], "commands.json"),
    "snapshot_fs_wrong": (lambda t: ["audit", "--snapshot", str(bad_snapshot(t, "fs.json", '{"absent": 5}'))],
                          "fs.json"),
    "snapshot_not_a_snapshot": (lambda t: ["audit", "--snapshot", str(t)], "meta.json"),
}


def bench_doc(tmp_path: Path, value) -> Path:
    doc = json.loads(BENCH_DOC.read_text())
    ok = next(m for m in doc["metrics"] if isinstance(m.get("value"), (int, float)))
    ok["value"] = value
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    return path


def bad_snapshot(tmp_path: Path, name: str, text: str) -> Path:
    snap = snapshot_copy(tmp_path)
    (snap / name).write_text(text)
    return snap


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path, case):
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "fifo.yaml")  # kept out of the pictures below: reading it would block
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_args, names = CLI_CASES[case]
    args = make_args(inputs)
    work = tmp_path / "work"
    root, state = make_tree(work / "root"), work / "state"
    if args[0] == "apply":
        args += ["--sysroot", str(root), "--state-dir", str(state)]
    before = picture(inputs), picture(work)
    proc = run_cli(*args)
    assert_one_line_error(proc, names)
    assert proc.stdout == ""
    assert (picture(inputs), picture(work)) == before  # nothing changed: no journal, no state, no output


def test_snapshot_symlink_to_a_host_file_is_not_read(tmp_path):
    snap = snapshot_copy(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("60\n")
    link = snap / "files" / "proc" / "sys" / "vm" / "swappiness"
    link.unlink()
    link.symlink_to(secret)  # absolute: leads out of the snapshot
    from gpunode.host.seam import snapshot_host

    assert snapshot_host(snap).sys.read("/proc/sys/vm/swappiness") is None


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_narrow_stdout_encoding_never_crashes(tmp_path, encoding):
    env = {"PYTHONIOENCODING": encoding, "LANG": "C", "LC_ALL": "C"}
    proc = run_cli("audit", "--snapshot", str(SNAPSHOT), env=env)
    assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr and "UnicodeEncodeError" not in proc.stderr
    root = make_tree(tmp_path / "root")
    proc = run_cli("apply", "--dry-run", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), env=env)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = run_cli("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), env=env)  # for real
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = run_cli("rollback", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), env=env)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = run_cli("compare", str(BENCH_DOC), env=env)
    assert proc.returncode in (0, 1, 2, 3) and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_an_unexpected_exception_is_one_line_exit_3(monkeypatch):
    import gpunode.cli.audit_cmd as audit_cmd

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("gpunode.audit.run.run_audit", broken)
    monkeypatch.setattr(audit_cmd, "run_audit", broken, raising=False)
    result = cli.invoke(app, ["audit", "--snapshot", str(SNAPSHOT)])
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gpunode: error: internal error: RuntimeError")


# ---------------------------------------------------------------- properties (hypothesis)

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "\x00", "\x1b[2J", "; rm -rf /", "$(id)", "`id`", "a\nb", "../../etc/passwd",
                     "/sys/../etc/x", ".nan", ".inf", "-.inf", "1e90", "-5", "0x10", "1_000", "~", "null", "yes",
                     "&a [*a]", "{a: 1, a: 2}", "[" * 50, "'unclosed", '"\\x00"', "!!python/name:os.system",
                     "unlimited", "18446744073709551616", "9" * 5000]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT,
)
NESTED = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=20)


@PROPERTY
@given(text=st.one_of(st.text(max_size=300), HOSTILE_TEXT))
def test_any_text_is_yaml_or_one_line_error(text):
    try:
        parse_yaml(text, "x.yaml")
    except InputError as exc:
        one_line_naming(exc, "x.yaml")


@PROPERTY
@given(text=st.one_of(st.text(max_size=300), HOSTILE_TEXT, NESTED.map(lambda v: json.dumps(v))))
def test_any_text_is_json_or_one_line_error(text):
    try:
        value = parse_json(text, "x.json")
    except InputError as exc:
        one_line_naming(exc, "x.json")
    else:
        assert "NaN" not in json.dumps(value) and "Infinity" not in json.dumps(value)


@PROPERTY
@given(value=NESTED)
def test_every_plain_document_round_trips(value):
    """The bounds refuse bombs, not ordinary documents: whatever safe_dump writes loads back equal
    (NaN aside, which equals nothing)."""
    text = yaml.safe_dump(value)
    loaded = parse_yaml(text, "x.yaml")
    assert json.dumps(loaded, sort_keys=True, default=str) == json.dumps(
        yaml.safe_load(text), sort_keys=True, default=str)


KINDS = st.sampled_from(["sysctl", "sysfs", "limits", "cmdline", "service", "gpu", "irq", "unit", "bogus", 5, None])
SETTING = st.fixed_dictionaries(
    {"kind": KINDS, "key": st.one_of(HOSTILE_TEXT, st.sampled_from(
        ["vm.swappiness", "kernel.core_pattern", "iommu", "power_limit", "nofile", "thp", "irqbalance"])),
     "target": SCALARS},
    optional={"op": st.sampled_from(["=", ">=", "<=", "!=", 1]), "path": HOSTILE_TEXT,
              "severity": st.sampled_from(["warning", "critical", "x"]), "tags": st.one_of(st.lists(HOSTILE_TEXT,
                                                                                                   max_size=2),
                                                                                          SCALARS)},
)


@PROPERTY
@given(settings_=st.lists(SETTING, max_size=3))
def test_any_overlay_loads_valid_or_is_one_line_refusal(tmp_path, settings_):
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"settings": settings_}))
    valid_or_one_line(lambda: load_profile("training", overlays=[path]), path, assert_valid_profile)


@PROPERTY
@given(setting_id=st.sampled_from(["sysctl.vm.swappiness", "sysctl.kernel.numa_balancing", "gpu.persistence_mode",
                                   "limits.memlock", "cmdline.iommu", "sysfs.thp.enabled", "nothing.here"]),
       value=HOSTILE_TEXT)
def test_any_set_value_is_valid_or_one_line_refusal(setting_id, value):
    profile = load_profile("training")
    if profile.get(setting_id) is None and setting_id != "nothing.here":
        pytest.skip(f"the training profile has no {setting_id}")
    try:
        apply_set(profile, setting_id, value)
    except ProfileError as exc:
        assert "\n" not in str(exc) and str(exc).isprintable() and "--set" in str(exc)
    else:
        assert_valid_profile(profile)


CONFIG_KEYS = st.sampled_from(["profile", "overlays", "expected_gpus", "driver_pin", "xid_window_hours",
                               "scratch_dirs", "min_free_gib", "data_mounts", "disable_checks", "snapshot",
                               "unknown_key"])


@PROPERTY
@given(data=st.dictionaries(CONFIG_KEYS, NESTED, max_size=4))
def test_any_site_config_is_valid_or_one_line_refusal(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    valid_or_one_line(lambda: load_config(str(path)), path, assert_valid_config)


META_FIELDS = st.sampled_from(["schema", "facts", "facts.is_root", "facts.hostname", "facts.now", "gpunode_version"])


@PROPERTY
@given(field=META_FIELDS, value=st.one_of(NESTED, st.just("<absent>")))
def test_any_snapshot_meta_is_valid_or_one_line_refusal(tmp_path, field, value):
    from gpunode.host.seam import load_facts

    meta = json.loads((SNAPSHOT / "meta.json").read_text())
    parent, _, key = field.rpartition(".")
    holder = meta[parent] if parent else meta
    if value == "<absent>":
        holder.pop(key, None)
    else:
        holder[key] = value
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))

    def typed(facts) -> None:
        assert isinstance(facts.is_root, bool) and isinstance(facts.hostname, str) and facts.hostname.isprintable()
        assert isinstance(facts.now, (int, float)) and not isinstance(facts.now, bool)

    valid_or_one_line(lambda: load_facts(path), path, typed)


@PROPERTY
@given(value=NESTED, field=st.sampled_from(["value", "gpu", "name", "unit", "status", "spread", "conditions",
                                            "metrics", "mode", "gpus"]))
def test_any_bench_result_compares_or_is_one_line_refusal(tmp_path, value, field):
    doc = json.loads(BENCH_DOC.read_text())
    metric = next(m for m in doc["metrics"] if isinstance(m.get("value"), (int, float)))
    (doc if field in ("metrics", "mode", "gpus") else metric)[field] = value
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    result = cli.invoke(app, ["compare", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.stderr.startswith("gpunode: error:"):
        assert result.exit_code in (2, 3) and result.stderr.count("\n") == 1, result.stderr
    else:
        assert result.exit_code in (0, 1, 2, 3)


@PROPERTY
@given(name=st.sampled_from(["gpunode_expected_gpus", "gpunode_config", "gpunode_audit_args", "gpunode_bench_mode",
                             "gpunode_slurm_prefix", "gpunode_python"]), value=NESTED)
def test_any_inventory_var_is_accepted_or_named(name, value):
    from gpunode.fleet.specs import PLAYBOOKS
    from gpunode.fleet.validate import FleetError, FleetInventory, check_vars

    inventory = FleetInventory(path="inv.ini", limit=None, hosts=["n1"], groups={"n1": []}, hostvars={"n1": {}})
    for spec in PLAYBOOKS.values():
        try:
            check_vars(spec, inventory, {name: value})
        except FleetError as exc:
            assert "\n" not in str(exc) and str(exc).isprintable()
        else:  # accepted: then it is a value Ansible can pass on as one argv element or line
            items = value if isinstance(value, list) else [value]
            assert not any(isinstance(v, str) and not v.isprintable() for v in items), (name, value)


def test_corpus_has_every_class_the_issue_names():
    names = {p.name for p in corpus()}
    for required in ("alias_bomb.yaml", "duplicate_keys.yaml", "deep_nesting.yaml", "deep_nesting.json",
                     "non_utf8.yaml", "nul_bytes.yaml", "control_characters.yaml", "nan.yaml", "inf.yaml",
                     "huge_number.yaml", "negative.yaml", "shell_metacharacters.yaml", "newline_in_value.yaml",
                     "path_traversal.yaml"):
        assert required in names
    assert all(p.stat().st_size < 64 * 1024 for p in corpus())  # huge, FIFO, device, links: made at run time
    assert not PWNED.exists()
    assert stat.S_ISDIR(CORPUS.stat().st_mode)


def test_the_pure_python_parser_keeps_the_same_bounds(monkeypatch):
    """Without libyaml (a minimal install) the loader composes PyYAML's own events: same refusals."""
    import importlib.util

    import gpunode.yaml_bounded
    from gpunode import inputs

    monkeypatch.setitem(sys.modules, "yaml._yaml", None)  # import fails: the fallback class is made
    spec = importlib.util.spec_from_file_location("yaml_without_libyaml", gpunode.yaml_bounded.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "CParser" not in [c.__name__ for c in module._BoundedLoader.__mro__]
    limits = (inputs.MAX_DEPTH, inputs.MAX_ALIASES, inputs.MAX_NODES)
    assert module.parse_yaml("a: &a [1, 2]\nb: *a\n", "<yaml>", *limits) == {"a": [1, 2], "b": [1, 2]}
    for source, message in (("alias_bomb.yaml", "aliases are expanded"), ("duplicate_keys.yaml", "duplicate key"),
                            ("deep_nesting.yaml", "nested deeper"), ("recursive_alias.yaml", "refers to itself")):
        with pytest.raises(module.Refused, match=message):
            module.parse_yaml(inputs.read_text(CORPUS / source), source, *limits)


def test_rollback_on_an_unreadable_state_dir_is_one_line(tmp_path):
    """As an operator without the rights (root without CAP_DAC_OVERRIDE reads like any user)."""
    import testkit

    setpriv = shutil.which("setpriv")
    testkit.require(os.geteuid() == 0 and setpriv is not None, "needs root and setpriv (util-linux)")
    state = tmp_path / "state"
    (state / "applies").mkdir(parents=True)
    (state / "applies" / "1.jsonl").write_text("{}\n")
    root = make_tree(tmp_path / "root")
    state.chmod(0)
    try:
        proc = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                               "gpunode", "rollback", "--sysroot", str(root), "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=120, errors="replace")
    finally:
        state.chmod(0o700)
    assert_one_line_error(proc, str(state))


def test_a_fifo_as_the_audit_counter_store_does_not_block(tmp_path):
    from gpunode.audit.counters import FILE, CounterStore
    from testkit import tree_host

    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / FILE)  # a blocking open would hang every live audit here
    store = CounterStore.load(state, tree_host(tmp_path / "root"))
    assert store.problem and "not a regular file" in store.problem and store.previous == {}
