#!/usr/bin/env bash
# Using a backup without restoring it, measured: what `gnomon mount` and
# `gnomon serve` read per second against `gnomon restore`, how long a cold
# `find` over a mounted volume takes, and how long a disk backup takes to
# boot from its NBD export against booting the raw disk image.
#
# Each read starts cold: caches dropped, and a new mount or server (its
# chunk cache empty). Prints the median of RUNS (default 3) per row.
#
# Usage: bench/access.sh [SIZE] [RUNS] [BOOT_RUNS]    (needs root)
#   SIZE: of the make-volume.sh volume (default 2G); BOOT_RUNS default 3
#   (0 skips the boot rows).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
size=${1:-2G}
runs=${2:-3}
boot_runs=${3:-3}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
work=$(mktemp -d /var/tmp/gnomon-access-bench.XXXXXX)
mnt=$work/mnt
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"

bash "$here/make-volume.sh" "$work/vol.img" "$size" 2>/dev/null
repo=$work/repo
"$gnomon" --repo "$repo" init >/dev/null
"$gnomon" --repo "$repo" -q backup "$work/vol.img" >/dev/null
vol_bytes=$(stat -c %s "$work/vol.img")

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
rate() { echo "scale=1; $1 / ($3 - $2) / 1000000" | bc; }   # bytes t0 t1 -> MB/s
mount_fresh() {
  "$gnomon" --repo "$repo" -q mount "$mnt" 2>>"$work/mount.log" &
  mount_pid=$!
  for _ in $(seq 200); do mountpoint -q "$mnt" && return; sleep 0.05; done
  echo "access.sh: the mount did not come up" >&2; cat "$work/mount.log" >&2; exit 1
}
umount_fresh() { fusermount3 -u "$mnt"; wait "$mount_pid"; }

# The largest file in the volume, by its path inside it.
mount_fresh
big=$(cd "$mnt/latest/vol" && find . -type f -printf '%s %P\n' | sort -n | tail -1)
big_bytes=${big%% *}; big_path=${big#* }
files=$(find "$mnt/latest/vol" | wc -l)
umount_fresh

for i in $(seq "$runs"); do
  cold
  "$gnomon" --repo "$repo" --json restore latest "$work/out.img" >"$work/r.json"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f" % (j["bytes"] / j["seconds"] / 1e6))' \
    "$work/r.json" >> "$work/restore.txt"
  rm -f "$work/out.img"

  cold; mount_fresh
  t0=$(now); cat "$mnt/latest/vol/$big_path" > /dev/null; t1=$(now)
  rate "$big_bytes" "$t0" "$t1" >> "$work/file.txt"
  umount_fresh

  cold; mount_fresh
  t0=$(now); find "$mnt/latest/vol" -printf '%s %m %u\n' > /dev/null; t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/find.txt"
  umount_fresh

  cold; mount_fresh
  t0=$(now); cat "$mnt/latest/vol.img" > /dev/null; t1=$(now)
  rate "$vol_bytes" "$t0" "$t1" >> "$work/img.txt"
  umount_fresh

  cold
  rm -f "$work/nbd.sock"
  "$gnomon" --repo "$repo" -q serve latest --socket "$work/nbd.sock" 2>>"$work/serve.log" &
  serve=$!
  for _ in $(seq 200); do nbdinfo --size "nbd+unix:///?socket=$work/nbd.sock" >/dev/null 2>&1 && break; sleep 0.05; done
  t0=$(now); nbdcopy "nbd+unix:///?socket=$work/nbd.sock" null:; t1=$(now)
  rate "$vol_bytes" "$t0" "$t1" >> "$work/nbd.txt"
  kill "$serve"; wait "$serve" || true
done

printf '%-52s %10s\n' "$size make-volume.sh ext4, $files entries, $runs runs (median)" "MB/s"
printf '%-52s %10s\n' "gnomon restore (whole volume to a file)" "$(median < "$work/restore.txt")"
printf '%-52s %10s\n' "mount: cat of the largest file ($((big_bytes >> 20)) MiB) via <volume>/" "$(median < "$work/file.txt")"
printf '%-52s %10s\n' "mount: cat of <volume>.img" "$(median < "$work/img.txt")"
printf '%-52s %10s\n' "serve: nbdcopy of the export to null:" "$(median < "$work/nbd.txt")"
printf '%-52s %10s\n' "mount: cold find -printf over <volume>/ (seconds)" "$(median < "$work/find.txt")"

[ "$boot_runs" -gt 0 ] || exit 0
# Boot: the raw disk image (throw-away qcow2 overlay) against the backup's
# export (gnomon boot-check), BIOS, until the test disk's marker.
bash "$here/../tests/bootable_disk.sh" make "$work/disk.img" gpt >/dev/null
"$gnomon" --repo "$repo" -q backup "$work/disk.img" >/dev/null
for i in $(seq "$boot_runs"); do
  t0=$(now); bash "$here/../tests/bootable_disk.sh" boot "$work/disk.img" bios 300 >/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/boot-raw.txt"
  t0=$(now); "$gnomon" --repo "$repo" -q boot-check --marker GNOMON-BOOTED >/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/boot-nbd.txt"
done
printf '%-52s %10s\n' "boot to marker, raw image under QEMU TCG (seconds)" "$(median < "$work/boot-raw.txt")"
printf '%-52s %10s\n' "boot to marker, gnomon boot-check (seconds)" "$(median < "$work/boot-nbd.txt")"
