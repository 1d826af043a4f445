"""`gpunode topo` (how GPUs, NICs and drives are wired) and `gpunode expect` (what each figure
should be on this host, derived from those links)."""

from __future__ import annotations

from pathlib import Path

import typer

from gpunode.cli.common import ResultFormatOption, layout_of

SNAPSHOT_HELP = "Read a recorded snapshot directory instead of this host."
SYSROOT_HELP = "Read host files under this directory instead of /."


def register(app: typer.Typer) -> None:
    app.command("topo")(topo)
    app.command("expect")(expect)


def _host(snapshot: Path | None, sysroot: Path | None):
    from gpunode.audit.run import make_host
    from gpunode.cli.common import die

    try:
        return make_host(str(snapshot) if snapshot else None, str(sysroot) if sysroot else None)[0]
    except ValueError as exc:
        die(str(exc))


def topo(
    snapshot: Path = typer.Option(None, "--snapshot", help=SNAPSHOT_HELP),
    sysroot: Path = typer.Option(None, "--sysroot", help=SYSROOT_HELP),
    fmt: ResultFormatOption = None,
) -> None:
    """How GPUs and NICs connect, as nvidia-smi topo -m names it (NV#, PIX, PXB, PHB, NODE, SYS),
    and every GPU, NIC and NVMe drive with its PCIe link."""
    from gpunode.cli.common import stdout_console
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps
    from gpunode.topology.report import topo_document

    doc = topo_document(_host(snapshot, sysroot))
    as_json, name = layout_of(fmt, False)
    if as_json:
        typer.echo(dumps(doc), nl=False)
        return
    console = stdout_console()
    cols = [Col("", whole=True)] + [Col(c, whole=True) for c in doc["columns"]]
    rows = [[m["from"]] + [m[c] for c in doc["columns"]] for m in doc["matrix"]]
    show(console, "GPU connections (NV# NVLinks, PIX one PCIe switch, PXB several, PHB host bridge, "
                  "NODE same NUMA node, SYS across sockets)", cols, rows, name)
    dev_cols = [Col("device", whole=True), Col("kind"), Col("PCI"), Col("NUMA"), Col("link"), Col("max"),
                Col("rate Gb/s")]
    dev_rows = [[d["name"], d["kind"], d["bdf"], d["numa_node"], d["link"], d["link_max"], d["line_rate_gbps"]]
                for d in doc["devices"]]
    show(console, "Devices", dev_cols, dev_rows, name)
    if doc["gpu_error"]:
        typer.echo(f"GPUs not read: {doc['gpu_error']}", err=True)


def expect(
    snapshot: Path = typer.Option(None, "--snapshot", help=SNAPSHOT_HELP),
    sysroot: Path = typer.Option(None, "--sysroot", help=SYSROOT_HELP),
    fmt: ResultFormatOption = None,
) -> None:
    """The figure each bench metric should reach here: raw link rate x a measured efficiency,
    with its arithmetic, and the link that limits it when one runs below its full rate."""
    from gpunode.cli.common import die, stdout_console
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps
    from gpunode.topology.report import expect_document

    doc = expect_document(_host(snapshot, sysroot))
    if not doc["expectations"]:
        die(f"nothing to derive: {doc['gpu_error'] or 'no GPU or NIC link known'}", 3)
    as_json, name = layout_of(fmt, False)
    if as_json:
        typer.echo(dumps(doc), nl=False)
    else:
        cols = [Col("metric", whole=True), Col("GPU", inline=True), Col("expected", justify="right"),
                Col("unit"), Col("arithmetic"), Col("limited by")]
        rows = [[e["metric"], "" if e["gpu"] is None else e["gpu"], f"{e['value']:,.1f}", e["unit"],
                 e["arithmetic"], _limit(e)] for e in doc["expectations"]]
        show(stdout_console(), "Expected figures from this host's links", cols, rows, name)


def _limit(e: dict) -> str:
    if not e["limited_by"]:
        return ""
    return f"{e['limited_by']}: {e['limited_value']:,.1f} {e['unit']}"
