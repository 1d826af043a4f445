"""dcgm.parse on the recorded DCGM 4 document with one part broken at a time: what no recording
reached (pinned when parse was split into helpers, issue 21)."""

import json

from gpunode.diag import dcgm
from testkit import FIXTURES

PASS_DOC = json.loads((FIXTURES / "dcgm" / "dcgm4-r1-pass.json").read_text())


def _parsed(doc):
    results, meta = dcgm.parse(json.dumps(doc))
    return [(r.name, r.gpu, r.status, r.message) for r in results], meta


def test_a_json_document_of_another_kind_is_one_error():
    assert _parsed({"metadata": {"version": "4.2.3"}}) == ([("dcgm", None, "ERROR", "not a dcgmi diag -j document")], {})


def test_broken_categories_tests_and_results_are_passed_over():
    doc = json.loads(json.dumps(PASS_DOC))
    cats = doc["DCGM Diagnostic"]["test_categories"]
    cats[0]["tests"] += ["software", {"name": 7}]
    cats[1]["tests"][0]["results"].insert(0, "Pass")
    cats.append("Hardware")
    results, meta = _parsed(doc)
    assert [r[:3] for r in results] == [("dcgm.software", 0, "PASS"), ("dcgm.software", 1, "PASS"),
                                        ("dcgm.pcie", 0, "PASS"), ("dcgm.pcie", 1, "SKIP")]
    assert meta == {"version": "4.2.3", "driver": "580.159.04"}


def test_a_test_without_results_is_judged_by_its_summary_for_the_node():
    doc = json.loads(json.dumps(PASS_DOC))
    pcie = doc["DCGM Diagnostic"]["test_categories"][1]["tests"][0]
    pcie["results"] = []
    assert _parsed(doc)[0][2:] == [("dcgm.pcie", None, "PASS", "pcie (Integration): pass")]
    pcie["test_summary"] = "Pass"  # not an object: nothing said, never a pass
    assert _parsed(doc)[0][2:] == [("dcgm.pcie", None, "ERROR", "pcie (Integration): error")]


def test_without_metadata_the_diagnostic_itself_gives_version_and_driver():
    doc = json.loads(json.dumps(PASS_DOC))
    doc["DCGM Diagnostic"].update(doc.pop("metadata"))
    assert _parsed(doc)[1] == {"version": "4.2.3", "driver": "580.159.04"}
    del doc["DCGM Diagnostic"]["Driver Version Detected"]
    assert _parsed(doc)[1] == {"version": "4.2.3"}
