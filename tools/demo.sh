#!/usr/bin/env bash
# gnomon's main job on an embedded default, from nothing: installs what is
# missing, builds, makes a real ext4 volume of real files on a loop device,
# backs it up, backs it up again (nothing new is stored), restores it, checks
# the restored image byte for byte and with e2fsck, verifies every chunk in
# the repository, and prints the throughput of each step.
#
# Usage (as root):  bash tools/demo.sh
# Settings: GNOMON_DEMO_DIR (default /var/tmp/gnomon-demo), GNOMON_DEMO_SIZE (2G).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates a loop device)" >&2; exit 1; }
bash tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
gnomon=$PWD/build/tools/gnomon

work=${GNOMON_DEMO_DIR:-/var/tmp/gnomon-demo}
size=${GNOMON_DEMO_SIZE:-2G}
rm -rf "$work"
mkdir -p "$work"
step() { printf '\n== %s\n' "$*"; }

step "making a $size ext4 volume of real files ($work/volume.img)"
bash bench/make-volume.sh "$work/volume.img" "$size"
loop=$(losetup -f --show "$work/volume.img")
trap 'losetup -d "$loop"' EXIT
export GNOMON_REPO=$work/repo

step "gnomon init"
"$gnomon" init
step "gnomon backup $loop   (full)"
"$gnomon" backup "$loop"
step "gnomon backup $loop   (again: every chunk is already stored)"
"$gnomon" backup "$loop"
step "gnomon list"
"$gnomon" list
step "gnomon restore latest $work/restored.img"
"$gnomon" restore latest "$work/restored.img"
step "checking the restored image"
cmp "$work/volume.img" "$work/restored.img"
echo "restored image is byte-identical to $loop"
e2fsck -fn "$work/restored.img" >/dev/null 2>&1 && echo "e2fsck -fn: clean"
step "gnomon verify --read-data"
"$gnomon" verify --read-data
du -sb "$work/repo" "$work/volume.img" |
  awk 'NR==1{r=$1} NR==2{v=$1} END{printf "\nrepository: %.1f MB for a %.1f MB volume (%.2fx smaller)\n", r/1e6, v/1e6, v/r}'
