"""Every knob read and write walks the openat chain: a directory exchanged with a symlink that
points out of the root, by another thread at any instant, never leads a read, a write or an
apply out of the root. The exchange is atomic (renameat2 RENAME_EXCHANGE), so at every instant
the name is either the real directory or the link; only `escapes == 0` is asserted, nothing
that depends on timing (how often the race is won is reported by `-s`, not judged)."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from apply_fixtures import gpunode, make_tree, picture

from gpunode.host.sysroot import SysRoot
from gpunode.tune.files import read_file_state, write_file_state
from gpunode.tune.kinds.change import FileState

CALLS = 10_000  # the floor for read/write calls under the race
IN_PROCESS_APPLIES = 48  # + CLI_APPLIES real `gpunode apply --sysroot` runs: >= 50 applies
CLI_APPLIES = 2
OUTSIDE = "4242424242\n"  # a knob value no apply writes: seen in a journal, it was read outside

_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}.get(platform.machine())


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically: glibc's renameat2, else the raw syscall (glibc < 2.28), else
    (no renameat2 at all: kernel < 3.15) three renames, which leave each name missing for a
    moment; the run says so on stdout."""
    fn = getattr(_libc, "renameat2", None)
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif _SYS_RENAMEAT2 is not None:
        rc = _libc.syscall(_SYS_RENAMEAT2, _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    else:
        print("no renameat2 here: swapping with rename pairs (not atomic)")
        os.rename(a, f"{a}.swap")
        os.rename(b, a)
        os.rename(f"{a}.swap", b)
        return
    if rc != 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:  # a libc that has it over a kernel that does not
            raise OSError(err, "renameat2 is not available on this kernel", str(a))
        raise OSError(err, os.strerror(err), str(a))


class Swapper:
    """A thread exchanging each (directory, link) pair in turn until stopped."""

    def __init__(self, pairs: list[tuple[Path, Path]]):
        self.pairs, self.swaps, self.failed = pairs, 0, None
        self.stop, self.started = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for a, b in self.pairs:
                    exchange(a, b)
                self.swaps += 1  # rounds: every pair exchanged once more
                self.started.set()
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails with it
            self.failed = exc
            self.started.set()

    @contextmanager
    def running(self):
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # hand the GIL over as often as the interpreter allows
        self.thread.start()
        self.started.wait()  # at least one round before the calls: the race really runs
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join()
            sys.setswitchinterval(old)
        if self.failed is not None:
            raise AssertionError(f"the swapping thread failed: {self.failed!r}")
        if self.swaps % 2:  # leave every pair as it was made
            for a, b in self.pairs:
                exchange(a, b)


@pytest.fixture
def fast_tmp(tmp_path):
    """A directory on tmpfs where there is one: the fsyncs of whole-file writes cost nothing there."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gpunode-race-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _decoy(root: Path, real: str, outside: Path) -> tuple[Path, Path]:
    """A link beside root/real pointing (absolutely, on the host) at `outside`, which holds
    the same file names with OUTSIDE in them: one exchange and `real` leads out."""
    real_dir = root / real.lstrip("/")
    outside.mkdir(parents=True)
    for entry in os.listdir(real_dir):
        (outside / entry).write_text(OUTSIDE)
    link = real_dir.parent / f".{real_dir.name}.decoy"
    os.symlink(str(outside), link)
    return real_dir, link


def test_knob_reads_and_writes_never_leave_the_root_while_a_dir_and_a_link_swap(fast_tmp):
    tmp_path = fast_tmp
    root, out = tmp_path / "root", tmp_path / "out"
    make_tree(root, {"/etc/gpunode-race/state.conf": "inside\n"})
    knob_dir, knob_link = _decoy(root, "/proc/sys/vm", out / "vm")
    file_dir, file_link = _decoy(root, "/etc/gpunode-race", out / "etc")
    outside_before = picture(out)
    sysroot = SysRoot(root)
    escapes, refused = [], 0
    with Swapper([(knob_dir, knob_link), (file_dir, file_link)]).running() as swapper:
        calls = 0
        for i in range(CALLS // 3 + 1):
            try:
                sysroot.write("/proc/sys/vm/swappiness", f"{i}\n")
            except OSError:
                refused += 1
            if (out / "vm/swappiness").read_text() != OUTSIDE:
                escapes.append(("write", i))
                (out / "vm/swappiness").write_text(OUTSIDE)
            if sysroot.read("/proc/sys/vm/swappiness") == OUTSIDE:
                escapes.append(("read", i))
            try:
                if read_file_state(sysroot, "/etc/gpunode-race/state.conf").data == OUTSIDE.encode():
                    escapes.append(("read_file_state", i))
            except OSError:
                refused += 1
            calls += 3
            if i % 8:
                continue  # a whole-file write fsyncs twice: one in eight rounds keeps the test fast
            try:
                write_file_state(sysroot, "/etc/gpunode-race/state.conf", FileState(True, f"{i}\n".encode(), 0o644))
            except OSError:
                refused += 1
            calls += 1
            if (out / "etc/state.conf").read_text() != OUTSIDE or len(os.listdir(out / "etc")) != 1:
                escapes.append(("write_file_state", i))
                break
    print(f"\n{calls} calls, {swapper.swaps} rounds of exchanges, {refused} calls refused mid-swap, escapes: {escapes}")
    assert escapes == []
    assert picture(out) == outside_before
    assert calls >= CALLS
    assert not knob_dir.is_symlink() and knob_link.is_symlink()  # put back as made


def test_applies_never_leave_the_root_while_a_dir_and_a_link_swap(fast_tmp):
    tmp_path = fast_tmp
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.host.seam import sysroot_host
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.journal import StateDir
    from gpunode.tune.plan import select_settings
    from gpunode.tune.profiles import load_profile

    profile = load_profile("training")
    only = ["sysctl.vm.*", "sysctl.kernel.*", "limits.*"]
    results: dict[str, int] = {}
    outside_pictures = []
    for i in range(IN_PROCESS_APPLIES + CLI_APPLIES):
        root, out = tmp_path / f"root{i}", tmp_path / f"out{i}"
        make_tree(root)
        pairs = [_decoy(root, "/proc/sys/vm", out / "vm"), _decoy(root, "/etc/sysctl.d", out / "sysctl.d"),
                 _decoy(root, "/etc/security/limits.d", out / "limits.d")]
        outside_before = picture(out)
        with Swapper(pairs).running():
            if i < IN_PROCESS_APPLIES:
                from gpunode.tune.session import apply_profile

                env = ApplyEnv(host=sysroot_host(root), gpu=NoGpuControl("none"))
                try:
                    result = apply_profile(env, profile, select_settings(profile, only),
                                           StateDir(tmp_path / f"state{i}")).result
                except (OSError, RuntimeError) as exc:  # refused mid-swap: fine, as long as it stayed inside
                    result = type(exc).__name__
            else:
                proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / f"state{i}"),
                               "--only", ",".join(only), timeout=120)
                result = f"cli rc {proc.returncode}"
        results[result] = results.get(result, 0) + 1
        # nothing written outside, and nothing read from there (a value read outside would be
        # journaled as a before-value: the journal and history are searched for it)
        read_outside = any(OUTSIDE.strip().encode() in p.read_bytes()
                           for p in (tmp_path / f"state{i}").rglob("*") if p.is_file())
        outside_pictures.append(picture(out) == outside_before and not read_outside)
    print(f"\napplies under the race: {results}")
    assert outside_pictures == [True] * (IN_PROCESS_APPLIES + CLI_APPLIES)


def test_exchange_really_swaps(tmp_path):
    # the harness itself: after one exchange the directory's name is the link and back
    (tmp_path / "d").mkdir()
    os.symlink("/nowhere", tmp_path / "l")
    exchange(tmp_path / "d", tmp_path / "l")
    assert os.readlink(tmp_path / "d") == "/nowhere" and (tmp_path / "l").is_dir()
    with pytest.raises(OSError) as err:
        exchange(tmp_path / "d", tmp_path / "missing")
    assert err.value.errno == errno.ENOENT
