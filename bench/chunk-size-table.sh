#!/usr/bin/env bash
# Full backups of one image at each chunk size, median of N runs: wall time,
# MB/s of volume, CPU seconds, repository bytes and chunk-index cost. Prints
# a Markdown table for bench/RESULTS.md.
# Usage: bench/chunk-size-table.sh IMAGE [RUNS]    (gnomon from build/, or $GNOMON)
set -euo pipefail
img=${1:?usage: chunk-size-table.sh IMAGE [RUNS]}
runs=${2:-3}
gnomon=${GNOMON:-$(cd "$(dirname "$0")/.." && pwd)/build/tools/gnomon}
work=$(mktemp -d /var/tmp/gnomon-chunks.XXXXXX)
trap 'rm -rf "$work"' EXIT
size=$(stat -L -c %s "$img")
cat "$img" >/dev/null  # warm page cache: we measure the engine, not the disk
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| chunk | backup s (median) | MB/s | CPU s | repository bytes | volume ÷ repo | chunks stored | index bytes/TiB (disk / RAM) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for kib in 64 128 256 512 1024 2048 4096; do
  walls=() cpus=()
  for ((i = 0; i < runs; i++)); do
    rm -rf "$work/repo"
    "$gnomon" init -q --repo "$work/repo" --chunk-size "$kib"
    /usr/bin/time -o "$work/time" -f "%e %U %S" "$gnomon" --repo "$work/repo" --json backup "$img" >"$work/json"
    out=$(tail -1 "$work/time")
    walls+=("$(echo "$out" | awk '{print $1}')")
    cpus+=("$(echo "$out" | awk '{print $2 + $3}')")
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  cpu=$(printf '%s\n' "${cpus[@]}" | median)
  repo=$(du -sb "$work/repo" | cut -f1)
  stored=$(python3 -c "import json;print(json.load(open('$work/json'))['totals']['new_chunks'])")
  # Per TiB of unique data at this chunk size: 32 B/chunk in index files,
  # about 72 B/chunk in memory (hash node + bucket; see format/chunk_index.cc).
  per_tib=$(( (1 << 40) / (kib * 1024) ))
  echo "| $kib KiB | $wall | $(awk -v s="$size" -v w="$wall" 'BEGIN{printf "%.0f", s/w/1e6}') | $cpu | $repo | $(awk -v s="$size" -v r="$repo" 'BEGIN{printf "%.3f", s/r}') | $stored | $(awk -v n=$per_tib 'BEGIN{printf "%.0f MiB / %.0f MiB", n*32/1048576, n*72/1048576}') |"
done
