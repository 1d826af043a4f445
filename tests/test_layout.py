"""Reports fit an operator's terminal: audit, plan, compare, bench and fleet rendered at 80 and
120 columns, on a terminal and piped; every check id, status and verdict comes out whole (never
"P…"), and piped output keeps one result per line so `grep <id>` finds the whole result."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from rich.console import Console

from gpunode.layout import Col, show
from testkit import FIXTURES, HOSTS

WIDTHS = (80, 120)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def gpunode(*args, width: int, tty: bool):
    env = {**os.environ, "COLUMNS": str(width), "NO_COLOR": "1"}
    env.pop("TTY_COMPATIBLE", None)
    if tty:
        env["TTY_COMPATIBLE"] = "1"  # rich treats stdout as a terminal
    proc = subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    return proc.returncode, ANSI.sub("", proc.stdout)


def whole(token: str, text: str) -> bool:
    return re.search(rf"(?<![\w.\-]){re.escape(token)}(?![\w\-]|\.\w)", text) is not None


def assert_whole(text: str, tokens, width: int, tty: bool) -> None:
    assert "…" not in text, text
    missing = sorted({t for t in tokens if t and not whole(t, text)})
    assert not missing, f"cut or missing at {width} cols (tty={tty}): {missing}\n{text}"


def json_doc(*args):
    proc = subprocess.run([sys.executable, "-m", "gpunode", *args, "--json"], capture_output=True, text=True,
                          timeout=120)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def audit_json():
    return json_doc("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tty", [True, False])
def test_audit_report(audit_json, width, tty):
    code, text = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--expand", width=width, tty=tty)
    assert code == audit_json["exit_code"]
    tokens = [c["id"] for c in audit_json["checks"]] + [c["status"] for c in audit_json["checks"]]
    assert_whole(text, tokens + [audit_json["status"]], width, tty)
    if not tty:  # one line per result: the id's line holds its status and message
        for c in audit_json["checks"]:
            line = next(x for x in text.splitlines() if whole(c["id"], x) and (c["subject"] or "-") in x)
            assert c["status"] in line and " ".join(c["message"].split()) in line


def test_piped_audit_has_one_line_per_result_and_grep_finds_it(audit_json):
    _, text = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), width=80, tty=False)
    lines = text.splitlines()
    assert len(lines) == len(audit_json["checks"]) + 3  # title, column header, one per result, verdict
    assert lines[1] == "Area  Status  Check  Subject  Result"
    swap = [x for x in lines if "sysctl.vm.swappiness" in x]
    assert swap == ["memory  WARN  sysctl.vm.swappiness  -  60; expected <= 10"]


def test_problems_leaves_out_pass_only(audit_json):
    _, text = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--problems", width=80, tty=False)
    shown = [c for c in audit_json["checks"] if c["status"] != "PASS"]
    assert len(text.splitlines()) == len(shown) + 3  # title, column header, results, verdict
    assert not [x for x in text.splitlines() if "  PASS  " in x]


def test_table_folds_skips_that_share_a_reason(tmp_path):
    snap = tmp_path / "nogpu"
    shutil.copytree(HOSTS / "h100-sxm-1gpu", snap)
    (snap / "gpus.json").write_text(json.dumps({"available": False, "error": "no NVIDIA driver/NVML: test",
                                                 "driver_version": None, "cuda_driver_version": None, "gpus": []}))
    code, text = gpunode("audit", "--snapshot", str(snap), width=120, tty=True)
    doc = json_doc("audit", "--snapshot", str(snap))
    skipped = [c for c in doc["checks"] if c["status"] == "SKIP"]
    assert len(skipped) > 20
    rows = [x for x in text.splitlines() if "│" in x and "SKIP" in x]
    # one row per reason that GROUP_SKIPS_FROM or more SKIPs share, one row for each other SKIP
    from collections import Counter

    from gpunode.audit.report import GROUP_SKIPS_FROM

    reasons = Counter(c["message"] for c in skipped)
    groups = [n for n in reasons.values() if n >= GROUP_SKIPS_FROM]
    assert groups and max(groups) > 20  # the checks that need a driver fold into one row
    assert len(rows) == len(groups) + sum(n for n in reasons.values() if n < GROUP_SKIPS_FROM), text
    assert len(re.findall(r"SKIP\s+│\s+\d+ checks", text)) == len(groups)
    assert_whole(text, [c["id"] for c in doc["checks"]], 120, True)  # grouped ids are still named


def test_compare_report_every_width():
    doc = json_doc("compare", str(FIXTURES / "bench" / "h100-full.json"))
    for width in WIDTHS:
        for tty in (True, False):
            code, text = gpunode("compare", str(FIXTURES / "bench" / "h100-full.json"), width=width, tty=tty)
            assert code == doc["exit_code"]
            tokens = [r["metric"] for r in doc["verdicts"]] + [doc["status"]]
            tokens += [r["status"] if r["status"] != "SKIP" else "not compared" for r in doc["verdicts"]]
            assert_whole(text, tokens, width, tty)


def _console(width: int, tty: bool):
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=tty, color_system=None, soft_wrap=False), buf


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tty", [True, False])
def test_bench_report(width, tty):
    from gpunode.bench.results import BenchDocument
    from gpunode.cli.bench_cmd import render_table

    doc = BenchDocument.from_json(json.loads((FIXTURES / "bench" / "h100-full.json").read_text()))
    console, buf = _console(width, tty)
    render_table(doc, console)
    tokens = [m.name for m in doc.metrics] + [m.status for m in doc.metrics] + [doc.status]
    assert_whole(buf.getvalue(), tokens, width, tty)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tty", [True, False])
def test_plan_report(tmp_path, width, tty):
    from gpunode.tune.render import render_changes

    root = tmp_path / "root"
    shutil.copytree(HOSTS / "h100-sxm-1gpu" / "files", root, symlinks=True)
    proc = subprocess.run([sys.executable, "-m", "gpunode", "apply", "--sysroot", str(root), "--profile", "training",
                           "--dry-run", "--json", "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120)
    rows = json.loads(proc.stdout)["changes"]
    assert rows
    console, buf = _console(width, tty)
    render_changes(console, "plan", rows)
    tokens = [r["setting"] for r in rows] + [r["status"] for r in rows]
    assert_whole(buf.getvalue(), tokens, width, tty)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tty", [True, False])
def test_fleet_report(tmp_path, width, tty):
    from test_fleet_report import audit_doc, bench_doc, make_run

    from gpunode.fleet.render import render_fleet
    from gpunode.fleet.report import fleet_document

    bad = audit_doc(tmp_path, "node-bad", gpu={"ecc_mode_current": False, "ecc_mode_pending": False})
    good = audit_doc(tmp_path, "node-good")
    run = make_run(tmp_path, "audit", {"node-good": {"doc": good}, "node-bad": {"doc": bad}})
    doc = fleet_document(run)
    console, buf = _console(width, tty)
    render_fleet(doc, console)
    tokens = [h["host"] for h in doc["hosts"]] + [h["status"] for h in doc["hosts"]] + [c["id"] for c in doc["checks"]]
    assert_whole(buf.getvalue(), tokens + [doc["status"]], width, tty)
    del bench_doc


def test_generic_layouts_never_cut_whole_columns():
    cols = [Col("Status", whole=True), Col("Check", whole=True), Col("Result", label=False)]
    rows = [["PASS", "a.very.long.check.identifier.that.is.wider.than.forty.columns", "x " * 60]]
    for width in (40, 80, 120):
        for tty in (True, False):
            console, buf = _console(width, tty)
            show(console, "t", cols, rows)
            assert_whole(buf.getvalue(), ["PASS", rows[0][1]], width, tty)
    console, buf = _console(80, False)
    show(console, "t", cols, rows, "tsv")
    assert buf.getvalue().splitlines() == ["Status\tCheck\tResult", "\t".join([*rows[0][:2], " ".join(rows[0][2].split())])]


def test_audit_tsv_has_a_header_and_one_row_per_result(audit_json):
    _, text = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--format", "tsv", width=80, tty=True)
    lines = text.splitlines()
    assert lines[0] == "Area\tStatus\tCheck\tSubject\tResult"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(audit_json["checks"]) and all(len(r) == 5 for r in rows)
    assert [r[2] for r in rows] == [c["id"] for c in sorted(
        audit_json["checks"], key=lambda c: [x["area"] for x in audit_json["checks"]].index(c["area"]))]
