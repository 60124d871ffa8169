#!/usr/bin/env bash
# Makes a realistic ext4 volume image for benchmarks and the demo: real files
# from this machine (binaries and libraries, text, already-compressed files),
# duplicates, and stale data left in free blocks by deleted files, about a
# third free. Not random bytes: dedup and compression see what they would see
# on a real disk.
#
# Usage: bench/make-volume.sh IMAGE [SIZE]     (SIZE as for truncate; default 2G)
# Needs root (loop mount). Deterministic for a given machine's /usr.
set -euo pipefail
img=${1:?usage: make-volume.sh IMAGE [SIZE]}
size=${2:-2G}
[ "$(id -u)" -eq 0 ] || { echo "make-volume.sh: needs root to loop-mount the image" >&2; exit 1; }

rm -f "$img"
truncate -s "$size" "$img"
mkfs.ext4 -q -F -L gnomon-bench "$img"
mnt=$(mktemp -d)
mount -o loop "$img" "$mnt"
trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT
bytes=$(stat -c %s "$img")

# copy_budget DEST BUDGET_BYTES FIND_ARGS...: copies files matching the find
# expression, in sorted order, until BUDGET bytes are copied.
copy_budget() {
  local dest=$1 budget=$2; shift 2
  mkdir -p "$mnt/$dest"
  # awk reads to the end (an early exit would SIGPIPE sort under pipefail).
  find "$@" -type f -readable -printf '%s\t%p\n' 2>/dev/null | sort -t$'\t' -k2 |
    awk -F'\t' -v b="$budget" '{ if (t + $1 <= b) { t += $1; print $2 } }' |
    tar -c --files-from=- -f - 2>/dev/null | tar -x -C "$mnt/$dest" -f -
}

pct() { echo $(( bytes * $1 / 100 )); }
copy_budget bin      "$(pct 28)" /usr/lib/x86_64-linux-gnu /usr/bin /usr/lib/gcc /usr/sbin
copy_budget text     "$(pct 20)" /usr/include /usr/share/doc /usr/share/perl /usr/lib/python3* \
                                 /usr/share/man /usr/share/i18n ! -name '*.gz'
copy_budget packed   "$(pct 8)" /usr/share /usr/lib \( -name '*.gz' -o -name '*.xz' -o \
                                 -name '*.zst' -o -name '*.png' -o -name '*.jpg' -o -name '*.bz2' \)
# Duplicates: a second copy of part of the binaries (a VM image with two
# similar installs, a backup directory left lying around).
copy_budget dup      "$(pct 8)"  "$mnt/bin"
copy_budget logs     "$(pct 14)" /usr/share/doc /usr/include ! -name '*.gz'
sync
# Delete about a fifth of the volume: every third file of bin/ and logs/.
# Their blocks are free now but still hold the old bytes, as on a real disk.
find "$mnt/bin" "$mnt/logs" -type f | sort | awk 'NR % 3 == 0' | xargs -r rm -f
rm -rf "$mnt/logs/usr/include"
sync
df -h "$mnt" | tail -1 | awk -v img="$img" '{ printf "make-volume: %s: %s used of %s (%s)\n", img, $3, $2, $5 }' >&2
