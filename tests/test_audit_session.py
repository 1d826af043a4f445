"""audit.session, the use case behind `gpunode audit`, called without typer (issue 21 item 2):
bad input or a selection that matches nothing is an exits.UsageError (exit 3) before any check
runs; a recorded snapshot is audited and never kept in this node's history."""

import subprocess
import sys

import pytest

from gpunode.audit import session
from gpunode.exits import USAGE_EXIT, UsageError
from testkit import HOSTS

SNAPSHOT = HOSTS / "h100-sxm-1gpu"


def request(tmp_path, **kw):
    (tmp_path / "config.yaml").write_text("{}\n")  # a site config that sets nothing
    return session.AuditRequest(**{"snapshot": SNAPSHOT, "config": str(tmp_path / "config.yaml"), **kw})


@pytest.mark.parametrize("fields,message", [
    ({"expected_gpus": -1}, "--expected-gpus must be 0 or more"),
    ({"xid_window": 0.0}, "--xid-window must be positive"),
    ({"profile": "no-such-profile"}, "no-such-profile"),
    ({"only": ["nosuch.*"]}, "nosuch"),
    ({"areas": ["gpu"], "skip_areas": ["gpu"]}, "no check matches"),
    ({"snapshot": None, "sysroot": "MISSING"}, "not a directory"),
    ({"sets": ["nokey"]}, "nokey"),
])
def test_bad_request_is_a_usage_error_with_exit_3(tmp_path, fields, message):
    fields = {k: (tmp_path / "missing" if v == "MISSING" else v) for k, v in fields.items()}
    with pytest.raises(UsageError) as caught:
        session.prepare(request(tmp_path, **fields))
    assert message in str(caught.value) and caught.value.exit_code == USAGE_EXIT == 3


def test_a_snapshot_is_audited_and_not_kept(tmp_path):
    job = session.prepare(request(tmp_path, areas=["gpu"], expected_gpus=1))
    assert job.config.expected_gpus == 1 and all(c.area == "gpu" for c in job.chosen.checks)
    run, document = session.run(job)
    assert document["schema"] == "gpunode.audit/1" and len(run.results) >= len(job.chosen.checks)
    assert {c["area"] for c in document["checks"]} == {"gpu"}
    assert session.keep(job, document) is None  # a replayed snapshot is not this node's history


def test_the_use_case_does_not_import_typer():
    code = "import sys; from gpunode.audit import session; print(sorted(m for m in sys.modules if m in ('typer', 'click', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
