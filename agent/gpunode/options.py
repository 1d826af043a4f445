"""Command-line options declared as data and parsed without typer, for the commands that must
not load it (typer, with the click, rich and pydantic it brings, costs ~100 ms and ~20 MB): the
gate before every Slurm job (slurm/fastpath.py) and the resident watcher (cli/watch_cmd.py). Each option is a row with flag, key, kind (bool: a flag),
default and help (slurm.fastpath.GateOption); typer's help for the same command is built from
the same table (cli/common.options_command)."""

from __future__ import annotations

from gpunode.exits import UsageError


def parse_options(args: list[str], options: tuple, command: str) -> dict:
    """argv -> {key: value} by a table of options; UsageError for an option not in it or a value
    it cannot read."""
    kwargs = {o.key: o.default for o in options}
    by_flag = {o.flag: o for o in options}
    items = iter(args)
    for arg in items:
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = by_flag.get(name)
        if option is None:
            raise UsageError(f"no such option: {arg!r} (see `gpunode {command} --help`)")
        if option.kind is bool:
            if sep:
                raise UsageError(f"{name} takes no value")
            kwargs[option.key] = True
            continue
        value = inline if sep else next(items, None)
        if value is None or (not sep and value.startswith("--")):
            raise UsageError(f"{name} needs a value")
        try:
            kwargs[option.key] = option.kind(value)
        except ValueError:
            raise UsageError(f"{name}: {value!r} is not a number") from None
    return kwargs
