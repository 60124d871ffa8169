#!/usr/bin/env bash
# Pipeline tuning: full backups of one image under one setting changed at a
# time (zstd level, threads, chunks in flight, pack size, used blocks or
# all), each run right after a `zstd -T2 -1` of the same image, so every row
# carries its own reference and the ratio survives a noisy machine. Median
# of RUNS. Prints a Markdown table for bench/RESULTS.md.
#
# Usage: bench/tuning-table.sh IMAGE [RUNS] [GROUPS]
#   GROUPS: any of "level threads tokens pack blocks" (default: all).
#   gnomon from build/ (or $GNOMON); outputs in /var/tmp; page cache warm.
set -euo pipefail
img=${1:?usage: tuning-table.sh IMAGE [RUNS] [GROUPS]}
runs=${2:-3}
groups=${3:-level threads tokens pack blocks}
gnomon=${GNOMON:-$(cd "$(dirname "$0")/.." && pwd)/build/tools/gnomon}
work=$(mktemp -d /var/tmp/gnomon-tuning.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
size=$(stat -L -c %s "$img")
cat "$img" >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# config LABEL INIT_ARGS GLOBAL_ARGS BACKUP_ARGS
config() {
  local label=$1 init=$2 global=$3 backup=$4 walls=() refs=() ratios=() rss=()
  for ((i = 0; i < runs; i++)); do
    rm -f "$work/ref.zst"
    /usr/bin/time -o "$work/t" -f "%e" zstd -T2 -1 -q -f "$img" -o "$work/ref.zst"
    local ref
    ref=$(tail -1 "$work/t")
    rm -rf "$work/repo"
    # shellcheck disable=SC2086
    "$gnomon" init -q --repo "$work/repo" $init
    # shellcheck disable=SC2086
    /usr/bin/time -o "$work/t" -f "%e %M" "$gnomon" -q --repo "$work/repo" $global backup \
      $backup "$img" >/dev/null
    local w
    w=$(tail -1 "$work/t")
    walls+=("${w% *}")
    rss+=("${w#* }")
    refs+=("$ref")
    ratios+=("$(awk -v r="$ref" -v g="${w% *}" 'BEGIN{print r/g}')")
  done
  local wall ref ratio repo
  wall=$(printf '%s\n' "${walls[@]}" | median)
  ref=$(printf '%s\n' "${refs[@]}" | median)
  ratio=$(printf '%s\n' "${ratios[@]}" | median)
  repo=$(du -sb "$work/repo" | cut -f1)
  printf '| %s | %s | %.0f | %s | %.2f | %.2f | %.0f |\n' "$label" "$wall" \
    "$(awk -v s="$size" -v w="$wall" 'BEGIN{print s/w/1e6}')" "$ref" "$ratio" \
    "$(awk -v s="$size" -v r="$repo" 'BEGIN{print s/r}')" \
    "$(printf '%s\n' "${rss[@]}" | median | awk '{print $1/1024}')"
}

echo "| setting | gnomon s | MB/s | zstd -T2 -1 s | MB/s ÷ zstd -1's | volume ÷ repository | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for g in $groups; do
  case $g in
    level) for l in 1 2 3 5; do config "zstd level $l" "--compression $l" "" ""; done ;;
    threads) for t in 1 2; do config "--threads $t" "" "--threads $t" ""; done ;;
    tokens) for t in 2 4 8 16 32; do config "--tokens $t" "" "" "--tokens $t"; done ;;
    pack) for p in 16 64 256; do config "pack size $p MiB" "--pack-size $p" "" ""; done ;;
    blocks) config "used blocks (default)" "" "" ""
            config "--all-blocks" "" "" "--all-blocks" ;;
  esac
done
