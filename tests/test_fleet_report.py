"""The fleet report on its own: per-host JSON reports (real recorded bench output, audit
documents made by gpunode itself, synthetic bench documents to the shared contract) and Ansible
outcomes -> statuses, failing hosts per check, SKU medians, outliers, and hosts never dropped."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import fleetkit
import pytest

from gpunode.exits import USAGE_EXIT
from gpunode.fleet.progress import HostOutcome, Tracker, failure_message
from gpunode.fleet.report import fleet_document, lower_is_better
from gpunode.fleet.runner import PlaybookRun
from gpunode.fleet.validate import FleetInventory
from gpunode.host.runner import Runner

FIO_VM = json.loads((fleetkit.FIXTURES / "fleet" / "bench-quick-fio.vm.json").read_text())
DEVICE = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-x", "pci_bus_id": "00000000:18:00.0",
          "pci_device": "0x2330"}


def make_run(tmp_path: Path, kind: str, hosts: dict[str, dict], status: str = "successful", check: bool = False):
    """hosts: name -> {sku, state, doc (dict) | text (raw file) | None, rc, message, task}."""
    report_dir = tmp_path / "artifacts" / "x" / "reports"
    report_dir.mkdir(parents=True)
    outcomes = {}
    for name, h in hosts.items():
        if "doc" in h:
            (report_dir / f"{name}.{kind}.json").write_text(json.dumps(h["doc"]))
        if "text" in h:
            (report_dir / f"{name}.{kind}.json").write_text(h["text"])
        outcomes[name] = HostOutcome(name, h.get("state", "ok"), h.get("task"), h.get("message"), h.get("rc"))
    inventory = FleetInventory(path="inv.ini", limit=None, hosts=sorted(hosts),
                               groups={n: [h.get("sku", "h100")] for n, h in hosts.items()}, hostvars={})
    return PlaybookRun(playbook=f"{kind}.yml", kind=kind, ident="x", artifact_dir=report_dir.parent,
                       report_dir=report_dir, inventory=inventory, check=check, status=status, rc=0,
                       outcomes=outcomes, started=fleetkit.testkit.NOW)


def bench_doc(host: str, gemm: list[float], p99_us: float = 100.0, ngpus: int = 8, extra: list[dict] | None = None,
              m: int = 8192) -> dict:
    """A bench document to the shared contract: bf16 GEMM per GPU, an NCCL busbw, a latency."""
    metrics = [
        {"name": "gemm.bf16", "gpu": i, "value": v, "unit": "TFLOP/s", "status": "ok", "message": "",
         "conditions": {"dtype": "bf16", "m": m, "n": m, "k": m, "backend": "torch", "aggregate": "median of 20",
                        "iters_per_batch": 10 + i},
         "spread": {"n": 20, "min": v * 0.99, "max": v * 1.01, "median": v, "cov": 0.004}}
        for i, v in enumerate(gemm)
    ]
    metrics.append({"name": "nccl.all_reduce.busbw", "gpu": None, "value": 470.0, "unit": "GB/s", "status": "ok",
                    "message": "", "conditions": {"test": "all_reduce", "ngpus": ngpus, "nprocs": 1}, "spread": None})
    metrics.append({"name": "fio.rand_read.p99_us", "gpu": None, "value": p99_us, "unit": "us", "status": "ok",
                    "message": "", "conditions": {"rw": "randread", "bs": "4k"}, "spread": None})
    metrics += extra or []
    return {"schema": "gpunode.bench/1", "gpunode_version": "0.1.0", "host": host, "time": "2026-11-23T00:00:00+00:00",
            "time_epoch": fleetkit.testkit.NOW, "mode": "quick",
            "gpus": {"available": True, "error": None, "driver_version": "580.159.04", "cuda_driver_version": "13.0",
                     "count": len(gemm), "devices": [{**DEVICE, "index": i} for i in range(len(gemm))]},
            "tools": {"torch": "2.11.0"}, "metrics": metrics, "status": "OK", "exit_code": 0}


def audit_doc(tmp_path: Path, host: str, gpu: dict | None = None, files: dict | None = None) -> dict:
    """A real audit document: gpunode audit --json on a snapshot (profile settings only)."""
    snap = fleetkit.make_snapshot(tmp_path / f"snap-{host}", host, files={**fleetkit.TUNED_FILES, **(files or {})}, gpu=gpu)
    result = Runner().run([fleetkit.gpunode_bin(), "audit", "--json", "--tag", "profile", "--snapshot", str(snap)],
                          timeout=60)
    assert result.rc in (0, 1, 2), result.stderr
    return json.loads(result.stdout)


def test_slow_gpu_among_peers_is_an_outlier_even_when_it_passes(tmp_path):
    hosts = {
        "a": {"doc": bench_doc("a", [796, 795, 797, 796])},
        "b": {"doc": bench_doc("b", [795, 796, 794, 797])},
        "c": {"doc": bench_doc("c", [797, 796, 690, 795])},  # one GPU 13 % slow; the host still says OK
        "d": {"doc": bench_doc("d", [796, 798, 795, 796])},
    }
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    gemm = [r for r in doc["metrics"] if r["metric"] == "gemm.bf16"]
    assert len(gemm) == 1, "iteration counts differ per GPU but must not split the comparison"
    row = gemm[0]
    assert row["median"] == pytest.approx(796.0)
    assert row["samples"] == 16 and row["peers"] == 4
    worst = row["hosts"][0]
    assert worst["host"] == "c" and worst["gpu"] == 2 and worst["outlier"] is True
    assert worst["ratio"] == pytest.approx(690 / 796, abs=1e-4)
    assert [e["outlier"] for e in row["hosts"][1:]] == [False, False, False]
    assert doc["outliers"] == [{"host": "c", "sku": "h100", "metric": "gemm.bf16", "gpu": 2, "value": 690.0,
                                "median": 796.0, "unit": "TFLOP/s", "ratio": pytest.approx(0.8668, abs=1e-4)}]
    host_c = fleetkit.by_host(doc)["c"]
    assert host_c["status"] == "OK" and host_c["outliers"] == ["gemm.bf16[GPU2]"]
    assert doc["status"] == "WARN" and doc["exit_code"] == 1  # an outlier alone is a warning
    assert doc["summary"]["outliers"] == 1


def test_margin_decides_the_outlier_boundary(tmp_path):
    hosts = {n: {"doc": bench_doc(n, [v])} for n, v in (("a", 100.0), ("b", 100.0), ("c", 100.0), ("d", 91.0))}
    run = make_run(tmp_path, "bench", hosts)
    assert fleet_document(run, margin=0.10)["outliers"] == []  # 9 % below: inside a 10 % margin
    flagged = fleet_document(run, margin=0.05)["outliers"]
    assert [(o["host"], o["metric"]) for o in flagged] == [("d", "gemm.bf16")]
    with pytest.raises(ValueError):
        fleet_document(run, margin=10)


def test_latency_is_worse_when_higher(tmp_path):
    hosts = {n: {"doc": bench_doc(n, [796], p99_us=v)} for n, v in (("a", 100.0), ("b", 104.0), ("c", 98.0), ("d", 150.0))}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    row = next(r for r in doc["metrics"] if r["metric"] == "fio.rand_read.p99_us")
    assert row["lower_is_better"] is True and row["median"] == pytest.approx(102.0)
    assert row["hosts"][0]["host"] == "d" and row["hosts"][0]["ratio"] == pytest.approx(102 / 150, abs=1e-4)
    assert [o["host"] for o in doc["outliers"]] == ["d"]  # the fastest (c) is not an outlier
    assert lower_is_better("fio.rand_read.p99_us", "us") and not lower_is_better("hbm.d2d", "GB/s")


def test_skus_are_compared_within_their_group_only(tmp_path):
    # Two H200s at H200 speed beside three H100s: no H100 is an outlier against H200 figures.
    hosts = {**{n: {"sku": "h100", "doc": bench_doc(n, [796])} for n in ("a", "b", "c")},
             **{n: {"sku": "h200", "doc": bench_doc(n, [850])} for n in ("x", "y")}}
    hosts["y"]["doc"] = bench_doc("y", [600])
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    rows = {r["sku"]: r for r in doc["metrics"] if r["metric"] == "gemm.bf16"}
    assert rows["h100"]["median"] == 796 and rows["h200"]["median"] == 725
    assert doc["outliers"] == []  # y is slow, but a group of 2 is too small to call it
    assert "fewer than 3" in rows["h200"]["note"]
    assert fleet_document(make_run(tmp_path / "2", "bench", hosts), min_peers=2)["outliers"][0]["host"] == "y"


def test_different_conditions_are_not_compared(tmp_path):
    hosts = {n: {"doc": bench_doc(n, [796])} for n in ("a", "b", "c")}
    hosts["d"] = {"doc": bench_doc("d", [500], m=4096)}  # smaller GEMM: slower, and not comparable
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    rows = [r for r in doc["metrics"] if r["metric"] == "gemm.bf16"]
    assert sorted(r["peers"] for r in rows) == [1, 3]
    assert all("different conditions" in r["note"] for r in rows)
    assert doc["outliers"] == []


def test_failed_metrics_are_listed_and_never_compared(tmp_path):
    bad = {"name": "nccl.all_reduce.busbw", "gpu": None, "value": None, "unit": "GB/s", "status": "fail",
           "message": "#wrong 3 > 0", "conditions": {"test": "all_reduce", "ngpus": 8, "nprocs": 1}, "spread": None}
    hosts = {n: {"doc": bench_doc(n, [796])} for n in ("a", "b", "c")}
    d = bench_doc("d", [796])
    d["metrics"] = [m for m in d["metrics"] if m["name"] != "nccl.all_reduce.busbw"] + [bad]
    d["status"], d["exit_code"] = "FAIL", 2
    hosts["d"] = {"doc": d}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    assert doc["metric_failures"] == [{"metric": "nccl.all_reduce.busbw",
                                       "hosts": {"d": {"status": "FAIL", "message": "#wrong 3 > 0"}}}]
    nccl = next(r for r in doc["metrics"] if r["metric"] == "nccl.all_reduce.busbw")
    assert nccl["peers"] == 3 and fleetkit.by_host(doc)["d"]["status"] == "FAIL"
    assert doc["status"] == "FAIL" and doc["exit_code"] == 2


def test_real_fio_results_aggregate(tmp_path):
    """The bench output recorded on this project's CI-like VM (fio only), on three hosts."""
    hosts = {}
    for name, scale in (("a", 1.0), ("b", 1.02), ("c", 0.5)):
        doc = copy.deepcopy(FIO_VM)
        doc["host"] = name
        for m in doc["metrics"]:
            # the measured runtime differs on every run and host; it must not split the peers
            m["conditions"]["aggregate"] = f"fio over {3000 + len(name) * 7} ms"
            m["value"] = m["value"] * scale if m["unit"] != "us" else m["value"] / scale
        hosts[name] = {"doc": doc}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    names = sorted(r["metric"] for r in doc["metrics"])
    assert names == ["fio.rand_read.iops", "fio.rand_read.p99_us", "fio.seq_read", "fio.seq_write"]
    assert all(r["peers"] == 3 for r in doc["metrics"])
    assert {o["host"] for o in doc["outliers"]} == {"c"} and len(doc["outliers"]) == 4


def test_audit_reports_name_failing_hosts_per_check(tmp_path):
    hosts = {
        "ok": {"doc": audit_doc(tmp_path, "ok")},
        "noecc": {"doc": audit_doc(tmp_path, "noecc", gpu={"ecc_mode_current": False, "ecc_mode_pending": False},
                                   files={"/proc/sys/vm/swappiness": "60\n"})},
        "swap": {"doc": audit_doc(tmp_path, "swap", files={"/proc/sys/vm/swappiness": "30\n"})},
    }
    doc = fleet_document(make_run(tmp_path, "audit", hosts))
    status = {h["host"]: h["status"] for h in doc["hosts"]}
    assert status == {"noecc": "FAIL", "ok": "OK", "swap": "WARN"}
    ecc = fleetkit.check_row(doc, "gpu.ecc_mode")
    assert ecc["fail_hosts"] == ["noecc"] and ecc["warn_hosts"] == [] and ecc["severity"] == "critical"
    assert ecc["details"]["noecc"][0]["subject"] == "GPU0"
    swap = fleetkit.check_row(doc, "sysctl.vm.swappiness")
    assert swap["warn_hosts"] == ["noecc", "swap"] and swap["fail_hosts"] == []
    assert doc["checks"][0]["id"] == "gpu.ecc_mode"  # most failing hosts first
    assert fleetkit.by_host(doc)["noecc"]["failing"] == ["gpu.ecc_mode"]
    assert doc["status"] == "FAIL" and doc["exit_code"] == 2


def test_hosts_without_reports_are_listed_never_dropped(tmp_path):
    good = bench_doc("a", [796])
    hosts = {
        "a": {"doc": good},
        "dark": {"state": "unreachable", "task": "Run gpunode bench",
                 "message": "Failed to connect to the host via ssh: ssh: connect to host 10.231.0.6 port 22: No route to host"},
        "broke": {"state": "failed", "task": "Run gpunode bench", "message": "gpunode: error: --fio-dir /x: no such directory"},
        "later": {"state": "not_run"},
        "cut": {"text": json.dumps(good)[:700]},  # a report truncated in transfer
        "foreign": {"doc": {"hello": "world"}},
        "silent": {"state": "ok"},
    }
    doc = fleet_document(make_run(tmp_path, "bench", hosts, status="failed"))
    rows = fleetkit.by_host(doc)
    assert sorted(rows) == sorted(hosts)
    assert rows["dark"]["status"] == "UNREACHABLE" and "No route to host" in rows["dark"]["message"]
    assert rows["broke"]["status"] == "FAILED" and "--fio-dir" in rows["broke"]["message"]
    assert rows["later"]["status"] == "NOT_RUN" and "canary or batch" in rows["later"]["message"]
    assert rows["cut"]["status"] == "INVALID" and "truncated" in rows["cut"]["message"]
    assert rows["foreign"]["status"] == "INVALID" and "not a gpunode report" in rows["foreign"]["message"]
    assert rows["silent"]["status"] == "NO_REPORT"
    assert rows["a"]["status"] == "OK"
    assert doc["status"] == "UNKNOWN" and doc["exit_code"] == 3
    assert doc["summary"] == {"hosts": 7, "FAILED": 1, "INVALID": 2, "NOT_RUN": 1, "NO_REPORT": 1, "OK": 1,
                              "UNREACHABLE": 1, "outliers": 0}


def test_apply_reports_take_their_verdict_from_the_exit_code(tmp_path):
    """gpunode apply's JSON (gpunode.apply/1) has no status: 0 done, 1 waits, 3 failed."""
    def apply_doc(result, statuses):
        return {"schema": "gpunode.apply/1", "id": "a1", "host": "n", "profile": "training", "dry_run": False,
                "result": result, "reason": "write failed: /proc/sys/vm/swappiness" if result == "failed" else None,
                "changes": [{"setting": f"s{i}", "status": s} for i, s in enumerate(statuses)],
                "satisfied": [], "skipped": [], "rolled_back": []}
    hosts = {
        "done": {"doc": apply_doc("applied", ["applied", "applied"]), "rc": 0},
        "wait": {"doc": apply_doc("applied", ["applied", "blocked"]), "rc": 1},
        "bad": {"doc": apply_doc("failed", ["rolled-back"]), "rc": 3, "state": "failed",
                "task": "Run gpunode apply", "message": "gpunode: error: apply failed and was rolled back"},
        "norc": {"doc": apply_doc("applied", [])},
    }
    doc = fleet_document(make_run(tmp_path, "apply", hosts, status="failed"))
    rows = fleetkit.by_host(doc)
    assert rows["done"]["status"] == "OK" and rows["done"]["message"] == "applied: 2 applied"
    assert rows["wait"]["status"] == "WARN"
    assert rows["bad"]["status"] == "FAIL" and "write failed" in rows["bad"]["message"]
    assert rows["norc"]["status"] == "INVALID"
    assert doc["status"] == "FAIL"


def test_tracker_keeps_outcomes_from_runner_events(tmp_path):
    tracker = Tracker(hosts=["n1", "n2", "n3"], report_dir=tmp_path, kind="audit")
    (tmp_path / "n1.audit.json").write_text(json.dumps({"status": "WARN", "summary": {"PASS": 3, "WARN": 1}}))
    events = [
        {"event": "playbook_on_start", "event_data": {}},
        {"event": "runner_on_ok", "event_data": {"host": "n1", "task": "Run gpunode audit", "res": {"rc": 1}}},
        {"event": "runner_on_ok", "event_data": {"host": "n1", "task": "Save the report on the controller: audit",
                                                 "res": {"dest": str(tmp_path / "n1.audit.json")}}},
        {"event": "runner_on_failed", "event_data": {"host": "n2", "task": "Run gpunode audit", "res": {
            "rc": 2, "msg": "non-zero return code", "stderr": "Traceback ...\ngpunode: error: /x: not a directory"}}},
        {"event": "runner_on_failed", "event_data": {"host": "n2", "task": "later", "res": {"msg": "x"},
                                                     "ignore_errors": None}},
        {"event": "runner_on_unreachable", "event_data": {"host": "n3", "task": "Run gpunode audit", "res": {
            "msg": "Task failed: Failed to connect to the host via ssh: Connection refused", "unreachable": True}}},
        {"event": "runner_on_ok", "event_data": {"host": "stranger", "task": "x", "res": {}}},
    ]
    assert all(tracker(e) for e in events)  # every event is kept in the artifacts
    o = tracker.outcomes
    assert (o["n1"].state, o["n1"].rc) == ("ok", 1)
    assert (o["n2"].state, o["n2"].task, o["n2"].message) == ("failed", "Run gpunode audit",
                                                             "gpunode: error: /x: not a directory")
    assert o["n3"].state == "unreachable" and o["n3"].message == "Failed to connect to the host via ssh: Connection refused"
    assert tracker.reported == {"n1"}
    assert failure_message({"rc": 5}) == "exit code 5"


def test_fleet_report_command_rerenders_a_saved_run(tmp_path):
    hosts = {n: {"doc": bench_doc(n, [v])} for n, v in (("a", 796.0), ("b", 790.0), ("c", 700.0))}
    run = make_run(tmp_path, "bench", hosts)
    (run.artifact_dir / "run.json").write_text(json.dumps(run.to_json()))
    result = fleetkit.fleet(["report", str(run.artifact_dir), "--json"])
    assert result.rc == 1, result.stderr  # c is 11.6 % below the median: WARN
    assert [o["host"] for o in json.loads(result.stdout)["outliers"]] == ["c"]
    result = fleetkit.fleet(["report", str(run.artifact_dir), "--margin", "0.2"])
    assert result.rc == 0 and "gemm.bf16" in result.stdout and "OK (exit 0)" in result.stdout
    bad = fleetkit.fleet(["report", str(tmp_path)])
    assert bad.rc == USAGE_EXIT and bad.stderr.startswith("gpunode: error:") and "run.json" in bad.stderr


def test_real_h100_and_h200_recordings_by_sku(tmp_path):
    """gpunode bench --quick as recorded on the lent H100 and H200, three hosts of each SKU; one
    H100 with a GEMM 15 % slow is the only outlier, and no H100 is judged against H200 figures."""
    recorded = {sku: json.loads((fleetkit.FIXTURES / "bench" / f"{sku}-quick.json").read_text())
                for sku in ("h100", "h200")}
    hosts = {}
    for sku, names in (("h100", ("a", "b", "c")), ("h200", ("x", "y", "z"))):
        for i, name in enumerate(names):
            doc = copy.deepcopy(recorded[sku])
            for m in doc["metrics"]:
                if m["status"] == "ok" and isinstance(m["value"], (int, float)):
                    m["value"] *= 1 + 0.01 * i  # peers differ by a percent or two
                    if name == "c" and m["name"] == "gemm.bf16":
                        m["value"] *= 0.85
            hosts[name] = {"sku": sku, "doc": doc}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    assert [(o["host"], o["metric"]) for o in doc["outliers"]] == [("c", "gemm.bf16")]
    measured = {m["name"] for m in recorded["h100"]["metrics"] if m["status"] == "ok"}
    h100 = {r["metric"]: r for r in doc["metrics"] if r["sku"] == "h100"}
    h200 = {r["metric"]: r for r in doc["metrics"] if r["sku"] == "h200"}
    assert set(h100) == measured and all(r["peers"] == 3 and not r["note"] for r in h100.values())
    hbm = next(m["value"] for m in recorded["h200"]["metrics"] if m["name"] == "hbm.d2d")
    assert h200["hbm.d2d"]["median"] == pytest.approx(hbm * 1.01)
    assert h100["hbm.d2d"]["median"] < 0.8 * h200["hbm.d2d"]["median"]  # H100 HBM3 vs H200 HBM3e
    assert fleetkit.by_host(doc)["c"]["status"] == "OK" and doc["status"] == "WARN"


def test_hosts_cut_off_by_the_run_timeout_say_so(tmp_path):
    hosts = {"a": {"doc": bench_doc("a", [796])}, "mid": {"state": "ok"}, "later": {"state": "not_run"}}
    rows = fleetkit.by_host(fleet_document(make_run(tmp_path, "bench", hosts, status="timeout")))
    assert rows["mid"]["status"] == "NO_REPORT" and "timed out (--timeout)" in rows["mid"]["message"]
    assert rows["later"]["status"] == "NOT_RUN" and "timed out (--timeout)" in rows["later"]["message"]
    assert "canary" not in rows["later"]["message"]


def _plan_doc(host: str, swappiness: str, dry_run: bool = True) -> dict:
    """gpunode apply --dry-run --json (gpunode.apply/1): one planned change, one already right."""
    status = "planned" if dry_run else "applied"
    return {"schema": "gpunode.apply/1", "id": None if dry_run else "a1", "host": host, "profile": "training",
            "dry_run": dry_run, "result": status, "reason": None,
            "changes": [{"setting": "sysctl.vm.swappiness", "subject": "vm.swappiness", "current": swappiness,
                         "target": "10", "before": swappiness, "after": "10", "needs_root": True,
                         "reboot_required": False, "gpu_reset_required": False, "status": status, "note": ""}],
            "satisfied": ["sysctl.vm.max_map_count"], "skipped": [], "rolled_back": []}


def _render(doc: dict, width: int = 80, tty: bool = False) -> str:
    import io

    from rich.console import Console

    from gpunode.fleet.render import render_fleet

    out = io.StringIO()
    render_fleet(doc, Console(file=out, width=width, force_terminal=tty, color_system=None, soft_wrap=False))
    return out.getvalue()


def test_fleet_apply_check_shows_per_host_what_would_change_from_and_to(tmp_path):
    """fleet apply --check: each planned change with its current and target value, the hosts
    that change alike in one compressed list (node[01-03]), a host that differs on its own."""
    hosts = {f"node0{i}": {"doc": _plan_doc(f"node0{i}", "60"), "rc": 0} for i in (1, 2, 3)}
    hosts["node04"] = {"doc": _plan_doc("node04", "30"), "rc": 0}
    doc = fleet_document(make_run(tmp_path, "apply", hosts, check=True))
    assert [(c["hostlist"], c["from"], c["to"], c["status"]) for c in doc["changes"]] == [
        ("node04", "30", "10", "planned"), ("node[01-03]", "60", "10", "planned")]
    from test_schemas import validate

    validate(doc)  # docs/schemas/fleet.schema.json describes changes and hostlists
    assert fleetkit.by_host(doc)["node04"]["changes"][0] == {
        "setting": "sysctl.vm.swappiness", "subject": "vm.swappiness", "from": "30", "to": "10", "status": "planned",
        "note": None}
    from gpunode.fleet.html import fleet_html

    page = fleet_html(doc)
    assert "<h2>Changes that would be made (check mode)</h2>" in page
    assert "<tr><td>node[01-03]</td><td>sysctl.vm.swappiness</td><td>60 → 10</td><td>planned</td></tr>" in page
    for tty in (False, True):
        text = _render(doc, tty=tty)
        assert "check mode" in text
        lines = [ln for ln in text.splitlines() if "sysctl.vm.swappiness" in ln or "node[01-03]" in ln]
        assert any("node[01-03]" in ln for ln in lines), text
        assert "60 -> 10" in text and "30 -> 10" in text, text


def test_fleet_reports_compress_host_lists_like_slurm(tmp_path):
    """node[01-04,07] (python-hostlist), in the check rows, the bench outliers and the per-status
    lines under the verdict; the JSON keeps every name."""
    hosts = {f"node{i:02d}": {"doc": bench_doc(f"node{i:02d}", [796.0]), "sku": "h100"} for i in range(1, 9)}
    for slow in ("node01", "node02", "node03", "node04", "node07"):
        hosts[slow]["doc"] = bench_doc(slow, [600.0])
    for i in (9, 10, 11, 12, 13):  # a big enough healthy majority for a median
        hosts[f"node{i:02d}"] = {"doc": bench_doc(f"node{i:02d}", [796.0]), "sku": "h100"}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    assert sorted(o["host"] for o in doc["outliers"] if o["metric"] == "gemm.bf16") == \
        ["node01", "node02", "node03", "node04", "node07"]
    assert doc["hostlists"] == {"OK": "node[01-13]"}
    text = _render(doc, width=200)
    assert "node[01-04,07]" in text, text
    assert "OK node[01-13]" in text, text


def test_compressed_names_that_hostlist_cannot_express_stay_a_plain_list():
    from gpunode.fleet.report import compressed

    assert compressed(["gpu-2", "gpu-1", "gpu-3", "login"]) == "gpu-[1-3],login"
    assert compressed(["a,b", "c"]) == "a,b,c"


def test_gpu_subjects_are_spelled_gpu0_as_everywhere_else(tmp_path):
    """One spelling of a GPU in every output (the audit's subject GPU0): the fleet's failed
    metrics, outliers and trend series say host:GPU1 and metric[GPU1], not gpu1 or GPU 1."""
    from gpunode.fleet.trends import collect

    bad = {"name": "gemm.bf16", "gpu": 1, "value": None, "unit": "TFLOP/s", "status": "FAIL", "message": "x",
           "conditions": {}, "spread": None}
    hosts = {n: {"doc": bench_doc(n, [796.0, 790.0])} for n in ("a", "b", "c")}
    hosts["d"] = {"doc": bench_doc("d", [796.0, 600.0], extra=[bad])}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    assert list(doc["metric_failures"][0]["hosts"]) == ["d:GPU1"]
    assert fleetkit.by_host(doc)["d"]["outliers"] == ["gemm.bf16[GPU1]"]
    export = {"runs": [{"time_epoch": 1.0, "figures": [{"name": "gemm.bf16", "gpu": 3, "value": 1.0}]}]}
    assert list(next(iter(collect([("h", "h100", export)]).values()))) == ["h:GPU3"]
