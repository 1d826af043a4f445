"""The renderer registry (issue 21 item 4): layout.RENDERERS is the one list of layouts,
cli/common.py's ResultFormat offers them plus json, and every command that takes `--format`
reaches them (`--json` stays the alias of `--format json`). Shared options are declared once."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from test_listing_formats import shapes
from test_schemas import validate
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.cli.common import ResultFormat, layout_of
from gpunode.layout import RENDERERS, Col, show
from gpunode.slurm import drain as drain_case

cli = CliRunner()
BOX = re.compile("[\u2500-\u257f]")  # rich's box drawing


def invoke(args: list[str]):
    return cli.invoke(app, args, env={"COLUMNS": "250"})


def test_formats_are_the_renderers_and_json():
    assert [f.value for f in ResultFormat] == [*RENDERERS, "json"] == ["table", "plain", "tsv", "json"]
    assert layout_of(None, False) == (False, None) and layout_of(ResultFormat.json, False) == (True, None)
    assert layout_of(ResultFormat.tsv, False) == (False, "tsv") and layout_of(None, True) == (True, None)


def test_a_new_renderer_is_one_entry(monkeypatch):
    """What the door promises: a function in RENDERERS is reached by show()."""
    seen = []
    monkeypatch.setitem(RENDERERS, "csv", lambda console, title, cols, cells, footer: seen.append(cells))
    show(Console(), "t", [Col("A"), Col("B")], [["1", "x y"]], "csv")
    assert seen == [[["1", "x y"]]]


def test_bench_format_tsv_plain_and_json():
    args = ["bench", "--quick", "--only", "nccl", "--no-history"]
    tsv = cli.invoke(app, [*args, "--format", "tsv"])
    assert tsv.exit_code == 3 and tsv.stdout.splitlines()[0].split("\t")[:3] == ["Metric", "GPU", "Status"]
    assert tsv.stdout.splitlines()[1].startswith("nccl.all_reduce.busbw\t") and len(tsv.stdout.splitlines()) == 2
    plain = cli.invoke(app, [*args, "-f", "plain"])
    assert "nccl.all_reduce.busbw  -  SKIP" in plain.stdout and "UNKNOWN (exit 3)" in plain.stdout
    doc = json.loads(cli.invoke(app, [*args, "--format", "json"]).stdout)
    assert doc["schema"] == "gpunode.bench/1"
    assert json.loads(cli.invoke(app, [*args, "--json"]).stdout)["metrics"] == doc["metrics"]


def test_diag_format_tsv(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # no GPU backend here either way
    result = cli.invoke(app, ["diag", "--format", "tsv", "--no-history"])
    lines = result.stdout.splitlines()
    assert lines[0] == "Test\tGPU\tStatus\tResult" and any(line.startswith("gpu.kernels\t\tERROR\t") for line in lines)


@pytest.mark.parametrize("command", [["bench"], ["diag"]])
def test_a_format_that_is_not_offered_is_a_usage_error(command):
    result = cli.invoke(app, [*command, "--format", "xml"])
    assert result.exit_code == 3 and result.stderr.startswith("gpunode: error: ") and "'xml'" in result.stderr


def test_state_dir_is_declared_once():

    cli_dir = Path(__file__).resolve().parent.parent / "agent" / "gpunode" / "cli"
    declared = {p.name: p.read_text().count('"--state-dir"') for p in cli_dir.glob("*.py")}
    # common.py: the node's state dir; fleet and watch keep state of their own (runs, health.json)
    assert {k: v for k, v in declared.items() if v} == {"common.py": 1, "fleet_cmd.py": 1, "fleet_locate_cmd.py": 1,
                                                         "watch_cmd.py": 1}


@pytest.mark.parametrize("args,header", [
    (["checks"], ["Id", "Area", "Severity", "Tags", "Title"]),
    (["compare", "tests/fixtures/bench/h100-quick.json"], ["Metric", "Subject", "Status", "Measured"]),
    (["expect", "--snapshot", "tests/fixtures/hosts/h100-sxm-1gpu"], ["metric", "GPU", "expected", "unit"]),
    (["topo", "--snapshot", "tests/fixtures/hosts/h100-sxm-1gpu"], ["device", "kind", "PCI"]),
])
def test_every_results_command_takes_the_formats(args, header, monkeypatch):

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    tsv = cli.invoke(app, [*args, "--format", "tsv"])
    assert tsv.exit_code in (0, 1, 2), tsv.output
    headers = [line.split("\t") for line in tsv.stdout.splitlines() if "\t" in line]
    assert any(h[:len(header)] == header for h in headers), tsv.stdout[:300]
    assert json.loads(cli.invoke(app, [*args, "-f", "json"]).stdout)


def test_history_takes_the_formats(tmp_path):
    from gpunode.history import record

    data = json.loads((Path(__file__).parent / "fixtures" / "bench" / "h100-quick.json").read_text())
    assert record("bench", data, str(tmp_path)) is None
    tsv = cli.invoke(app, ["history", "--state-dir", str(tmp_path), "--format", "tsv"])
    assert tsv.stdout.splitlines()[0] == "Id\tTime\tKind\tStatus\tSummary" and "\tbench\t" in tsv.stdout
    assert json.loads(cli.invoke(app, ["history", "--state-dir", str(tmp_path), "-f", "json"]).stdout)["results"]


def xml_is_refused(args: list[str]) -> None:
    result = cli.invoke(app, [*args, "--format", "xml"])
    assert result.exit_code == 3, result.output
    lines = result.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("gpunode: error:")] == lines and len(lines) == 1, result.stderr


def test_slurm_drain(monkeypatch):
    done = [drain_case.Drained("n1", "would-drain", "idle", ["scontrol", "update", "nodename=n1", "state=drain"]),
            drain_case.Drained("n2", "left-foreign", "reason 'maint' is not gpunode's")]
    monkeypatch.setattr(drain_case, "drain", lambda slurm, nodes, why, dry_run=False: done)
    args = ["slurm", "drain", "--check", "--reason", "gpunode: drain: test", "n1", "n2"]
    out = shapes(args, ["Node", "Action", "Detail", "Command"], "gpunode.slurm-drain/1", code=1)
    assert "n1\twould-drain\tidle\tscontrol update nodename=n1 state=drain" in out["tsv"].splitlines()
    doc = json.loads(out["json"])
    validate(doc)  # docs/schemas/slurm-drain.schema.json
    assert doc["exit_code"] == 1 and doc["dry_run"] is True and [n["node"] for n in doc["nodes"]] == ["n1", "n2"]
    plain = cli.invoke(app, args)  # no --format: the lines scripts read, unchanged
    assert plain.stdout.splitlines() == ["scontrol update nodename=n1 state=drain",
                                         "n2: left-foreign: reason 'maint' is not gpunode's"]
    xml_is_refused(args)


def each_format(run, header: list[str], schema: str, code: int = 0) -> dict[str, str]:
    """run(fmt) -> a CliRunner result, for each format; assert each one's shape; -> the outputs."""
    out = {}
    for fmt in ("tsv", "plain", "json", "table"):
        result = run(fmt)
        assert result.exit_code == code, (fmt, result.output)
        out[fmt] = result.stdout
    tsv = out["tsv"].splitlines()
    assert tsv[0].split("\t") == header and len(tsv) > 1 and all("\t" in line for line in tsv), out["tsv"]
    assert not BOX.search(out["plain"]) and "  ".join(header) in out["plain"].splitlines(), out["plain"]
    assert json.loads(out["json"])["schema"] == schema
    assert BOX.search(out["table"])
    return out


def test_apply_its_plan_and_rollback(tmp_path):
    from apply_fixtures import make_tree, picture

    root = make_tree(tmp_path / "root")
    common = ["--sysroot", str(root), "--state-dir", str(tmp_path / "state")]
    args = ["apply", "--profile", "training", "--only", "sysctl.vm.swappiness", *common]
    before = picture(root)
    header = ["Setting", "Subject", "Current", "Target", "Root?", "Reboot?", "GPU reset?", "Status"]
    out = each_format(lambda fmt: invoke([*args, "--check", "--format", fmt]), header, "gpunode.apply/1")
    assert any(ln.startswith("sysctl.vm.swappiness\t") and ln.endswith("\tplanned") for ln in out["tsv"].splitlines())
    validate(json.loads(out["json"]))
    assert "change(s) would be written; nothing changed" in out["plain"] and picture(root) == before

    def apply_then_rollback(fmt: str):
        assert invoke([*args, "--format", fmt]).exit_code == 0
        return invoke(["rollback", *common, "--format", fmt])

    out = each_format(apply_then_rollback, ["#", "Setting", "Subject", "Result", "Detail"], "gpunode.rollback/1")
    validate(json.loads(out["json"]))
    assert any(ln.startswith("1\tsysctl.vm.swappiness\t") and "\trestored\t" in ln for ln in out["tsv"].splitlines())
    assert picture(root) == before
    applied = invoke([*args, "--format", "tsv"])
    assert "\tapplied" in applied.stdout and "undo with" in applied.stderr  # tsv: the rows alone on stdout
    xml_is_refused(args)
    xml_is_refused(["rollback", *common])


def test_gate(tmp_path):
    from gate_fixtures import h100_inventory, write_snapshot
    from test_gate_cli import BROKEN, gpunode

    bad = write_snapshot(tmp_path / "bad", h100_inventory(2, **BROKEN))
    args = ["gate", "--snapshot", str(bad)]
    out = each_format(lambda fmt: invoke([*args, "--format", fmt]), ["Check", "Subject", "Status", "Message"],
                      "gpunode.gate/1", code=2)
    assert any(ln.startswith("gpu.") and "\tFAIL\t" in ln for ln in out["tsv"].splitlines())
    assert any(ln.startswith("gpunode gate (check): FAIL") for ln in out["plain"].splitlines())
    doc, alias = json.loads(out["json"]), json.loads(invoke([*args, "--json"]).stdout)
    validate(doc)
    assert doc["status"] == "FAIL" and doc.keys() == alias.keys() and [c["id"] for c in doc["checks"]] == [c["id"] for c in alias["checks"]]
    xml_is_refused(args)
    # The fast path (no typer): the same formats; rich and layout only where a layout is asked for.
    r = gpunode(*args, "--format", "tsv")
    assert r.returncode == 2 and r.stdout.splitlines()[0] == "Check\tSubject\tStatus\tMessage"
    assert "gpunode gate (check): FAIL" in r.stderr
    r = gpunode(*args, "--format", "xml")
    assert r.returncode == 3 and r.stderr == "gpunode: error: --format: 'xml' is not one of 'table', 'plain', 'tsv', 'json'\n"
    r = gpunode("gate", "--prolog", "--format", "xml", "--snapshot", str(bad))
    assert r.returncode == 0 and r.stderr.startswith("gpunode: error: --format: 'xml'")  # never blocks a job


def test_gate_from_a_fresh_watcher_state_takes_the_formats_too(tmp_path):
    """The lean verdict prints only its own lines: a layout is rendered by the full gate, which
    judges from the same state (no NVML either way)."""
    from test_gate_watcher import gate, ok_results, write_state

    from gpunode.audit.engine import Status

    write_state(tmp_path, ok_results(Status.WARN))
    r = gate("--format", "tsv", watch_dir=tmp_path)
    assert r.returncode == 1 and r.stdout.splitlines() == [
        "Check\tSubject\tStatus\tMessage", "gpu.count\t\tPASS\t1 GPU", "gpu.ecc\tGPU0\tWARN\tno uncorrectable error"], r
    assert json.loads(gate("--format", "json", watch_dir=tmp_path).stdout)["source"].startswith("watcher (age ")


def test_watch_status(tmp_path):
    from test_gate_watcher import ok_results, write_state

    from gpunode.audit.engine import Status

    write_state(tmp_path, ok_results(Status.WARN))
    args = ["watch", "--status", "--state-dir", str(tmp_path)]
    out = each_format(lambda fmt: invoke([*args, "--format", fmt]), ["Check", "Subject", "Status", "Message"],
                      "gpunode.watch/1", code=1)
    assert "gpu.ecc\tGPU0\tWARN\tno uncorrectable error" in out["tsv"].splitlines()
    assert any(ln.startswith("gpunode watch on n1: WARN; fresh") for ln in out["plain"].splitlines())
    assert json.loads(out["json"]).keys() == json.loads(invoke([*args, "--json"]).stdout).keys()
    xml_is_refused(args)
    refused = invoke(["watch", "--format", "tsv", "--poll", "0", "--state-dir", str(tmp_path)])  # never starts one
    assert refused.exit_code == 3 and refused.stderr.startswith("gpunode: error: --format goes with --status")


def test_watch_status_tsv_is_one_table_when_events_and_actions_are_kept(tmp_path):
    """A reader of `watch --status --format tsv` gets the checks' header and rows only; the
    events and actions (tables in the other layouts) go to stderr with the head."""
    from test_gate_watcher import ok_results, write_state

    from gpunode.watch.events import Event

    write_state(tmp_path, ok_results(), seen=[Event("kmsg", "xid", time.time(), "GPU-a", 79, text="Xid 79")])
    out = invoke(["watch", "--status", "--state-dir", str(tmp_path), "--format", "tsv"])
    lines = out.stdout.splitlines()
    assert lines[0] == "Check\tSubject\tStatus\tMessage" and lines.count(lines[0]) == 1
    assert all(len(line.split("\t")) == 4 for line in lines), lines
    assert "event xid gpu=GPU-a code=79: Xid 79" in out.stderr
    table = invoke(["watch", "--status", "--state-dir", str(tmp_path), "--format", "plain"]).stdout
    assert "Xid 79" in table  # the other layouts keep the events table


def test_slurm_install(tmp_path):
    args = ["slurm", "install", "--prefix", str(tmp_path), "--timeout", "12"]
    out = each_format(lambda fmt: invoke([*args, "--check", "--format", fmt]), ["File", "Result", "Mode"],
                      "gpunode.slurm-install/1")
    assert f"{tmp_path}/gpunode-prolog\twould write\t0755" in out["tsv"].splitlines() and list(tmp_path.iterdir()) == []
    assert f"Prolog={tmp_path}/gpunode-prolog" in out["plain"].splitlines()
    doc = json.loads(out["json"])
    validate(doc)  # docs/schemas/slurm-install.schema.json
    assert doc["dry_run"] and "--timeout 12" in doc["files"][0]["text"] and f"Prolog={tmp_path}/gpunode-prolog" in doc["slurm_conf"]
    written = invoke([*args, "--format", "tsv"])
    assert written.exit_code == 0 and f"{tmp_path}/gpunode-epilog\twritten\t0755" in written.stdout.splitlines()
    assert f"Prolog={tmp_path}/gpunode-prolog" in written.stderr  # tsv: stdout is the header and the rows
    again = json.loads(invoke([*args, "--format", "json"]).stdout)
    validate(again)
    assert [f["result"] for f in again["files"]] == ["unchanged"] * 3 and not again["dry_run"]
    xml_is_refused(args)


def test_history_every_format(tmp_path):
    from gpunode.history import record

    data = json.loads((Path(__file__).parent / "fixtures" / "bench" / "h100-quick.json").read_text())
    assert record("bench", data, str(tmp_path)) is None
    args = ["history", "--state-dir", str(tmp_path), "--kind", "bench"]
    out = each_format(lambda fmt: invoke([*args, "--format", fmt]), ["Id", "Time", "Kind", "Status", "Summary"],
                      "gpunode.history/1")
    validate(json.loads(out["json"]))
    assert json.loads(out["json"]) == json.loads(invoke([*args, "--json"]).stdout)
    xml_is_refused(args)


@pytest.mark.parametrize("kind,fixture,header", [
    ("bench", "bench/h100-quick.json", ["Metric", "GPU", "Status", "Value", "Unit", "Spread (min–max, CoV)", "Note"]),
    ("diag", "diag/h200-l1.json", ["Test", "GPU", "Status", "Result"]),
    ("audit", None, ["Check", "Subject", "Status", "Message"]),
])
def test_history_show_lays_out_a_recorded_result_as_its_command_does(tmp_path, kind, fixture, header):
    from gpunode.history import record

    fixtures = Path(__file__).parent / "fixtures"
    if fixture:
        data = json.loads((fixtures / fixture).read_text())
    else:
        data = json.loads(invoke(["audit", "--snapshot", str(fixtures / "hosts" / "h100-sxm-1gpu"), "--json"]).stdout)
    assert record(kind, data, str(tmp_path)) is None
    args = ["history", "show", "1", "--state-dir", str(tmp_path)]
    out = each_format(lambda fmt: invoke([*args, "--format", fmt]), header, f"gpunode.{kind}/1")
    assert json.loads(out["json"]) == json.loads(invoke(args).stdout)  # json: the document, as without --format
    xml_is_refused(args)


def test_history_show_lays_out_an_apply_as_fields(tmp_path, monkeypatch):
    from gpunode.cli import history_cmd

    summary = {"id": "a1", "time": "2026-12-06T18:00:00Z", "profile": "training", "changes": 2, "status": "applied",
               "rolled_back_at": None}
    monkeypatch.setattr(history_cmd, "_applies", lambda root, sysroot=None: [summary])
    args = ["history", "show", "a1", "--state-dir", str(tmp_path)]
    tsv = invoke([*args, "--format", "tsv"]).stdout.splitlines()
    assert tsv[:3] == ["Field\tValue", "id\ta1", "time\t2026-12-06T18:00:00Z"] and "rolled_back_at\t" in tsv
    plain = invoke([*args, "--format", "plain"]).stdout
    assert "Field  Value" in plain.splitlines() and not BOX.search(plain) and BOX.search(invoke([*args, "-f", "table"]).stdout)
    assert json.loads(invoke([*args, "--format", "json"]).stdout) == summary
