#!/usr/bin/env bash
# Builds a self-contained gnomon for a rescue system, where gnomon is not
# installed: DIR holds the gnomon binary, the programs a disk restore runs
# (e2fsck, resize2fs and tune2fs from e2fsprogs, mlabel from mtools), every
# shared library they load, the dynamic loader, and a static launcher for
# each (tools/rescue_launcher.c). Copy DIR anywhere (a USB stick) and run
# DIR/gnomon; it needs nothing from the system but a kernel, /proc and /dev.
# Usage: tools/make-rescue.sh [GNOMON_BINARY] DIR
#        (default binary: build/tools/gnomon, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 1 ]; then
  bin=build/tools/gnomon
  [ -x "$bin" ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build --target gnomon; }
  dir=$1
else
  bin=$1 dir=$2
fi
[ -x "$bin" ] || { echo "make-rescue: $bin is not an executable" >&2; exit 2; }
mkdir -p "$dir"/{bin,lib,libexec}
cc -static -O2 -o "$dir/.launcher" tools/rescue_launcher.c
helpers=(/sbin/e2fsck /sbin/resize2fs /sbin/tune2fs /usr/bin/mtools)
install -m 0755 "$bin" "$dir/libexec/gnomon"
strip --strip-debug "$dir/libexec/gnomon"  # debug info is most of a RelWithDebInfo build
install -m 0755 "$dir/.launcher" "$dir/gnomon"
for h in "${helpers[@]}"; do
  name=$(basename "$h")
  [ "$name" = mtools ] && name=mlabel  # mtools acts as the command it is named
  install -m 0755 "$(readlink -f "$h")" "$dir/libexec/$name"
  install -m 0755 "$dir/.launcher" "$dir/bin/$name"
done
rm -f "$dir/.launcher"
# Every library any of them loads, and the loader itself.
for b in "$dir"/libexec/*; do
  ldd "$b" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'
done | sort -u | while read -r lib; do
  cp -L "$lib" "$dir/lib/"
done
[ -e "$dir/lib/ld-linux-x86-64.so.2" ] || { echo "make-rescue: no x86-64 loader found" >&2; exit 1; }
echo "$dir: $(du -sh "$dir" | cut -f1), run $dir/gnomon"
