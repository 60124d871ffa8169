#!/usr/bin/env bash
# Adaptive compression (issue 19): the zstd levels gnomon's governor chooses
# and what they buy, by how fast the source reads. For each IMAGE, three
# sources: the page cache warm (the CPU limits the backup); the image read
# cold from this machine's disk (caches dropped before each run); and a
# loop device over the image throttled to SLOW_MBS MB/s by the blkio
# cgroup, as a slow disk would be. Each runs with adaptation off
# (--compression-max 2, the repository's level: what gnomon did before)
# and on (the default). Medians of RUNS: backup seconds and MB/s of the
# volume, bytes stored, volume ÷ stored, restore seconds; the levels are
# those of the median run.
#
# Usage (root): bench/adaptive.sh RUNS IMAGE...   (SLOW_MBS default 150)
#   gnomon from build/ (or $GNOMON); scratch in /var/tmp, removed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gnomon=${GNOMON:-$here/../build/tools/gnomon}
runs=${1:?usage: adaptive.sh RUNS IMAGE...}
shift
slow=${SLOW_MBS:-150}
[ "$(id -u)" -eq 0 ] || { echo "adaptive.sh: needs root (loop devices, cgroups)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/gnomon-adaptive.XXXXXX)
cg=/sys/fs/cgroup/blkio/gnomon-adaptive-$$
loop=""
cleanup() {
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
  [ -d "$cg" ] && rmdir "$cg" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run

# run SOURCE MAX CACHE: one backup into a fresh repository (MAX "": the
# default --compression-max); prints
# "seconds stored_bytes levels restore_seconds".
run() {
  local src=$1 cache=$3 max=()
  [ -n "$2" ] && max=(--compression-max "$2")
  rm -rf "$work/repo" "$work/out.img"
  "$gnomon" init -q --repo "$work/repo"
  sync
  [ "$cache" = warm ] && cat "$src" >/dev/null
  [ "$cache" = warm ] || echo 3 >/proc/sys/vm/drop_caches
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$cache" = slow ]; then
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
      "$gnomon" --json --repo "$work/repo" backup --provider offline "${max[@]}" "$src" \
      >"$work/b.json"
  else
    "$gnomon" --json --repo "$work/repo" backup "${max[@]}" "$src" >"$work/b.json"
  fi
  t1=$(date +%s.%N)
  local r0 r1
  r0=$(date +%s.%N)
  "$gnomon" -q --repo "$work/repo" restore latest "$work/out.img"
  r1=$(date +%s.%N)
  python3 - "$work/b.json" "$t0" "$t1" "$r0" "$r1" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
t = b["totals"]
levels = t.get("compression_levels", {})
lv = " ".join("%s:%s" % (k if k != "0" else "raw", v)
              for k, v in sorted(levels.items(), key=lambda kv: int(kv[0])))
print("%.3f %d %s %.3f" % (float(sys.argv[3]) - float(sys.argv[2]), t["new_stored_bytes"],
                           lv.replace(" ", ",") or "-", float(sys.argv[5]) - float(sys.argv[4])))
PY
}

echo "| volume | source | adaptation | backup s | MB/s | stored MB | volume ÷ stored | levels (new chunks) | restore s |"
echo "|---|---|---|---:|---:|---:|---:|---|---:|"
for img in "$@"; do
  size=$(stat -L -c %s "$img")
  name=$(basename "$img" .img)
  for cache in warm cold slow; do
    src=$img
    if [ "$cache" = slow ]; then
      loop=$(losetup -f --show -r "$img")
      mkdir -p "$cg"
      echo "$(lsblk -dno MAJ:MIN "$loop" | tr -d ' ') $((slow * 1000000))" \
        >"$cg/blkio.throttle.read_bps_device"
      src=$loop
    fi
    for max in 2 ""; do
      : >"$work/rows"
      for _ in $(seq "$runs"); do run "$src" "$max" "$cache" >>"$work/rows"; done
      sort -g "$work/rows" | awk -v n="$runs" -v size="$size" -v name="$name" -v cache="$cache" \
        -v mode="$([ "$max" = 2 ] && echo "off (level 2)" || echo "on (default)")" '
        {s[NR]=$1; b[NR]=$2; l[NR]=$3; r[NR]=$4}
        END {
          k = int((n + 1) / 2)
          printf "| %s | %s | %s | %.2f | %.0f | %.1f | %.2f | %s | %.2f |\n", name, cache, mode,
                 s[k], size / s[k] / 1e6, b[k] / 1e6, size / b[k], l[k], r[k]
        }'
    done
  done
  losetup -d "$loop"
  loop=""
  rmdir "$cg"
done
