"""Check and setting ids: one dotted scheme, and the patterns --only / --skip accept.

Hand-written checks are `<area>.<name>` (`gpu.ecc.uncorrectable`); profile settings are
`<kind>.<key>` (`gpu.ecc_mode`, `sysctl.vm.swappiness`). A kind name never holds a dot, so the
first dot always ends the kind even when the key has dots of its own (sysctl keys do).
`--only 'gpu.*'` thus selects GPU checks and GPU settings alike.
Before this scheme settings were `<kind>/<key>`; such patterns (`--skip 'gpu/*'`) keep their old
meaning: they select profile settings of that kind only, never a hand-written check (else an old
`--skip 'gpu/*'` would turn off GPU health: count, ECC, Xid).
Seven checks were once named under `gpu.` though their area is pcie or nvlink (RENAMED): a
pattern written for an old name (`gpu.pcie.*`, `gpu.fabric`) still selects them, and a stored
result under an old id reads as today's (current_id); `gpu.*` now means the gpu area only.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Sequence
from fnmatch import fnmatchcase

# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_OLD_SETTING = r"^([a-z][a-z0-9_-]*)/"
# old check id -> today's: the id starts with the check's area (pcie, nvlink), as every other does
RENAMED = {
    "gpu.pcie.link": "pcie.link",
    "gpu.pcie.replay": "pcie.replay",
    "gpu.nvlink.state": "nvlink.state",
    "gpu.nvlink.errors": "nvlink.errors",
    "gpu.fabric": "nvlink.fabric",
    "gpu.imex.config": "nvlink.imex.config",
    "gpu.imex.domain": "nvlink.imex.domain",
}
_OLD_NAME = {new: old for old, new in RENAMED.items()}
_OLD_GROUPS = tuple(sorted({old.rsplit(".", 1)[0] if old.count(".") > 1 else old for old in RENAMED}))


def setting_id(kind: str, key: str) -> str:
    return f"{kind}.{key}"


def normalise(pattern: str) -> str:
    """`sysctl/vm.*` (the old setting scheme) -> `sysctl.vm.*`; anything else unchanged."""
    return re.sub(_OLD_SETTING, r"\1.", pattern.strip(), count=1)


def current_id(check_id: str) -> str:
    """A check id as stored by an older gpunode (a document, a recorded run) -> today's."""
    return RENAMED.get(check_id, check_id)


def _names_an_old_check(pattern: str) -> bool:
    """`gpu.pcie.*`, `gpu.fabric`, `gpu.nvlink`: a pattern inside an old name's group (not `gpu.*`)."""
    return any(pattern == g or pattern.startswith(g + ".") or pattern.startswith(g + "*") for g in _OLD_GROUPS)


def is_old_setting_pattern(pattern: str) -> bool:
    """`gpu/*`, `sysctl/vm.swappiness`: the older setting scheme, which names settings only."""
    return re.match(_OLD_SETTING, pattern.strip()) is not None


def matches(check_id: str, pattern: str, setting: bool = True) -> bool:
    """A glob on the whole id; a plain prefix also selects what is below it (`gpu` ~ `gpu.*`,
    `gpu.memory` ~ `gpu.memory.remap`). `setting`: the id is a profile setting's (an old
    `kind/key` pattern matches only those)."""
    if not setting and is_old_setting_pattern(pattern):
        return False
    pattern = normalise(pattern)
    if fnmatchcase(check_id, pattern) or fnmatchcase(check_id, pattern + ".*"):
        return True
    old = _OLD_NAME.get(check_id)
    return old is not None and _names_an_old_check(pattern) and (
        fnmatchcase(old, pattern) or fnmatchcase(old, pattern + ".*"))


def matches_any(check_id: str, patterns: Iterable[str], setting: bool = True) -> bool:
    return any(matches(check_id, p, setting) for p in patterns)


def unmatched(ids: Sequence[str], patterns: Iterable[str], settings: Container[str] | None = None) -> list[str]:
    """The patterns that select none of `ids` (a typo in --only must not select nothing silently).
    `settings`: which of `ids` are profile settings (None: all of them)."""
    return [p for p in patterns
            if not any(matches(i, p, settings is None or i in settings) for i in ids)]
