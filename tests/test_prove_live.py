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
