"""Exit codes of every command, Nagios-style: one place (audit, gate, compare, bench, fleet)."""

EXIT_CODES = {"OK": 0, "WARN": 1, "FAIL": 2, "UNKNOWN": 3}
USAGE_EXIT = 2  # bad input: one `gpunode: error: ...` line (typer's usage errors exit 2 too)
UNKNOWN_EXIT = EXIT_CODES["UNKNOWN"]
