"""Keeping a site's own Slurm hooks running next to gpunode's, and the slurm.conf lines that do.

Slurm runs one HealthCheckProgram, and Slurm 22.05 one Prolog and one Epilog path (or a glob:
slurm.conf(5) of 22.05). `gpunode slurm install` reads what slurm.conf names and, where the
site already has a program, writes a wrapper (gpunode-prolog-chain, gpunode-epilog-chain,
gpunode-healthcheck-chain) that runs the site's program first and gpunode's hook after it.
The chain is used on every Slurm version, newer ones with several prologs included: one
behaviour, tested on the real Slurm the suite starts. A glob or a list in Prolog/Epilog is
left as it is, with a note on where gpunode's hook goes.

Each program keeps its own reason prefix and clears only its own drain: NHC drains with
`NHC: ...` and resumes only nodes whose reason starts with `NHC:`; gpunode drains with
`gpunode: ...`, never overwrites a reason it did not set, and resumes only its own
(gpunode.slurm.scontrol). So neither clears the other's drain, whichever runs first.

Settings the site already has are read, not overridden: PrologFlags keeps its flags (Alloc is
added when neither Alloc nor Contain, which implies it, is there), HealthCheckInterval and
HealthCheckNodeState keep the site's values unless given on the command line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from gpunode import __version__
from gpunode.host.facts.slurm_conf import parse_values
from gpunode.slurm.install import HOOKS, SAFE_PATH, HookScript

CHAIN_NAMES = {"prolog": "gpunode-prolog-chain", "epilog": "gpunode-epilog-chain",
               "health-check": "gpunode-healthcheck-chain"}
CHAIN_NAME = CHAIN_NAMES["health-check"]
CONF_KEYS = {"prolog": "Prolog", "epilog": "Epilog", "health-check": "HealthCheckProgram"}
DEFAULT_INTERVAL = 300
def conf_values(slurm_conf: Path) -> dict[str, str]:
    """Top-level `Key=Value` lines of slurm.conf (host.facts.slurm_conf.parse_values); {} when
    the file cannot be read."""
    try:
        text = slurm_conf.read_text(errors="replace")
    except OSError:
        return {}
    return parse_values(text)


def site_program(values: dict[str, str], mode: str) -> str | None:
    """The site's own program for this hook, or None when there is none or it is gpunode's
    hook. When slurm.conf already names gpunode's chain (a second install), the program that
    chain runs: rerunning the install must not drop the site's program."""
    program = values.get(CONF_KEYS[mode].lower())
    if not program or Path(program).name == HOOKS[mode]:
        return None
    if Path(program).name == CHAIN_NAMES[mode]:
        return chained_program(Path(program))
    return program


def chained_program(chain: Path) -> str | None:
    """The site program a chain written by chain_script runs (its line after `export PATH`)."""
    try:
        lines = chain.read_text(errors="replace").splitlines()
        words = shlex.split(lines[lines.index("export PATH") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return words[0] if len(words) == 1 else None


def several(program: str) -> bool:
    """A glob or a list (Slurm runs every program it names): not one program to chain."""
    return any(c in program for c in "*?[,")


def chain_script(site_program: str, gpunode_hook: Path, mode: str = "health-check") -> str:
    if not Path(site_program).is_absolute() or any(c in site_program for c in "\n\r\0"):
        raise ValueError(f"{CONF_KEYS[mode]} {site_program!r}: expected an absolute path")
    site, ours = shlex.quote(site_program), shlex.quote(str(gpunode_hook))
    return f"""#!/bin/sh
# gpunode {CONF_KEYS[mode]} chain, written by `gpunode slurm install` (gpunode {__version__}).
# Runs the site's own program ({site_program}), then gpunode's hook, and exits with the
# site's status when it failed, else gpunode's. Each drains with its own reason prefix
# (NHC: / gpunode:) and resumes only its own drain, so neither clears the other's.
# Rerun the install to change it; edits here are overwritten.
PATH={SAFE_PATH}
export PATH
{site}
site_rc=$?
{ours}
gpunode_rc=$?
if [ "$site_rc" -ne 0 ]; then exit "$site_rc"; fi
exit "$gpunode_rc"
"""


@dataclass
class InstallPlan:
    """What `slurm install` writes besides the hooks, and the slurm.conf lines it prints."""

    scripts: list[HookScript] = field(default_factory=list)
    conf_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, for stderr


def plan_install(prefix: Path, values: dict[str, str], chain: str | None = None, no_chain: bool = False,
                 interval: int | None = None) -> InstallPlan:
    """Chains for the site's Prolog, Epilog and HealthCheckProgram (`chain` names the health
    check's explicitly; `no_chain` replaces them all) and the slurm.conf lines: only those
    gpunode needs, merged with what `values` (conf_values of the site's slurm.conf) has."""
    plan = InstallPlan()
    for mode, key in CONF_KEYS.items():
        hook = prefix / HOOKS[mode]
        program = None if no_chain else (chain if mode == "health-check" and chain else site_program(values, mode))
        if program and several(program):
            plan.notes.append(f"{key}={program} runs several programs: left as it is; add {hook} to them "
                              f"(e.g. a link in its directory)")
            continue
        if program:
            plan.scripts.append(HookScript(f"{mode}-chain", prefix / CHAIN_NAMES[mode],
                                           chain_script(program, hook, mode)))
            plan.notes.append(f"chaining with the existing {key} {program} (--no-chain replaces it)")
            plan.conf_lines.append(f"{key}={prefix / CHAIN_NAMES[mode]}  # runs {program}, then gpunode")
        else:
            plan.conf_lines.append(f"{key}={hook}")
        if mode == "prolog":
            plan.conf_lines += _prolog_flags(values.get("prologflags"))
    if values.get("healthcheckinterval", "").strip() == "0" and interval is None:  # 0: never runs
        plan.conf_lines.append(f"HealthCheckInterval={DEFAULT_INTERVAL}  # was 0: no health check ran")
    else:
        plan.conf_lines += _kept(values, "HealthCheckInterval", None if interval is None else str(interval),
                                 str(DEFAULT_INTERVAL))
    plan.conf_lines += _kept(values, "HealthCheckNodeState", None, "ANY")
    return plan


def _prolog_flags(flags: str | None) -> list[str]:
    """gpunode's prolog must run at allocation (Alloc; Contain implies it)."""
    have = [f.strip() for f in (flags or "").split(",") if f.strip()]
    if {f.lower() for f in have} & {"alloc", "contain"}:
        return [f"# PrologFlags={flags} already runs the prolog at allocation: unchanged"]
    return [f"PrologFlags={','.join([*have, 'Alloc'])}"]


def _kept(values: dict[str, str], key: str, asked: str | None, default: str) -> list[str]:
    """The site's value stays unless the operator asked for another one."""
    site = values.get(key.lower())
    if asked is not None:
        return [f"{key}={asked}"]
    if site is not None:
        return [f"# {key}={site} (the site's value): unchanged"]
    return [f"{key}={default}"]
