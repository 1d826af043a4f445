"""`gpunode config show`: the effective site configuration and where each value came from."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import typer

from gpunode.cli.common import ResultFormatOption, die, layout_of, stdout_console

config_app = typer.Typer(help="The site configuration (/etc/gpunode/config.yaml).", no_args_is_help=True)


def which_file(explicit: str | None) -> tuple[Path | None, str]:
    """The file load_config reads, and why that one."""
    from gpunode.config import DEFAULT_PATH

    if explicit:
        return Path(explicit), "--config"
    if os.environ.get("GPUNODE_CONFIG"):
        return Path(os.environ["GPUNODE_CONFIG"]), "$GPUNODE_CONFIG"
    if Path(DEFAULT_PATH).exists():
        return Path(DEFAULT_PATH), "default location"
    return None, f"none ({DEFAULT_PATH} does not exist): built-in defaults"


def explain(explicit: str | None) -> dict:
    from gpunode import __version__
    from gpunode.config import Config, load_config
    from gpunode.inputs import load_yaml

    path, why = which_file(explicit)
    config = load_config(explicit)  # ConfigError for anything wrong, before we explain it
    data = (load_yaml(path) or {}) if path is not None else {}
    values = []
    for f in fields(Config):
        if f.name == "path":
            continue
        value = getattr(config, f.name)
        given = f.name in data and data[f.name] is not None
        values.append({"key": f.name, "value": value, "from": str(path) if given else "default"})
    return {"schema": "gpunode.config/1", "gpunode_version": __version__, "file": str(path) if path else None,
            "file_chosen_by": why, "values": values}


@config_app.command("show")
def show(
    config: str = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON (schema gpunode.config/1)."),
    fmt: ResultFormatOption = None,
) -> None:
    """Print every setting's effective value and where it came from (the file or the default)."""
    from gpunode.config import ConfigError
    from gpunode.layout import Col
    from gpunode.layout import show as show_rows
    from gpunode.outputs import dumps

    try:
        doc = explain(config)
    except ConfigError as exc:
        die(str(exc))
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps(doc), nl=False)
        return
    title = f"gpunode config · {doc['file'] or 'no file'} ({doc['file_chosen_by']})"
    rows = [[v["key"], _text(v["value"]), v["from"]] for v in doc["values"]]
    show_rows(stdout_console(), title, [Col("Key", whole=True), Col("Value", inline=True), Col("From")], rows, layout)


def _text(value) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return ", ".join(value) if value else "(none)"
    return str(value)


def register(app) -> None:
    app.add_typer(config_app, name="config")
