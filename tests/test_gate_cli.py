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
    [((), 3), (("--prolog",), 0), (("--prolog", "--strict"), 3), (("--epilog",), 0), (("--health-check",), 3)],
)
def test_broken_config_never_blocks_a_job_unless_strict(tmp_path, args, code):
    config = tmp_path / "c.yaml"
    config.write_text("expected_gpus: eight\n")
    r = gpunode("gate", *args, config=config)
    assert r.returncode == code
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpunode: error: ")
    assert "expected_gpus" in r.stderr


def test_bad_input(snaps, tmp_path):
    r = gpunode("gate", "--epilog", "--health-check", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 0 and r.stderr.startswith("gpunode: error: give one of")  # never blocks
    r = gpunode("gate", "--json", "--json", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 0
    r = gpunode("gate", "--snapshot", str(tmp_path / "missing"))
    assert r.returncode == 3 and "not a directory" in r.stderr  # gpunode's own: UNKNOWN, never FAIL
    r = gpunode("gate", "--snapshot", str(snaps["ok"]), "--timeout", "0")
    assert r.returncode == 3 and "--timeout must be positive" in r.stderr


def test_prolog_without_slurm_still_gates(snaps):
    """No scontrol answering: the gate still judges and blocks; the failed RPC is a warning."""
    ok = gpunode("gate", "--prolog", "--snapshot", str(snaps["ok"]), env={"SLURMD_NODENAME": "nosuch"})
    assert ok.returncode == 0
    bad = gpunode("gate", "--prolog", "--snapshot", str(snaps["bad"]), env={"SLURMD_NODENAME": "nosuch",
                                                                             "PATH": "/nonexistent"})
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0].startswith("gpunode: gpu.")
    assert "gpunode: warning: scontrol" in bad.stderr


def test_prolog_opt_out_only_where_the_site_allows_it_and_always_logged(snaps, tmp_path):
    """Off by default: a job's gpunode=off does not skip the gate. Allowed by the config
    (allow_job_opt_out: true), each opt-out is one audit-trail (syslog) line naming the job
    and its user."""
    import socket

    job = {"SLURM_JOB_COMMENT": "gpunode=off", "SLURM_JOB_ID": "4711", "SLURM_JOB_USER": "alice",
           "SLURMD_NODENAME": "nosuch", "PATH": str(tmp_path)}  # no scontrol: nothing drains
    r = gpunode("gate", "--prolog", "--snapshot", str(snaps["bad"]), env=job)
    assert r.returncode == 2 and "opted out" not in r.stdout
    sock_path = tmp_path / "log.sock"
    config = tmp_path / "c.yaml"
    config.write_text(f"allow_job_opt_out: true\naudit_log: {sock_path}\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(5)
        r = gpunode("gate", "--prolog", "--snapshot", str(snaps["bad"]), env=job, config=config)
        assert r.returncode == 0 and "opted out" in r.stdout, r.stdout + r.stderr
        line = sock.recv(4096).decode()
    assert line.startswith("<84>gpunode[") and " opt-out mode=prolog job=4711 user=alice " in line, line
    assert "from=SLURM_JOB_COMMENT" in line


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
        assert f"python={sys.executable}\n" in text and '\n"$python" -I -m gpunode gate --' in text
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
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: --prefix")
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 3 and "does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_gate_help_is_quick_to_find():
    r = gpunode("gate", "--help")
    assert r.returncode == 0 and "--health-check" in r.stdout and "gpunode=off" in r.stdout


def test_prolog_hook_path_is_absolute(tmp_path):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--dry-run")
    assert all(Path(line.split("=", 1)[1]).is_absolute() for line in r.stdout.splitlines()
               if line.startswith(("Prolog=", "Epilog=", "HealthCheckProgram=")))


# --- the lean entry path (no typer) ----------------------------------------------------------

def test_typer_help_is_built_from_the_one_option_list():
    """GATE_OPTIONS is the one declaration: typer's `gate` (help) is made from it."""
    import typer.main

    from gpunode.cli import app
    from gpunode.slurm.fastpath import GATE_OPTIONS

    command = typer.main.get_command(app).commands["gate"]
    assert {opt: p.name for p in command.params for opt in p.opts} == {o.flag: o.key for o in GATE_OPTIONS}
    assert {p.name: p.default for p in command.params} == {o.key: o.default for o in GATE_OPTIONS}
    assert {p.name: p.is_flag for p in command.params} == {o.key: o.kind is bool for o in GATE_OPTIONS}


def test_fast_parser():
    from gpunode.slurm.fastpath import GateUsageError, parse_gate_args

    kw = parse_gate_args(["--prolog", "--timeout", "7.5", "--snapshot=/x", "--strict"])
    assert kw["prolog"] and kw["strict"] and kw["timeout"] == 7.5 and kw["snapshot"] == "/x"
    assert parse_gate_args([])["timeout"] == 20.0
    for args in (["--timeout"], ["--timeout", "soon"], ["--timeout", "--json"], ["--bogus"], ["x"],
                 ["--json=yes"], ["-p"]):
        with pytest.raises(GateUsageError):
            parse_gate_args(args)


def test_a_usage_error_in_check_mode_is_gpunodes_own_one_line(snaps):
    r = gpunode("gate", "--timeout", "soon", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 3 and r.stderr == "gpunode: error: --timeout: 'soon' is not a number\n"


# Each would make typer exit 2 in a prolog, and Slurm drain the node for gpunode's own mistake.
MALFORMED = [("--bogus",), ("--timeout",), ("--timeout", "soon"), ("--timeout", "nan"), ("--timeout", "-1"),
             ("--check-timeout", "inf"), ("--json=1",), ("--epilog",), ("--health-check",), ("stray",)]


@pytest.mark.parametrize("extra", MALFORMED)
@pytest.mark.parametrize(("mode", "code"), [("--prolog", 0), ("--epilog", 0), ("--health-check", 3)])
def test_a_malformed_option_in_a_slurm_mode_never_blocks_nor_drains(snaps, tmp_path, mode, code, extra):
    """gpunode's own error: one line, exit 0 (prolog/epilog) or 3 (health check, which Slurm
    only logs), and no scontrol call at all (a stand-in on PATH records any)."""
    if extra[0] == mode:
        extra = ("--prolog",) if mode != "--prolog" else ("--epilog",)
    if {"--prolog", "--epilog"} & {mode, *extra}:
        code = 0  # two modes: the job hooks' rule (never block) wins over the health check's 3
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    r = gpunode("gate", mode, *extra, "--snapshot", str(snaps["bad"]),
                env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURMD_NODENAME": "vm"})
    assert r.returncode == code, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpunode: error: ")
    assert not calls.exists()


def test_a_malformed_option_blocks_only_with_strict(snaps):
    r = gpunode("gate", "--prolog", "--strict", "--bogus", "--snapshot", str(snaps["ok"]))
    assert r.returncode == 3 and "blocking (--strict)" in r.stderr  # non-zero: Slurm drains, by choice


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


# What a gate on a host without a watcher, an NVL tray or Slurm never needs (issue 21: the gate
# is not slower than before them): each is imported only where it is needed.
NOT_ON_THE_GATE_PATH = (
    "gpunode.watch.state",  # slurm/from_watcher.py stats health.json first
    "gpunode.host.facts.imex",  # checks/nvlink.py: NVL compute trays only
    "gpunode.host.gpu.sample",  # telemetry (bench, diag, watch): the gate never samples
)


def test_the_live_gate_path_imports_only_what_it_needs(tmp_path):
    """Each module is start-up time before every job: no logging (only --debug sets it up), no
    pathlib before the NVML read starts, no check module without gate checks, no PyYAML once the
    profile is in the parse cache; and every dataclass it defines has a docstring (without one,
    dataclasses calls inspect.signature on the class at import); none of NOT_ON_THE_GATE_PATH."""
    code = "\n".join([
        "import sys, dataclasses",
        "start = set(sys.modules)  # what the interpreter and site imported (a .pth may add some)",
        "from gpunode.slurm import fastpath",
        "source = fastpath._start_nvml(None)",
        "early = sorted(m for m in ('pathlib', 'logging', 'gpunode.host.seam', 'gpunode.host.runner') if m in sys.modules and m not in start)",
        "sys.argv = ['gpunode', 'gate']",
        "from gpunode.cli import main",
        "try:\n    main()\nexcept SystemExit:\n    pass",
        "checks = sorted(m.split('.')[-1] for m in sys.modules if m.startswith('gpunode.checks.'))",
        "undocumented = sorted(f'{m}.{v.__name__}' for m, mod in list(sys.modules.items()) if m.startswith('gpunode')"
        " for v in vars(mod).values() if isinstance(v, type) and dataclasses.is_dataclass(v)"
        " and v.__module__ == m and (v.__doc__ or '').startswith(v.__name__ + '('))",
        "late = [m for m in ('logging', 'yaml') if m in sys.modules and m not in start]",
        f"needless = [m for m in {NOT_ON_THE_GATE_PATH!r} if m in sys.modules]",
        "print(early, late, checks, undocumented, needless)",
    ])
    env = dict(os.environ, GPUNODE_STATE_DIR=str(tmp_path), GPUNODE_WATCH_DIR=str(tmp_path / "no-watcher"))
    env.pop("GPUNODE_SNAPSHOT", None)
    for _ in range(2):  # the second run finds its profile in the parse cache
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip().splitlines()[-1] == (
        "[] [] ['gpu', 'gpu_common', 'net', 'nvlink', 'pcie', 'settings', 'storage', 'xid'] [] []"), \
        r.stdout + r.stderr


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


# --- install refuses what would switch the gate off --------------------------------------------

@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "0", "-1", "1e-400"])
def test_install_refuses_a_budget_the_gate_would_refuse(tmp_path, timeout):
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), f"--timeout={timeout}")
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: --timeout"), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_install_refuses_a_config_or_snapshot_the_gate_cannot_load(tmp_path):
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("expected_gpus: eight\n")
    not_a_snapshot = tmp_path / "empty"
    not_a_snapshot.mkdir()
    prefix = tmp_path / "hooks"
    prefix.mkdir()
    for option, value in (("--config", bad_config), ("--snapshot", not_a_snapshot)):
        r = gpunode("slurm", "install", "--prefix", str(prefix), option, str(value))
        assert r.returncode == 3 and r.stderr.startswith(f"gpunode: error: {option}"), r.stderr
    assert list(prefix.iterdir()) == []


@pytest.mark.parametrize("timeout", ["0.001", "7.25", "1e6"])
def test_every_budget_install_accepts_runs_the_gate(tmp_path, snaps, timeout):
    """The hooks never answer "gate not run" because of a value install took."""
    r = gpunode("slurm", "install", "--prefix", str(tmp_path), "--timeout", timeout, "--snapshot", str(snaps["bad"]))
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(tmp_path / "gpunode-prolog")], env={"SLURMD_NODENAME": "nosuch"},
                         capture_output=True, text=True, timeout=60)
    assert "gate not run" not in run.stderr and "gpunode gate (prolog):" in run.stdout, run.stderr
    assert run.returncode == 2  # judged (the budget floor still runs the checks): the FAIL blocks


# --- a damaged recorded document is judged on what it still shows ------------------------------

def _drop(key):
    return lambda gpu: gpu.pop(key)


DAMAGE = {
    "no index": _drop("index"),
    "no field_errors": _drop("field_errors"),
    "no processes": _drop("processes"),
    "process without pid": lambda gpu: gpu.update(processes=[{"kind": "compute"}]),
    "processes not a list": lambda gpu: gpu.update(processes="none"),
    "nvlink without link": lambda gpu: gpu.update(nvlinks=[{"active": True}]),
    "temperature as text": lambda gpu: gpu.update(temperature_c="hot"),
    "ecc count as bool": lambda gpu: gpu.update(ecc_uncorrected_aggregate=True),
    "unknown field": lambda gpu: gpu.update(future_field=1),
}


TOP_DAMAGE = {
    "no available": lambda inv: inv.pop("available"),
    "available as text": lambda inv: inv.update(available="yes"),
    "driver version as number": lambda inv: inv.update(driver_version=580),
}


@pytest.mark.parametrize("damage", [*DAMAGE, *TOP_DAMAGE])
def test_a_failed_row_remap_in_a_damaged_document_still_blocks(tmp_path, damage):
    inventory = h100_inventory(2, remap_failure=True)
    if damage in TOP_DAMAGE:
        TOP_DAMAGE[damage](inventory)
    else:
        DAMAGE[damage](inventory["gpus"][0])
    snap = write_snapshot(tmp_path / "snap", inventory)
    r = gpunode("gate", "--prolog", "--snapshot", str(snap), env={"SLURMD_NODENAME": "nosuch", "PATH": "/nonexistent"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("gpunode: gpu.memory.remap GPU0: row remapping failed")


def test_a_damaged_field_errors_only_the_checks_that_read_it(tmp_path):
    from gpunode.host.gpu.model import GpuInventory

    inventory = h100_inventory(1, temperature_c="hot", processes=[{"kind": "compute"}, {"pid": 7, "kind": "compute"}])
    gpu = GpuInventory.from_json(inventory).gpus[0]
    assert gpu.temperature_c is None and "temperature_c" in gpu.field_errors
    assert [p.pid for p in gpu.processes] == [7] and "processes" in gpu.field_errors
    assert gpu.index == 0 and gpu.remap_failure is False and gpu.error is None
    snap = write_snapshot(tmp_path / "snap", inventory)
    doc = json.loads(gpunode("gate", "--json", "--snapshot", str(snap)).stdout)
    status = {c["id"]: c["status"] for c in doc["checks"]}
    assert status["gpu.processes"] == "ERROR" and status["gpu.memory.remap"] == "PASS"


# --- gate and audit judge ECC mode alike ---------------------------------------------------------

def test_gate_and_audit_both_fail_a_gpu_with_ecc_off(tmp_path):
    snap = write_snapshot(tmp_path / "snap", h100_inventory(1, ecc_mode_current=False, ecc_mode_pending=False))
    gate = json.loads(gpunode("gate", "--json", "--snapshot", str(snap)).stdout)
    audit = json.loads(gpunode("audit", "--json", "--snapshot", str(snap)).stdout)

    def ecc_mode(doc):
        return [(c["id"], c["subject"], c["status"]) for c in doc["checks"] if c["id"].endswith("ecc_mode")]

    assert ecc_mode(gate) == ecc_mode(audit) != [] and ecc_mode(gate)[0][2] == "FAIL"
    assert gate["status"] == "FAIL" and gate["blocked"]


def test_the_nvml_worker_thread_imports_nothing():
    """The gate starts the NVML read in a thread while it imports the rest. Two threads that
    import at once can hand one of them a half-made module ("partially initialized module
    'typing'", seen in this suite): every module the worker needs is imported before it starts."""
    code = "\n".join([
        "import builtins, sys, threading",
        "late = []",
        "real = builtins.__import__",
        "def spy(name, globals=None, locals=None, fromlist=(), level=0):",
        "    if threading.current_thread().name == 'nvml-collect' and name not in sys.modules:",
        "        late.append(name)",
        "    return real(name, globals, locals, fromlist, level)",
        "builtins.__import__ = spy",
        "from gpunode.host.gpu.source import LiveGpuSource",
        "LiveGpuSource().inventory(timeout=30)",
        "print(late)",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_expected_gpus_option_overrides_the_config(tmp_path):
    one = write_snapshot(tmp_path / "one", h100_inventory(1))
    config = tmp_path / "c.yaml"
    config.write_text("expected_gpus: 1\n")
    assert gpunode("gate", "--snapshot", str(one), config=config).returncode == 0
    r = gpunode("gate", "--snapshot", str(one), "--expected-gpus", "8", "--json", config=config)
    assert r.returncode == 2 and json.loads(r.stdout)["expected_gpus"] == 8
    for bad in ("-1", "eight"):
        r = gpunode("gate", "--snapshot", str(one), "--expected-gpus", bad)
        assert r.returncode == 3 and r.stderr.startswith("gpunode: error: --expected-gpus"), r.stderr
