"""`gpunode gate` and `gpunode slurm install` as processes: exit codes, the one-line reason,
snapshot selection (--snapshot > $GPUNODE_SNAPSHOT > config), config errors in hook modes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gate_fixtures import h100_inventory, write_snapshot

# GPU0 row remap failed and volatile uncorrectable ECC errors: critical gate checks FAIL.
BROKEN = {"remap_failure": True, "ecc_uncorrected_volatile": 3}


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    return {"ok": write_snapshot(root / "ok", h100_inventory(2)),
            "bad": write_snapshot(root / "bad", h100_inventory(2, **BROKEN))}


def gpunode(*args, env=None, config=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    if config is not None:
        full["GPUNODE_CONFIG"] = str(config)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True,
                          timeout=60, env=full)


def test_healthy_snapshot_passes(snaps):
    r = gpunode("gate", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("gpunode gate (check): OK")
    assert r.stderr == ""


def test_failing_snapshot_exits_2_with_one_reason_line(snaps):
    r = gpunode("gate", "--snapshot", str(snaps["bad"]))
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunode: gpu.")
    assert "FAIL  gpu." in r.stdout


def test_json_document(snaps):
    r = gpunode("gate", "--snapshot", str(snaps["bad"]), "--json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "gpunode.gate/1" and doc["status"] == "FAIL" and doc["blocked"]
    assert doc["exit_code"] == r.returncode == 2
    assert doc["reason"].startswith("gpunode: ") and doc["source"] == f"snapshot:{snaps['bad']}"
    assert all("gate" in c["tags"] for c in doc["checks"])


def test_snapshot_from_env_and_config(snaps, tmp_path):
    assert gpunode("gate", env={"GPUNODE_SNAPSHOT": str(snaps["bad"])}).returncode == 2
    config = tmp_path / "c.yaml"
    config.write_text(f"snapshot: {snaps['bad']}\n")
    assert gpunode("gate", config=config).returncode == 2
    # --snapshot beats the env var, which beats the config
    assert gpunode("gate", "--snapshot", str(snaps["ok"]), config=config).returncode == 0
    assert gpunode("gate", config=config, env={"GPUNODE_SNAPSHOT": str(snaps["ok"])}).returncode == 0


def test_disable_checks_in_config(snaps, tmp_path):
    r = gpunode("gate", "--snapshot", str(snaps["bad"]), "--json")
    failing = sorted({c["id"] for c in json.loads(r.stdout)["checks"] if c["status"] == "FAIL"})
    config = tmp_path / "c.yaml"
    config.write_text("disable_checks: [" + ", ".join(failing) + "]\n")
    r = gpunode("gate", "--snapshot", str(snaps["bad"]), "--json", config=config)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and not set(failing) & {c["id"] for c in doc["checks"]}


@pytest.mark.parametrize(
    ("args", "code"),
    [((), 2), (("--prolog",), 0), (("--prolog", "--strict"), 2), (("--epilog",), 0), (("--health-check",), 3)],
)
def test_broken_config_never_blocks_a_job_unless_strict(tmp_path, args, code):
    config = tmp_path / "c.yaml"
    config.write_text("expected_gpus: eight\n")
    r = gpunode("gate", *args, config=config)
    assert r.returncode == code
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpunode: error: ")
    assert "expected_gpus" in r.stderr


def test_bad_input(snaps, tmp_path):
    r = gpunode("gate", "--prolog", "--health-check", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 2 and r.stderr.startswith("gpunode: error: give one of")
    r = gpunode("gate", "--snapshot", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = gpunode("gate", "--snapshot", str(snaps["ok"]), "--timeout", "0")
    assert r.returncode == 2 and "--timeout must be positive" in r.stderr


def test_prolog_without_slurm_still_gates(snaps):
    """No scontrol answering: the gate still judges and blocks; the failed RPC is a warning."""
    ok = gpunode("gate", "--prolog", "--snapshot", str(snaps["ok"]), env={"SLURMD_NODENAME": "nosuch"})
    assert ok.returncode == 0
    bad = gpunode("gate", "--prolog", "--snapshot", str(snaps["bad"]), env={"SLURMD_NODENAME": "nosuch",
                                                                             "PATH": "/nonexistent"})
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0].startswith("gpunode: gpu.")
    assert "gpunode: warning: scontrol" in bad.stderr


def test_prolog_opt_out_from_env(snaps):
    r = gpunode("gate", "--prolog", "--snapshot", str(snaps["bad"]), env={"SLURM_JOB_COMMENT": "gpunode=off"})
    assert r.returncode == 0 and "opted out" in r.stdout


# --- slurm install ---------------------------------------------------------------------------

HOOKS = ("gpunode-prolog", "gpunode-epilog", "gpunode-healthcheck")


def test_install_dry_run_writes_nothing(tmp_path):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--dry-run")
    assert r.returncode == 0 and list(tmp_path.iterdir()) == []
    assert f"Prolog={tmp_path}/gpunode-prolog" in r.stdout and "PrologFlags=Alloc" in r.stdout
    assert f"HealthCheckProgram={tmp_path}/gpunode-healthcheck" in r.stdout
    assert "HealthCheckInterval=300" in r.stdout and "HealthCheckNodeState=ANY" in r.stdout


def test_install_writes_root_owned_hooks_and_is_idempotent(tmp_path, snaps):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--snapshot", str(snaps["ok"]), "--timeout", "12")
    assert r.returncode == 0, r.stderr
    for name in HOOKS:
        path = tmp_path / name
        assert path.stat().st_mode & 0o7777 == 0o755
        if os.geteuid() == 0:
            assert path.stat().st_uid == 0 and path.stat().st_gid == 0
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n") and "PATH=/usr/local/sbin:" in text
        assert f'|| GPUNODE_SNAPSHOT={snaps["ok"]}' in text and "--timeout 12" in text
        assert text.rstrip().splitlines()[-1].startswith(f"exec {sys.executable} -I -m gpunode gate --")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(HOOKS)  # no temp files left
    again = gpunode("slurm", "install", "--prefix", str(tmp_path), "--snapshot", str(snaps["ok"]), "--timeout", "12")
    assert again.stdout.count("unchanged: ") == 3


def test_installed_hook_runs_the_gate_and_an_inherited_snapshot_wins(tmp_path, snaps):
    gpunode("slurm", "install", "--prefix", str(tmp_path), "--snapshot", str(snaps["bad"]))
    hook = tmp_path / "gpunode-prolog"
    bare = {"SLURMD_NODENAME": "nosuch"}  # slurmd's prolog environment has no PATH
    assert subprocess.run([str(hook)], env=bare, capture_output=True, timeout=60).returncode == 2
    env = {**bare, "GPUNODE_SNAPSHOT": str(snaps["ok"])}
    assert subprocess.run([str(hook)], env=env, capture_output=True, timeout=60).returncode == 0


def test_installed_hook_never_imports_from_its_working_directory(tmp_path, snaps):
    """Hooks run as root: a module planted in the directory they start in must not load."""
    gpunode("slurm", "install", "--prefix", str(tmp_path), "--snapshot", str(snaps["ok"]))
    cwd = tmp_path / "jobdir"
    cwd.mkdir()
    (cwd / "yaml.py").write_text("raise SystemExit('planted module ran')\n")
    (cwd / "gpunode").mkdir()
    r = subprocess.run([str(tmp_path / "gpunode-prolog")], env={"SLURMD_NODENAME": "nosuch"}, cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "planted" not in r.stderr and "gpunode gate (prolog): OK" in r.stdout, r.stderr


def test_install_bad_input(tmp_path):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("gpunode: error: --prefix")
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_gate_help_is_quick_to_find():
    r = gpunode("gate", "--help")
    assert r.returncode == 0 and "--health-check" in r.stdout and "gpunode=off" in r.stdout


def test_prolog_hook_path_is_absolute(tmp_path):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--dry-run")
    assert all(Path(line.split("=", 1)[1]).is_absolute() for line in r.stdout.splitlines()
               if line.startswith(("Prolog=", "Epilog=", "HealthCheckProgram=")))


# --- the lean entry path (no typer) ----------------------------------------------------------

def test_fast_parser_knows_exactly_the_typer_options():
    """`gpunode gate` is parsed by gate_run without typer; both must offer the same options."""
    import typer.main

    from gpunode.cli import app
    from gpunode.slurm.fastpath import DEFAULTS, FLAGS, VALUES

    command = typer.main.get_command(app).commands["gate"]
    typer_opts = {opt: p.name for p in command.params for opt in p.opts}
    fast_opts = {**FLAGS, **{k: v[0] for k, v in VALUES.items()}}
    assert typer_opts == fast_opts
    assert {p.name: p.default for p in command.params} == DEFAULTS


def test_fast_parser():
    from gpunode.slurm.fastpath import parse_fast

    kw = parse_fast(["--prolog", "--timeout", "7.5", "--snapshot=/x", "--strict"])
    assert kw["prolog"] and kw["strict"] and kw["timeout"] == 7.5 and str(kw["snapshot"]) == "/x"
    assert parse_fast([])["timeout"] == 20.0
    # anything else goes to typer, which prints its usual help or usage error
    for args in (["--help"], ["--timeout"], ["--timeout", "soon"], ["--timeout", "--json"], ["--bogus"], ["x"]):
        assert parse_fast(args) is None


def test_typer_answers_what_the_fast_path_does_not(snaps):
    r = gpunode("gate", "--timeout", "soon", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 2 and r.stderr.startswith("Usage:")  # typer's usage error


def test_gate_does_not_import_typer_or_rich(snaps):
    heavy = ("typer", "rich", "pydantic", "click", "torch")
    code = "\n".join([
        f"import sys; sys.argv = ['gpunode', 'gate', '--snapshot', {str(snaps['ok'])!r}]",
        "from gpunode.cli import main",
        "try:\n    main()\nexcept SystemExit:\n    pass",
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_hooks_quote_paths_with_spaces_and_quotes(tmp_path, snaps):
    odd = tmp_path / "it's a snap"
    shutil.copytree(snaps["ok"], odd)
    prefix = tmp_path / "hook dir"
    prefix.mkdir()
    r = gpunode("slurm", "install", "--prefix", str(prefix), "--snapshot", str(odd))
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(prefix / "gpunode-prolog")], env={"SLURMD_NODENAME": "nosuch"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr
