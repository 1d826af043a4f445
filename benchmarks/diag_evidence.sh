#!/bin/bash
# Evidence for issue 14 on the lent H200, one device call: a telemetry smoke test (Xid event
# set on; off if that crashes NVML), level 1 (CLI), level 2, level 2 beside a GPU hog (must be
# flagged), the injected faults, and level 3 for L3_DURATION s. Never changes GPU settings.
# At most 8 files into $OUT. FAULTS=0 skips the faults; L3_DURATION sets level 3's --duration.
set -u
OUT=${OUT:?set OUT}
L3_DURATION=${L3_DURATION:-540}
export PYTHONPATH=agent COLUMNS=100 PYTHONUNBUFFERED=1 GPUNODE_STATE_DIR=$(mktemp -d)
t() { local s=$SECONDS; "$@"; local rc=$?; echo "== rc=$rc wall=$((SECONDS - s)) s: $*"; return $rc; }
R=(python3 -X faulthandler benchmarks/diag_record.py)
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,memory.total --format=csv
XID=()
t python3 -X faulthandler benchmarks/diag_smoke.py || { XID=(--no-xid); t python3 benchmarks/diag_smoke.py --no-xid; }
if [ ${#XID[@]} -eq 0 ]; then t python3 -X faulthandler -m gpunode diag --level 1 --json "$OUT/l1.json"
else t "${R[@]}" --level 1 --doc "$OUT/l1.json" --trace /tmp/l1-trace.json "${XID[@]}"; fi
t "${R[@]}" --level 2 --doc "$OUT/l2.json" --trace "$OUT/l2-trace.json" "${XID[@]}"
setsid python3 benchmarks/diag_hog.py & HOG=$!
sleep 8
t "${R[@]}" --level 2 --duration 60 --compare --doc "$OUT/l2-hog.json" --trace /tmp/hog-trace.json "${XID[@]}"
kill -- -"$HOG" 2>/dev/null || kill "$HOG"; wait "$HOG" 2>/dev/null
[ "${FAULTS:-1}" = 1 ] && t python3 benchmarks/diag_faults.py "$OUT/faults.json"
t "${R[@]}" --level 3 --duration "$L3_DURATION" --doc "$OUT/l3.json" --trace "$OUT/l3-trace.json" "${XID[@]}"
