#!/usr/bin/env bash
# How long applications see their filesystem frozen during a backup of a
# live, loaded volume: N backups of a mounted ext4 (on a loop device over a
# reflink XFS file) while a writer program appends to it, each reporting the
# time from the first Freeze to the last Thaw. Prints median and worst.
#
# Usage (root): bench/freeze-window.sh [RUNS] [SIZE]     (defaults 20, 1G)
set -euo pipefail
runs=${1:-20}
size=${2:-1G}
here=$(cd "$(dirname "$0")" && pwd)
gnomon=${GNOMON:-$here/../build/tools/gnomon}
writer=${RECORD_WRITER:-$here/../build/tests/record_writer}
work=$(mktemp -d /var/tmp/gnomon-freeze.XXXXXX)
loop="" wpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; wait 2>/dev/null || true
  umount "$work/mnt" 2>/dev/null || true
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  umount "$work/xfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/xfs" "$work/mnt"
truncate -s 4G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mount -o loop "$work/xfs.img" "$work/xfs"
bash "$here/make-volume.sh" "$work/xfs/volume.img" "$size" 2>/dev/null
loop=$(losetup -f --show "$work/xfs/volume.img")
mount "$loop" "$work/mnt"
export GNOMON_REPO=$work/repo GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
"$gnomon" init -q
# Load: a writer appending 20,000 records/s, plus dirty data to flush.
"$writer" "$work/mnt/records.txt" 20000 >/dev/null &
wpid=$!
ms=()
for ((i = 0; i < runs; i++)); do
  dd if=/dev/urandom of="$work/mnt/dirty-$i" bs=1M count=8 status=none  # unflushed writes
  "$gnomon" -q backup "$loop" >/dev/null
  ms+=("$("$gnomon" show --json latest | python3 -c 'import json,sys; print(json.load(sys.stdin)["vss"]["frozen_ms"])')")
done
printf '%s\n' "${ms[@]}" | sort -g | awk -v n="$runs" '
  {a[NR]=$1} END {printf "freeze window over %d backups: median %.1f ms, worst %.1f ms, best %.1f ms\n", n, a[int((n+1)/2)], a[n], a[1]}'
