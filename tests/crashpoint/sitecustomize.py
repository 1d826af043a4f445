"""Test-only crash points for `python -m gpunode apply` (never on a production path: only
tests/apply_fixtures.gpunode puts this folder on PYTHONPATH, and only with the variable set).

GPUNODE_TEST_CRASH_AFTER=journal:N  SIGKILL right after change N is journaled (fsync'ed)
GPUNODE_TEST_CRASH_AFTER=write:N    SIGKILL right after change N is written, before it is marked done
"""

import os
import signal

_POINT = os.environ.get("GPUNODE_TEST_CRASH_AFTER", "")


def _install(stage: str, number: int) -> None:
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


if _POINT:
    _stage, _, _number = _POINT.partition(":")
    if _stage not in ("journal", "write") or not _number.isdigit():
        raise SystemExit(f"GPUNODE_TEST_CRASH_AFTER={_POINT!r}: expected journal:N or write:N")
    _install(_stage, int(_number))
