"""`gpunode slurm install`: wrapper scripts for Prolog, Epilog and HealthCheckProgram, and the
slurm.conf lines that use them.

Slurm runs a HealthCheckProgram without arguments and starts prologs with an almost empty
environment (no PATH), so each hook is a tiny root-owned shell script that sets PATH, passes
GPUNODE_CONFIG / GPUNODE_SNAPSHOT on (defaults baked in at install time, an inherited value
wins) and runs `gpunode gate --<mode>` with this installation's Python.

Slurm drains the node for any non-zero Prolog or Epilog exit, so the hook itself keeps
gpunode's own failures from draining (docs/gate.md, "Installing into Slurm"): when the Python
or the gpunode package it names is gone (a deleted venv), or gpunode exits with anything but
its verdict codes (a crash), the hook logs one syslog line (`logger -t gpunode`) and exits 0;
installed with --strict it exits non-zero instead (3, or gpunode's own code).
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpunode import __version__

HOOKS = {"prolog": "gpunode-prolog", "epilog": "gpunode-epilog", "health-check": "gpunode-healthcheck"}
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HookScript:
    mode: str
    path: Path
    text: str


def check_hook_values(config: str | None, snapshot: str | None, timeout: float | None) -> None:
    """Refuse what would make every hook answer "gate not run" (a gate switched off by a value
    gpunode accepted): a budget that is not a positive finite number, a config the gate cannot
    load, a snapshot it cannot replay. ValueError names the option."""
    from gpunode.config import load_config
    from gpunode.host.seam import snapshot_host
    from gpunode.slurm.gate import seconds

    if timeout is not None:
        seconds(timeout, "--timeout")
        if float(f"{timeout:g}") <= 0:  # what the hook will pass, as written
            raise ValueError(f"--timeout {timeout} rounds to 0 in the hook")
    if config is not None:
        try:
            load_config(config)
        except Exception as exc:  # noqa: BLE001 - any failure here is one the hooks would hit
            raise ValueError(f"--config {config}: the gate could not load it: {exc}") from None
    if snapshot is not None:
        try:
            snapshot_host(snapshot)
        except Exception as exc:  # noqa: BLE001 - as above
            raise ValueError(f"--snapshot {snapshot}: the gate could not replay it: {exc}") from None


# What each mode passes through from the gate: its verdict codes (gpunode.exits). Anything
# else (a traceback's 1, a missing module, a signal) is gpunode's own failure.
VERDICT_CODES = {"prolog": "0|2", "epilog": "0|2", "health-check": "0|3"}


def package_main() -> Path:
    """The file `python -I -m gpunode` runs: its absence means this install is gone."""
    return Path(__file__).resolve().parent.parent / "__main__.py"


# Where an install is usually short-lived: a clone's .venv in a home directory, a temp dir.
TRANSIENT_PREFIXES = ("/tmp/", "/var/tmp/", "/dev/shm/", "/home/", "/root/", "/run/user/")


def transient_install(python: str, entry: Path) -> str | None:
    """The path of this install that lives where installs come and go, or None. The hooks
    step aside when it goes (no drain), but the gate then stops gating."""
    for path in (python, str(entry)):
        if os.path.abspath(path).startswith(TRANSIENT_PREFIXES):
            return path
    return None


def hook_scripts(prefix: Path, python: str, config: str | None = None, snapshot: str | None = None,
                 timeout: float | None = None, strict: bool = False,
                 slurm_conf: str | None = None, entry: Path | None = None,
                 watch: WatchVerdict | None = None) -> list[HookScript]:
    """`watch`: the prolog first trusts a fresh OK verdict of `gpunode watch` (no Python)."""
    check_hook_values(config, snapshot, timeout)
    entry = entry or package_main()
    scripts = []
    for mode, name in HOOKS.items():
        # -I: the hook runs as root from whatever directory slurmd (or an operator) is in;
        # plain `-m` would put that directory first on sys.path and import code from it.
        argv = [python, "-I", "-m", "gpunode", "gate", f"--{mode}"]
        if timeout is not None:
            argv += ["--timeout", f"{timeout:g}"]
        if strict:
            argv.append("--strict")
        text = _script(mode, argv, config, snapshot, slurm_conf, str(entry), strict)
        if watch is not None and mode == "prolog":
            text = watch_fast_path(text, watch)
        scripts.append(HookScript(mode, prefix / name, text))
    return scripts


def _script(mode: str, argv: list[str], config: str | None, snapshot: str | None, slurm_conf: str | None,
            entry: str, strict: bool) -> str:
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# gpunode Slurm {mode} hook, written by `gpunode slurm install` (gpunode {__version__}).",
        "# Rerun the install to change it; edits here are overwritten.",
        "# slurmd starts hooks with an almost empty environment: scontrol needs a PATH.",
        f"PATH={SAFE_PATH}",
        "export PATH",
    ]
    # slurmd runs the HealthCheckProgram without SLURM_CONF: a slurm.conf outside the default
    # place (and not configless) must be named here for scontrol.
    for name, value in (("GPUNODE_CONFIG", config), ("GPUNODE_SNAPSHOT", snapshot), ("SLURM_CONF", slurm_conf)):
        if value:  # an inherited value wins; quotes inside "${X:=...}" would not be removed
            lines += [f'[ -n "${{{name}:-}}" ] || {name}={q(value)}', f"export {name}"]
    gone_exit, own_exit = ("3", '"$rc"') if strict else ("0", "0")
    note = "blocking (--strict)" if strict else "not blocking"
    lines += [
        "# Slurm drains the node for a non-zero hook exit: gpunode's own failure must not do that",
        "# (unless installed with --strict). One syslog line says what happened.",
        f"python={q(argv[0])}",
        f"entry={q(entry)}",
        'if [ ! -x "$python" ] || [ ! -f "$entry" ]; then',
        f'    logger -t gpunode -p daemon.err "{mode} hook: gpunode is gone ($python or $entry missing):'
        f' gate not run, {note}; reinstall with gpunode slurm install" 2>/dev/null',
        f"    exit {gone_exit}",
        "fi",
        '"$python" ' + " ".join(q(a) for a in argv[1:]),
        "rc=$?",
        f'case "$rc" in {VERDICT_CODES[mode]}) exit "$rc" ;; esac',
        f'logger -t gpunode -p daemon.err "{mode} hook: gpunode failed (exit $rc): gate not run, {note}"'
        " 2>/dev/null",
        f"exit {own_exit}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class WatchVerdict:
    """Where the watcher's one-line verdict is and how old it may be (2 x its poll interval)."""

    path: str = "/run/gpunode/verdict"
    max_age_s: int = 20

    def __post_init__(self) -> None:
        from gpunode.watch.unit import plain_path

        plain_path(self.path, "verdict file")
        if not 1 <= self.max_age_s <= 1200:
            raise ValueError(f"verdict age {self.max_age_s}: must be 1-1200 seconds")


# The watcher's line: `OK <epoch> <boot id> <pid> <uptime s>` (gpunode.watch.state.verdict_line).
# Every field is checked as text (digits only, a boot id's characters and length) and compared;
# nothing in it is ever run or eval'ed. Any doubt runs the full gate.
_WATCH_CHECK = """\
# gpunode watch keeps a one-line verdict: a fresh OK of this boot from a live watcher answers
# without starting Python; anything else (missing, stale, another boot, not OK) runs the gate.
gpunode_watch_ok() {
    [ -f "$1" ] && [ -O "$1" ] || return 1
    read -r w_status w_time w_boot w_pid w_up w_rest < "$1" || return 1
    [ "$w_status" = OK ] && [ -z "$w_rest" ] || return 1
    # Digits only, no leading zero (sh arithmetic reads 010 as octal and stops the hook on 09).
    for w_n in "$w_time" "$w_pid" "$w_up"; do
        case "$w_n" in ''|*[!0-9]*|0?*) return 1 ;; esac
        [ "${#w_n}" -le 12 ] || return 1
    done
    case "$w_boot" in *[!0-9a-f-]*) return 1 ;; esac
    [ "${#w_boot}" -eq 36 ] || return 1
    read -r w_now_boot < /proc/sys/kernel/random/boot_id || return 1
    [ "$w_boot" = "$w_now_boot" ] || return 1
    [ -d "/proc/$w_pid" ] || return 1
    read -r w_now w_idle < /proc/uptime || return 1
    w_now=${w_now%%.*}
    case "$w_now" in ''|*[!0-9]*|0?*) return 1 ;; esac
    [ "${#w_now}" -le 12 ] || return 1
    w_age=$((w_now - w_up))
    [ "$w_age" -ge 0 ] && [ "$w_age" -le MAX_AGE ]
}
if gpunode_watch_ok VERDICT; then
    exit 0
fi
"""


def watch_fast_path(script: str, watch: WatchVerdict) -> str:
    """The prolog hook with the watcher's verdict checked first (before Python is even looked for)."""
    block = _WATCH_CHECK.replace("MAX_AGE", str(int(watch.max_age_s))).replace("VERDICT", shlex.quote(watch.path))
    marker = "# Slurm drains the node for a non-zero hook exit"
    head, sep, tail = script.partition(marker)
    if not sep:
        raise ValueError("the hook has no place for the watcher's fast path")
    return head + block + sep + tail


def install_script(script: HookScript, as_root: bool) -> str:
    """Write atomically, 0755, owned by root when we are root. -> written | unchanged."""
    try:
        if script.path.read_text() == script.text and (script.path.stat().st_mode & 0o7777) == 0o755:
            return "unchanged"
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{script.path.name}.", dir=script.path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(script.text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        if as_root:
            os.chown(tmp, 0, 0)
        os.replace(tmp, script.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return "written"
