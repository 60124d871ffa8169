#!/usr/bin/env bash
# A/B of two gnomon builds on one volume, in one session, runs interleaved
# (A B A B ...) so drift in the machine hits both alike: full backup into a
# fresh repository, then restore, each timed; prints the medians and B/A.
# Usage: bench/ab-build.sh OLD_GNOMON NEW_GNOMON VOLUME [RUNS=5] [SCRATCH=/var/tmp]
# Example (as root, from a checkout with the new build in build/):
#   git worktree add /tmp/old <rev> && cmake -S /tmp/old -B /tmp/oldbuild -G Ninja \
#     -DBUILD_TESTING=OFF -DGNOMON_BUILD_BENCH=OFF && ninja -C /tmp/oldbuild gnomon
#   bash bench/make-volume.sh /var/tmp/vol2g.img 2G
#   bash bench/ab-build.sh /tmp/oldbuild/tools/gnomon build/tools/gnomon /var/tmp/vol2g.img 5
set -euo pipefail
a=$(realpath "$1") b=$(realpath "$2") vol=$(realpath "$3") runs=${4:-5} scratch=${5:-/var/tmp}
work=$(mktemp -d "$scratch/gnomon-ab-XXXXXX")
trap 'rm -rf "$work"' EXIT
cat "$vol" >/dev/null  # warm the page cache: measure the tools, not the disk
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run GNOMON_HOOKS_DIR=$work/hooks \
  GNOMON_WRITER_DIR=$work/run/writers

run() {  # run BIN LABEL: one backup and one restore, appends "label backup_s restore_s"
  local bin=$1 label=$2 repo=$work/repo
  rm -rf "$repo" "$work/out"
  "$bin" init --repo "$repo" -q
  local t0 t1 t2
  t0=$(date +%s.%N)
  "$bin" --repo "$repo" -q backup "$vol" >/dev/null
  t1=$(date +%s.%N)
  "$bin" --repo "$repo" -q restore latest "$work/out"
  t2=$(date +%s.%N)
  echo "$label $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') $(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}') $(du -sb "$repo" | cut -f1)" >>"$work/times"
}
for ((i = 0; i < runs; i++)); do
  run "$a" A
  run "$b" B
done
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
size=$(stat -c %s "$vol")
for col in 2 3; do
  name=$([ "$col" = 2 ] && echo backup || echo restore)
  ma=$(awk -v c=$col '$1=="A"{print $c}' "$work/times" | median)
  mb=$(awk -v c=$col '$1=="B"{print $c}' "$work/times" | median)
  awk -v n="$name" -v a="$ma" -v b="$mb" -v s="$size" 'BEGIN {
    printf "%-8s A %.2f s (%.0f MB/s)  B %.2f s (%.0f MB/s)  B/A time %.3f\n", n, a, s/a/1e6, b, s/b/1e6, b/a }'
done
printf 'repository bytes: A %s  B %s\n' "$(awk '$1=="A"{print $4; exit}' "$work/times")" \
  "$(awk '$1=="B"{print $4; exit}' "$work/times")"
