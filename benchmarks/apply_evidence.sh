#!/bin/bash
# Evidence for issue 12 on a lent GPU machine, as root, host settings only (GPU settings are
# never changed there): snapshot, plan, `apply --profile training --skip 'gpu.*' --yes`, audit,
# rollback, and the byte-level before/after of every sysctl, every file under /etc and the sysfs
# knobs the profile sets. Writes at most 8 files into $OUT (the device tool's limit).
#
#   PYTHONPATH=agent OUT=/tmp/out bash benchmarks/apply_evidence.sh
# ROOT_ARGS="--sysroot DIR" runs the same sequence on a fixture tree (a dry run of this script).
set -u
OUT=${OUT:?set OUT}
ROOT_ARGS=${ROOT_ARGS:-}
STATE=$(mktemp -d)
G=(python3 -m gpunode)
export COLUMNS=160 PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

knobs() {  # every sysctl value, the sysfs knobs the profile touches, every file under /etc
  if [ -z "$ROOT_ARGS" ]; then
    find /proc/sys -type f -readable 2>/dev/null | sort | while read -r f; do
      printf '%s = %s\n' "$f" "$(tr '\n' ' ' < "$f" 2>/dev/null)"; done | grep -v -e '^/proc/sys/fs/dentry-state' \
        -e '^/proc/sys/fs/inode-' -e '^/proc/sys/fs/file-nr' -e '^/proc/sys/kernel/random/' -e 'ns_last_pid' \
        -e '^/proc/sys/kernel/pty/nr' -e '^/proc/sys/net/netfilter/nf_conntrack_count'
    for f in /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag \
             /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor /sys/block/*/queue/scheduler; do
      [ -r "$f" ] && printf '%s = %s\n' "$f" "$(cat "$f")"; done
    find /etc -xdev \( -type f -o -type l \) -printf '%p %M %s\n' 2>/dev/null | sort
    find /etc -xdev -type f -readable -exec sha256sum {} + 2>/dev/null | sort -k2
  else
    root=${ROOT_ARGS#--sysroot }
    (cd "$root" && find . \( -type f -o -type l \) -exec sha256sum {} + 2>/dev/null | sort -k2)
  fi
}

: > "$OUT/summary.txt"
log "host $(uname -r) $(date -u +%FT%TZ)"
if [ -z "$ROOT_ARGS" ]; then
  snap=$(mktemp -d)/snap
  "${G[@]}" snapshot -o "$snap" -p training >> "$OUT/summary.txt" 2>&1
  log "snapshot rc=$?"
  tar czf "$OUT/snapshot.tgz" -C "$snap" .
fi
knobs > "$STATE.before"
"${G[@]}" apply $ROOT_ARGS --state-dir "$STATE" --profile training --skip 'gpu.*' --dry-run --json \
  > "$OUT/plan.json" 2>> "$OUT/summary.txt"
log "plan (dry run) rc=$?"
python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["skipped"]: print("   ", s["setting"], "-", s["reason"])' "$OUT/plan.json" \
  | tee -a "$OUT/summary.txt"
"${G[@]}" apply $ROOT_ARGS --state-dir "$STATE" --profile training --skip 'gpu.*' --yes > "$OUT/apply.txt" 2>&1
log "apply rc=$?"
knobs > "$STATE.applied"
"${G[@]}" audit $ROOT_ARGS --profile training -v > "$OUT/audit.txt" 2>&1
log "audit rc=$?"
"${G[@]}" rollback $ROOT_ARGS --state-dir "$STATE" > "$OUT/rollback.txt" 2>&1
log "rollback rc=$?"
knobs > "$STATE.after"
{
  echo "### applied vs before (what apply changed)"; diff "$STATE.before" "$STATE.applied"
  echo "### after rollback vs before (empty = byte-exact)"; diff "$STATE.before" "$STATE.after"
  echo "### rc of that diff: $?"
} > "$OUT/diff.txt"
log "before == after rollback: $(diff -q "$STATE.before" "$STATE.after" > /dev/null && echo yes || echo NO)"
