"""Branches of the nccl-tests wrapper that no other test reached (pinned when parse_text,
parse_json and run_test were split into helpers, issue 21): the real all-reduce recording with
one line changed each time."""

import json
import os

from test_bench_nccl import AR_JSON, AR_TEXT, fake_binary

from gpunode.bench import nccl
from gpunode.host.runner import Runner

FOOTER_LINE = "# Avg bus bandwidth    : 0 "
ENV = {"PATH": os.environ["PATH"]}


def test_an_error_comment_line_is_a_failure():
    run = nccl.parse_text(AR_TEXT.replace("#\n# Collective test concluded", "# error: cudaMalloc failed\n#\n# Collective", 1))
    assert run.failures == ["# error: cudaMalloc failed"]
    assert nccl.nccl_verdict(run, 0) == ("ERROR", "nccl-tests reported: # error: cudaMalloc failed")


def test_an_unreadable_footer_is_a_failure_and_no_footer():
    assert FOOTER_LINE in AR_TEXT
    run = nccl.parse_text(AR_TEXT.replace(FOOTER_LINE, "# Avg bus bandwidth    : n/a FAILED"))
    assert not run.footer and run.avg_busbw is None
    assert run.failures == ["unreadable footer: # Avg bus bandwidth    : n/a FAILED", "# Avg bus bandwidth    : n/a FAILED"]


def test_a_json_file_without_rows_takes_the_texts_rows(tmp_path):
    data = json.loads(AR_JSON)
    data["results"] = []
    script, _ = fake_binary(tmp_path, json_text=json.dumps(data))
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, ENV)
    assert m.conditions["output"] == "json (-J)" and len(m.detail["rows"]) == 14
    assert m.detail["rows"][-1]["algbw"] == 1495.8  # the text's figure


def test_a_cut_json_file_beside_a_complete_text_is_an_error_with_the_reason(tmp_path):
    script, _ = fake_binary(tmp_path, json_text=AR_JSON[:500])
    m = nccl.run_test(Runner(), str(script), nccl.NcclConfig(), 30, ENV)
    assert m.status == "ERROR" and m.message.startswith("nccl-tests JSON output is not valid JSON (")
    assert m.conditions["output"] == "text"


def test_an_error_carries_the_last_stderr_line(tmp_path):
    script, _ = fake_binary(tmp_path, rc=3, help_json=False)
    wrapper = tmp_path / "wrap"
    wrapper.write_text(f"#!/bin/sh\n{script} \"$@\"\nrc=$?\necho first >&2\necho 'last words' >&2\nexit $rc\n")
    wrapper.chmod(0o755)
    m = nccl.run_test(Runner(), str(wrapper), nccl.NcclConfig(), 30, ENV)
    assert (m.status, m.message) == ("ERROR", "exited with status 3 (stderr: last words)")
