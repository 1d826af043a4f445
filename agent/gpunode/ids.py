"""Check and setting ids: one dotted scheme, and the patterns --only / --skip accept.

Hand-written checks are `<area>.<name>` (`gpu.ecc.uncorrectable`); profile settings are
`<kind>.<key>` (`gpu.ecc_mode`, `sysctl.vm.swappiness`). A kind name never holds a dot, so the
first dot always ends the kind even when the key has dots of its own (sysctl keys do).
`--only 'gpu.*'` thus selects GPU checks and GPU settings alike.
Before this scheme settings were `<kind>/<key>`; such patterns (`--skip 'gpu/*'`) still work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

_OLD_SETTING = re.compile(r"^([a-z][a-z0-9_-]*)/")


def setting_id(kind: str, key: str) -> str:
    return f"{kind}.{key}"


def normalise(pattern: str) -> str:
    """`sysctl/vm.*` (the old setting scheme) -> `sysctl.vm.*`; anything else unchanged."""
    return _OLD_SETTING.sub(r"\1.", pattern.strip(), count=1)


def matches(check_id: str, pattern: str) -> bool:
    """A glob on the whole id; a plain prefix also selects what is below it (`gpu` ~ `gpu.*`,
    `gpu.memory` ~ `gpu.memory.remap`)."""
    pattern = normalise(pattern)
    return fnmatchcase(check_id, pattern) or fnmatchcase(check_id, pattern + ".*")


def matches_any(check_id: str, patterns: Iterable[str]) -> bool:
    return any(matches(check_id, p) for p in patterns)


def unmatched(ids: Sequence[str], patterns: Iterable[str]) -> list[str]:
    """The patterns that select none of `ids` (a typo in --only must not select nothing silently)."""
    return [p for p in patterns if not any(matches(i, p) for i in ids)]
