#!/usr/bin/env bash
# What an object store costs: gnomon backing up into a local directory
# against gnomon into a real Ceph RADOS Gateway on loopback (tools/rgw.sh,
# one OSD on a sparse file), plain and encrypted, side by side in one run
# with restic's S3 backend on the same gateway. Backup and restore MB/s of
# volume, medians of RUNS; every restore checked (gnomon: e2fsck-clean and
# every file identical; restic byte-identical).
#
# Usage (root): bench/s3.sh [IMAGE] [RUNS]
#   IMAGE defaults to a fresh 2 GiB bench/make-volume.sh volume. With
#   RESULTS=1 the table replaces the "S3" section of RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
img=${1:-}
runs=${2:-3}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
[ "$(id -u)" -eq 0 ] || { echo "s3.sh: needs root (loop mounts, the gateway)" >&2; exit 1; }
for t in restic e2fsck jq /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "s3.sh: $t is missing" >&2; exit 1; }
done
source "$here/lib.sh"
bench_setup
bash "$here/../tools/rgw.sh" install
rgw=$work/rgw
trap 'bash "$here/../tools/rgw.sh" stop "$rgw" >/dev/null 2>&1 || true
      umount "$work/a" "$work/b" 2>/dev/null || true; rm -rf "$work"' EXIT
eval "$(bash "$here/../tools/rgw.sh" start "$rgw")"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run GNOMON_CACHE_DIR=$work/cache
export RESTIC_PASSWORD=bench
out=$work/out.img
table=$work/table.md
declare -A bk rs
row() {  # label, backup s, restore s
  bk[$1]=$(mbs "$2"); rs[$1]=$(mbs "$3")
  printf '| %s | %.2f | %s | %.2f | %s |\n' "$1" "$2" "${bk[$1]}" "$3" "${rs[$1]}" | tee -a "$table"
}
{
  echo "| tool, repository | backup s | backup MB/s | restore s | restore MB/s |"
  echo "|---|---:|---:|---:|---:|"
} | tee "$table"

# gnomon: the three targets alternate run by run, so drift in the
# machine's speed falls on all alike. Each run starts from an empty
# repository (and an empty metadata cache).
version=$("$gnomon" --version | awk '{print $2}')
targets=(local s3 s3-encrypted)
declare -A walls_b walls_r
for ((i = 0; i < runs; i++)); do
  for t in "${targets[@]}"; do
    case $t in
      local) repo=$work/repo; enc=--encryption=none; unset GNOMON_PASSWORD ;;
      s3) repo=s3:$GNOMON_S3_ENDPOINT/bench-$i/plain; enc=--encryption=none; unset GNOMON_PASSWORD ;;
      s3-encrypted) repo=s3:$GNOMON_S3_ENDPOINT/bench-$i/enc; enc=--encryption
        export GNOMON_PASSWORD=bench ;;
    esac
    rm -rf "$work/repo" "$work/cache" "$out"
    "$gnomon" -q --repo "$repo" init "$enc" >/dev/null
    /usr/bin/time -o "$work/time" -f "%e" "$gnomon" -q --repo "$repo" backup "$img" >/dev/null
    walls_b[$t]+="$(tail -1 "$work/time") "
    rm -rf "$work/cache"  # a restore on another machine has no cache
    /usr/bin/time -o "$work/time" -f "%e" "$gnomon" -q --repo "$repo" restore latest "$out"
    walls_r[$t]+="$(tail -1 "$work/time") "
    [ "$i" -eq 0 ] && check_files "$out" "gnomon $t"
  done
done
unset GNOMON_PASSWORD
declare -A labels=([local]="local directory" [s3]="S3 (RGW, loopback)" [s3-encrypted]="S3 (RGW, loopback), encrypted")
for t in "${targets[@]}"; do
  row "gnomon $version, ${labels[$t]}" "$(printf '%s\n' ${walls_b[$t]} | median)" \
    "$(printf '%s\n' ${walls_r[$t]} | median)"
done
rm -rf "$work/repo" "$out"

# restic's S3 backend on the same gateway (one bucket per run).
cd "$(dirname "$img")"
name=$(basename "$img")
walls_rb=() walls_rr=()
for ((i = 0; i < runs; i++)); do
  r=s3:$GNOMON_S3_ENDPOINT/restic-$i
  restic -q -r "$r" init >/dev/null
  /usr/bin/time -o "$work/time" -f "%e" restic -q -r "$r" backup "$name" >/dev/null
  walls_rb+=("$(tail -1 "$work/time")")
  rm -f "$out"
  /usr/bin/time -o "$work/time" -f "%e" bash -c "restic -q -r '$r' dump latest '/$name' > '$out'"
  walls_rr+=("$(tail -1 "$work/time")")
  [ "$i" -eq 0 ] && check_bytes "$out" restic
done
cd - >/dev/null
row "restic $(restic version | awk '{print $2}'), S3 (RGW, loopback)" \
  "$(printf '%s\n' "${walls_rb[@]}" | median)" "$(printf '%s\n' "${walls_rr[@]}" | median)"

l="gnomon $version, local directory" s="gnomon $version, S3 (RGW, loopback)"
e="$s, encrypted" q="restic $(restic version | awk '{print $2}'), S3 (RGW, loopback)"
ratios=$(awk -v lb="${bk[$l]}" -v lr="${rs[$l]}" -v sb="${bk[$s]}" -v sr="${rs[$s]}" \
  -v eb="${bk[$e]}" -v er="${rs[$e]}" -v qb="${bk[$q]}" -v qr="${rs[$q]}" 'BEGIN {
  printf "S3 ÷ local: backup %.2f, restore %.2f. Encrypted S3 ÷ restic S3: backup %.1f×, restore %.1f×.\n",
    sb / lb, sr / lr, eb / qb, er / qr }')
echo "$ratios"
if [ "${RESULTS:-0}" = 1 ]; then
  {
    echo "Run $(date -u +%Y-%m-%d) by \`sudo RESULTS=1 bench/s3.sh\` on $(nproc) ×" \
      "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r);" \
      "image: $size bytes ($( [ -n "${1:-}" ] && echo "$1" || echo "bench/make-volume.sh 2G")," \
      "ext4), page cache warm, median of $runs runs; Ceph $(ceph --version | awk '{print $3}')," \
      "one OSD (bluestore on a sparse file), one radosgw on 127.0.0.1; wall clock of whole" \
      "commands, the encrypted row including its Argon2id (about 0.5 s per command)."
    echo
    cat "$table"
    echo
    echo "$ratios"
  } >"$work/section"
  results_section s3 "S3 (bench/s3.sh, issue 16)" "$work/section"
  echo "s3.sh: table written to $here/RESULTS.md" >&2
fi
