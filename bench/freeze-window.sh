#!/usr/bin/env bash
# How long applications see their filesystem frozen during a backup of a
# live, loaded volume: N backups of a mounted ext4 (on a loop device over a
# reflink XFS file) while a writer program appends to it and an application
# commits SQLite transactions as fast as it can, with gnomon-writer-sqlite
# taking part from its own process (write lock from Freeze to Thaw). Each
# backup reports the time from the first Freeze to the last Thaw; the
# application reports its longest commit (what it saw of the freeze).
# Prints medians and worsts.
#
# Usage (root): bench/freeze-window.sh [RUNS] [SIZE]     (defaults 20, 1G)
set -euo pipefail
runs=${1:-20}
size=${2:-1G}
here=$(cd "$(dirname "$0")" && pwd)
gnomon=${GNOMON:-$here/../build/tools/gnomon}
writer=${RECORD_WRITER:-$here/../build/tests/record_writer}
sqlite_writer=${SQLITE_WRITER:-$here/../build/tools/gnomon-writer-sqlite}
work=$(mktemp -d /var/tmp/gnomon-freeze.XXXXXX)
loop="" wpid="" apid="" spid=""
cleanup() {
  for p in $wpid $apid $spid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  umount "$work/mnt" 2>/dev/null || true
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  umount "$work/xfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/xfs" "$work/mnt"
truncate -s 8G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mount -o loop "$work/xfs.img" "$work/xfs"
bash "$here/make-volume.sh" "$work/xfs/volume.img" "$size" 2>/dev/null
loop=$(losetup -f --show "$work/xfs/volume.img")
mount "$loop" "$work/mnt"
export GNOMON_REPO=$work/repo GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
export GNOMON_WRITER_DIR=$work/run/writers GNOMON_HOOKS_DIR=$work/hooks
"$gnomon" init -q
# The application: one row per transaction, recording each commit's latency
# in ms when it exceeds 5 ms (a stall), with the time it happened.
python3 - "$work/mnt/app.db" "$work/stalls" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("pragma journal_mode=wal")
c.execute("create table if not exists t(id integer primary key, v text)")
out = open(sys.argv[2], "a", buffering=1)
i = 0
while True:
    i += 1
    t0 = time.monotonic()
    c.execute("begin immediate"); c.execute("insert into t values (?, ?)", (i, "x" * 100)); c.execute("commit")
    ms = (time.monotonic() - t0) * 1000
    if ms > 5: out.write("%.1f\n" % ms)
PY
apid=$!
sleep 1
"$sqlite_writer" --dir "$GNOMON_WRITER_DIR" "$work/mnt/app.db" 2>/dev/null &
spid=$!
sleep 0.5
# Load: a writer appending 20,000 records/s, plus dirty data to flush.
"$writer" "$work/mnt/records.txt" 20000 >/dev/null &
wpid=$!
ms=()
for ((i = 0; i < runs; i++)); do
  rm -f "$work/mnt/dirty-$((i - 1))"
  dd if=/dev/urandom of="$work/mnt/dirty-$i" bs=1M count=8 status=none  # unflushed writes
  "$gnomon" -q backup "$loop" >/dev/null || { df -h "$work/mnt" "$work/xfs" >&2; exit 1; }
  ms+=("$("$gnomon" show --json latest | python3 -c 'import json,sys; print(json.load(sys.stdin)["vss"]["frozen_ms"])')")
done
printf '%s\n' "${ms[@]}" | sort -g | awk -v n="$runs" '
  {a[NR]=$1} END {printf "freeze window over %d backups: median %.1f ms, worst %.1f ms, best %.1f ms\n", n, a[int((n+1)/2)], a[n], a[1]}'
"$gnomon" show --json latest | python3 -c 'import json,sys
w = [c["writer_name"] for c in json.load(sys.stdin)["vss"]["bcd"]["components"]]
print("writers with components in the last backup:", ", ".join(sorted(set(w))))'
sort -g "$work/stalls" | awk '{a[NR]=$1} END {if (NR) printf "SQLite application: %d commits over 5 ms; median of those %.1f ms, longest %.1f ms\n", NR, a[int((NR+1)/2)], a[NR]; else print "SQLite application: no commit over 5 ms"}'
