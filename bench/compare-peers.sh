#!/usr/bin/env bash
# Backs up and restores one volume image with gnomon and with the tools a user
# would pick instead, in one run on one machine, and prints a Markdown table:
# backup and restore MB/s of volume (median of RUNS), CPU seconds, peak RSS,
# output bytes. Every restore is checked byte-identical to the image.
#
# Usage: bench/compare-peers.sh [IMAGE] [RUNS]
#   IMAGE defaults to a fresh 2 GiB bench/make-volume.sh volume (needs root).
#   gnomon is taken from build/ (or $GNOMON). Page cache is warm: this
#   measures the tools, not the disk; outputs go to /var/tmp.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
img=${1:-}
runs=${2:-3}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
work=$(mktemp -d /var/tmp/gnomon-peers.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$img" ]; then
  img=$work/volume.img
  bash "$here/make-volume.sh" "$img" 2G
fi
size=$(stat -L -c %s "$img")
cat "$img" >/dev/null

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# measure NAME CMD...: runs CMD under /usr/bin/time RUNS times; sets
# m_wall m_cpu m_rss (medians).
measure() {
  local walls=() cpus=() rsss=()
  for ((i = 0; i < runs; i++)); do
    [ -n "${PREP:-}" ] && eval "$PREP"
    /usr/bin/time -o "$work/time" -f "%e %U %S %M" "$@" >/dev/null 2>"$work/err" ||
      { cat "$work/err" >&2; return 1; }
    local t
    t=$(tail -1 "$work/time")
    walls+=("$(echo "$t" | awk '{print $1}')")
    cpus+=("$(echo "$t" | awk '{print $2 + $3}')")
    rsss+=("$(echo "$t" | awk '{print $4}')")
  done
  m_wall=$(printf '%s\n' "${walls[@]}" | median)
  m_cpu=$(printf '%s\n' "${cpus[@]}" | median)
  m_rss=$(printf '%s\n' "${rsss[@]}" | median)
}
mbs() { awk -v s="$size" -v w="$1" 'BEGIN{printf "%.0f", s/w/1e6}'; }
row() {  # tool, backup wall/cpu/rss, bytes, restore wall/cpu
  printf '| %s | %s | %s | %.1f | %.0f | %s | %.2f | %s | %.1f |\n' "$1" "$2" "$(mbs "$2")" "$3" \
    "$(awk -v k="$4" 'BEGIN{print k/1024}')" "$5" "$(awk -v s="$size" -v b="$5" 'BEGIN{print s/b}')" \
    "$(mbs "$6")" "$7"
}
check() { cmp -s "$img" "$1" || { echo "compare-peers: $2 restore differs from the image" >&2; exit 1; }; }

echo "| tool | backup s | backup MB/s | CPU s | peak RSS MiB | output bytes | volume ÷ output | restore MB/s | restore CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"

for level in 1 3; do
  PREP="rm -f $work/v.zst" measure zstd -T2 -$level -q -f "$img" -o "$work/v.zst"
  b=($m_wall $m_cpu $m_rss); bytes=$(stat -c %s "$work/v.zst")
  PREP="rm -f $work/out.img" measure zstd -d -q -f "$work/v.zst" -o "$work/out.img"
  check "$work/out.img" "zstd -$level"
  row "zstd -T2 -$level" "${b[0]}" "${b[1]}" "${b[2]}" "$bytes" "$m_wall" "$m_cpu"
  rm -f "$work/v.zst" "$work/out.img"
done

PREP="rm -rf $work/repo; $gnomon init -q --repo $work/repo" measure "$gnomon" -q --repo "$work/repo" backup "$img"
b=($m_wall $m_cpu $m_rss); bytes=$(du -sb "$work/repo" | cut -f1)
PREP="rm -f $work/out.img" measure "$gnomon" -q --repo "$work/repo" restore latest "$work/out.img"
check "$work/out.img" gnomon
row "gnomon $("$gnomon" --version | awk '{print $2}')" "${b[0]}" "${b[1]}" "${b[2]}" "$bytes" "$m_wall" "$m_cpu"
