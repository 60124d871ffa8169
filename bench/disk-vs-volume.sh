#!/usr/bin/env bash
# Does a disk backup image its partitions as fast as volume backups of the
# same filesystems? Makes a make-volume.sh ext4 volume, then a GPT disk
# image holding a 1 MiB BIOS boot partition, a 64 MiB EFI system partition
# (FAT) and that volume as its root partition (byte for byte), and backs up,
# alternately and each into a fresh repository, the volume and the disk.
# Prints the median of RUNS (default 5) MB/s for each: the root's own
# imaging rate (its volume's bytes / its seconds) and the whole backup's
# wall time, plus the ratio disk / volume.
#
# Usage: bench/disk-vs-volume.sh [SIZE] [RUNS]     (needs root: make-volume.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
size=${1:-2G}
runs=${2:-5}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
work=$(mktemp -d /var/tmp/gnomon-disk-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

bash "$here/make-volume.sh" "$work/vol.img" "$size" 2>/dev/null
vol_bytes=$(stat -c %s "$work/vol.img")
root_start=$((66 << 20))
truncate -s $((root_start + vol_bytes + (1 << 20))) "$work/disk.img"
printf 'label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649\nsize=64M, type=U\nsize=%d, type=L\n' \
  $((vol_bytes / 512)) | sfdisk -q "$work/disk.img"
mkfs.vfat -F 16 --offset 4096 "$work/disk.img" $((64 * 1024)) >/dev/null 2>&1
dd if="$work/vol.img" of="$work/disk.img" bs=1M seek=$((root_start >> 20)) conv=notrunc,sparse \
  status=none
sync

# One backup into a fresh repository: "<root MB/s> <wall MB/s of the root's bytes>".
one() {
  local src=$1 repo=$work/repo
  rm -rf "$repo"
  "$gnomon" --repo "$repo" init >/dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$("$gnomon" --repo "$repo" --json backup "$src")
  t1=$(date +%s.%N)
  python3 -c '
import json, sys
j = json.loads(sys.argv[1]); wall = float(sys.argv[2]); vb = int(sys.argv[3])
v = [x for x in j["volumes"] if x["size"] == vb][0]
print("%.1f %.1f" % (vb / v["stats"]["seconds"] / 1e6, vb / wall / 1e6))' "$out" "$(echo "$t1 - $t0" | bc)" "$vol_bytes"
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

: > "$work/vol.txt"; : > "$work/disk.txt"
for i in $(seq "$runs"); do
  one "$work/vol.img" >> "$work/vol.txt"
  one "$work/disk.img" >> "$work/disk.txt"
done
vr=$(cut -d' ' -f1 "$work/vol.txt" | median); vw=$(cut -d' ' -f2 "$work/vol.txt" | median)
dr=$(cut -d' ' -f1 "$work/disk.txt" | median); dw=$(cut -d' ' -f2 "$work/disk.txt" | median)
printf '%-34s %12s %12s\n' "$size ext4 (make-volume.sh), $runs runs" "root MB/s" "wall MB/s"
printf '%-34s %12s %12s\n' "volume backup of the filesystem" "$vr" "$vw"
printf '%-34s %12s %12s\n' "disk backup (GPT, BIOS boot, ESP)" "$dr" "$dw"
printf '%-34s %12s %12s\n' "disk / volume" "$(echo "scale=2; $dr / $vr" | bc)" "$(echo "scale=2; $dw / $vw" | bc)"
