"""`gpunode slurm install` keeps a site's own hooks and settings: its Prolog, Epilog and
HealthCheckProgram keep running (a chain runs them first), PrologFlags keeps its flags,
HealthCheckInterval and HealthCheckNodeState keep the site's values. (On the real Slurm:
tests/test_slurm_chain.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpunode.slurm.chain import CHAIN_NAMES, chained_program, conf_values, plan_install


def install(tmp_path: Path, conf_text: str, *extra: str, dry_run: bool = True) -> subprocess.CompletedProcess:
    conf = tmp_path / "slurm.conf"
    conf.write_text(conf_text)
    prefix = tmp_path / "hooks"
    prefix.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "GPUNODE_"))}
    return subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(prefix),
                           "--slurm-conf", str(conf), *(["--dry-run"] if dry_run else []), *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def conf_lines(out: str) -> list[str]:
    return out.split("then `scontrol reconfigure`:\n", 1)[1].splitlines()


def test_a_trailing_comment_is_not_part_of_the_program(tmp_path):
    """The site's NHC keeps running: `# LBNL NHC` after the path is a comment, not an argument
    or a path (chained as part of the path, the chain's first command would not exist)."""
    r = install(tmp_path, "HealthCheckProgram=/usr/sbin/nhc   # LBNL NHC, see nhc.conf\n", dry_run=False)
    assert r.returncode == 0, r.stderr
    chain = tmp_path / "hooks" / CHAIN_NAMES["health-check"]
    assert chained_program(chain) == "/usr/sbin/nhc"
    assert "\n/usr/sbin/nhc\nsite_rc=$?\n" in chain.read_text()
    assert conf_values(tmp_path / "slurm.conf") == {"healthcheckprogram": "/usr/sbin/nhc"}


def test_existing_prolog_and_epilog_keep_running(tmp_path):
    r = install(tmp_path, "Prolog=/etc/slurm/site-prolog\nepilog = /etc/slurm/site-epilog # cleanup\n")
    assert r.returncode == 0, r.stderr
    hooks = tmp_path / "hooks"
    lines = conf_lines(r.stdout)
    assert f"Prolog={hooks}/gpunode-prolog-chain  # runs /etc/slurm/site-prolog, then gpunode" in lines
    assert f"Epilog={hooks}/gpunode-epilog-chain  # runs /etc/slurm/site-epilog, then gpunode" in lines
    assert not any(line.startswith(("Prolog=/etc", "Epilog=/etc", f"Prolog={hooks}/gpunode-prolog\n")) for line in lines)
    assert "chaining with the existing Prolog /etc/slurm/site-prolog" in r.stderr
    assert f"\n/etc/slurm/site-prolog\nsite_rc=$?\n{hooks}/gpunode-prolog\n" in r.stdout


@pytest.mark.parametrize(("site", "ours"), [(0, 0), (0, 2), (1, 0), (1, 2), (127, 0)])
def test_a_chain_exits_with_the_site_program_when_it_failed_else_with_gpunode(tmp_path, site, ours):
    from gpunode.slurm.chain import chain_script

    site_prog, hook, ran = tmp_path / "site", tmp_path / "gpunode-prolog", tmp_path / "ran"
    site_prog.write_text(f"#!/bin/sh\necho site >> {ran}\nexit {site}\n")
    hook.write_text(f"#!/bin/sh\necho gpunode >> {ran}\nexit {ours}\n")
    for p in (site_prog, hook):
        p.chmod(0o755)
    chain = tmp_path / "chain"
    chain.write_text(chain_script(str(site_prog), hook, "prolog"))
    chain.chmod(0o755)
    r = subprocess.run([str(chain)], env={}, capture_output=True, timeout=30)
    assert r.returncode == (site or ours)
    assert ran.read_text().split() == ["site", "gpunode"]


def test_a_second_install_keeps_the_site_program_its_chain_runs(tmp_path):
    first = install(tmp_path, "Prolog=/etc/slurm/site-prolog\n", dry_run=False)
    assert first.returncode == 0, first.stderr
    chain = tmp_path / "hooks" / CHAIN_NAMES["prolog"]
    # The operator applied the printed line: slurm.conf now names gpunode's chain.
    again = install(tmp_path, f"Prolog={chain}\n", dry_run=False)
    assert again.returncode == 0, again.stderr
    assert chained_program(chain) == "/etc/slurm/site-prolog"
    assert f"Prolog={chain}  # runs /etc/slurm/site-prolog, then gpunode" in conf_lines(again.stdout)


def test_a_glob_prolog_is_left_alone_with_a_note(tmp_path):
    r = install(tmp_path, "Prolog=/etc/slurm/prolog.d/*\n")
    assert r.returncode == 0, r.stderr
    assert not any(line.startswith("Prolog=") for line in conf_lines(r.stdout))
    assert "Prolog=/etc/slurm/prolog.d/* runs several programs: left as it is" in r.stderr
    assert CHAIN_NAMES["prolog"] not in r.stdout


@pytest.mark.parametrize(("flags", "line"), [
    (None, "PrologFlags=Alloc"),
    ("X11", "PrologFlags=X11,Alloc"),
    ("Contain,X11", "# PrologFlags=Contain,X11 already runs the prolog at allocation: unchanged"),
    ("alloc", "# PrologFlags=alloc already runs the prolog at allocation: unchanged"),
])
def test_prolog_flags_are_merged_never_replaced(tmp_path, flags, line):
    r = install(tmp_path, f"PrologFlags={flags}\n" if flags else "ClusterName=x\n")
    assert r.returncode == 0, r.stderr
    lines = conf_lines(r.stdout)
    assert line in lines and sum(x.startswith("PrologFlags=") for x in lines) == (0 if line.startswith("#") else 1)


def test_health_check_interval_and_node_state_are_the_sites(tmp_path):
    lines = conf_lines(install(tmp_path, "HealthCheckInterval=600\nHealthCheckNodeState=IDLE,CYCLE\n").stdout)
    assert "# HealthCheckInterval=600 (the site's value): unchanged" in lines
    assert "# HealthCheckNodeState=IDLE,CYCLE (the site's value): unchanged" in lines
    assert not any(x.startswith(("HealthCheckInterval=", "HealthCheckNodeState=")) for x in lines)
    lines = conf_lines(install(tmp_path, "HealthCheckInterval=600\n", "--interval", "120").stdout)
    assert "HealthCheckInterval=120" in lines  # asked for explicitly
    lines = conf_lines(install(tmp_path, "ClusterName=x\n").stdout)
    assert "HealthCheckInterval=300" in lines and "HealthCheckNodeState=ANY" in lines
    lines = conf_lines(install(tmp_path, "HealthCheckInterval=0\n").stdout)  # 0: the check never ran
    assert "HealthCheckInterval=300  # was 0: no health check ran" in lines


def test_no_chain_replaces_every_hook(tmp_path):
    plan = plan_install(Path("/etc/slurm"), {"prolog": "/x/p", "epilog": "/x/e", "healthcheckprogram": "/x/h"},
                        no_chain=True)
    assert plan.scripts == []
    assert [x for x in plan.conf_lines if not x.startswith(("#", "PrologFlags", "HealthCheckI", "HealthCheckN"))] == [
        "Prolog=/etc/slurm/gpunode-prolog", "Epilog=/etc/slurm/gpunode-epilog",
        "HealthCheckProgram=/etc/slurm/gpunode-healthcheck"]


def test_conf_values_reads_the_last_value_case_insensitively_and_skips_comments(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("#Prolog=/commented\nPROLOG=/a\nProlog=/b # later wins\n  Epilog = \"/c\"\nNodeName=n1 CPUs=4\n")
    values = conf_values(conf)
    assert values["prolog"] == "/b" and values["epilog"] == "/c" and "nodename" in values
    assert conf_values(tmp_path / "missing.conf") == {}


def test_chain_names_the_health_checks_program_only():
    # --chain PROGRAM is the health check's site program; the Prolog and Epilog are still read
    # from slurm.conf (here: none, so gpunode's own hooks)
    plan = plan_install(Path("/opt/g"), {"healthcheckprogram": "/usr/sbin/nhc"}, chain="/opt/site/check")
    assert [s.path.name for s in plan.scripts] == ["gpunode-healthcheck-chain"]
    assert "\n/opt/site/check\nsite_rc=$?\n" in plan.scripts[0].text
    assert "Prolog=/opt/g/gpunode-prolog" in plan.conf_lines and "Epilog=/opt/g/gpunode-epilog" in plan.conf_lines
    assert "HealthCheckProgram=/opt/g/gpunode-healthcheck-chain  # runs /opt/site/check, then gpunode" in plan.conf_lines


@pytest.mark.parametrize("budget", [1, 0.5])
def test_a_hook_budget_of_a_second_or_less_is_kept(tmp_path, budget):
    from gpunode.slurm.install import hook_scripts

    prolog = next(s for s in hook_scripts(tmp_path, sys.executable, timeout=budget) if s.mode == "prolog")
    assert f" --timeout {budget:g}" in prolog.text


@pytest.mark.parametrize(("age", "ok"), [(1, True), (1200, True), (0, False), (1201, False)])
def test_the_watch_verdict_age_is_1_to_1200_seconds(age, ok):
    # 2 x the watcher's poll: a fresh verdict answers the prolog for at most 20 minutes
    from gpunode.slurm.install import WatchVerdict

    if ok:
        assert WatchVerdict(max_age_s=age).max_age_s == age
        return
    with pytest.raises(ValueError, match=f"verdict age {age}: must be 1-1200 seconds"):
        WatchVerdict(max_age_s=age)


def test_a_hook_written_as_root_is_root_owned_in_a_setgid_directory(tmp_path):
    # slurmd runs the hooks as root: written as root they are root:root and 0755, even where the
    # directory would hand them its own group (setgid, e.g. a shared /opt tree)
    from gpunode.slurm.install import HookScript, install_script
    from testkit import require

    require(os.geteuid() == 0, "root (chown of the hook)")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4321)
    os.chmod(shared, 0o2755)
    hook = shared / "gpunode-prolog"
    assert install_script(HookScript("prolog", hook, "#!/bin/sh\nexit 0\n"), as_root=True) == "written"
    info = hook.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o755)
