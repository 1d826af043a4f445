"""Output files write through, never over (outputs.write_atomic, the one writer of every output
path): a device node, a FIFO, a symlink to either, this process's stdout are written through or
refused; only a regular file (or a new name in an existing directory) is replaced atomically; no
directory is ever created. Device nodes are made under a temp dir (never the real /dev)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpunode.outputs import OutputError, check_output, write_atomic
from testkit import HOSTS, require

SNAP = HOSTS / "h100-sxm-1gpu"
DEV_NULL = os.makedev(1, 3)  # /dev/null's major/minor: writes vanish, reads are empty


def gpunode(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def null_node(tmp_path):
    require(os.geteuid() == 0, "root (mknod of a character device)")
    require(not os.statvfs(tmp_path).f_flag & os.ST_NODEV, f"{tmp_path} on a filesystem that allows device nodes")
    path = tmp_path / "null"
    os.mknod(path, stat.S_IFCHR | 0o666, DEV_NULL)
    return path


def only_names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())  # a leftover temp file shows here


def test_new_file_and_regular_file_are_replaced_atomically(tmp_path):
    target = tmp_path / "out.prom"
    write_atomic(target, "one\n", mode=0o644)
    inode = target.stat().st_ino
    write_atomic(target, "two\n", mode=0o600)
    assert target.read_text() == "two\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != inode  # a new file renamed over: readers never saw half of it
    assert only_names(tmp_path) == ["out.prom"]


def test_character_device_is_written_through_not_replaced(null_node, tmp_path):
    write_atomic(null_node, "report\n")
    assert stat.S_ISCHR(null_node.lstat().st_mode) and null_node.lstat().st_rdev == DEV_NULL
    assert only_names(tmp_path) == ["null"]


def test_symlink_to_a_device_keeps_link_and_device(null_node, tmp_path):
    link = tmp_path / "link"
    link.symlink_to("null")
    write_atomic(link, "report\n")
    assert link.is_symlink() and os.readlink(link) == "null"
    assert stat.S_ISCHR(null_node.lstat().st_mode)
    assert only_names(tmp_path) == ["link", "null"]


def test_fifo_is_written_through_to_its_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    opened = threading.Event()

    def reader():
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open at once, then read until EOF
        opened.set()
        os.set_blocking(fd, True)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the writer closed (or has not opened yet: wait for it)
                if chunks:
                    break
                time.sleep(0.01)
                continue
            chunks.append(chunk)
        got.append(b"".join(chunks))
        os.close(fd)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert opened.wait(10)
    text = "x" * 200_000 + "\n"  # larger than a pipe buffer: the writes block while the reader reads
    write_atomic(fifo, text)
    thread.join(10)
    assert got == [text.encode()]
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and only_names(tmp_path) == ["fifo"]


def test_fifo_without_reader_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for path in (fifo, link):
        with pytest.raises(OutputError, match="FIFO with no reader"):
            write_atomic(path, "x\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    assert only_names(tmp_path) == ["fifo", "link"]


def test_symlink_to_a_regular_file_replaces_the_file_not_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "audit.prom"
    target.write_text("old\n")
    link = tmp_path / "audit.prom"
    link.symlink_to(target)
    write_atomic(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert only_names(tmp_path / "real") == ["audit.prom"]


@pytest.mark.parametrize("what", ["missing-dir", "directory", "dangling-link", "block-device"])
def test_refused_targets_are_one_reason_and_nothing_written(tmp_path, what):
    if what == "missing-dir":
        path = tmp_path / "no" / "such" / "gpunode.prom"
        reason = "no directory"
    elif what == "directory":
        path = tmp_path / "d"
        path.mkdir()
        reason = "a directory"
    elif what == "dangling-link":
        path = tmp_path / "link"
        path.symlink_to(tmp_path / "gone")
        reason = "which does not exist"
    else:
        require(os.geteuid() == 0, "root (mknod of a block device)")
        path = tmp_path / "loop"
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 250))  # an unused loop device number
        reason = "a block device"
    before = only_names(tmp_path)
    with pytest.raises(OutputError, match=reason):
        check_output(path)
    with pytest.raises(OutputError, match=reason) as exc:
        write_atomic(path, "x\n")
    assert "\n" not in exc.value.strerror
    assert only_names(tmp_path) == before
    assert not (tmp_path / "no").exists()


def test_dev_stdout_is_this_process_stdout_whatever_it_is(tmp_path):
    """--json /dev/stdout: a pipe, or a file the shell opened: written to the descriptor, the
    file the shell holds is the one that gets the text (not replaced behind its back)."""
    code = ("import sys; from gpunode.outputs import write_atomic; print('first', flush=True); "
            "write_atomic(sys.argv[1], 'second\\n'); print('third')")
    for name in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        piped = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=60)
        assert piped.returncode == 0 and piped.stdout == "first\nsecond\nthird\n", (name, piped.stderr)
        out = tmp_path / "out.txt"
        with open(out, "w") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            subprocess.run([sys.executable, "-c", code, name], stdout=fh, timeout=60, check=True)
        assert out.read_text() == "first\nsecond\nthird\n" and out.stat().st_ino == inode


def test_cli_outputs_on_device_nodes_stay_device_nodes(null_node, tmp_path):
    link = tmp_path / "stdout-link"
    link.symlink_to("null")
    runs = [
        ("audit", "--snapshot", str(SNAP), "--prometheus", str(null_node)),
        ("audit", "--snapshot", str(SNAP), "--prometheus", str(link)),
        ("history", "export", "--state-dir", str(tmp_path / "state"), "-o", str(null_node)),
    ]
    (tmp_path / "state").mkdir(mode=0o700)
    for argv in runs:
        proc = gpunode(*argv)
        assert proc.returncode in (0, 1, 2), (argv, proc.stderr)
        assert stat.S_ISCHR(null_node.lstat().st_mode) and null_node.lstat().st_rdev == DEV_NULL, argv
        assert link.is_symlink()
    assert only_names(tmp_path) == ["null", "state", "stdout-link"]


def test_cli_json_to_dev_stdout_prints_the_document():
    proc = gpunode("audit", "--snapshot", str(SNAP), "--prometheus", "/dev/stdout", "--format", "plain")
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "# TYPE gpunode_check_status gauge" in proc.stdout


@pytest.mark.parametrize("command", [["audit", "--snapshot", str(SNAP)], ["compare", "tests/fixtures/bench/h100-full.json"]])
def test_prometheus_into_a_missing_directory_is_one_error_exit_3(tmp_path, command):
    target = tmp_path / "textfile_collector" / "gpunode.prom"
    proc = gpunode(*command, "--prometheus", str(target))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpunode: error: cannot write {target}: no directory"), lines
    assert only_names(tmp_path) == []  # nothing created, nothing written


# ---- one writer: every output path goes through outputs.write_atomic ---------------------------

AGENT = Path(__file__).resolve().parent.parent / "agent" / "gpunode"
# The modules that write what a user or another program reads: reports, textfiles, exports,
# snapshots, fleet reports. (apply's write path in tune/, the state dir, the Slurm hooks and
# SQLite history are written by their own guarded writers, not scanned here.)
OUTPUT_MODULES = ["cli", "fleet", "audit", "bench", "diag", "baselines", "history/record.py", "history/trend.py",
                  "host/snapshot.py", "host/runner.py", "prometheus.py"]
# (module, function): the only writes there that are not outputs, and why.
NOT_OUTPUTS = {
    ("cli/baseline_cmd.py", "_check_written"): "a temporary copy loaded back before the real write",
    ("bench/fio.py", "probe_direct"): "opens fio's target read-only to probe O_DIRECT",
    ("bench/fio.py", "scratch_target"): "fio's scratch file in a private directory, removed afterwards",
    ("host/snapshot.py", "prepare_snapshot_dir"): "an empty probe file: is the new directory writable?",
}


def _writes(tree):
    """(function name, call text) of each call that writes or replaces a file."""
    import ast

    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
            mode = next((k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)), mode)
            if (name in ("write_text", "write_bytes", "mkstemp", "NamedTemporaryFile")
                    or (owner == "os" and name in ("replace", "rename", "link", "open"))
                    or (name in ("open", "fdopen") and isinstance(mode, str) and any(c in mode for c in "wax+"))):
                yield func.name, ast.unparse(node)[:80]


def test_every_output_is_written_by_write_atomic():
    import ast

    found = []
    for entry in OUTPUT_MODULES:
        base = AGENT / entry
        for path in sorted(base.rglob("*.py")) if base.is_dir() else [base]:
            rel = str(path.relative_to(AGENT))
            for func, call in _writes(ast.parse(path.read_text())):
                if (rel, func) not in NOT_OUTPUTS:
                    found.append(f"{rel}:{func}: {call}")
    assert found == [], "write these through gpunode.outputs.write_atomic:\n" + "\n".join(found)


def test_a_dead_stream_is_pointed_at_devnull_by_the_one_helper(tmp_path):
    # apply and rollback drop their report when its reader is gone (cli/streams.discard_output):
    # that is no output file, and outputs.discard_into_devnull is the one place that opens
    # /dev/null for it (so the scan above still flags any other os.open in the output modules)
    import errno

    from gpunode.cli.streams import output_gone
    from gpunode.outputs import discard_into_devnull

    read_end, write_end = os.pipe()
    os.close(read_end)
    with pytest.raises(BrokenPipeError):
        os.write(write_end, b"x")
    discard_into_devnull([write_end])
    assert os.write(write_end, b"dropped") == 7
    assert os.readlink(f"/proc/self/fd/{write_end}") == os.devnull
    os.close(write_end)
    epipe, eio, enospc = (OSError(n, os.strerror(n)) for n in (errno.EPIPE, errno.EIO, errno.ENOSPC))
    assert output_gone(epipe, hung_up=False) and output_gone(eio, hung_up=True)
    assert not output_gone(eio, hung_up=False)  # a disk error under a redirected stdout stays an error
    assert not output_gone(enospc, hung_up=True)


@pytest.mark.parametrize("mode,code,word", [((), 3, "error"), (("--health-check", "--no-scontrol"), 3, "error"),
                                            (("--prolog",), 0, "warning")])
def test_gate_textfile_into_a_missing_directory(tmp_path, mode, code, word):
    """Plain gate (timers, cron) and health check: an unwritable textfile is gpunode's own error
    (exit 3); in a prolog it is a warning and never blocks the job."""
    target = tmp_path / "collector" / "gpunode-gate.prom"
    proc = gpunode("gate", *mode, "--snapshot", str(SNAP), "--prometheus", str(target))
    assert proc.returncode == code, proc.stdout + proc.stderr
    line = f"gpunode: {word}: cannot write {target}: no directory {target.parent} (gpunode creates none: check the path)"
    assert line in proc.stderr.splitlines(), proc.stderr
    assert only_names(tmp_path) == []


def test_gate_fail_stays_fail_when_its_textfile_cannot_be_written(tmp_path):
    from gate_fixtures import h100_inventory, write_snapshot

    snap = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    proc = gpunode("gate", "--snapshot", str(snap), "--prometheus", str(tmp_path / "no" / "gate.prom"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot write" in proc.stderr and not (tmp_path / "no").exists()


def test_baseline_record_refuses_a_missing_directory_before_any_bench(tmp_path):
    target = tmp_path / "site-baselines" / "mine.yaml"
    proc = gpunode("baseline", "record", "--name", "mine", "--runs", "1", "-o", str(target))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == [
        f"gpunode: error: cannot write {target}: no directory {target.parent} (gpunode creates none: check the path)"]
    assert only_names(tmp_path) == []
