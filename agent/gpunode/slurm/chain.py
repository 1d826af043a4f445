"""Chaining gpunode's health check with the site's existing HealthCheckProgram (LBNL NHC at
most Slurm sites) instead of replacing it.

Slurm runs one HealthCheckProgram. `gpunode slurm install` finds the one slurm.conf names
and writes a wrapper, gpunode-healthcheck-chain, that runs the site's program first and
gpunode's health check after it. Each keeps its own reason prefix and clears only its own
drain: NHC drains with `NHC: ...` and resumes only nodes whose reason starts with `NHC:`;
gpunode drains with `gpunode: ...`, never overwrites a reason it did not set, and resumes only
its own (gpunode.slurm.scontrol). So neither clears the other's drain, whichever runs first.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gpunode import __version__
from gpunode.slurm.install import HOOKS, SAFE_PATH

CHAIN_NAME = "gpunode-healthcheck-chain"
_KEY = re.compile(r"^\s*HealthCheckProgram\s*=\s*(?P<value>\S.*?)\s*$", re.IGNORECASE)


def configured_health_check(slurm_conf: Path) -> str | None:
    """The HealthCheckProgram slurm.conf names (the last one wins, as in Slurm); None when
    unset or unreadable. Comments after `#` are ignored."""
    try:
        text = slurm_conf.read_text(errors="replace")
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        match = _KEY.match(line.split("#", 1)[0])
        if match:
            found = match.group("value")
    return found


def site_program_to_chain(slurm_conf: Path, prefix: Path) -> str | None:
    """The site's own program, or None when there is none or it is already gpunode's hook."""
    program = configured_health_check(slurm_conf)
    if not program:
        return None
    if Path(program).name in (HOOKS["health-check"], CHAIN_NAME):
        return None
    return program


def chain_script(site_program: str, gpunode_hook: Path) -> str:
    if not Path(site_program).is_absolute() or any(c in site_program for c in "\n\r\0"):
        raise ValueError(f"HealthCheckProgram {site_program!r}: expected an absolute path")
    site, ours = shlex.quote(site_program), shlex.quote(str(gpunode_hook))
    return f"""#!/bin/sh
# gpunode HealthCheckProgram chain, written by `gpunode slurm install` (gpunode {__version__}).
# Runs the site's own health check ({site_program}), then gpunode's. Each drains with its own
# reason prefix (NHC: / gpunode:) and resumes only its own drain, so neither clears the other's.
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
