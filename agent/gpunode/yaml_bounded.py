"""The YAML half of gpunode.inputs: yaml.safe_load with duplicate keys refused and depth,
aliases and expanded size bounded. Kept apart so that importing gpunode.inputs does not import
PyYAML (~12 ms): the gate reads its config and profile through a cache (gpunode.parsed_cache) before every
job and parses no YAML at all on a hit. Callers use gpunode.inputs.parse_yaml / load_yaml; this module
imports nothing of gpunode (it stays below inputs: no import circle), and inputs turns its
Refused into an InputError."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:  # libyaml makes the events (about 6x faster: the gate loads a profile before every job) ...
    from yaml._yaml import CParser as _Parser
except ImportError:  # ... or PyYAML's pure-Python reader, scanner and parser

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _BoundedLoader(Composer, _Parser, SafeConstructor, Resolver):
    """yaml.SafeLoader's parts, composed in Python so that it counts while composing: a bomb is
    refused before it is built. (Composer comes first: its composing, not libyaml's, is used.)"""

    def __init__(self, stream: str, max_depth: int, max_aliases: int, max_nodes: int):
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._limits = (max_depth, max_aliases, max_nodes)
        self._depth = self._aliases = self._nodes = 0
        self._weight: dict[int, int] = {}  # id(node) -> nodes it expands to, once composed

    def compose_node(self, parent, index):
        max_depth, max_aliases, max_nodes = self._limits
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._aliases += 1
                if self._aliases > max_aliases:
                    raise _Refused(event.start_mark, f"more than {max_aliases} aliases")
                weight = self._weight.get(id(target))
                if weight is None:  # the anchor is still open: `&a [*a]` would be endless
                    raise _Refused(event.start_mark, f"alias *{event.anchor} refers to itself")
                self._count(weight, event.start_mark)
            return super().compose_node(parent, index)
        nests = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        self._depth += nests
        if self._depth > max_depth:
            raise _Refused(self.peek_event().start_mark, f"nested deeper than {max_depth} levels")
        before = self._nodes
        self._count(1, self.peek_event().start_mark)
        node = super().compose_node(parent, index)
        self._weight[id(node)] = self._nodes - before
        self._depth -= nests
        return node

    def _count(self, weight: int, mark) -> None:
        self._nodes += weight
        if self._nodes > self._limits[2]:
            raise _Refused(mark, f"more than {self._limits[2]} values once aliases are expanded")

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if duplicate:
                    raise _Refused(key_node.start_mark, "duplicate key", key=(key,))
        return super().construct_mapping(node, deep=deep)


# Plain scalars YAML 1.1 (PyYAML) reads as numbers where YAML 1.2 reads another number or text:
# `010` is 8 in 1.1 and 10 in 1.2, `1:30` is 90 or text, `0b11` 3 or text, `1_000` 1000 or text.
# gpunode refuses them rather than pick one reading silently: a sysctl written as 8 because a
# profile said `010` is the kind of quiet mistake these checks exist to stop. Quoting the value
# ('010') or writing it plainly (8, 10, 90) says which is meant.
_AMBIGUOUS_NUMBER = re.compile(r"[-+]?(0[0-7_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9.]*_[0-9_.]*([eE][-+][0-9]+)?|0x[0-9a-fA-F]*_[0-9a-fA-F_]*)")


def _refuse_ambiguous(construct):
    def checked(loader, node):
        if _AMBIGUOUS_NUMBER.fullmatch(node.value):
            raise _Refused(node.start_mark, "a number YAML 1.1 and YAML 1.2 read differently (a leading 0, "
                           "':' or '_'); quote it or write it plainly")  # the value unquoted: never echo a foreign file
        return construct(loader, node)

    return checked


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _refuse_ambiguous(SafeConstructor.construct_yaml_int))
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _refuse_ambiguous(SafeConstructor.construct_yaml_float))


class _Refused(Exception):
    def __init__(self, mark, message: str, key: tuple = ()):
        super().__init__(message)
        self.mark, self.message, self.key = mark, message, key


class Refused(ValueError):
    """A document refused: `where` (source:line), why, and the offending key as a 1-tuple when
    there is one (inputs shows it only when it looks like a key name: a foreign file is not echoed)."""

    def __init__(self, where: str, message: str, key: tuple = ()):
        super().__init__(f"{where}: {message}")
        self.where, self.message, self.key = where, message, key


def parse_yaml(
    text: str,
    source: str | os.PathLike,
    max_depth: int,
    max_aliases: int,
    max_nodes: int,
) -> Any:
    """yaml.safe_load with duplicate keys refused and depth/aliases/expanded size bounded
    (the bounds are gpunode.inputs'); raises Refused."""
    loader = None
    try:  # the reader checks characters as soon as it is made: inside the try
        loader = _BoundedLoader(text, max_depth, max_aliases, max_nodes)
        return loader.get_single_data()
    except _Refused as exc:
        raise Refused(_where(source, exc.mark), exc.message, exc.key) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise Refused(_where(source, mark), f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:  # e.g. a NUL or other control character the YAML reader refuses
        raise Refused(str(source), f"not valid YAML: {exc}") from None
    except RecursionError:  # belt and braces: the depth bound should come first
        raise Refused(str(source), "nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # an integer of 5000 digits (Python's conversion limit)
        raise Refused(str(source), f"not a usable value: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _where(source: str | os.PathLike, mark) -> str:
    return f"{source}:{mark.line + 1}" if mark is not None else str(source)
