#!/bin/bash
# Evidence for the topology issue on a lent GPU machine (reads only; no GPU setting changes):
# nvidia-smi's own matrix, a snapshot (which now records the PCI tree), `gpunode topo`, `expect`,
# the topology audit checks, a quick bench compared with the shipped baseline (the links' figure
# shown beside it) and `compare --baseline topology` (judged against the links alone), and the
# diag tests marked `gpu`. At most 8 files into $OUT (the device tool's limit).
#
#   PYTHONPATH=agent OUT=/tmp/out bash benchmarks/topology_evidence.sh
set -u
OUT=${OUT:?set OUT}
G=(python3 -m gpunode)
export COLUMNS=160 PYTHONUNBUFFERED=1
LOG="$OUT/topology-evidence.txt"
run() { echo "== $*" >>"$LOG"; "$@" >>"$LOG" 2>&1; echo "-- exit $?" >>"$LOG"; }

run nvidia-smi topo -m
run nvidia-smi -q -d PCIE
run lspci -tv
snap=$(mktemp -d)/snap
run "${G[@]}" snapshot -o "$snap"
tar czf "$OUT/snapshot-topology.tgz" -C "$(dirname "$snap")" snap
run "${G[@]}" topo
"${G[@]}" topo --format json >"$OUT/topo.json" 2>>"$LOG"
run "${G[@]}" expect
"${G[@]}" expect --format json >"$OUT/expect.json" 2>>"$LOG"
run "${G[@]}" audit --area topology -v
empty=$(mktemp -d)
run "${G[@]}" bench --quick --no-history --baselines "$empty" --json "$OUT/bench-quick.json"
run "${G[@]}" compare "$OUT/bench-quick.json" --baseline topology
"${G[@]}" compare "$OUT/bench-quick.json" --baseline topology --json >"$OUT/compare-topology.json" 2>>"$LOG"
run python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_diag.py
python3 benchmarks/nccl_log_record.py >"$OUT/nccl-info.log" 2>&1
echo "== nccl_log_record exit $?" >>"$LOG"
