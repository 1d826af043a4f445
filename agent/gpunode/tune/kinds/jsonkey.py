"""One key of a JSON configuration file: `{kind: json, key: docker.default-shm-size, op: ">=",
target: 1073741824}` sets "default-shm-size" in /etc/docker/daemon.json.

Only the files and keys listed here can be named (a root daemon parses what is written), each
with its value's shape. The plan rewrites the whole file with every other key kept in its order
and the file's indentation kept; a file that is not one JSON object is refused, never repaired.
The write is a journaled file change (byte-exact rollback); restarting the engine is left to the
operator and said in the plan, as a restart stops the containers that run.
"""

from __future__ import annotations

import json
import re

from gpunode.host.facts.docker import (
    DAEMON_JSON,
    DaemonJsonInvalid,
    parse_daemon_json,
    size_bytes,
    size_text,
    ulimit,
)
from gpunode.tune.kinds.base import UNLIMITED, Observed, SettingKind, normalize, satisfies
from gpunode.tune.kinds.values import MAX_INT64, SettingInvalid, whole_number

SIZE, ULIMIT = "size", "ulimit"
# file alias -> (path, the engine that reads it, {json key path: value shape})
FILES = {
    "docker": (DAEMON_JSON, "dockerd", {
        "default-shm-size": SIZE,
        "default-ulimits.memlock": ULIMIT,
        "default-ulimits.nofile": ULIMIT,
    }),
}
NOT_SET = "(not set)"
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_INDENT = r"(?m)^([ \t]+)\""


def split_key(key: str) -> tuple[str, str, str, str]:
    """-> (path, engine, json key path, shape); KeyError for a file or key not listed."""
    alias, _, json_key = key.partition(".")
    path, engine, keys = FILES[alias]
    return path, engine, json_key, keys[json_key]


def _load(text: str | None, path: str) -> tuple[dict | None, str]:
    """(object, "") or (None, why); an absent file is an empty object."""
    if text is None:
        return {}, ""
    try:
        return parse_daemon_json(text, path), ""
    except DaemonJsonInvalid as exc:
        return None, str(exc)


def _value(data: dict, json_key: str, shape: str):
    """The value the engine uses for this key: bytes for a size, 'unlimited' or 'SOFT HARD'."""
    head, _, item = json_key.partition(".")
    if shape == SIZE:
        return size_bytes(data[head]) if head in data else None
    entries = data.get(head)
    entry = entries.get(item) if isinstance(entries, dict) else None
    if entry is None:
        return None
    pair = ulimit(entry)
    if pair is None:
        return "(not a ulimit entry)"
    soft, hard = pair
    return UNLIMITED if soft == hard == -1 else f"{'unlimited' if soft == -1 else soft} " \
                                               f"{'unlimited' if hard == -1 else hard}"


def render(original: str | None, data: dict) -> str:
    """The object as JSON in the original file's style: its indentation (two spaces for a new
    file, none for a one-line file) and its final newline."""
    indent: str | int | None = 2
    if original is not None:
        m = re.search(_INDENT, original)
        indent = m.group(1) if m else (None if "\n" not in original.strip() else 2)
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return text + ("\n" if original is None or original.endswith("\n") else "")


class JsonKey(SettingKind):
    name = "json"
    area = "containers"
    signed_values = True  # a ulimit of -1 is unlimited

    def validate_key(self, key: str) -> None:
        try:
            split_key(key)
        except KeyError:
            known = [f"{a}.{k}" for a, (_, _, keys) in FILES.items() for k in keys]
            raise SettingInvalid(f"json key {key!r} is not one gpunode may write; known: {', '.join(known)}") from None

    def validate_target(self, key, target):
        shape = split_key(key)[3]
        if shape == ULIMIT:
            if (isinstance(target, str) and normalize(target) == UNLIMITED) or \
                    (target == -1 and not isinstance(target, bool)):
                return UNLIMITED
            return whole_number(target, "target", 0, MAX_INT64)
        if isinstance(target, str) and size_bytes(target) is not None:
            return size_bytes(target)
        return whole_number(target, "target (bytes)", 1, MAX_INT64)

    def where(self, setting) -> str:
        path, _, json_key, _ = split_key(setting.key)
        return f"{path} {json_key}"

    def observe(self, ctx, setting) -> list[Observed]:
        path, engine, json_key, shape = split_key(setting.key)
        subject = f"{path} {json_key}"
        text = ctx.host.sys.read(path)
        data, why = _load(text, path)
        if data is None:
            return [Observed(subject, "(invalid file)", note=why, extra={"invalid": why})]
        value = _value(data, json_key, shape)
        if value is None and shape == SIZE and json_key.partition(".")[0] not in data:
            from gpunode.host.facts.docker import DOCKER_DEFAULT_SHM

            return [Observed(subject, DOCKER_DEFAULT_SHM, note=f"not set: {engine}'s default")]
        if value is None:
            return [Observed(subject, NOT_SET if shape == ULIMIT else "(not a size)",
                             note=f"{engine}'s own limit" if shape == ULIMIT else "")]
        return [Observed(subject, value)]

    def satisfied(self, setting, obs: Observed) -> bool:
        if isinstance(obs.value, str) and obs.value.startswith("("):
            return False
        if split_key(setting.key)[3] == ULIMIT and obs.value != UNLIMITED:
            return all(satisfies(setting.op, part, setting.target) for part in str(obs.value).split())
        return satisfies(setting.op, obs.value, setting.target)

    def show(self, setting, obs: Observed) -> str:
        if split_key(setting.key)[3] == SIZE and isinstance(obs.value, int):
            return size_text(obs.value)
        return str(obs.value)

    def cannot_apply(self, ctx, setting, wrong) -> str | None:
        invalid = next((o.extra["invalid"] for o in wrong if o.extra.get("invalid")), "")
        if invalid:
            return f"{invalid}; fix the file by hand (gpunode never rewrites a file it cannot parse)"
        return None

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        path, engine, json_key, shape = split_key(setting.key)
        original = files.text(path)  # as earlier settings of this batch leave it
        data, why = _load(original, path)
        if data is None:
            return []  # cannot_apply said why
        head, _, item = json_key.partition(".")
        current = _value(data, json_key, shape)
        blocked = ""
        if files.state(path).link is not None:
            blocked = f"{path} is a symbolic link; gpunode replaces regular files only"
        if shape == SIZE:
            after = _set_size(data, head, current, setting)
        else:
            after, bad = _set_ulimit(data, head, item, setting, path)
            blocked = blocked or bad
        before = current if current is not None else wrong[0].value
        shown = size_text(before) if shape == SIZE and isinstance(before, int) else str(before)
        change = files.write_text(
            setting.id, path, render(original, data),
            current_text=f"{json_key} {shown}", after_text=f"{json_key} {after}",
            note=f"takes effect when {engine} restarts (systemctl restart docker): gpunode leaves the restart to "
                 "you, as it stops running containers",
            blocked=blocked)
        return [change] if change else []


def _set_size(data: dict, head: str, current, setting) -> str:
    """A size key (shm-size) set in `data` as the operator asked (=, >=, <=); -> its text."""
    want = setting.target if current is None or setting.op == "=" else \
        (max if setting.op == ">=" else min)(current, setting.target)
    data[head] = size_text(want)
    return size_text(want)


def _set_ulimit(data: dict, head: str, item: str, setting, path: str) -> tuple[str, str]:
    """A default-ulimits entry set in `data` (Hard and Soft, its other keys kept); -> its text,
    and why the change is blocked ("" when it is not)."""
    why = ""
    limit = -1 if setting.target == UNLIMITED else setting.target
    entries = data.get(head)
    if entries is not None and not isinstance(entries, dict):
        why = f"{path}: {head} is not an object; fix it by hand"
        entries = {}
    entries = dict(entries or {})
    entry = dict(entries.get(item) or {}) if isinstance(entries.get(item), dict) else {}
    entry.update({"Name": entry.get("Name", item), "Hard": limit, "Soft": limit})
    entries[item] = entry
    data[head] = entries
    return UNLIMITED if limit == -1 else str(limit), why
