#!/usr/bin/env bash
# gnomon's main job on an embedded default, from nothing: installs what is
# missing, builds, and then
#   - makes a real ext4 volume of real files (bench/make-volume.sh) inside a
#     reflink-capable XFS, attaches it to a loop device and MOUNTS it: a live
#     filesystem, as on a server;
#   - backs it up while mounted: the VSS sequence freezes the filesystem only
#     for the instant of a reflink snapshot, and the pipeline images the
#     snapshot;
#   - writes new files into it and takes an incremental backup, which reads
#     only the chunks whose blocks changed (reflink change tracking);
#   - restores it, checks the image with e2fsck and file by file against the
#     live filesystem, verifies every chunk in the repository;
#   - prints the throughput of each step.
#
# Usage (as root):  bash tools/demo.sh
# Settings: GNOMON_DEMO_DIR (default /var/tmp/gnomon-demo), GNOMON_DEMO_SIZE (2G).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it mounts loop devices)" >&2; exit 1; }
bash tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
gnomon=$PWD/build/tools/gnomon

work=${GNOMON_DEMO_DIR:-/var/tmp/gnomon-demo}
size=${GNOMON_DEMO_SIZE:-2G}
xfs=$work/xfs mnt=$work/mnt restored_mnt=$work/restored-mnt
loop=""
cleanup() {
  umount "$restored_mnt" 2>/dev/null || true
  umount "$mnt" 2>/dev/null || true
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  umount "$xfs" 2>/dev/null || true
}
cleanup
rm -rf "$work"
mkdir -p "$xfs" "$mnt" "$restored_mnt"
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "an XFS with reflinks to hold the disk image ($work/xfs.img)"
truncate -s 8G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mount -o loop "$work/xfs.img" "$xfs"

step "a $size ext4 volume of real files, attached and mounted at $mnt"
bash bench/make-volume.sh "$xfs/volume.img" "$size"
loop=$(losetup -f --show "$xfs/volume.img")
mount "$loop" "$mnt"
export GNOMON_REPO=$work/repo

step "gnomon init"
"$gnomon" init
step "gnomon backup $loop   (mounted: frozen for the snapshot, then imaged from it)"
"$gnomon" backup "$loop"
step "writing 64 MB of new files into the live filesystem, then an incremental backup"
mkdir -p "$mnt/new" && cp -r /usr/share/doc "$mnt/new/" 2>/dev/null || true
head -c 32M /usr/bin/gdb > "$mnt/new/gdb.copy" 2>/dev/null || head -c 32M /dev/urandom > "$mnt/new/blob"
sync
"$gnomon" backup --type incremental "$loop"
step "gnomon list"
"$gnomon" list
step "gnomon show latest   (the snapshot set and the VSS documents)"
"$gnomon" show latest | sed -n '1,/^Writers/p'
step "gnomon restore latest $work/restored.img"
"$gnomon" restore latest "$work/restored.img"
step "checking the restored image"
e2fsck -fn "$work/restored.img" >/dev/null 2>&1 && echo "e2fsck -fn: clean"
mount -o loop,ro "$work/restored.img" "$restored_mnt"
diff -r --no-dereference "$mnt" "$restored_mnt" --exclude=lost+found >/dev/null
echo "every file matches the live filesystem ($(find "$mnt" -type f | wc -l) files)"
umount "$restored_mnt"
step "gnomon verify --read-data"
"$gnomon" verify --read-data
du -sb "$work/repo" | awk -v v="$(stat -c %s "$xfs/volume.img")" \
  '{printf "\nrepository: %.1f MB for a %.1f MB volume (%.2fx smaller)\n", $1/1e6, v/1e6, v/$1}'
