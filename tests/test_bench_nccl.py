"""nccl-tests wrapper on real H100 recordings and variants derived from them: a run must never
read as ok when its data check failed, its footer is missing, or the process failed."""

import json
import os
import stat
import sys
import textwrap

import pytest

from gpunode.bench import nccl
from gpunode.host.runner import Runner
from testkit import FIXTURES

NCCL = FIXTURES / "nccl"
AR_TEXT = (NCCL / "all_reduce_g1.h100.txt").read_text()
AR_JSON = (NCCL / "all_reduce_g1.h100.json").read_text()
LAST_ROW = "   536870912     134217728     float     sum      -1   358.92  1495.8    0.00       0     0.97  552251    0.00       0"


def judged(text, rc=0, timed_out=False):
    return nccl.nccl_verdict(nccl.parse_text(text), rc, timed_out)


def test_real_all_reduce_text():
    run = nccl.parse_text(AR_TEXT)
    assert (run.version, run.nccl_version, run.ngpus, run.ranks) == ("2.19.6", "2.28.9", 1, 1)
    assert len(run.rows) == 14 and run.rows[0].bytes == 8 and run.largest.bytes == 536870912
    assert run.largest.algbw == 1495.8 and run.largest.busbw == 0.0 and run.largest.in_place_algbw == 552251
    assert run.out_of_bounds == 0 and run.footer and run.avg_busbw == 0.0 and run.wrong == 0
    assert nccl.nccl_verdict(run, 0) == ("PASS", "")


def test_real_all_reduce_json_matches_text():
    run = nccl.parse_json(AR_JSON)
    text = nccl.parse_text(AR_TEXT)
    assert [r.bytes for r in run.rows] == [r.bytes for r in text.rows]
    assert run.nccl_version == "2.28.9" and run.ranks == 1 and run.out_of_bounds == 0
    assert run.largest.algbw == pytest.approx(1496.03577)
    assert nccl.nccl_verdict(run, 0) == ("PASS", "")


def test_real_all_gather_and_sendrecv():
    ag = nccl.parse_text((NCCL / "all_gather_g1.h100.txt").read_text())
    assert ag.rows[0].bytes == 0 and ag.rows[0].redop == "none" and nccl.nccl_verdict(ag, 0)[0] == "PASS"
    sr = nccl.parse_text((NCCL / "sendrecv_g1.h100.txt").read_text())
    assert sr.rows[-1].busbw == 1083.8 and sr.rows[-1].in_place_wrong is None  # "N/A": check off in-place
    assert sr.avg_busbw == 984.382 and nccl.nccl_verdict(sr, 0)[0] == "PASS"


def test_real_failed_footer_min_bw_text_and_json():
    """NCCL_TESTS_MIN_BW not reached: '# Avg bus bandwidth : 0 FAILED', a Test failure line, exit 7."""
    text = (NCCL / "all_reduce_minbw_failed.h100.txt").read_text()
    status, message = judged(text, rc=7)
    assert status == "FAIL" and "FAILED" in message
    run = nccl.parse_json((NCCL / "all_reduce_minbw_failed.h100.json").read_text())
    assert nccl.nccl_verdict(run, 7)[0] == "FAIL"
    assert any(": Test failure " in f for f in nccl.parse_text(text).failures)


def test_real_invalid_gpu_count_is_error():
    text = (NCCL / "all_reduce_g2_invalid.h100.txt").read_text()
    status, message = judged(text, rc=5)
    assert status == "ERROR" and "Test failure" in message


def test_cut_footer_is_error():
    cut = AR_TEXT[: AR_TEXT.index("# Out of bounds")]
    assert judged(cut) == ("ERROR", "output truncated: no '# Avg bus bandwidth' / out-of-bounds footer")


def test_output_cut_mid_row_is_error():
    cut = AR_TEXT[: AR_TEXT.index(LAST_ROW) + 60]
    status, _ = judged(cut)
    assert status == "ERROR"
    assert judged("")[0] == "ERROR"


def test_wrong_elements_fail_even_when_footer_says_ok():
    assert LAST_ROW in AR_TEXT
    wrong_row = LAST_ROW[: -len("0     0.97  552251    0.00       0")] + "7     0.97  552251    0.00       0"
    text = AR_TEXT.replace(LAST_ROW, wrong_row)
    assert judged(text) == ("FAIL", "data check failed: 7 wrong element(s) (#wrong > 0)")
    # as nccl-tests really prints it: the error count in the footer too, and exit status 7
    text2 = text.replace("# Out of bounds values : 0 OK", "# Out of bounds values : 1 FAILED")
    assert judged(text2, rc=7)[0] == "FAIL"


def test_out_of_bounds_failed_line_fails():
    text = AR_TEXT.replace("# Out of bounds values : 0 OK", "# Out of bounds values : 3 FAILED")
    assert judged(text, rc=7) == ("FAIL", "out of bounds values: 3 FAILED")


def test_nonzero_exit_with_complete_output_is_error():
    assert judged(AR_TEXT, rc=1) == ("ERROR", "exited with status 1")


def test_nccl_failure_line_is_error():
    # The format of NCCLCHECK in nccl-tests src/common.h (NCCL >= 2.13).
    line = "vm: Test NCCL failure common.cu:1187 'unhandled cuda error (run with NCCL_DEBUG=INFO for details) / '"
    cut = AR_TEXT[: AR_TEXT.index("     8388608")] + line + "\n .. vm pid 1257: Test failure common.cu:1454\n"
    status, message = judged(cut, rc=3)
    assert status == "ERROR" and "Test NCCL failure" in message


def test_timeout_is_error():
    assert judged(AR_TEXT[:600], rc=-9, timed_out=True)[0] == "ERROR"


def test_json_with_wrong_elements_fails():
    data = json.loads(AR_JSON)
    data["results"][-1]["out_of_place"]["nwrong"] = 12.0
    data["out_of_bounds"] = {"count": 1, "okay": "false"}
    assert nccl.nccl_verdict(nccl.parse_json(json.dumps(data)), 7)[0] == "FAIL"


def test_json_cut_short_raises():
    with pytest.raises(ValueError, match="not valid JSON"):
        nccl.parse_json(AR_JSON[: len(AR_JSON) // 2])


def test_json_without_footer_is_error():
    data = json.loads(AR_JSON)
    del data["out_of_bounds"], data["average_bus_bandwidth"]
    assert nccl.nccl_verdict(nccl.parse_json(json.dumps(data)), 0)[0] == "ERROR"


def test_argv_builder_is_pure_and_complete():
    cfg = nccl.NcclConfig(test="all_reduce", ngpus=8, min_bytes=8, max_bytes=16 << 30, step_factor=2, iters=20, warmup=5)
    assert nccl.argv("/opt/nt/all_reduce_perf", cfg, "/tmp/x/result.json") == [
        "/opt/nt/all_reduce_perf", "-b", "8", "-e", str(16 << 30), "-f", "2", "-g", "8", "-n", "20", "-w", "5",
        "-c", "1", "-o", "sum", "-d", "float", "-J", "/tmp/x/result.json"]
    a2a = nccl.argv("alltoall_perf", nccl.NcclConfig(test="alltoall"))
    assert "-o" not in a2a and "-J" not in a2a and a2a[a2a.index("-c") + 1] == "1"
    with pytest.raises(ValueError):
        nccl.NcclConfig(test="broadcast")
    with pytest.raises(ValueError):
        nccl.NcclConfig(min_bytes=10, max_bytes=1)


def test_json_support_from_real_help():
    assert nccl.supports_json((NCCL / "all_reduce_help.h100.txt").read_text())
    old_help = "\n".join(line for line in (NCCL / "all_reduce_help.h100.txt").read_text().splitlines()
                         if "output_file" not in line)
    assert not nccl.supports_json(old_help)


def test_launcher_prefixes():
    assert nccl.launcher_prefix("mpirun", ["n1", "n2"], 8, ["NCCL_IB_HCA", "NCCL_DEBUG"]) == [
        "mpirun", "-np", "16", "-H", "n1:8,n2:8", "--bind-to", "none", "--map-by", "ppr:8:node",
        "-x", "NCCL_DEBUG", "-x", "NCCL_DEBUG_SUBSYS", "-x", "NCCL_IB_HCA"]  # the debug pair goes to every rank
    assert nccl.launcher_prefix("srun", ["n1", "n2"], 4) == [
        "srun", "--nodes", "2", "--ntasks-per-node", "4", "--nodelist", "n1,n2", "--export", "ALL",
        "--kill-on-bad-exit=1"]
    assert nccl.launcher_prefix("mpirun", [], 2)[:5] == ["mpirun", "-np", "2", "-H", "localhost:2"]
    with pytest.raises(ValueError):
        nccl.launcher_prefix("pdsh", ["n1"], 1)


def test_nccl_env_passthrough():
    assert nccl.nccl_env({"NCCL_ALGO": "Ring", "PATH": "/bin", "NCCL_IB_HCA": "mlx5"}) == {
        "NCCL_ALGO": "Ring", "NCCL_IB_HCA": "mlx5"}


def test_busbw_factors():
    assert nccl.busbw_factor("all_reduce", 8) == pytest.approx(1.75)
    assert nccl.busbw_factor("all_gather", 8) == pytest.approx(0.875)
    assert nccl.busbw_factor("all_reduce", 1) == 0
    assert nccl.busbw_factor("sendrecv", 1) == 1


def test_metric_single_gpu_all_reduce_skips_but_sendrecv_counts():
    run = nccl.parse_text(AR_TEXT)
    m = nccl.metric(nccl.NcclConfig(), run, "ok", "", 1, {"NCCL_ALGO": "Ring"})
    assert m.status == "SKIP" and "0 by definition" in m.message and len(m.detail["rows"]) == 14
    sr = nccl.parse_text((NCCL / "sendrecv_g1.h100.txt").read_text())
    m2 = nccl.metric(nccl.NcclConfig(test="sendrecv"), sr, "ok", "", 1, {})
    assert (m2.status, m2.value, m2.unit, m2.conditions["largest_bytes"]) == ("PASS", 1083.8, "GB/s", 33554432)


def test_metric_multi_gpu_reports_busbw_at_largest_size():
    run = nccl.parse_text(AR_TEXT.replace("nGpus 1", "nGpus 8"))
    run.ranks = 8
    run.rows[-1].busbw = 360.5
    m = nccl.metric(nccl.NcclConfig(ngpus=8), run, "ok", "", 1, {"NCCL_ALGO": "Ring"})
    assert (m.name, m.value, m.gpu) == ("nccl.all_reduce.busbw", 360.5, None)
    assert m.conditions["ngpus"] == 8 and m.conditions["algo env"] == {"NCCL_ALGO": "Ring"}


def test_failed_metric_keeps_figure_error_does_not():
    run = nccl.parse_text(AR_TEXT)
    assert nccl.metric(nccl.NcclConfig(), run, "fail", "wrong", 1, {}).value == 0.0
    assert nccl.metric(nccl.NcclConfig(), run, "error", "crash", 1, {}).value is None


# ---- run_test through the real Runner, against a stand-in binary that replays the recordings ----


def fake_binary(tmp_path, name="all_reduce_perf", text=AR_TEXT, json_text=AR_JSON, rc=0, sleep=0.0, help_json=True):
    help_text = (NCCL / "all_reduce_help.h100.txt").read_text()
    if not help_json:
        help_text = help_text.replace("-J,--output_file", "")
    data = tmp_path / f"{name}.data"
    data.mkdir()
    (data / "help").write_text(help_text)
    (data / "text").write_text(text)
    (data / "json").write_text(json_text)
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import sys, time, pathlib
        d = pathlib.Path({str(data)!r})
        args = sys.argv[1:]
        if args == ["-h"]:
            print(d.joinpath("help").read_text(), end=""); sys.exit(0)
        if "-J" in args:
            pathlib.Path(args[args.index("-J") + 1]).write_text(d.joinpath("json").read_text())
        time.sleep({sleep})
        print(d.joinpath("text").read_text(), end="")
        d.joinpath("argv").write_text(" ".join(args))
        sys.exit({rc})
    """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, data


def test_find_binary_in_dir_and_build_subdir(tmp_path):
    script, _ = fake_binary(tmp_path)
    assert nccl.find_binary("all_reduce", [str(tmp_path)], path_env="") == str(script)
    build = tmp_path / "nt" / "build"
    build.mkdir(parents=True)
    other = build / "alltoall_perf"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert nccl.find_binary("alltoall", [str(tmp_path / "nt")], path_env="") == str(other)
    assert nccl.find_binary("sendrecv", [str(tmp_path)], path_env="") is None


def test_run_test_uses_json_when_supported(tmp_path):
    script, data = fake_binary(tmp_path)
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(max_bytes=1 << 30, step_factor=4), 30,
                      {"PATH": os.environ["PATH"], "NCCL_ALGO": "Ring"})
    assert m.status == "SKIP" and m.conditions["output"] == "json (-J)"  # 1 GPU: busbw 0 by definition
    assert m.detail["rows"][-1]["algbw"] == pytest.approx(1496.03577)  # the JSON's figure, not the text's
    assert m.detail["nccl_tests"] == "2.19.6" and m.conditions["algo env"] == {"NCCL_ALGO": "Ring"}
    assert "-J" in (data / "argv").read_text()


def test_run_test_text_only_binary(tmp_path):
    script, data = fake_binary(tmp_path, help_json=False)
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, {"PATH": os.environ["PATH"]})
    assert m.conditions["output"] == "text" and "-J" not in (data / "argv").read_text()


def test_run_test_crash_with_cut_json_is_error(tmp_path):
    cut_text = AR_TEXT[: AR_TEXT.index("# Out of bounds")]
    script, _ = fake_binary(tmp_path, text=cut_text, json_text=AR_JSON[:500], rc=3)
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, {"PATH": os.environ["PATH"]})
    assert m.status == "ERROR" and m.value is None


def test_run_test_timeout_kills_and_errors(tmp_path):
    script, _ = fake_binary(tmp_path, sleep=30)
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 1.5, {"PATH": os.environ["PATH"]})
    assert m.status == "ERROR" and "timed out" in m.message


def test_run_test_missing_binary_is_error():
    m = nccl.run_test(Runner(), "/nonexistent/all_reduce_perf", nccl.NcclConfig(), 5, {})
    assert m.status == "ERROR" and "not found" in m.message


def test_not_installed_skip_says_how_to_install():
    m = nccl.not_installed("all_reduce")
    assert m.status == "SKIP" and "github.com/NVIDIA/nccl-tests" in m.message and "--nccl-tests-dir" in m.message


# ---- mutation survivors: defaults, config checks, PATH lookup, the time column ----------------


def test_default_config_gives_the_documented_argv():
    """The defaults a plain `gpunode bench` runs with: 8 B .. 1 GiB, x2, 20 iterations after 5 warm-up."""
    assert nccl.argv("all_reduce_perf", nccl.NcclConfig()) == [
        "all_reduce_perf", "-b", "8", "-e", str(1 << 30), "-f", "2", "-g", "1", "-n", "20", "-w", "5",
        "-c", "1", "-o", "sum", "-d", "float"]


@pytest.mark.parametrize("bad", [{"ngpus": 0}, {"iters": 0}, {"warmup": -1}, {"step_factor": 1}])
def test_each_bad_count_alone_is_refused(bad):
    """One bad setting is enough: the others being valid must not let it through."""
    with pytest.raises(ValueError, match="ngpus and iters >= 1"):
        nccl.NcclConfig(**bad)
    nccl.NcclConfig(warmup=0)  # no warm-up is allowed


def test_find_binary_searches_the_path_it_is_given_not_the_environment(tmp_path, monkeypatch):
    script, _ = fake_binary(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PATH", str(elsewhere))
    assert nccl.find_binary("all_reduce", path_env=str(tmp_path)) == str(script)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nccl.find_binary("all_reduce", path_env=str(elsewhere)) is None
    assert nccl.find_binary("all_reduce") == str(script)  # no path given: $PATH


def test_row_time_is_the_time_column_not_the_bandwidth():
    """`size count type redop root time algbw busbw #wrong | time algbw busbw #wrong`."""
    run = nccl.parse_text(AR_TEXT)
    last = run.largest
    assert (last.time_us, last.algbw, last.busbw, last.wrong) == (358.92, 1495.8, 0.0, 0)
    assert (last.in_place_time_us, last.in_place_algbw, last.in_place_busbw, last.in_place_wrong) == (0.97, 552251, 0.0, 0)
    assert nccl.parse_json(AR_JSON).largest.time_us == pytest.approx(358.9, abs=0.1)


# ---- NCCL_DEBUG=INFO mixed into the output (gpunode.bench.nccl_log) ----------------------------
INFO_LOG = (FIXTURES / "device" / "topology-h100" / "nccl-info.log").read_text().splitlines()[1:]
SOCKET_LOG = (NCCL / "info" / "socket_2node.nccl1232.log").read_text()
TWO_NODE = (NCCL / "all_reduce_2node.doc.txt").read_text()


def _interleave(text: str, log: list[str]) -> str:
    out = []
    for i, line in enumerate(text.splitlines()):
        out += [log[i % len(log)], line]
    return "\n".join(out + log) + "\n"


@pytest.mark.parametrize("name", ["all_reduce_g1.h100.txt", "all_gather_g1.h100.txt", "sendrecv_g1.h100.txt",
                                  "all_reduce_minbw_failed.h100.txt", "all_reduce_2node.doc.txt",
                                  "all_reduce_2node_neterror.doc.txt"])
def test_nccl_info_lines_mixed_into_real_outputs_change_nothing(name):
    text = (NCCL / name).read_text()
    plain, mixed = nccl.parse_text(text), nccl.parse_text(_interleave(text, INFO_LOG))
    assert mixed.rows == plain.rows and mixed.failures == plain.failures and mixed.ranks == plain.ranks
    assert (mixed.footer, mixed.avg_busbw, mixed.out_of_bounds) == (plain.footer, plain.avg_busbw, plain.out_of_bounds)
    assert nccl.nccl_verdict(mixed, 0) == nccl.nccl_verdict(plain, 0)


def test_run_test_sets_nccl_debug_and_records_the_transports(tmp_path):
    script, _ = fake_binary(tmp_path, text=_interleave(AR_TEXT, INFO_LOG), help_json=False)
    env_file = tmp_path / "env"
    wrapper = tmp_path / "wrap"
    wrapper.write_text(f"#!/bin/sh\nenv > {env_file}\nexec {script} \"$@\"\n")
    wrapper.chmod(0o755)
    m = nccl.run_test(Runner(), str(wrapper), nccl.NcclConfig(), 30,
                      {"PATH": os.environ["PATH"], "NCCL_DEBUG_FILE": "/tmp/x.%h.%p"})
    seen = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert seen["NCCL_DEBUG"] == "INFO" and seen["NCCL_DEBUG_SUBSYS"] == "INIT,NET,GRAPH,ENV,TUNING"
    assert "NCCL_DEBUG_FILE" not in seen  # the lines must come back in the output
    assert m.status == "SKIP" and m.detail["nccl_transport"]["version"] == "2.28.9+cuda13.0"
    assert m.detail["nccl_transport"]["network"] == "Socket" and m.detail["nccl_transport"]["verdict"] == "PASS"
    assert "NCCL_DEBUG" not in m.conditions["algo env"]  # conditions stay the caller's settings


def test_run_test_multinode_on_sockets_with_rdma_ports_up_fails(tmp_path):
    script, _ = fake_binary(tmp_path, text=_interleave(TWO_NODE, SOCKET_LOG.splitlines()), help_json=False)
    env = {"PATH": os.environ["PATH"]}
    up = nccl.nccl_log.Fabric(rdma_ports=("mlx5_0/1 (InfiniBand)",))
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, env, fabric=up)
    assert m.status == "FAIL" and m.value == 458.99  # the figure stays, the verdict says why
    assert "TCP sockets (NET/Socket)" in m.message and "mlx5_0/1" in m.message
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, env, fabric=nccl.nccl_log.Fabric())
    assert m.status == "PASS" and m.detail["nccl_transport"]["transports"]["NET/Socket"] == 9


def test_nccl_tuning_prediction_is_kept_beside_the_figure():
    table = (NCCL / "info" / "tuning_new.nccl1519.log").read_text()
    p = nccl.prediction(table, "all_gather", 8)
    assert p == {"collective": "AllGather", "algo/proto": "Simple", "algbw": 21.3, "busbw": 18.637,
                 "source": "NCCL_DEBUG_SUBSYS=TUNING"}
    assert nccl.prediction(table, "sendrecv", 8) is None and nccl.prediction(AR_TEXT, "all_reduce", 1) is None
