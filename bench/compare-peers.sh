#!/usr/bin/env bash
# Backs up and restores one realistic ext4 volume image with gnomon and with
# the tools a user would pick instead, in one run on one machine: zstd of the
# raw image, partclone (used blocks) piped to zstd, borg, restic and casync.
# For each: backup and restore MB/s of volume (median of RUNS), CPU seconds,
# peak RSS, output bytes. Every restore is checked: byte-identical to the
# image for whole-volume tools; e2fsck-clean with every file identical for
# used-block imaging (gnomon's default on ext4, partclone).
#
# Usage (root): bench/compare-peers.sh [IMAGE | corpus] [RUNS]
#   IMAGE defaults to a fresh 2 GiB bench/make-volume.sh volume; `corpus`
#   runs every profile of bench/volumes/ instead (bench/corpus.sh).
#   gnomon is taken from build/ (or $GNOMON). The page cache is warm: this
#   measures the tools, not the disk; outputs go to /var/tmp. Missing tools
#   are installed from Debian. With RESULTS=1 the table, with the date,
#   versions and machine, replaces the "Peer comparison" section of
#   bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ "${1:-}" = corpus ] && exec bash "$here/corpus.sh" "${2:-3}"
img=${1:-}
runs=${2:-3}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
[ "$(id -u)" -eq 0 ] || { echo "compare-peers.sh: needs root (loop mounts)" >&2; exit 1; }
need=()
for t in zstd:zstd partclone.ext4:partclone borg:borgbackup restic:restic casync:casync \
         /usr/bin/time:time; do
  command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
source "$here/lib.sh"
bench_setup
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
export RESTIC_PASSWORD=bench BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# measure CMD...: runs CMD under /usr/bin/time RUNS times, after $PREP each
# time; sets m_wall m_cpu m_rss (medians). CPU counts every process of a
# pipeline; peak RSS is the largest single process.
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
table=$work/table.md
row() {  # tool, backup wall/cpu/rss, bytes, restore wall/cpu/rss
  printf '| %s | %s | %s | %.1f | %.0f | %s | %.2f | %s | %s | %.1f | %.0f |\n' "$1" "$2" \
    "$(mbs "$2")" "$3" "$(awk -v k="$4" 'BEGIN{print k/1024}')" "$5" \
    "$(awk -v s="$size" -v b="$5" 'BEGIN{print s/b}')" "$6" "$(mbs "$6")" "$7" \
    "$(awk -v k="$8" 'BEGIN{print k/1024}')" | tee -a "$table"
}
out=$work/out.img

{
  echo "| tool | backup s | backup MB/s | CPU s | peak RSS MiB | output bytes | volume ÷ output | restore s | restore MB/s | restore CPU s | restore RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} | tee "$table"

for level in 1 3; do
  PREP="rm -f $work/v.zst" measure zstd -T2 -$level -q -f "$img" -o "$work/v.zst"
  b=($m_wall $m_cpu $m_rss); bytes=$(stat -c %s "$work/v.zst")
  PREP="rm -f $out" measure zstd -d -q -f "$work/v.zst" -o "$out"
  check_bytes "$out" "zstd -$level"
  row "zstd -T2 -$level" "${b[@]}" "$bytes" "$m_wall" "$m_cpu" "$m_rss"
  rm -f "$work/v.zst" "$out"
done

PREP="rm -f $work/pc.zst" measure bash -c \
  "partclone.ext4 -c -q -s '$img' -o - 2>/dev/null | zstd -T2 -3 -q -o '$work/pc.zst'"
b=($m_wall $m_cpu $m_rss); bytes=$(stat -c %s "$work/pc.zst")
PREP="rm -f $out; truncate -s $size $out" measure bash -c \
  "zstd -dc '$work/pc.zst' | partclone.ext4 -r -q -s - -O '$out' >/dev/null 2>&1"
check_files "$out" "partclone"
row "partclone.ext4 $(partclone.ext4 -v 2>&1 | grep -o 'v[0-9.]*' | head -1) \| zstd -T2 -3" \
  "${b[@]}" "$bytes" "$m_wall" "$m_cpu" "$m_rss"
rm -f "$work/pc.zst" "$out"

cd "$(dirname "$img")"
name=$(basename "$img")
PREP="rm -rf $work/borg; borg init -e none $work/borg" measure \
  borg create --compression zstd,3 --chunker-params fixed,4194304 "$work/borg::one" "$name"
b=($m_wall $m_cpu $m_rss); bytes=$(du -sb "$work/borg" | cut -f1)
PREP="rm -f $out" measure bash -c "borg extract --stdout '$work/borg::one' '$name' > '$out'"
check_bytes "$out" borg
row "borg $(borg --version | awk '{print $2}') zstd,3 fixed 4 MiB" "${b[@]}" "$bytes" "$m_wall" \
  "$m_cpu" "$m_rss"
rm -rf "$work/borg" "$out"

PREP="rm -rf $work/restic; restic init -q --repository-version 2 -r $work/restic >/dev/null" \
  measure restic -q -r "$work/restic" backup "$name"
b=($m_wall $m_cpu $m_rss); bytes=$(du -sb "$work/restic" | cut -f1)
PREP="rm -f $out" measure bash -c \
  "restic -q -r '$work/restic' dump latest '/$name' > '$out'"  # restic stores it as /NAME
check_bytes "$out" restic
row "restic $(restic version | awk '{print $2}') (compression auto)" "${b[@]}" "$bytes" \
  "$m_wall" "$m_cpu" "$m_rss"
rm -rf "$work/restic" "$out"

PREP="rm -rf $work/casync; mkdir -p $work/casync" measure \
  casync make --store="$work/casync/store" "$work/casync/v.caibx" "$name"
b=($m_wall $m_cpu $m_rss); bytes=$(du -sb "$work/casync" | cut -f1)
PREP="rm -f $out" measure casync extract --store="$work/casync/store" "$work/casync/v.caibx" "$out"
check_bytes "$out" casync
row "casync $(casync --version | awk '{print $2}')" "${b[@]}" "$bytes" "$m_wall" "$m_cpu" "$m_rss"
rm -rf "$work/casync" "$out"
cd - >/dev/null

version=$("$gnomon" --version | awk '{print $2}')
for mode in used all; do
  flag=() && [ $mode = all ] && flag=(--all-blocks)
  PREP="rm -rf $work/repo; $gnomon init -q --repo $work/repo" measure \
    "$gnomon" -q --repo "$work/repo" backup "${flag[@]}" "$img"
  b=($m_wall $m_cpu $m_rss); bytes=$(du -sb "$work/repo" | cut -f1)
  PREP="rm -f $out" measure "$gnomon" -q --repo "$work/repo" restore latest "$out"
  if [ $mode = all ]; then
    check_bytes "$out" "gnomon --all-blocks"
    label="gnomon $version --all-blocks"
  else
    check_files "$out" gnomon
    label="gnomon $version (used blocks)"
  fi
  row "$label" "${b[@]}" "$bytes" "$m_wall" "$m_cpu" "$m_rss"
  rm -rf "$work/repo" "$out"
done

[ -z "${TABLE_OUT:-}" ] || cp "$table" "$TABLE_OUT"  # bench/corpus.sh gathers these
if [ "${RESULTS:-0}" = 1 ]; then
  results=$here/RESULTS.md
  {
    echo "Run $(date -u +%Y-%m-%d) by \`sudo RESULTS=1 bench/compare-peers.sh\` on $(nproc) ×" \
      "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g |
        awk '/Mem:/{print $2}') GiB, Linux $(uname -r); image: $size bytes" \
      "($( [ -n "${1:-}" ] && echo "$1" || echo "bench/make-volume.sh 2G")), page cache warm," \
      "median of $runs runs. zstd $(zstd --version | grep -o 'v[0-9.]*')."
    echo
    cat "$table"
  } >"$work/section"
  results_section compare-peers "Peer comparison (bench/compare-peers.sh)" "$work/section"
  echo "compare-peers: table written to $results" >&2
fi
