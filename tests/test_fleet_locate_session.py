"""fleet.locate.session, the use case behind `gpunode fleet locate`, without typer (issue 21
item 2): bad options and a bad inventory are exits.UsageError (exit 3) before any test runs."""

import subprocess
import sys

import pytest

from gpunode.exits import USAGE_EXIT, UsageError
from gpunode.fleet.locate import session


@pytest.mark.parametrize("fields,message", [
    ({"test": "rdma"}, "--test 'rdma': give tcp, ib or nccl"),
    ({"ratio": 1.5}, "--ratio 1.5: give a fraction between 0 and 1"),
    ({"launcher": "pbs"}, "--launcher 'pbs': give mpirun or srun"),
    ({"expect": 0.0}, "--expect 0.0: give a positive figure"),
    ({"round0": True, "expect": 400.0}, "--round0: --test tcp has no all-nodes test"),
    ({"round0": True, "test": "nccl"}, "--round0 needs --expect"),
])
def test_bad_options_are_usage_errors(tmp_path, fields, message):
    with pytest.raises(UsageError) as caught:
        session.check(session.LocateRequest(inventory=tmp_path / "inv.ini", **fields))
    assert message in str(caught.value) and caught.value.exit_code == USAGE_EXIT


def test_good_options_give_the_pair_tests_config(tmp_path):
    cfg = session.check(session.LocateRequest(inventory=tmp_path / "inv.ini", test="ib", rails=("mlx5_0",), port=6000))
    assert cfg.rails == ("mlx5_0",) and cfg.port == 6000


def test_an_inventory_of_one_host_is_a_usage_error(tmp_path):
    (tmp_path / "inv.ini").write_text("[gpu]\nnode1 ansible_connection=local\n")
    with pytest.raises(UsageError, match="at least 2 hosts"):
        session.hosts(session.LocateRequest(inventory=tmp_path / "inv.ini"))


def test_the_use_case_does_not_import_typer():
    code = ("import sys; from gpunode.fleet.locate import session; "
            "print(sorted(m for m in sys.modules if m in ('typer', 'click', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
