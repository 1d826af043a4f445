"""Verdicts a mutation pass showed unguarded: each test here fails when the guarded line is
changed (a boundary moved, a column ignored, a file written in place)."""

import os

from gpu_fixtures import change, h100, make_host, only

from gpunode.bench import nccl
from gpunode.checks import gpu as G
from gpunode.outputs import write_atomic
from testkit import FIXTURES, run

AR_TEXT = (FIXTURES / "nccl" / "all_reduce_g1.h100.txt").read_text()
AR_JSON = (FIXTURES / "nccl" / "all_reduce_g1.h100.json").read_text()
LAST_ROW = ("   536870912     134217728     float     sum      -1   358.92  1495.8    0.00       0"
            "     0.97  552251    0.00       0")


def test_a_single_volatile_uncorrectable_ecc_error_fails(tmp_path):
    """One uncorrectable error since the driver loaded is enough to drain (not "> 1")."""
    r = only(run(G.ecc_uncorrectable, make_host(tmp_path, change(h100(), ecc_uncorrected_volatile=1,
                                                                  ecc_uncorrected_aggregate=1))))
    assert r.status.value == "FAIL" and "1 uncorrectable" in r.message


def test_a_single_lifetime_uncorrectable_ecc_error_warns(tmp_path):
    r = only(run(G.ecc_uncorrectable, make_host(tmp_path, change(h100(), ecc_uncorrected_volatile=0,
                                                                  ecc_uncorrected_aggregate=1))))
    assert r.status.value == "WARN"


def test_wrong_elements_in_the_in_place_column_fail():
    """nccl-tests prints #wrong twice per row (out-of-place, in-place): both are data checks."""
    assert LAST_ROW in AR_TEXT
    in_place_wrong = LAST_ROW[: -len("0")] + "5"
    status, message = nccl.nccl_verdict(nccl.parse_text(AR_TEXT.replace(LAST_ROW, in_place_wrong)), 0)
    assert status == "FAIL" and "5 wrong element" in message


def test_wrong_elements_in_the_in_place_json_record_fail():
    import json

    doc = json.loads(AR_JSON)
    text = json.dumps(doc)
    assert '"nwrong": 0' in text or '"nwrong":0' in text
    # the last in-place record gets one wrong element
    mutated = _set_last_in_place_nwrong(doc, 1)
    status, _ = nccl.nccl_verdict(nccl.parse_json(json.dumps(mutated)), 0)
    assert status == "FAIL"


def _set_last_in_place_nwrong(node, value):
    """Walk the recorded -J document and set nwrong of the last in-place result."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            for key, val in x.items():
                if key.replace("-", "_").replace(" ", "_").lower() in ("in_place", "inplace") and isinstance(val, dict) \
                        and "nwrong" in val:
                    found.append(val)
                walk(val)
        elif isinstance(x, list):
            for item in x:
                walk(item)

    walk(node)
    assert found, "the recorded JSON has in-place results"
    found[-1]["nwrong"] = value
    return node


def test_prometheus_textfile_is_replaced_never_rewritten_in_place(tmp_path):
    """node_exporter may read the file at any instant: a new inode is renamed over the old one,
    so a reader holding the old file sees the old text whole, never a truncated one."""
    target = tmp_path / "gpunode.prom"
    write_atomic(target, "old 1\n")
    before = os.stat(target).st_ino
    with open(target) as reader:
        write_atomic(target, "new 2\n")
        assert reader.read() == "old 1\n"
    assert os.stat(target).st_ino != before and target.read_text() == "new 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpunode.prom"]
