"""Error counters judged on their growth since the last audit (gpunode.audit.counters): PCIe
replays, NVLink errors, InfiniBand link errors. Totals only on a first reading; the state file
is private, written atomically, and never written by audits of snapshots."""

import json
import os
import stat
from dataclasses import replace

from gpu_fixtures import change, h100, hgx, make_host, nvlinks, only
from test_checks_net import fabric, ib_port

from gpunode.audit.context import AuditContext
from gpunode.audit.counters import FILE, SCHEMA, CounterStore
from gpunode.audit.engine import run_checks
from gpunode.audit.run import run_audit
from gpunode.checks import net
from gpunode.checks import nvlink as N
from gpunode.checks import pcie as P
from gpunode.config import Config
from gpunode.host.seam import snapshot_host
from gpunode.tune.profiles import load_profile
from testkit import HOSTS, NOW, derive_snapshot, tree_host

HOUR = 3600.0


def audit_twice(check, first_host, second_host, state_dir):
    """Run `check` on first_host, keep its readings in state_dir, then judge second_host."""
    results = []
    for host in (first_host, second_host):
        ctx = AuditContext(host=host, profile=load_profile("training"),
                           counters=CounterStore.load(state_dir, host))
        results.append(run_checks([check], ctx))
        assert ctx.counters.save() is None
    return results


def later(host, hours=1.0):
    return replace(host, facts=replace(host.facts, now=host.facts.now + hours * HOUR), memo={})


# --- the store ---------------------------------------------------------------------------------


def test_store_is_private_and_atomic(tmp_path):
    host = tree_host(tmp_path / "root", files={"/proc/sys/kernel/random/boot_id": "b1\n"})
    state = tmp_path / "state"
    store = CounterStore.load(state, host)
    assert store.growth("GPU-1/pcie_replay", 7, NOW).first
    assert store.save() is None
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and stat.S_IMODE((state / FILE).stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == [FILE]  # no temp file left behind
    doc = json.loads((state / FILE).read_text())
    assert doc == {"schema": SCHEMA, "host": "testhost", "boot_id": "b1",
                   "readings": {"GPU-1/pcie_replay": {"value": 7, "time": NOW}}}
    again = CounterStore.load(state, host)
    g = again.growth("GPU-1/pcie_replay", 19, NOW + 2 * HOUR)
    assert not g.first and g.delta == 12 and g.hours == 2.0 and g.per_hour() == 6.0


def test_store_keeps_readings_not_taken_this_time_for_a_month(tmp_path):
    host = tree_host(tmp_path / "a", files={})
    state = tmp_path / "state"
    store = CounterStore.load(state, host)
    store.growth("old-gpu/pcie_replay", 1, NOW)
    store.growth("gpu/pcie_replay", 1, NOW)
    store.save()
    store = CounterStore.load(state, host)  # an audit with --only: reads one counter
    store.growth("gpu/pcie_replay", 2, NOW + 29 * 86400)
    store.save()
    assert set(json.loads((state / FILE).read_text())["readings"]) == {"old-gpu/pcie_replay", "gpu/pcie_replay"}
    store = CounterStore.load(state, host)
    store.growth("gpu/pcie_replay", 3, NOW + 31 * 86400)  # the other GPU was replaced a month ago
    store.save()
    assert set(json.loads((state / FILE).read_text())["readings"]) == {"gpu/pcie_replay"}


def test_store_forgets_other_boots_hosts_and_resets(tmp_path):
    state = tmp_path / "state"
    host = tree_host(tmp_path / "a", files={"/proc/sys/kernel/random/boot_id": "b1\n"})
    store = CounterStore.load(state, host)
    store.growth("k", 100, NOW)
    store.save()
    rebooted = tree_host(tmp_path / "b", files={"/proc/sys/kernel/random/boot_id": "b2\n"})
    assert CounterStore.load(state, rebooted).growth("k", 150, NOW + HOUR).first  # counters restart at boot
    reset = CounterStore.load(state, host).growth("k", 3, NOW + HOUR)  # driver reloaded or counters cleared
    assert reset.first and "counter reset" in reset.note()
    assert not CounterStore.load(state, host).growth("k", 100, NOW + HOUR).first


def test_store_unreadable_file_means_totals_and_is_said(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    host = tree_host(tmp_path / "a", files={})
    for text in ("{not json", json.dumps({"schema": SCHEMA, "host": "testhost", "readings": {"k": {"value": -1, "time": 1}}}),
                 json.dumps({"schema": "other/1"}), "\udcff"):
        (state / FILE).write_text(text, errors="surrogateescape")
        store = CounterStore.load(state, host)
        assert store.problem and str(state / FILE) in store.problem and store.growth("k", 5, NOW).first
    # No state dir (snapshots, sysroots, tests): nothing kept, nothing written, and said so.
    store = CounterStore.load(None, host)
    g = store.growth("k", 5, NOW)
    assert g.first and g.note() == "no earlier reading" and store.save() is None


def test_store_bigger_than_its_bound_is_not_read(tmp_path):
    from gpunode.audit.counters import MAX_BYTES

    state = tmp_path / "state"
    state.mkdir()
    host = tree_host(tmp_path / "a", files={})
    doc = {"schema": SCHEMA, "host": "testhost", "boot_id": None, "readings": {"k": {"value": 1, "time": NOW}}}
    text = json.dumps(doc)
    (state / FILE).write_text(text + " " * (MAX_BYTES - len(text)))  # at the bound: read
    assert CounterStore.load(state, host).problem is None
    (state / FILE).write_text(text + " " * (MAX_BYTES + 1 - len(text)))
    store = CounterStore.load(state, host)
    assert f"at most {4 << 20}" in store.problem and store.growth("k", 5, NOW).first


def test_store_cannot_write_is_a_warning_not_a_crash(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = CounterStore.load(blocker / "state", tree_host(tmp_path / "a", files={}))
    store.growth("k", 1, NOW)
    assert "cannot keep counter readings" in store.save()


# --- PCIe replays --------------------------------------------------------------------------------


def replays_twice(tmp_path, first_count, second_count, uptime):
    """pcie.replay on the real H100 with `first_count`, then an hour later `second_count`."""
    first = make_host(tmp_path / "a", change(h100(), pcie_replay_counter=first_count), uptime=uptime)
    second = later(make_host(tmp_path / "b", change(h100(), pcie_replay_counter=second_count), uptime=uptime))
    before, after = audit_twice(P.pcie_replay, first, second, tmp_path / "state")
    return only(before), only(after), second


def test_pcie_replay_burst_after_long_uptime_warns_on_growth(tmp_path):
    # A year of uptime averages 5000 replays to nothing; 5000 in the last hour is a marginal link now.
    before, r, second = replays_twice(tmp_path, 10, 5010, uptime="31536000.0 0.0\n")
    assert before.status.value == "PASS" and "(no earlier reading)" in before.message
    assert r.status.value == "WARN" and "83.3 per minute: 5000 replays in 1.0 h since the last audit" in r.message
    assert r.observed["replays"] == 5010 and r.observed["counted"] == 5000 and r.observed["since_last_audit"]
    # The same lifetime count without a previous reading is judged over the uptime: PASS.
    alone = run_checks([P.pcie_replay], AuditContext(host=second, profile=load_profile("training")))
    assert only(alone).status.value == "PASS" and "(no earlier reading)" in only(alone).message


def test_pcie_replay_old_count_that_stopped_growing_passes(tmp_path):
    # 5000 replays within the first hour of uptime, none since: only the first audit warns.
    before, after, _ = replays_twice(tmp_path, 5000, 5000, uptime="3600.0 0.0\n")
    assert before.status.value == "WARN" and "over 1.0 h of uptime" in before.message
    assert after.status.value == "PASS" and "0 replays in 1.0 h since the last audit" in after.message


# --- NVLink ------------------------------------------------------------------------------------


def test_nvlink_old_recovery_error_stops_warning_new_one_warns(tmp_path):
    links = nvlinks()
    links[5].recovery_errors = 1  # one flap months ago
    old = change(hgx(1), 0, nvlinks=links)
    before, after = audit_twice(N.nvlink_errors, make_host(tmp_path / "a", old),
                                later(make_host(tmp_path / "b", old)), tmp_path / "state")
    assert only(before).status.value == "WARN" and "since the driver loaded (no earlier reading)" in only(before).message
    assert only(after).status.value == "PASS" and "in 1.0 h since the last audit" in only(after).message
    grown = nvlinks()
    grown[5].recovery_errors = 1
    grown[7].replay_errors = 4
    third = later(make_host(tmp_path / "c", change(hgx(1), 0, nvlinks=grown)), hours=2)
    ctx = AuditContext(host=third, profile=load_profile("training"), counters=CounterStore.load(tmp_path / "state", third))
    r = only(run_checks([N.nvlink_errors], ctx))
    assert r.status.value == "WARN" and r.message == "NVLink errors in 1.0 h since the last audit: link 7: 4 replay, 0 recovery"
    assert r.observed["since_last_audit"]["replay"] == 4 and r.observed["recovery"] == 1


def test_nvlink_crc_rate_judged_over_the_interval(tmp_path):
    quiet = change(hgx(1), 0, nvlinks=nvlinks(crc_flit_errors=1000))
    storm = change(hgx(1), 0, nvlinks=nvlinks(crc_flit_errors=1000 + 40000))  # 18 links x 40000 in 1 h: 200/s
    before, after = audit_twice(N.nvlink_errors, make_host(tmp_path / "a", quiet),
                                later(make_host(tmp_path / "b", storm)), tmp_path / "state")
    assert only(before).status.value == "PASS"
    assert only(after).status.value == "WARN" and "720000 CRC errors in 1.0 h since the last audit, 200 per second" \
        in only(after).message


# --- InfiniBand --------------------------------------------------------------------------------


def test_ib_old_flap_passes_once_judged_new_errors_warn(tmp_path):
    flapped = fabric(ib_port("mlx5_0", counters={"link_downed": 2}), ib_port("mlx5_1"))
    grew = fabric(ib_port("mlx5_0", counters={"link_downed": 2}), ib_port("mlx5_1", counters={"symbol_error": 12}))
    before, after = audit_twice(net.ib_errors, tree_host(tmp_path / "a", files=flapped),
                                later(tree_host(tmp_path / "b", files=grew)), tmp_path / "state")
    first = {r.subject: r for r in before}
    assert first["mlx5_0/1"].status.value == "WARN" and "lifetime totals; no earlier reading" in first["mlx5_0/1"].message
    second = {r.subject: r for r in after}
    assert second["mlx5_0/1"].status.value == "PASS"
    assert second["mlx5_0/1"].message == "none of 7 error counters grew in 1.0 h since the last audit (lifetime link_downed=2)"
    assert second["mlx5_1/1"].status.value == "WARN" and second["mlx5_1/1"].message == \
        "symbol_error +12 in 1.0 h since the last audit"


# --- the audit run: live audits keep state, snapshot audits never write it ----------------------


def test_derived_snapshot_counters_grown_since_the_last_run(tmp_path):
    """The recorded H100 snapshot (0 PCIe replays since the driver loaded), then a copy an hour
    later with 1000 more: the second audit, judging growth, warns; the state dir holds the readings 0600."""
    state = tmp_path / "state"
    profile = load_profile("training")
    first = run_audit(snapshot_host(HOSTS / "h100-sxm-1gpu"), "t", profile, [P.pcie_replay], Config(), state_dir=state)
    assert [r.status.value for r in first.results] == ["PASS"] and "(no earlier reading)" in first.results[0].message
    meta = json.loads((HOSTS / "h100-sxm-1gpu" / "meta.json").read_text())
    grown = derive_snapshot("h100-sxm-1gpu", tmp_path / "grown", gpu={"pcie_replay_counter": 1000},
                            facts={"now": meta["facts"]["now"] + HOUR})
    second = run_audit(snapshot_host(grown), "t", profile, [P.pcie_replay], Config(), state_dir=state)
    r = second.results[0]
    assert r.status.value == "WARN" and "1000 replays in 1.0 h since the last audit" in r.message
    assert "warnings" not in second.meta
    assert stat.S_IMODE(os.stat(state / FILE).st_mode) == 0o600


def test_audit_without_state_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNODE_STATE_DIR", str(tmp_path / "state"))
    run_audit(snapshot_host(HOSTS / "h100-sxm-1gpu"), "t", load_profile("training"), [P.pcie_replay], Config())
    assert not (tmp_path / "state").exists()
