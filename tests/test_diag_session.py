"""diag.session, the use case behind `gpunode diag`, called without typer (issue 21 item 2):
bad input is an exits.UsageError carrying exit 3, said before anything runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from gpunode.diag import session
from gpunode.exits import USAGE_EXIT, UsageError


@pytest.mark.parametrize("fields,message", [
    ({"level": 4}, "--level 4"),
    ({"level": 1, "duration": 60}, "--duration applies to levels 2 and 3"),
    ({"level": 2, "duration": 10}, "at least 45 s at level 2"),
    ({"gpus": "0,x"}, "--gpus: 'x' is not a GPU index"),
    ({"dcgm_level": 2}, "--dcgm-level needs --with-dcgm"),
    ({"with_dcgm": True, "dcgm_level": 7}, "--dcgm-level 7: 1 to 4"),
    ({"config": Path("/nonexistent/gpunode.yaml")}, "not a file"),
])
def test_bad_request_is_a_usage_error_with_exit_3(fields, message):
    with pytest.raises(UsageError) as caught:
        session.options(session.DiagRequest(**fields))
    assert message in str(caught.value) and caught.value.exit_code == USAGE_EXIT == 3


def test_good_request_gives_the_options():
    opts = session.options(session.DiagRequest(level=2, duration=60, gpus=" 1, 0"))
    assert opts.level == 2 and opts.planned_s == 60 and opts.gpus == [1, 0]
    assert session.gpu_indices(None) is None and session.gpu_indices(",") is None


def test_a_bad_baseline_name_is_an_input_error():
    with pytest.raises(UsageError, match="no baseline named"):
        session.resolve_baseline("h300-sxm", None)


def test_the_use_case_does_not_import_typer():
    code = "import sys; from gpunode.diag import session; print(sorted(m for m in sys.modules if m in ('typer', 'click', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
