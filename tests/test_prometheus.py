"""Every textfile gpunode writes passes the real promtool (Debian's prometheus package); the
families of different kinds never collide in one collector directory; the alert rules pass
`promtool check rules` and their unit tests (staleness at 2x each shipped interval included); the
systemd units and the cron file shipped in docs/examples/ write into the packaged node exporter's
directory, verify and, run as written, produce textfiles promtool accepts."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpunode.prometheus import exposition, families_for
from testkit import FIXTURES, HOSTS, require

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
SNAP = HOSTS / "h100-sxm-1gpu"
GPUNODE = [sys.executable, "-m", "gpunode"]
# The packaged node exporter's textfile directory: Debian 12's prometheus-node-exporter (its
# README.textfile and built-in default) and RHEL 9 + EPEL's golang-github-prometheus-node-exporter.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


@pytest.fixture(autouse=True)
def promtool():
    require(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")


def check_metrics(text: str) -> None:
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def gpunode(*args):
    return subprocess.run([*GPUNODE, *args], capture_output=True, text=True, timeout=120)


def written(tmp_path, name, *args) -> str:
    path = tmp_path / name
    proc = gpunode(*args, "--prometheus", str(path))
    assert proc.returncode in (0, 1, 2, 3), proc.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as its own user
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    return path.read_text()


def all_textfiles(tmp_path) -> dict[str, str]:
    files = {
        "audit": written(tmp_path, "audit.prom", "audit", "--snapshot", str(SNAP)),
        "gate": written(tmp_path, "gate.prom", "gate", "--snapshot", str(SNAP)),
        "gate-broken": written(tmp_path, "gate-broken.prom", "gate", "--snapshot", str(tmp_path / "missing")),
        "compare": written(tmp_path, "compare.prom", "compare", str(FIXTURES / "bench" / "h100-full.json")),
        "diag": written(tmp_path, "diag.prom", "diag"),  # no GPU here: level 1 judges what it can
    }
    for name in ("h100-full.json", "h200-quick.json"):  # bench --prometheus needs a GPU: the same writer on recordings
        files[f"bench-{name}"] = exposition(families_for(json.loads((FIXTURES / "bench" / name).read_text())))
    files["watch"] = exposition(families_for(watch_document(tmp_path)))
    diag = sorted(FIXTURES.glob("**/diag*.json"))
    for path in diag[:2]:
        doc = json.loads(path.read_text())
        if doc.get("schema") == "gpunode.diag/1":
            files[f"diag-{path.name}"] = exposition(families_for(doc))
    return files


def test_every_textfile_passes_promtool(tmp_path):
    files = all_textfiles(tmp_path)
    for name, text in files.items():
        assert text.startswith("# HELP gpunode_"), name
        check_metrics(text)
    assert 'gpunode_gate_status{host="' in files["gate-broken"] and '} 3\n' in files["gate-broken"]
    assert 'gpunode_compare_metric_status{metric="gemm.bf16",subject="GPU0",host="vm"} 0' in files["compare"]


def test_kinds_never_share_a_family_in_one_collector_dir(tmp_path):
    files = all_textfiles(tmp_path)
    kinds = {"audit": files["audit"], "gate": files["gate"], "compare": files["compare"],
             "bench": files["bench-h100-full.json"], "diag": files["diag"], "watch": files["watch"]}
    families = {k: {line.split()[2] for line in v.splitlines() if line.startswith("# TYPE")} for k, v in kinds.items()}
    names = [n for fams in families.values() for n in fams]
    assert len(names) == len(set(names)), families
    check_metrics("".join(kinds.values()))  # what node_exporter merges from the directory


def watch_document(tmp_path) -> dict:
    """A watcher's state after a poll (one FAIL), an Xid and a shadowed drain, with its sources."""
    from gpunode.audit.engine import Result, Status
    from gpunode.watch.events import Action, Event
    from gpunode.watch.loop import Watcher

    class Poll:
        def run_checks_now(self):
            return [Result("gpu.ecc", "t", "gpu", "critical", Status.FAIL, "DBE", subject="GPU0")]

        def events(self, results, now):
            return []

    class Source:
        def __init__(self, name, status):
            self.name, self.status = name, status

    w = Watcher(str(tmp_path / "watch-run"), Poll(), 10.0, sources=[Source("nvml", "ok"), Source("kmsg", "unreadable")],
                decide=lambda s, e, c, n: [Action("drain", "gpunode: xid 79", e.gpu, e, shadow=True)],
                notify=lambda m: True, host="vm", boot_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    w.tick(1000.0)
    w.handle(Event("kmsg", "xid", 1001.0, "GPU0", 79))
    return w.document(1001.0)


def test_the_watchers_textfile_and_its_metrics_endpoint(tmp_path):
    """--textfile: written at each state write, promtool-clean; --metrics-port: the same
    families from prometheus_client on 127.0.0.1."""
    import urllib.request

    from gpunode.prometheus import watch_families
    from gpunode.watch.metrics import serve

    doc = watch_document(tmp_path)
    text = exposition(watch_families(doc))
    check_metrics(text)
    for line in ('gpunode_watch_status{host="vm"} 2', 'gpunode_watch_events_total{host="vm",kind="xid"} 1',
                 'gpunode_watch_actions_total{host="vm",action="would-drain"} 1',
                 'gpunode_watch_source_up{host="vm",source="kmsg"} 0',
                 'gpunode_watch_check_status{check="gpu.ecc",subject="GPU0",host="vm"} 2'):
        assert line in text.splitlines(), line
    server, thread = serve(lambda: doc, 0)
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            served = response.read().decode()
    finally:
        server.shutdown()
    check_metrics(served)
    assert 'gpunode_watch_events_total{host="vm",kind="xid"} 1.0' in served
    assert 'gpunode_watch_status{host="vm"} 2.0' in served


def test_label_values_are_escaped():
    from gpunode.prometheus import Family

    text = exposition([Family("gpunode_x", "x").add({"a": 'q"uote\\back\nnl'}, 1)])
    assert 'a="q\\"uote\\\\back\\nnl"' in text
    check_metrics(text)


def test_alert_rules_check_and_unit_tests():
    rules = EXAMPLES / "prometheus"
    proc = subprocess.run(["promtool", "check", "rules", "gpunode-rules.yml"], cwd=rules, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS: 17 rules found" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(["promtool", "test", "rules", "gpunode-rules.test.yml"], cwd=rules, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_alert_rules_use_only_families_gpunode_writes(tmp_path):
    import re

    import yaml

    files = all_textfiles(tmp_path)
    written_names = {line.split()[2] for text in files.values() for line in text.splitlines() if line.startswith("# TYPE")}
    rules = yaml.safe_load((EXAMPLES / "prometheus" / "gpunode-rules.yml").read_text())
    used = {m for r in rules["groups"][0]["rules"] for m in re.findall(r"gpunode_[a-z_]+", r["expr"])}
    assert used and used <= written_names, used - written_names


def _exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.partition("=")[2])


@pytest.mark.parametrize("unit", ["gpunode-audit.service", "gpunode-gate.service"])
def test_systemd_units_verify_and_their_command_writes_a_valid_textfile(tmp_path, unit):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    gpunode_bin = Path(sys.executable).with_name("gpunode")
    for name in (unit, unit.replace(".service", ".timer")):
        text = (EXAMPLES / "systemd" / name).read_text().replace("/usr/local/bin/gpunode", str(gpunode_bin))
        (tmp_path / name).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit),
                           str(tmp_path / unit.replace(".service", ".timer"))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = _exec_start(EXAMPLES / "systemd" / unit)
    assert argv[0] == "/usr/local/bin/gpunode"
    target = argv[argv.index("--prometheus") + 1]
    assert target.startswith(TEXTFILE_DIR + "/") and target.endswith(".prom")
    out = tmp_path / "collector" / Path(target).name
    out.parent.mkdir()  # the node exporter's package makes it; gpunode never does
    argv[argv.index("--prometheus") + 1] = str(out)
    proc = subprocess.run([*GPUNODE, *argv[1:], "--snapshot", str(SNAP)], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1, 2), proc.stderr
    check_metrics(out.read_text())


def _interval_s(text: str) -> int:
    value = text.strip()
    return int(value[:-3]) * 60 if value.endswith("min") else int(value)


def test_staleness_rules_alert_after_two_shipped_intervals():
    """The rules' thresholds are 2x the intervals the timers and cron run at, on both the
    verdict's own timestamp and the file's mtime as node_exporter sees it."""
    import yaml

    rules = {r["alert"]: r["expr"] for r in
             yaml.safe_load((EXAMPLES / "prometheus" / "gpunode-rules.yml").read_text())["groups"][0]["rules"]}
    cron = (EXAMPLES / "cron" / "gpunode").read_text()
    for kind in ("audit", "gate"):
        timer = (EXAMPLES / "systemd" / f"gpunode-{kind}.timer").read_text()
        every = _interval_s(next(x for x in timer.splitlines() if x.startswith("OnUnitActiveSec=")).split("=")[1])
        cron_line = next(x for x in cron.splitlines() if f" gpunode {kind} " in x)
        assert cron_line.startswith(f"*/{every // 60} "), (kind, cron_line)
        assert f"time() - gpunode_{kind}_timestamp_seconds > 2 * {every}" in rules[f"Gpunode{kind.title()}Stale"]
        assert (f'node_textfile_mtime_seconds{{file=~"(.*/)?gpunode-{kind}[.]prom"}} > 2 * {every}'
                in rules["GpunodeTextfileStale"])
    assert "node_textfile_scrape_error == 1" in rules["GpunodeTextfileDirUnreadable"]


def test_every_shipped_textfile_path_is_the_packaged_directory():
    for path in (*(EXAMPLES / "systemd").glob("*.service"), EXAMPLES / "cron" / "gpunode"):
        targets = [w for line in path.read_text().splitlines() if not line.startswith("#")
                   for w in line.split() if w.endswith(".prom")]
        assert targets and all(os.path.dirname(t) == TEXTFILE_DIR for t in targets), (path, targets)


def test_textfile_into_a_missing_directory_fails_the_unit(tmp_path):
    """The audit unit run against a node without that directory: exit 3, which is not in
    SuccessExitStatus, so the unit fails visibly; nothing is created."""
    argv = _exec_start(EXAMPLES / "systemd" / "gpunode-audit.service")
    unit = (EXAMPLES / "systemd" / "gpunode-audit.service").read_text()
    ok = next(x for x in unit.splitlines() if x.startswith("SuccessExitStatus=")).split("=")[1].split()
    target = tmp_path / "var" / "lib" / "prometheus" / "node-exporter" / "gpunode-audit.prom"
    argv[argv.index("--prometheus") + 1] = str(target)
    proc = subprocess.run([*GPUNODE, *argv[1:], "--snapshot", str(SNAP)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "3" not in ok, (proc.returncode, ok)
    assert proc.stderr.strip().splitlines() == [
        f"gpunode: error: cannot write {target}: no directory {target.parent} (gpunode creates none: check the path)"]
    assert list(tmp_path.iterdir()) == []


def test_cron_file_commands_run_as_written(tmp_path):
    lines = [x for x in (EXAMPLES / "cron" / "gpunode").read_text().splitlines() if x and not x.startswith("#")
             and "=" not in x.split()[0]]
    assert len(lines) == 2
    for line in lines:
        fields = line.split()
        assert fields[5] == "root" and fields[6] == "gpunode"
        command = line.split(" root ", 1)[1].split(" >/dev/null")[0]
        argv = shlex.split(command)
        out = tmp_path / Path(argv[argv.index("--prometheus") + 1]).name
        argv[argv.index("--prometheus") + 1] = str(out)
        proc = subprocess.run([*GPUNODE, *argv[1:], "--snapshot", str(SNAP)], capture_output=True, text=True,
                              timeout=120, env={**os.environ})
        assert proc.returncode in (0, 1, 2), proc.stderr
        check_metrics(out.read_text())
