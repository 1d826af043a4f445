"""fio never writes beside its own file: a `:` in --fio-dir or $TMPDIR (fio's file-name separator)
is escaped, and every run proves afterwards that no neighbouring file changed (real fio)."""

import os
import shutil
import tempfile

import pytest

import testkit
from gpunode.bench import fio
from gpunode.host.runner import CommandResult, Runner
from gpunode.host.sysroot import SysRoot
from testkit import FIXTURES

PLAN = fio.FioPlan(size_bytes=4 << 20, runtime_s=1)


def real_fio() -> str:
    binary = shutil.which("fio")
    testkit.require(binary is not None, "fio is not installed (apt-get install fio)")
    return binary


def precious(path):
    path.write_bytes(b"precious data\n")
    return path


def test_colon_in_fio_dir_does_not_overwrite_the_neighbour(tmp_path):
    # --fio-dir /x/data:set: unescaped, fio splits it into /x/data (overwritten with zeros) and set/...
    neighbour = precious(tmp_path / "data")
    (tmp_path / "data:set").mkdir()
    target = fio.prepare_target(SysRoot("/"), PLAN, directory=str(tmp_path / "data:set"))
    metrics = fio.run_fio(Runner(), real_fio(), target, PLAN)
    assert neighbour.read_bytes() == b"precious data\n"
    assert all(m.status == "PASS" for m in metrics), [m.message for m in metrics]
    assert os.listdir(tmp_path / "data:set") == []  # scratch file and private dir removed


def test_colon_in_tmpdir_does_not_overwrite_the_neighbour(tmp_path, monkeypatch):
    neighbour = precious(tmp_path / "tmp")
    (tmp_path / "tmp:1").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp:1"))  # what $TMPDIR=.../tmp:1 gives
    target = fio.prepare_target(SysRoot("/"), PLAN)
    assert target.path.startswith(str(tmp_path / "tmp:1") + "/")
    metrics = fio.run_fio(Runner(), real_fio(), target, PLAN)
    assert neighbour.read_bytes() == b"precious data\n"
    assert all(m.status == "PASS" for m in metrics), [m.message for m in metrics]


def test_fio_gets_the_documented_escape():
    target = fio.FioTarget("/mnt/a:b/c:d/scratch.dat", "scratch", 1, True)
    args = fio.argv("fio", fio.JOBS[0], target, PLAN)
    assert "--filename=/mnt/a\\:b/c\\:d/scratch.dat" in args


def test_backslash_and_colon_together_are_refused_before_anything_is_made(tmp_path):
    odd = tmp_path / "a\\:b"
    odd.mkdir()
    with pytest.raises(fio.FioRefused, match="cannot be handed to fio"):
        fio.prepare_target(SysRoot("/"), PLAN, directory=str(odd))
    assert os.listdir(odd) == []


class NeighbourWriter(Runner):
    """Answers like fio (recorded outputs) and, like a mis-split file name would, writes a neighbour."""

    def __init__(self, victim):
        self.victim = victim

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        job = next(a for a in argv if a.startswith("--name=")).split("=", 1)[1]
        self.victim.write_bytes(b"\0" * 4096)
        stdout = (FIXTURES / "fio" / f"{job}.debian12-vm.json").read_text()
        return CommandResult(list(argv), 0, stdout, "")


def test_a_written_neighbour_turns_every_figure_into_a_loud_error(tmp_path):
    victim = precious(tmp_path / "victim")
    target = fio.scratch_target(str(tmp_path), PLAN)
    metrics = fio.run_fio(NeighbourWriter(victim), "fio", target, PLAN)
    assert metrics and all(m.status == "ERROR" for m in metrics)
    assert all("fio changed files other than its own target" in m.message and str(victim) in m.message
               for m in metrics)


def test_a_quiet_run_keeps_its_figures(tmp_path):
    class Quiet(NeighbourWriter):
        def run(self, argv, **kw):
            job = next(a for a in argv if a.startswith("--name=")).split("=", 1)[1]
            return CommandResult(list(argv), 0, (FIXTURES / "fio" / f"{job}.debian12-vm.json").read_text(), "")

    precious(tmp_path / "neighbour")
    target = fio.scratch_target(str(tmp_path), PLAN)
    metrics = fio.run_fio(Quiet(None), "fio", target, PLAN)
    assert metrics and all(m.status == "PASS" for m in metrics), [m.message for m in metrics]


def test_watch_covers_the_directory_a_split_name_would_hit():
    target = fio.FioTarget("/srv/data:set/deep/gpunode-fio-x/scratch.dat", "scratch", 1, True)
    dirs = fio.watched_dirs(target)
    assert "/srv/data:set/deep/gpunode-fio-x" in dirs and "/srv/data:set/deep" in dirs
    assert "/srv" in dirs  # where /srv/data lives: the file fio would have overwritten
