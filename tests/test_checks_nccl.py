"""checks/nccl.py: the NCCL settings a node hands to jobs. The file formats are the documented ones:
/etc/nccl.conf as NCCL's env docs show it ("NCCL_DEBUG=WARN / NCCL_SOCKET_IFNAME==ens1f0"), a
TaskProlog as slurm.conf(5)/prolog_epilog docs show it (`echo "export NAME=value"`)."""

from __future__ import annotations

import pytest

from gpunode.checks import nccl
from gpunode.host.facts.nccl_env import parse_filter, parse_nccl_conf, parse_task_prolog, unmatched
from testkit import run, statuses, tree_host

HCAS = {f"/sys/class/infiniband/mlx5_{i}/ports/1/state": "4: ACTIVE\n" for i in (0, 1, 2, 3)}
NICS = {f"/sys/class/net/{n}/operstate": "up\n" for n in ("lo", "ens1f0", "ibp24s0", "docker0")}
DOC_CONF = "NCCL_DEBUG=WARN\nNCCL_SOCKET_IFNAME==ens1f0\n"  # NCCL env docs' own example
PROLOG = ('#!/bin/sh\n# Slurm TaskProlog: lines "export NAME=value" go into the task environment\n'
          'echo "export NCCL_IB_HCA==mlx5_0:1,mlx5_1:1"\necho export NCCL_ALGO=Ring\n'
          '# echo "export NCCL_IB_DISABLE=1"\n')
SLURM = "ClusterName=c1\nTaskProlog=/etc/slurm/task_prolog.sh  # NCCL for jobs\n"


def host(tmp_path, **files):
    return tree_host(tmp_path, {**HCAS, **NICS, **files})


def test_parsers():
    assert parse_nccl_conf(DOC_CONF + "# NCCL_P2P_DISABLE=1\n") == {"NCCL_DEBUG": "WARN",
                                                                   "NCCL_SOCKET_IFNAME": "=ens1f0"}
    assert parse_task_prolog(PROLOG) == {"NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1", "NCCL_ALGO": "Ring"}
    f = parse_filter("^=mlx5_1,mlx5_4:2", ports=True)
    assert (f.exclude, f.exact, f.tokens) == (True, True, (("mlx5_1", None), ("mlx5_4", 2)))
    devices = {"mlx5_0": {1}, "mlx5_10": {1}}
    assert unmatched(parse_filter("mlx5_1", True), devices) == []  # a prefix: mlx5_10 matches
    assert unmatched(parse_filter("=mlx5_1", True), devices) == ["mlx5_1"]
    assert unmatched(parse_filter("=mlx5_0:2", True), devices) == ["mlx5_0:2"]


def test_doc_example_conf_passes(tmp_path):
    results = run(nccl.names, host(tmp_path, **{"/etc/nccl.conf": DOC_CONF}))
    assert statuses(results) == ["PASS"]
    assert statuses(run(nccl.debug_only, host(tmp_path, **{"/etc/nccl.conf": DOC_CONF}))) == ["PASS"]


@pytest.mark.parametrize(("value", "status", "words"), [
    ("=mlx5_0:1,mlx5_9:1", "FAIL", "mlx5_9:1 match no RDMA device"),
    ("mlx5_0:2", "FAIL", "mlx5_0:2 match no RDMA device"),
    ("=mlx5_0,mlx5_3", "PASS", "every name matches"),
    ("^=mlx5_7", "WARN", "excludes mlx5_7"),
    ("mlx5", "PASS", "every name matches"),
])
def test_ib_hca_names(tmp_path, value, status, words):
    [r] = run(nccl.names, host(tmp_path, **{"/etc/nccl.conf": f"NCCL_IB_HCA={value}\n"}))
    assert r.status.value == status and words in r.message


def test_socket_ifname_typo_fails_and_exclusion_of_absent_warns(tmp_path):
    files = {"/etc/nccl.conf": "NCCL_SOCKET_IFNAME==ens1f1\n"}
    [r] = run(nccl.names, host(tmp_path / "a", **files))
    assert r.status.value == "FAIL" and "ens1f1 match no interface" in r.message
    [r] = run(nccl.names, host(tmp_path / "b", **{"/etc/nccl.conf": "NCCL_SOCKET_IFNAME=^docker,virbr\n"}))
    assert r.status.value == "WARN" and "virbr" in r.message and "docker" not in r.message.split("excludes")[1][:12]


def test_task_prolog_is_read_where_slurm_conf_names_it(tmp_path):
    files = {"/etc/slurm/slurm.conf": SLURM, "/etc/slurm/task_prolog.sh": PROLOG.replace("mlx5_1:1", "mlx5_5:1")}
    [r] = run(nccl.names, host(tmp_path, **files))
    assert r.status.value == "FAIL" and "TaskProlog /etc/slurm/task_prolog.sh" in r.subject
    [r] = run(nccl.debug_only, host(tmp_path, **files))
    assert r.status.value == "WARN" and r.subject.startswith("NCCL_ALGO") and "should not be used in production" in r.message


@pytest.mark.parametrize("line", ["NCCL_IB_DISABLE=1", "NCCL_P2P_DISABLE=1", "NCCL_SHM_DISABLE=1",
                                  "NCCL_NET_GDR_LEVEL=LOC", "NCCL_PROTO=Simple", "NCCL_DEBUG=TRACE"])
def test_debug_only_settings_warn_with_the_docs_words(tmp_path, line):
    [r] = run(nccl.debug_only, host(tmp_path, **{"/etc/nccl.conf": f"{line}\n"}))
    assert r.status.value == "WARN" and line in r.message


def test_nothing_configured_skips(tmp_path):
    assert statuses(run(nccl.names, host(tmp_path))) == ["SKIP"]
    assert statuses(run(nccl.debug_only, host(tmp_path))) == ["SKIP"]
