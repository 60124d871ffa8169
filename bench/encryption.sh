#!/usr/bin/env bash
# What encryption costs: gnomon plain against gnomon encrypted (AES-256-GCM,
# keyed BLAKE3 ids), side by side in one run with `zstd -T2 -1` and the
# peers with encryption on (restic: always; borg: repokey, AES-CTR +
# HMAC-SHA-256, the faster borg mode on a CPU with SHA-NI). Backup and
# restore MB/s of volume, medians of RUNS; every restore checked (gnomon:
# e2fsck-clean and every file identical; the others byte-identical).
#
# Usage (root): bench/encryption.sh [IMAGE] [RUNS]
#   IMAGE defaults to a fresh 2 GiB bench/make-volume.sh volume. With
#   RESULTS=1 the table replaces the "Encryption" section of RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
img=${1:-}
runs=${2:-5}
gnomon=${GNOMON:-$here/../build/tools/gnomon}
[ "$(id -u)" -eq 0 ] || { echo "encryption.sh: needs root (loop mounts)" >&2; exit 1; }
command -v restic >/dev/null && command -v borg >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup >/dev/null
for t in zstd restic borg e2fsck jq /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "encryption.sh: $t is missing" >&2; exit 1; }
done
source "$here/lib.sh"
bench_setup
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
out=$work/out.img

measure() {  # CMD...: sets m_wall (median of RUNS, $PREP before each)
  local walls=()
  for ((i = 0; i < runs; i++)); do
    [ -n "${PREP:-}" ] && eval "$PREP"
    sync  # no command pays for the writeback of the one before
    /usr/bin/time -o "$work/time" -f "%e" "$@" >/dev/null 2>"$work/err" ||
      { cat "$work/err" >&2; return 1; }
    walls+=("$(tail -1 "$work/time")")
  done
  m_wall=$(printf '%s\n' "${walls[@]}" | median)
}
table=$work/table.md
declare -A bk rs
row() {  # label, backup s, bytes, restore s
  bk[$1]=$(mbs "$2"); rs[$1]=$(mbs "$4")
  printf '| %s | %.2f | %s | %s | %.2f | %s |\n' "$1" "$2" "${bk[$1]}" "$3" "$4" "${rs[$1]}" |
    tee -a "$table"
}
{
  echo "| tool | backup s | backup MB/s | stored bytes | restore s | restore MB/s |"
  echo "|---|---:|---:|---:|---:|---:|"
} | tee "$table"

PREP="rm -f $work/v.zst" measure zstd -T2 -1 -q -f "$img" -o "$work/v.zst"
b=$m_wall; bytes=$(stat -c %s "$work/v.zst")
PREP="rm -f $out" measure zstd -d -q -f "$work/v.zst" -o "$out"
check_bytes "$out" zstd
row "zstd -T2 -1" "$b" "$bytes" "$m_wall"
rm -f "$work/v.zst" "$out"

# The gnomon rows alternate run by run, so drift in the machine's speed
# falls on all alike. "encrypted" is unlocked by a passphrase (Argon2id,
# about 0.5 s per command by design), "key file" by a key-file slot (what a
# scheduled job uses: no KDF).
version=$("$gnomon" --version | awk '{print $2}')
modes=(plain encrypted "encrypted, key file")
declare -A walls_b walls_r bytes_g pipe_b pipe_r
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/key"  # 64 hex characters
for ((i = 0; i < runs; i++)); do
  for mode in "${modes[@]}"; do
    unset GNOMON_PASSWORD GNOMON_KEY_FILE
    case $mode in
      plain) enc=--encryption=none ;;
      encrypted) export GNOMON_PASSWORD=bench; enc=--encryption ;;
      *) export GNOMON_KEY_FILE=$work/key; enc=--encryption ;;
    esac
    rm -rf "$work/repo" "$out"
    "$gnomon" -q --repo "$work/repo" init "$enc" >/dev/null
    sync
    /usr/bin/time -o "$work/time" -f "%e" "$gnomon" --json --repo "$work/repo" backup "$img" \
      >"$work/json"
    walls_b[$mode]+="$(tail -1 "$work/time") "
    pipe_b[$mode]+="$(jq .totals.seconds "$work/json") "
    bytes_g[$mode]=$(du -sb "$work/repo" | cut -f1)
    sync
    /usr/bin/time -o "$work/time" -f "%e" "$gnomon" --json --repo "$work/repo" restore latest \
      "$out" >"$work/json"
    walls_r[$mode]+="$(tail -1 "$work/time") "
    pipe_r[$mode]+="$(jq .seconds "$work/json") "
    [ "$i" -eq 0 ] && check_files "$out" "gnomon $mode"
  done
done
unset GNOMON_PASSWORD GNOMON_KEY_FILE
# Wall clock counts opening the repository: an encrypted one's Argon2id
# (about 0.5 s by design). The pipeline rows are gnomon's own timing of
# the data path (snapshot to committed record; restore's reads and writes).
for mode in "${modes[@]}"; do
  b=$(printf '%s\n' ${walls_b[$mode]} | median)
  r=$(printf '%s\n' ${walls_r[$mode]} | median)
  row "gnomon $version $mode" "$b" "${bytes_g[$mode]}" "$r"
done
for mode in plain encrypted; do
  b=$(printf '%s\n' ${pipe_b[$mode]} | median)
  r=$(printf '%s\n' ${pipe_r[$mode]} | median)
  row "gnomon $version $mode, data path only" "$b" "${bytes_g[$mode]}" "$r"
done
rm -rf "$work/repo" "$out"

cd "$(dirname "$img")"
name=$(basename "$img")
PREP="rm -rf $work/borg; borg init -e repokey $work/borg >/dev/null 2>&1" measure \
  borg create --compression zstd,3 --chunker-params fixed,4194304 "$work/borg::one" "$name"
b=$m_wall; bytes=$(du -sb "$work/borg" | cut -f1)
PREP="rm -f $out" measure bash -c "borg extract --stdout '$work/borg::one' '$name' > '$out'"
check_bytes "$out" borg
row "borg $(borg --version | awk '{print $2}') repokey, zstd,3, fixed 4 MiB" "$b" "$bytes" "$m_wall"
rm -rf "$work/borg" "$out"

PREP="rm -rf $work/restic; restic init -q --repository-version 2 -r $work/restic >/dev/null" \
  measure restic -q -r "$work/restic" backup "$name"
b=$m_wall; bytes=$(du -sb "$work/restic" | cut -f1)
PREP="rm -f $out" measure bash -c "restic -q -r '$work/restic' dump latest '/$name' > '$out'"
check_bytes "$out" restic
row "restic $(restic version | awk '{print $2}') (AES-256-CTR + Poly1305)" "$b" "$bytes" "$m_wall"
rm -rf "$work/restic" "$out"
cd - >/dev/null

ratio_line() {  # label suffix [encrypted row]
  local p="gnomon $version plain$1" e="gnomon $version ${3:-encrypted}$1"
  awk -v pb="${bk[$p]}" -v eb="${bk[$e]}" -v pr="${rs[$p]}" -v er="${rs[$e]}" \
    -v zb="${bk[zstd -T2 -1]}" -v what="$2" 'BEGIN {
      printf "%s: encrypted ÷ plain: backup %.2f, restore %.2f; encrypted backup ÷ zstd -T2 -1: %.2f.\n",
        what, eb / pb, er / pr, eb / zb }'
}
ratios=$(ratio_line "" "Wall clock, passphrase"
  ratio_line "" "Wall clock, key file" "encrypted, key file"
  ratio_line ", data path only" "Data path")
echo "$ratios"
if [ "${RESULTS:-0}" = 1 ]; then
  {
    echo "Run $(date -u +%Y-%m-%d) by \`sudo RESULTS=1 bench/encryption.sh\` on $(nproc) ×" \
      "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r);" \
      "image: $size bytes ($( [ -n "${1:-}" ] && echo "$1" || echo "bench/make-volume.sh 2G")," \
      "ext4), page cache warm, median of $runs runs; the gnomon rows alternate run by run."
    echo
    cat "$table"
    echo
    echo "$ratios"
  } >"$work/section"
  results_section encryption "Encryption (bench/encryption.sh, issue 17)" "$work/section"
  echo "encryption.sh: table written to $here/RESULTS.md" >&2
fi
