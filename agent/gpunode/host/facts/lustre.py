"""What the Lustre client's `lfs` prints: a directory's default layout (`lfs getstripe -d DIR`) and
the file system's OSTs (`lfs osts MOUNT`, or `lfs df`). Formats as the Lustre manual and man pages
show them (tests/fixtures/lustre/README.md):

    stripe_count:  1 stripe_size:   1048576 pattern:       raid0 stripe_offset: -1 pool:  ddn_hdd

a composite (PFL) default is one `lcme_id:` block per component, each with its own stripe_count:

      lcm_entry_count:   2
        lcme_id:             N/A
        ...
        lcme_extent.e_end:   EOF
          stripe_count:  -1       stripe_size:   1048576       pattern:       raid0       stripe_offset: -1
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A field's number must be followed by white space: `stripe_count:  1` cut off may have been 16.
_COUNT = re.compile(r"(?:lmm_)?stripe_count:\s*(-?\d+)(?=\s)")
_SIZE = re.compile(r"(?:lmm_)?stripe_size:\s*(\d+)(?=\s)")
_PATTERN = re.compile(r"(?:lmm_)?pattern:\s*(\S+)")
_POOL = re.compile(r"(?:lmm_)?pool:\s*(\S+)")
_END = re.compile(r"lcme_extent\.e_end:\s*(\S+)")
_ENTRIES = re.compile(r"lcm_entry_count:\s*(\d+)(?=\s)")
_OST = re.compile(r"([\w.-]+-OST[0-9a-fA-F]{4,})_UUID")
MAX_CHARS = 1 << 20  # a default layout is a few hundred bytes; bound what a damaged snapshot hands us


@dataclass(frozen=True)
class Component:
    """One component of a layout: a plain layout has one, a PFL layout one per extent."""

    stripe_count: int  # -1: every OST; -2..-5 (overstriping): that many stripes per OST
    pattern: str | None  # raid0 (or 0/1 in older lfs), mdt (Data-on-MDT), raid0,overstriped ...
    end: str | None  # the extent's end (EOF for the last); None in a plain layout

    @property
    def on_osts(self) -> bool:
        return self.pattern != "mdt"  # a Data-on-MDT component holds no OST object


@dataclass(frozen=True)
class Layout:
    components: tuple[Component, ...]
    pool: str | None

    @property
    def composite(self) -> bool:
        return len(self.components) > 1 or self.components[0].end is not None

    @property
    def wide(self) -> bool:
        """A component that stripes over more than one OST (-1 all, >1, or overstriped)."""
        return any(c.stripe_count > 1 or c.stripe_count < 0 for c in self.components if c.on_osts)

    def describe(self) -> str:
        counts = ", ".join(str(c.stripe_count) for c in self.components if c.on_osts) or "none on OSTs"
        pool = f", pool {self.pool}" if self.pool else ""
        if self.composite:
            return f"PFL layout of {len(self.components)} components, stripe_count {counts}{pool}"
        return f"stripe_count {counts}{pool}"


def parse_default_layout(text: str) -> Layout:
    """`lfs getstripe -d DIR` -> its Layout; ValueError when the output is cut off or not a layout."""
    text = text[:MAX_CHARS]
    declared = _ENTRIES.search(text)
    if declared is None:
        blocks = [text]
    else:
        blocks = re.split(r"^\s*lcme_id:", text, flags=re.MULTILINE)[1:]
        if len(blocks) != int(declared.group(1)):
            raise ValueError(f"{len(blocks)} of {declared.group(1)} layout components (output cut off?)")
    components = tuple(_component(block) for block in blocks)
    if not components:
        raise ValueError("no layout component")
    pool = _POOL.search(text)
    return Layout(components, pool.group(1) if pool else None)


def _component(block: str) -> Component:
    count, size = _COUNT.search(block), _SIZE.search(block)
    if count is None or size is None:
        raise ValueError("no complete stripe_count and stripe_size (output cut off?)")
    pattern, end = _PATTERN.search(block), _END.search(block)
    return Component(int(count.group(1)), pattern.group(1) if pattern else None, end.group(1) if end else None)


def ost_count(text: str) -> int:
    """The OSTs named in `lfs osts` (`0: fs-OST0000_UUID ACTIVE`) or `lfs df` output; ValueError
    when it names none."""
    found = set(_OST.findall(text[:MAX_CHARS]))
    if not found:
        raise ValueError("no OST listed")
    return len(found)
