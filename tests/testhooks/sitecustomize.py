"""Test-only hooks for `python -m gpunode` (never on a production path: only tests put this folder
on PYTHONPATH, and each hook acts only when its variable is set).

GPUNODE_TEST_CRASH_AFTER=journal:N  SIGKILL right after change N is journaled (fsync'ed)
GPUNODE_TEST_CRASH_AFTER=write:N    SIGKILL right after change N is written, before it is marked done
GPUNODE_TEST_CRASH_SIGNAL=TERM      ... sends SIGTERM (INT: SIGINT) there instead of SIGKILL
GPUNODE_TEST_SIGNAL_IN_UNDO=INT     every undo of a change first sends the process SIGINT (TERM: SIGTERM)
GPUNODE_TEST_JOURNAL_FAIL=ERRNO:N   from the Nth write to an apply journal on, every one fails with ERRNO
                                    (ENOSPC: os.write fails, the disk stays full; EIO: os.fsync
                                    fails); ERRNO:N:once fails the Nth only (a passing fault)
GPUNODE_TEST_PROVE_BENCH=FILE       `apply --prove` plays back the recorded bench documents
                                    {"before": doc, "after": doc} instead of benching (a fleet
                                    canary through Ansible has no GPU)
"""

import os
import signal

_POINT = os.environ.get("GPUNODE_TEST_CRASH_AFTER", "")
_SIGNAL = getattr(signal, "SIG" + os.environ.get("GPUNODE_TEST_CRASH_SIGNAL", "KILL"))
_UNDO_SIGNAL = os.environ.get("GPUNODE_TEST_SIGNAL_IN_UNDO", "")
_PROVE = os.environ.get("GPUNODE_TEST_PROVE_BENCH", "")
_JOURNAL_FAIL = os.environ.get("GPUNODE_TEST_JOURNAL_FAIL", "")


def _install_crash(stage: str, number: int) -> None:
    from gpunode.tune import actions, journal

    def die() -> None:
        os.kill(os.getpid(), _SIGNAL)

    if stage == "journal":
        append = journal.JournalWriter.append

        def append_then_die(self, record):
            append(self, record)
            if record.get("type") == "change" and record.get("seq") == number:
                die()

        journal.JournalWriter.append = append_then_die
    else:
        write, count = actions.write, [0]

        def write_then_die(env, change):
            result = write(env, change)
            count[0] += 1
            if count[0] == number:
                die()
            return result

        actions.write = write_then_die


def _install_prove_replay(path: str) -> None:
    try:  # Ansible's own Python processes see this folder too and may not have gpunode
        from gpunode.bench.results import BenchDocument
        from gpunode.inputs import load_json
        from gpunode.tune import prove
    except ImportError:
        return

    def replayed(host):
        data = load_json(path)
        docs = [BenchDocument.from_json(data["before"]), BenchDocument.from_json(data["after"])]
        return lambda between=None: docs.pop(0)

    prove.bench_for_prove = replayed


def _install_journal_fault(spec: str) -> None:
    """Fail the journal's own system calls (not a gpunode function): what apply meets when
    the state dir's disk fills up or errs in the middle of a batch."""
    import errno as errnos

    name, _, rest = spec.partition(":")
    number, _, once = rest.partition(":")
    code = getattr(errnos, name, None)
    if code is None or not number.isdigit() or once not in ("", "once"):
        raise SystemExit(f"GPUNODE_TEST_JOURNAL_FAIL={spec!r}: expected ERRNO:N or ERRNO:N:once")
    first, seen = int(number), [0]
    syscall = "fsync" if code == errnos.EIO else "write"
    real = getattr(os, syscall)

    def is_journal(fd: int) -> bool:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return path.endswith(".jsonl") and os.path.basename(os.path.dirname(path)) == "applies"

    def failing(fd, *args):
        if is_journal(fd):
            seen[0] += 1
            if seen[0] == first or (seen[0] > first and not once):
                raise OSError(code, os.strerror(code))
        return real(fd, *args)

    setattr(os, syscall, failing)


def _install_undo_signal(signum: int) -> None:
    from gpunode.tune import actions

    undo = actions.undo

    def signal_then_undo(env, change, result=None):
        os.kill(os.getpid(), signum)
        return undo(env, change, result)

    actions.undo = signal_then_undo


if _UNDO_SIGNAL:
    _install_undo_signal(getattr(signal, "SIG" + _UNDO_SIGNAL))
if _JOURNAL_FAIL:
    _install_journal_fault(_JOURNAL_FAIL)
if _POINT:
    _stage, _, _number = _POINT.partition(":")
    if _stage not in ("journal", "write") or not _number.isdigit():
        raise SystemExit(f"GPUNODE_TEST_CRASH_AFTER={_POINT!r}: expected journal:N or write:N")
    _install_crash(_stage, int(_number))
if _PROVE:
    _install_prove_replay(_PROVE)
