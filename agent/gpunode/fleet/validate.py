"""Before anything runs: parse the inventory with Ansible's own tooling (`ansible-inventory
--list`, through the Runner), apply --limit, and check that every host has the vars its playbook
needs, with the right shapes. Every problem is found up front, so a bad inventory never leaves a
half-run fleet behind."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.fleet.specs import (
    BOOL_VARS,
    BOOL_WORDS,
    CHOICE_VARS,
    INT_VARS,
    LIST_SUFFIX,
    PATH_VARS,
    STR_VARS,
    PlaybookSpec,
)
from gpunode.host.runner import Runner

INVENTORY_TIMEOUT_S = 120.0
MAX_LISTED = 5  # problems named one by one before "... and N more"
MAX_ERROR_CHARS = 300  # of Ansible's own error text in the one-line error


class FleetError(ValueError):
    """A problem with the inventory, a var or the playbooks: reported before anything runs."""


@dataclass
class FleetInventory:
    path: str
    limit: str | None
    hosts: list[str]  # hosts the run targets, in a stable order
    groups: dict[str, list[str]] = field(default_factory=dict)  # host -> groups that list it directly
    hostvars: dict[str, dict] = field(default_factory=dict)

    def sku(self, host: str) -> str:
        """The SKU group: gpunode_sku when set, else the (first by name) group that lists the host."""
        sku = self.hostvars.get(host, {}).get("gpunode_sku")
        if sku:
            return str(sku)
        groups = self.groups.get(host) or []
        return groups[0] if groups else "ungrouped"

    def to_json(self) -> dict:
        return {"path": self.path, "limit": self.limit, "hosts": self.hosts, "groups": self.groups,
                "skus": {h: self.sku(h) for h in self.hosts}}


def ansible_tool(name: str) -> str:
    """ansible-inventory / ansible-playbook next to this python (a venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FleetError(f"{name} not found: install the fleet extra (pip install 'gpunode[fleet]')")
    return found


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Ansible runs with: this python's bin dir first on PATH (so a venv's
    ansible-playbook is found without activating it), and an unparsable inventory is an error."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"
    env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "True"
    env.setdefault("ANSIBLE_NOCOLOR", "True")
    env.update(extra or {})
    return env


def load_inventory(
    inventory: str | os.PathLike, limit: str | None, playbook_dir: Path, runner: Runner | None = None
) -> FleetInventory:
    path = Path(inventory)
    if not path.exists():
        raise FleetError(f"inventory {path}: no such file or directory")
    if path.is_file() and not os.access(path, os.R_OK):
        raise FleetError(f"inventory {path}: not readable")
    argv = [ansible_tool("ansible-inventory"), "-i", str(path.resolve()), "--list", "--playbook-dir", str(playbook_dir)]
    if limit:
        argv += ["--limit", limit]
    result = (runner or Runner()).run(argv, timeout=INVENTORY_TIMEOUT_S, env=ansible_env(), cwd=str(playbook_dir))
    if result.error:
        raise FleetError(f"cannot run ansible-inventory: {result.error}")
    if result.timed_out:
        raise FleetError(f"inventory {path}: ansible-inventory did not answer in {INVENTORY_TIMEOUT_S:.0f} s")
    if result.rc != 0:
        raise FleetError(f"inventory {path}: {_ansible_error(result.stderr) or f'ansible-inventory exit {result.rc}'}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise FleetError(f"inventory {path}: ansible-inventory printed no JSON ({exc})") from exc
    return parse_inventory_list(data, str(path), limit)


def _ansible_error(stderr: str) -> str:
    """The most telling line of Ansible's stderr: the parse failure, not the generic last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for marker in ("Failed to parse inventory:", "[ERROR]:", "ERROR!"):
        for ln in lines:
            if marker in ln:
                detail = ln.split(marker, 1)[1].strip()
                if detail:
                    return _printable(detail)
    return _printable(lines[-1]) if lines else ""


def _printable(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Ansible quotes the offending inventory line: from a binary file (a wheel, a tarball in an
    inventory directory) that is control bytes, which must not reach the operator's terminal."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def parse_inventory_list(data: dict, path: str, limit: str | None) -> FleetInventory:
    """`ansible-inventory --list` JSON -> hosts, their direct groups and vars."""
    if not isinstance(data, dict):
        raise FleetError(f"inventory {path}: unexpected ansible-inventory output")
    hostvars = data.get("_meta", {}).get("hostvars", {}) or {}
    groups: dict[str, list[str]] = {}
    hosts: list[str] = []
    for name in sorted(k for k in data if k != "_meta"):
        for host in data[name].get("hosts", []) or []:
            if host not in groups:
                groups[host] = []
                hosts.append(host)
            if name not in ("all", "ungrouped"):
                groups[host].append(name)
    if not hosts:
        where = f" match --limit {limit!r}" if limit else ""
        raise FleetError(f"inventory {path}: no hosts{where}")
    return FleetInventory(path=path, limit=limit, hosts=sorted(hosts), groups=groups,
                          hostvars={h: dict(hostvars.get(h, {})) for h in hosts})


def check_vars(spec: PlaybookSpec, inventory: FleetInventory, extravars: Mapping[str, object]) -> None:
    """Every host has the playbook's required vars, and every gpunode_* var has a usable shape."""
    problems: list[str] = []
    for host in inventory.hosts:
        merged = {**inventory.hostvars.get(host, {}), **extravars}
        for name in spec.required:
            if _blank(merged.get(name)):
                problems.append(f"{host}: {name} is not set")
        if spec.one_of and all(_blank(merged.get(n)) for n in spec.one_of):
            problems.append(f"{host}: set one of {', '.join(spec.one_of)}")
        problems += [f"{host}: {p}" for p in _shape_problems(merged)]
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        hint = " (set them in the inventory, e.g. [group:vars], or pass -e NAME=VALUE)"
        raise FleetError(f"inventory {inventory.path}: {'; '.join(shown)}{more}{hint}")


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shape_problems(merged: Mapping[str, object]) -> list[str]:
    problems = [p for name, minimum in INT_VARS.items() for p in _int_problem(name, merged.get(name), minimum)]
    problems += [f"{name}={merged.get(name)!r} is not true or false" for name in BOOL_VARS
                 if not _is_bool_word(merged.get(name))]
    problems += [f"{name}={merged.get(name)!r} is not an absolute path" for name in PATH_VARS
                 if not _blank(merged.get(name)) and not _is_absolute(merged.get(name))]
    problems += _choice_problems(merged)
    problems += [f"{name} must be a string, not {type(merged.get(name)).__name__}" for name in STR_VARS
                 if not _is_scalar(merged.get(name))]
    for name, value in merged.items():
        if name.startswith("gpunode_"):
            problems += _gpunode_var_problems(name, value)
    return problems


def _choice_problems(merged: Mapping[str, object]) -> list[str]:
    problems = []
    for name, choices in CHOICE_VARS.items():
        value = merged.get(name)
        if not _blank(value) and str(value) not in choices:  # YAML may give 2 for "2"
            problems.append(f"{name}={value!r} is not one of {', '.join(choices)}")
    return problems


def _is_scalar(value: object) -> bool:
    """Unset, or a value Ansible passes on as one word (a string, or a number YAML made of it)."""
    return value is None or isinstance(value, (str, int, float))


def _int_problem(name: str, value: object, minimum: int) -> list[str]:
    """A whole number >= minimum, as an int or its digits; unset or empty is fine."""
    if value is None or value == "":
        return []
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is None and isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or number < minimum:
        return [f"{name}={value!r} is not a whole number >= {minimum}"]
    return []


def _is_bool_word(value: object) -> bool:
    """Unset, a bool, or a word Ansible reads as one (yes, false, 1 ...)."""
    return value is None or isinstance(value, bool) or str(value).strip().lower() in BOOL_WORDS


def _is_absolute(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _gpunode_var_problems(name: str, value: object) -> list[str]:
    """Any gpunode_* var: no control characters (it reaches argv and logs); a *_args list holds
    strings or numbers only."""
    problems = []
    items = value if isinstance(value, list) else [value]
    if any(isinstance(v, str) and not v.isprintable() for v in items):
        problems.append(f"{name}: a line break or control character in the value")  # reaches argv and logs
    if name.endswith(LIST_SUFFIX) and value not in (None, ""):
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            problems.append(f'{name} must be a list of strings, e.g. ["--skip", "net.*"]')
    return problems


def validate(
    spec: PlaybookSpec,
    inventory: str | os.PathLike,
    limit: str | None,
    extravars: Mapping[str, object],
    playbook_dir: Path,
    runner: Runner | None = None,
) -> FleetInventory:
    """Everything a run needs, checked before it starts; raises FleetError with the reason."""
    playbook = playbook_dir / spec.file
    if not playbook.is_file():
        raise FleetError(f"playbook {playbook} not found (give --playbooks DIR or set GPUNODE_PLAYBOOKS)")
    parsed = load_inventory(inventory, limit, playbook_dir, runner)
    check_vars(spec, parsed, extravars)
    return parsed
