"""Test-only slowdown for benchmarks/crash_harness.py (never on a production path: only the
harness puts this folder on PYTHONPATH). Each file-system call apply and rollback make sleeps a
little after it returns, so a SIGKILL at a random instant lands between any two of them
(between truncate and write of a knob, between temp file and rename, between journal and write)."""

import os
import random
import time

_DELAY_S = float(os.environ.get("CRASH_HARNESS_DELAY_MS", "2")) / 1000


def _slow(fn):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        time.sleep(random.uniform(0, _DELAY_S))
        return result

    wrapper.__wrapped__ = fn
    return wrapper


for _name in ("open", "write", "fsync", "rename", "replace", "mkdir", "rmdir", "unlink", "symlink",
              "fchmod", "chmod", "ftruncate"):
    setattr(os, _name, _slow(getattr(os, _name)))
