"""apply --prove's bench (tune/prove.py bench_for_prove) on the live host and on a fixture root."""

from __future__ import annotations


def test_the_prove_bench_of_a_live_host_is_kept_in_its_history(tmp_path, monkeypatch):
    """apply --prove's bench on the live host (without a GPU backend it measures nothing, which
    is kept all the same) lands in the node's history; a fixture root's does not."""
    from gpunode.history.store import Store, history_path
    from gpunode.host.seam import sysroot_host
    from gpunode.tune.prove import bench_for_prove

    monkeypatch.setenv("GPUNODE_STATE_DIR", str(tmp_path / "state"))
    doc = bench_for_prove(sysroot_host("/"))()
    assert doc.metrics
    with Store.open(history_path(tmp_path / "state"), readonly=True) as store:
        assert [e.kind for e in store.entries()] == ["bench"]
    bench_for_prove(sysroot_host(tmp_path / "root"))()
    with Store.open(history_path(tmp_path / "state"), readonly=True) as store:
        assert len(store.entries()) == 1


def test_a_change_exactly_at_the_noise_margin_is_the_same_and_small_figures_compare():
    from gpunode.bench.results import BenchDocument, Metric
    from gpunode.tune.prove import BETTER, SAME, UNCOMPARED, WORSE, compare_runs

    def one(value: float) -> BenchDocument:
        return BenchDocument("t", "h", "", 0.0, "quick", {}, {}, [Metric("gemm.bf16", 0, value, "TFLOP/s", "ok", "", {})])

    assert compare_runs(one(100.0), one(75.0), floor=0.25)[0].verdict == SAME  # -25 % at a 25 % margin
    assert compare_runs(one(100.0), one(74.0), floor=0.25)[0].verdict == WORSE
    assert compare_runs(one(100.0), one(125.0), floor=0.25)[0].verdict == SAME
    assert compare_runs(one(100.0), one(126.0), floor=0.25)[0].verdict == BETTER
    assert compare_runs(one(0.5), one(0.5))[0].verdict == SAME  # below 1, still a figure
    assert compare_runs(one(0.0), one(0.5))[0].verdict == UNCOMPARED
    assert compare_runs(one(0.5), one(0.0))[0].verdict == UNCOMPARED
