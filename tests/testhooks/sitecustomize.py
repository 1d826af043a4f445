"""Test-only hooks for `python -m gpunode` (never on a production path: only tests put this folder
on PYTHONPATH, and each hook acts only when its variable is set).

GPUNODE_TEST_CRASH_AFTER=journal:N  SIGKILL right after change N is journaled (fsync'ed)
GPUNODE_TEST_CRASH_AFTER=write:N    SIGKILL right after change N is written, before it is marked done
GPUNODE_TEST_PROVE_BENCH=FILE       `apply --prove` plays back the recorded bench documents
                                    {"before": doc, "after": doc} instead of benching (a fleet
                                    canary through Ansible has no GPU)
"""

import os
import signal

_POINT = os.environ.get("GPUNODE_TEST_CRASH_AFTER", "")
_PROVE = os.environ.get("GPUNODE_TEST_PROVE_BENCH", "")


def _install_crash(stage: str, number: int) -> None:
    from gpunode.tune import actions, journal

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

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
        return lambda: docs.pop(0)

    prove.bench_for_prove = replayed


if _POINT:
    _stage, _, _number = _POINT.partition(":")
    if _stage not in ("journal", "write") or not _number.isdigit():
        raise SystemExit(f"GPUNODE_TEST_CRASH_AFTER={_POINT!r}: expected journal:N or write:N")
    _install_crash(_stage, int(_number))
if _PROVE:
    _install_prove_replay(_PROVE)
