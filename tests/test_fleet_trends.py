"""Trends across a fleet: histories derived from the real recorded H200/H100 bench results (each
host's runs are the recording with small seeded noise; one H200 host degrades slowly), judged per
SKU; the terminal view at 80 columns; the HTML page checked in a real headless Chromium driven
through chromedriver (drifting host shown, plots drawn with a size, no console errors); and the
whole `gpunode fleet trends` through Ansible against hosts with their own history."""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

import testkit
from gpunode.fleet.html import fleet_html
from gpunode.fleet.render import render_trends
from gpunode.fleet.trends import EXPORT_SCHEMA, trends
from gpunode.history import record
from gpunode.history.record import figures_of
from testkit import FIXTURES

DAY = 86400.0
T0 = 1_793_000_000.0
REAL = {"h200": json.loads((FIXTURES / "device" / "interference-h200-idle.json").read_text()),
        "h100": json.loads((FIXTURES / "bench" / "h100-quick.json").read_text())}
DRIFTER = "gpu-h200-07"


def run_doc(sku: str, host: str, i: int, scale: float, foreign: bool = False) -> dict:
    doc = copy.deepcopy(REAL[sku])
    doc["host"], doc["time_epoch"], doc["time"] = host, T0 + i * 2 * DAY, f"day {2 * i}"
    for m in doc["metrics"]:
        if m["status"] == "ok":
            m["value"] = round(m["value"] * scale, 3)
            if foreign:
                m["telemetry"] = {"foreign_processes": [{"pid": 99, "name": "other-job"}]}
    return doc


def history(sku: str, host: str, runs: int = 15) -> list[dict]:
    rng = random.Random(host)  # seeded per host: the same fleet every time
    docs = []
    for i in range(runs):
        scale = 1 + rng.gauss(0, 0.004)
        if host == DRIFTER:
            scale *= 1 - 0.09 * i / (runs - 1)  # loses 9 % over a month, a little each run
        if host == "gpu-h200-03" and i == 6:
            scale *= 0.7  # one wild run: not a drift
        if host == "gpu-h200-09":  # three fast runs when new, then a dip it climbs out of: recovering
            scale *= 1.10 if i < 3 else 0.95 + 0.09 * (i - 3) / (runs - 4)
        docs.append(run_doc(sku, host, i, scale, foreign=(host == "gpu-h200-05" and i >= 10)))
        if host == "gpu-h200-05" and i >= 10:
            for m in docs[-1]["metrics"]:
                if m["status"] == "ok":
                    m["value"] = round(m["value"] * 0.6, 3)  # beside another job: slow, but untrusted
    return docs


def export_of(docs: list[dict]) -> dict:
    """What `gpunode history export` gives for these runs."""
    runs = [{"id": i, "time": d["time"], "time_epoch": d["time_epoch"], "status": d.get("status", ""),
             "figures": [{"name": f.name, "gpu": f.gpu, "value": f.value, "unit": f.unit,
                          "conditions": json.loads(f.conditions), "cov": f.cov, "trusted": f.trusted}
                         for f in figures_of(d)]} for i, d in enumerate(docs)]
    return {"schema": EXPORT_SCHEMA, "host": docs[0]["host"], "kind": "bench", "gpus": docs[0]["gpus"], "runs": runs}


def fleet_exports(n200: int = 12, n100: int = 5) -> list[tuple[str, str, dict]]:
    out = [(f"gpu-h200-{i:02d}", "h200", export_of(history("h200", f"gpu-h200-{i:02d}"))) for i in range(n200)]
    out += [(f"gpu-h100-{i:02d}", "h100", export_of(history("h100", f"gpu-h100-{i:02d}"))) for i in range(n100)]
    return out


def test_the_slowly_degrading_host_is_the_only_one_drifting():
    doc = trends(fleet_exports())
    assert doc["drifting_hosts"] == [DRIFTER]
    bf16 = next(r for r in doc["metrics"] if r["metric"] == "gemm.bf16" and r["sku"] == "h200")
    assert bf16["hosts"] == 12 and [d["host"] for d in bf16["drifting"]] == [DRIFTER]
    d = bf16["drifting"][0]
    assert -0.10 < d["change"] < -0.06 and d["slope_per_day"] < 0
    assert 680 < bf16["distribution"]["median"] < 695  # the real recording's ~688
    assert bf16["spread"] < 0.01
    h100 = [r for r in doc["metrics"] if r["sku"] == "h100"]
    assert h100 and all(not r["drifting"] for r in h100)


def test_a_drift_inside_the_noise_is_not_flagged():
    """The same 9 % drop on a metric whose hosts already spread by ~5 % is not a drift."""
    exports = fleet_exports()
    rng = random.Random(1)
    for host, _sku, doc in exports:
        offset = 1 + rng.gauss(0, 0.05) if host != DRIFTER else 1.0
        for run in doc["runs"]:
            for f in run["figures"]:
                f["value"] *= offset
    doc = trends(exports)
    bf16 = next(r for r in doc["metrics"] if r["metric"] == "gemm.bf16" and r["sku"] == "h200")
    assert bf16["spread"] > 0.03 and bf16["threshold"] > 0.09 and bf16["drifting"] == []


def test_terminal_view_fits_80_columns_and_pipes_one_line_per_metric():
    out = io.StringIO()
    render_trends(trends(fleet_exports()), Console(file=out, width=80, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert DRIFTER in text and "gemm.bf16" in text
    piped = io.StringIO()
    render_trends(trends(fleet_exports()), Console(file=piped, width=80, color_system=None))
    lines = piped.getvalue().splitlines()
    bf16 = [line for line in lines if line.startswith("gemm.bf16  h200")]
    assert len(bf16) == 1 and DRIFTER in bf16[0] and "-7." in bf16[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - chromedriver on localhost
        return json.loads(resp.read() or b"{}")


MEASURE = """
const boxes = [...document.querySelectorAll('svg')].map(s => { const r = s.getBoundingClientRect();
  return [s.getAttribute('class'), r.width, r.height]; });
const lines = [...document.querySelectorAll('polyline.drift-line')].map(p => p.getBBox().width);
return {boxes, lines, text: document.body.innerText,
        dots: document.querySelectorAll('svg.strip circle').length};
"""


def test_html_report_renders_in_headless_chromium(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    testkit.require(chromium is not None and driver is not None,
                    "chromium and chromedriver not installed (Debian packages chromium chromium-driver)")
    doc = {"kind": "trends", "summary": {"hosts": 17}, "status": "WARN", "time": "test", "inventory": "inv.ini",
           "hosts": [{"host": h, "sku": s, "status": "WARN" if h == DRIFTER else "OK", "message": ""}
                     for h, s, _ in fleet_exports()],
           "trends": trends(fleet_exports())}
    page = tmp_path / "fleet.html"
    page.write_text(fleet_html(doc))
    assert "<script" not in page.read_text() and "http" not in page.read_text().replace("http-equiv", "")
    port = _free_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                                                "--disable-dev-shm-usage", "--window-size=1200,900"]}}}}
        sid = _call(base, "POST", "/session", caps)["value"]["sessionId"]
        try:
            _call(base, "POST", f"/session/{sid}/url", {"url": page.as_uri()})
            seen = _call(base, "POST", f"/session/{sid}/execute/sync", {"script": MEASURE, "args": []})["value"]
            logs = _call(base, "POST", f"/session/{sid}/se/log", {"type": "browser"})["value"]
        finally:
            _call(base, "DELETE", f"/session/{sid}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f"Drifting hosts (their own status): {DRIFTER} (WARN)" in seen["text"]
    assert len(seen["boxes"]) >= 2 * 4 and all(w > 100 and h > 40 for _, w, h in seen["boxes"])
    assert seen["lines"] and all(w > 50 for w in seen["lines"])  # the drifter's line is drawn across the plot
    assert seen["dots"] >= 12
    assert [entry for entry in logs if entry.get("level") == "SEVERE"] == []


def test_fleet_trends_through_ansible(tmp_path):
    import fleetkit

    fleetkit.require_ansible()
    lines = []
    for i, host in enumerate(("t1", "t2", "t3", "t4")):
        state = tmp_path / host
        for d in history("h200", DRIFTER if host == "t4" else f"gpu-h200-{i:02d}"):
            assert record("bench", {**d, "host": host}, str(state), now=d["time_epoch"] + 1) is None
        lines.append(f"{host} gpunode_trends_args='{json.dumps(['--state-dir', str(state)])}'")
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h200": lines}, fleetkit.local_vars())
    html = tmp_path / "trends.html"
    result, doc = fleetkit.fleet_json(["trends", "-i", str(inv), "--state-dir", str(tmp_path / "fleet"),
                                       "--html", str(html)], timeout=300)
    assert result.rc == 1, result.stderr[-3000:]  # WARN: a host drifts
    assert doc["trends"]["drifting_hosts"] == ["t4"]
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {"t1": "OK", "t2": "OK", "t3": "OK", "t4": "OK"}
    assert any(o.startswith("gemm.bf16 drifting") for o in fleetkit.by_host(doc)["t4"]["outliers"])
    assert "t4" in html.read_text() and "<svg" in html.read_text()
    table = fleetkit.fleet(["report", doc["artifact_dir"]])
    assert table.rc == 1 and "t4" in table.stdout and "Trends" in table.stdout
    assert Path(doc["report_dir"]).is_dir()


@pytest.mark.parametrize("bad", ["{", '{"schema": "gpunode.history-export/1", "runs": "x"}'])
def test_a_broken_export_does_not_break_the_trends(bad):
    exports = fleet_exports(3, 0)
    exports.append(("gpu-bad", "h200", json.loads(bad) if bad.startswith('{"') else {}))
    assert trends(exports)["drifting_hosts"] == []


def test_hundreds_of_hosts_stay_one_small_page():
    exports = fleet_exports(300, 0)
    doc = trends(exports)
    assert doc["drifting_hosts"] == [DRIFTER]
    page = fleet_html({"kind": "trends", "summary": {"hosts": 300}, "status": "WARN", "time": "", "inventory": "",
                       "hosts": [{"host": h, "sku": s, "status": "OK", "message": ""} for h, s, _ in exports],
                       "trends": doc})
    assert len(page) < 600_000  # healthy hosts are one band per plot, not 300 lines
    assert page.count('class="drift-line"') == len([r for r in doc["metrics"] if r["drifting"]])


def _trends_fleet_doc(drifter_status: str = "OK") -> dict:
    from gpunode.fleet.report import compressed

    hosts = [{"host": h, "sku": s, "status": drifter_status if h == DRIFTER else "OK", "message": "",
              "failing": [], "outliers": [], "changes": []} for h, s, _ in fleet_exports()]
    return {"kind": "trends", "summary": {"hosts": len(hosts)}, "status": "WARN", "exit_code": 1, "time": "test",
            "inventory": "inv.ini", "report_dir": "/r", "check_mode": False, "hosts": hosts, "checks": [],
            "metrics": [], "metric_failures": [], "hostlists": {"OK": compressed(h["host"] for h in hosts)},
            "trends": trends(fleet_exports())}


def test_trends_summary_names_the_drifting_host_with_its_own_status():
    """A host drifts while its own report says OK: the summary (HTML and terminal) says both."""
    from gpunode.fleet.render import render_fleet

    page = fleet_html(_trends_fleet_doc("OK"))
    assert f'Drifting hosts (their own status): {DRIFTER} (<span class="OK">OK</span>)' in page
    out = io.StringIO()
    render_fleet(_trends_fleet_doc("WARN"), Console(file=out, width=80, color_system=None))
    assert f"drifting hosts (their own status): {DRIFTER} WARN" in out.getvalue()


def test_fleet_audit_html_names_the_failing_check_ids_per_host(tmp_path):
    """The page's host table lists, per host, the ids of the checks it FAILs."""
    from test_fleet_report import audit_doc, make_run

    from gpunode.fleet.report import fleet_document

    hosts = {"ok": {"doc": audit_doc(tmp_path, "ok")},
             "noecc": {"doc": audit_doc(tmp_path, "noecc", gpu={"ecc_mode_current": False, "ecc_mode_pending": False})}}
    page = fleet_html(fleet_document(make_run(tmp_path, "audit", hosts)))
    assert "<th>Failing checks</th>" in page
    row = next(r for r in page.split("<tr>") if r.startswith("<td>noecc</td>"))
    assert '<td class="failing">gpu.ecc_mode</td>' in row
    row = next(r for r in page.split("<tr>") if r.startswith("<td>ok</td>"))
    assert '<td class="failing"></td>' in row
    assert '<tr><td>gpu.ecc_mode</td><td class="FAIL">noecc</td>' in page  # the checks table, hosts per check
