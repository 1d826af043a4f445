"""storage.lustre: the default layout of Lustre data directories (`lfs getstripe -d`) against the
file system's OSTs (`lfs osts`), on Lustre's documented outputs (tests/fixtures/lustre/README.md:
documented, not recorded), a cut-off output and an lfs that fails."""

from __future__ import annotations

import pytest

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.checks import datapaths
from gpunode.config import Config
from gpunode.host.facts.lustre import ost_count, parse_default_layout
from gpunode.host.runner import ReplayRunner
from gpunode.model.profile import Profile
from testkit import FIXTURES, HOSTS, fixture_host, tree_host

FX = FIXTURES / "lustre"
MOUNTS = ("10.0.0.1@o2ib:/scratch /lustre/scratch lustre rw,flock,lazystatfs 0 0\n"
          "10.0.0.2@o2ib:/proj /lustre/proj lustre rw,flock 0 0\n"
          "10.0.0.5:/home /home nfs4 rw,vers=4.2,hard 0 0\n")


def fx(name: str) -> str:
    return (FX / name).read_text()


def lfs(runner: ReplayRunner, args: list[str], stdout: str = "", rc: int = 0, stderr: str = "") -> None:
    runner.add(["lfs", *args], rc=rc, stdout=stdout, stderr=stderr)


def judge(tmp_path, runner, config=None, mounts=MOUNTS):
    host = tree_host(tmp_path / "root", {"/proc/mounts": mounts}, runner=runner)
    ctx = AuditContext(host=host, profile=Profile("t"), config=config or Config())
    return [(r.status.value, r.subject, r.message) for r in run_checks([datapaths.lustre], ctx)]


@pytest.mark.parametrize(("name", "counts", "wide"), [
    ("getstripe-d-plain.txt", [1], False),
    ("getstripe-d-pool.txt", [1], False),
    ("getstripe-d-overstriped.txt", [8], True),
    ("getstripe-d-pfl-dom-wide.txt", [0, -1], True),
    ("getstripe-d-pfl-dom-narrow.txt", [0, 1], False),
])
def test_documented_default_layouts_parse(name, counts, wide):
    layout = parse_default_layout(fx(name))
    assert [c.stripe_count for c in layout.components] == counts
    assert layout.wide is wide
    assert layout.composite is (len(counts) > 1)


def test_layout_details():
    assert parse_default_layout(fx("getstripe-d-pool.txt")).describe() == "stripe_count 1, pool ddn_hdd"
    pfl = parse_default_layout(fx("getstripe-d-pfl-dom-wide.txt"))
    assert [(c.pattern, c.end) for c in pfl.components] == [("mdt", "65536"), ("raid0", "EOF")]
    assert pfl.describe() == "PFL layout of 2 components, stripe_count -1"  # the DoM part holds no OST object
    assert parse_default_layout("stripe_count:  -1 stripe_size:   1048576 pattern:       raid0 stripe_offset: -1\n").wide


@pytest.mark.parametrize("text", [
    fx("getstripe-d-truncated.txt"),
    fx("getstripe-d-plain.txt")[:16],  # `stripe_count:  1` cut off: it may have been 16
    "\n    lcme_id:".join(fx("getstripe-d-pfl-dom-wide.txt").split("\n    lcme_id:")[:2]),  # 1 of 2 components
    fx("getstripe-d-plain.txt")[:26],  # the count whole, stripe_size cut off
    "  lcm_entry_count:   0\n",
    "", "lfs: command not found\n", fx("osts-4.txt"),
])
def test_cut_off_or_foreign_output_is_refused(text):
    with pytest.raises(ValueError):
        parse_default_layout(text)


def test_ost_counts_from_lfs_osts_and_lfs_df():
    assert ost_count(fx("osts-4.txt")) == 4
    assert ost_count(fx("osts-1.txt")) == 1
    assert ost_count(fx("df-h-lumi.txt")) == 4  # MDTs are not OSTs
    with pytest.raises(ValueError):
        ost_count("OBDS::\n")


def test_one_stripe_over_many_osts_warns_wide_layouts_pass(tmp_path):
    runner = ReplayRunner()
    lfs(runner, ["getstripe", "-d", "/lustre/scratch"], fx("getstripe-d-plain.txt"))
    lfs(runner, ["osts", "/lustre/scratch"], fx("osts-4.txt"))
    lfs(runner, ["getstripe", "-d", "/lustre/proj"], fx("getstripe-d-pfl-dom-wide.txt"))
    results = judge(tmp_path, runner)
    assert results == [
        ("WARN", "/lustre/scratch", "default stripe_count 1 on a file system of 4 OSTs: each new file sits on one "
                                    "OST (one server's bandwidth for a whole dataset file or checkpoint)"),
        ("PASS", "/lustre/proj", "default PFL layout of 2 components, stripe_count -1 (10.0.0.2@o2ib:/proj)"),
    ]
    assert ["lfs", "osts", "/lustre/proj"] not in runner.calls  # a wide layout needs no OST count


def test_configured_data_paths_are_judged_and_one_ost_is_fine(tmp_path):
    runner = ReplayRunner()
    lfs(runner, ["getstripe", "-d", "/lustre/scratch/imagenet"], fx("getstripe-d-pfl-dom-narrow.txt"))
    lfs(runner, ["getstripe", "-d", "/lustre/scratch/ckpt"], fx("getstripe-d-overstriped.txt"))
    lfs(runner, ["osts", "/lustre/scratch"], fx("osts-1.txt"))
    config = Config(data_mounts=["/lustre/scratch/imagenet", "/lustre/scratch/ckpt", "/home/me"])
    assert judge(tmp_path, runner, config) == [
        ("PASS", "/lustre/scratch/imagenet", "default PFL layout of 2 components, stripe_count 1 on a file system "
                                             "of one OST (10.0.0.1@o2ib:/scratch)"),
        ("PASS", "/lustre/scratch/ckpt", "default stripe_count 8 (10.0.0.1@o2ib:/scratch)"),
    ]
    lfs(runner, ["osts", "/lustre/scratch"], fx("osts-4.txt"))
    assert judge(tmp_path / "4", runner, config)[0][0] == "WARN"  # the same narrow PFL over 4 OSTs


def test_a_failing_or_cut_off_lfs_is_an_error_for_that_directory(tmp_path):
    runner = ReplayRunner()
    lfs(runner, ["getstripe", "-d", "/lustre/scratch"], rc=1, stderr=fx("getstripe-d-error.stderr"))
    lfs(runner, ["getstripe", "-d", "/lustre/proj"], fx("getstripe-d-truncated.txt"))
    assert judge(tmp_path, runner) == [
        ("ERROR", "/lustre/scratch", "lfs getstripe -d /lustre/scratch exited 1: lfs getstripe: cannot get lov "
                                     "name: Inappropriate ioctl for device (25)"),
        ("ERROR", "/lustre/proj", "lfs getstripe -d /lustre/proj: no complete stripe_count and stripe_size "
                                  "(output cut off?)"),
    ]
    runner = ReplayRunner()
    lfs(runner, ["getstripe", "-d", "/lustre/scratch"], fx("getstripe-d-plain.txt"))
    runner.add(["lfs", "osts", "/lustre/scratch"], rc=-9, timed_out=True)
    config = Config(data_mounts=["/lustre/scratch"])
    assert judge(tmp_path / "t", runner, config) == [
        ("ERROR", "/lustre/scratch", "lfs osts /lustre/scratch gave no answer within 20s (a hung Lustre server?)")]


def test_no_lfs_or_no_lustre_skips(tmp_path):
    assert judge(tmp_path, ReplayRunner()) == [
        ("SKIP", None, "lfs cannot run: lfs: not recorded in this snapshot (Lustre client utilities not installed?)")]
    only_nfs = "10.0.0.5:/home /home nfs4 rw,vers=4.2,hard 0 0\n"
    assert judge(tmp_path / "n", ReplayRunner(), mounts=only_nfs) == [("SKIP", None, "no Lustre among the mounts")]
    config = Config(data_mounts=["/home/me"])
    assert judge(tmp_path / "c", ReplayRunner(), config) == [
        ("SKIP", None, "no Lustre among the configured data_mounts")]


@pytest.mark.parametrize("name", ["h100-sxm-1gpu", "h200-1gpu"])
def test_recorded_hosts_mount_no_lustre(name):
    assert "lustre" not in (HOSTS / name / "files/proc/mounts").read_text()
    host = fixture_host(name)
    ctx = AuditContext(host=host, profile=Profile("t"), config=Config())
    assert [(r.status.value, r.message) for r in run_checks([datapaths.lustre], ctx)] == [
        ("SKIP", "no Lustre among the mounts")]
