"""The one exit-code contract of every command and mode (audit, gate, compare, bench, diag, fleet):

    0 OK   1 WARN   2 FAIL (a confirmed finding)   3 UNKNOWN: nothing judged, gpunode's own
    error (a bug, a config it cannot load, a file it cannot write) or a usage error.

Only a FAIL is ever 2, so a caller that drains on 2 (NHC, a Slurm hook, a monitoring rule)
never drains for gpunode's own failure. The Slurm hook modes map this onto what Slurm does
with an exit code (slurm_hook_exit); docs/gate.md has the table."""

EXIT_CODES = {"OK": 0, "WARN": 1, "FAIL": 2, "UNKNOWN": 3}
FAIL_EXIT = EXIT_CODES["FAIL"]
UNKNOWN_EXIT = EXIT_CODES["UNKNOWN"]
OWN_ERROR_EXIT = UNKNOWN_EXIT  # gpunode could not judge: never the FAIL code
USAGE_EXIT = OWN_ERROR_EXIT  # bad input: one `gpunode: error: ...` line (click's usage errors too)



class GpunodeError(Exception):
    """gpunode's own error, said as one `gpunode: error: ...` line; `exit_code` is what the
    command exits with. A use case raises it (or a subclass) and never exits itself: the guard
    in cli/common.py is the one place that turns it into the line and the exit."""

    exit_code = OWN_ERROR_EXIT


class UsageError(GpunodeError, ValueError):
    """Bad input: an option, a selection, a file that cannot be used (a ValueError, as before)."""

    exit_code = USAGE_EXIT


def internal_error(exc: BaseException) -> str:
    """The one line that stands for an exception nothing else caught (a bug): its type and first
    300 characters, never a traceback (GPUNODE_TRACEBACK=1 lets it through instead)."""
    message = " ".join(str(exc).split())[:300]
    return f"internal error: {type(exc).__name__}: {message} (GPUNODE_TRACEBACK=1 shows where)"


# Slurm drains the node for any non-zero Prolog/Epilog exit, and only logs a non-zero
# HealthCheckProgram; the hook modes therefore exit non-zero only as listed here.
HOOK_MODES = ("prolog", "epilog", "health-check")


# Exit codes from least to most severe: a FAIL outranks gpunode's own UNKNOWN, which outranks WARN.
SEVERITY = (0, 1, UNKNOWN_EXIT, FAIL_EXIT)


def worst_exit(*codes: int) -> int:
    """The most severe of several exit codes (a run's and its comparison's, a verdict's and a
    textfile's): a FAIL stays a FAIL, gpunode's own error never hides behind a WARN."""
    return max(codes, key=SEVERITY.index)


def verdict_exit(status: str) -> int:
    """A verdict word (OK, WARN, FAIL, UNKNOWN) -> its exit code."""
    return EXIT_CODES[status]


def slurm_hook_exit(mode: str, blocked: bool, drained: bool = False, own_problems: bool = False) -> int:
    """The exit code of a gate run that judged the node, per mode:
    check: the verdict's code (the caller passes blocked only for a FAIL);
    prolog: 2 on a FAIL (Slurm drains the node and requeues the job), else 0;
    epilog: 2 only when a FAIL stays and gpunode could not drain it itself, else 0;
    health-check: gpunode drains itself, so 0, or 3 when its own Slurm calls failed (logged)."""
    if mode == "prolog":
        return FAIL_EXIT if blocked else 0
    if mode == "epilog":
        return FAIL_EXIT if blocked and not drained else 0
    if mode == "health-check":
        return OWN_ERROR_EXIT if own_problems else 0
    raise ValueError(f"not a Slurm hook mode: {mode!r}")


def own_error_exit(mode: str, strict: bool) -> int:
    """gpunode could not run the gate (bad option, config, snapshot, a bug): never 2.
    check and health-check: 3 (Slurm only logs a health check's exit code). prolog and
    epilog: 0, so a broken install never drains a node, unless --strict asked for 3 (a
    non-zero hook exit: Slurm then drains, by the site's choice)."""
    if mode in ("prolog", "epilog"):
        return OWN_ERROR_EXIT if strict else 0
    return OWN_ERROR_EXIT
