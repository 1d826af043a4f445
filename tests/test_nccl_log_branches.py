"""Kinds of NCCL INFO line no recording pinned (kept when _parse_info became a table, issue 21).
The lines follow NCCL's own format strings (src/init.cc of NCCL 2.18+)."""

from gpunode.bench.nccl_log import parse

TAG = "node0:1234:1234 [0] NCCL INFO "
COMM = TAG + "comm 0x55d8c0 rank 0 nRanks 16 nNodes 2 localRanks 8 localRank 0 MNNVL 0"
INIT = TAG + "ncclCommInitRank comm 0x55d8c0 rank 0 nranks {n} cudaDev 0 nvmlDev 0 busId 1b000 commId 0x1 - Init COMPLETE"
CHANNELS = TAG + "32 coll channels, 32 collnet channels, 16 nvls channels, 32 p2p channels, 32 p2p channels per peer"


def test_nranks_comes_from_the_comm_line_and_init_complete_only_fills_a_gap():
    log = parse("\n".join([COMM, INIT.format(n=4)]))
    assert (log.nranks, log.nnodes) == (16, 2)
    log = parse("\n".join([INIT.format(n=4), INIT.format(n=8)]))
    assert (log.nranks, log.nnodes) == (4, None)  # the first one counts


def test_nvls_channels_only_from_the_channel_summary():
    assert parse(CHANNELS).nvls_channels == 16
    assert parse(TAG + "NVLS comm 0x55d8c0 uses 16 nvls channels").nvls_channels is None
