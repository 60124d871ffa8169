#!/usr/bin/env bash
# An incremental without change tracking to trust: the base snapshot is
# deleted after the first incremental, so the second reads the whole volume
# and compares it with its parent, as every incremental of a volume without
# reflinks does. Prints its time and the bytes it added to the repository.
#
# Usage (root): bench/incremental-fallback.sh [SIZE] [PERCENTS] [PATTERN]
#   defaults: 4G "0.01 1" scattered (PATTERN as in mutate.py)
# GNOMON_B=/path/to/another/gnomon adds a row for a second build (A/B).
set -euo pipefail
size=${1:-4G}
percents=${2:-0.01 1}
pattern=${3:-scattered}
here=$(cd "$(dirname "$0")" && pwd)
builds=("${GNOMON:-$here/../build/tools/gnomon}")
[ -z "${GNOMON_B:-}" ] || builds+=("$GNOMON_B")
. "$here/reflink-volume.sh"
export GNOMON_RUNTIME_DIR=$work/run GNOMON_STATE_DIR=$work/state
vol=$work/xfs/vol.img

echo "| changed | build | full s | fallback s | fallback ÷ full | bytes added | restored |"
echo "|---:|---|---:|---:|---:|---:|---|"
for pct in $percents; do
  for k in "${!builds[@]}"; do
    g=${builds[$k]}
    rm -rf "$work/repo" "$work/state" "$vol"
    cp --reflink=always "$work/xfs/base.img" "$vol"
    "$g" init -q --repo "$work/repo"
    cat "$vol" >/dev/null
    /usr/bin/time -f %e -o "$work/t" "$g" -q --repo "$work/repo" backup --all-blocks "$vol" >/dev/null
    full=$(cat "$work/t")
    python3 "$here/mutate.py" "$vol" 1 "$pattern" 7 >/dev/null
    "$g" -q --repo "$work/repo" backup --all-blocks --type incremental "$vol" >/dev/null
    for id in $("$g" --json snapshots | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))'); do
      "$g" -q snapshots --delete "$id" >/dev/null
    done
    python3 "$here/mutate.py" "$vol" "$pct" "$pattern" 8 >/dev/null
    cat "$vol" >/dev/null
    before=$(du -sb "$work/repo" | cut -f1)
    /usr/bin/time -f %e -o "$work/t" "$g" -q --repo "$work/repo" backup --all-blocks --type incremental "$vol" >/dev/null
    secs=$(cat "$work/t")
    added=$(( $(du -sb "$work/repo" | cut -f1) - before ))
    "$g" -q --repo "$work/repo" restore latest "$work/restored.img"
    ok=identical
    cmp -s "$work/restored.img" "$vol" || ok=DIFFERS
    rm -f "$work/restored.img"
    awk -v p="$pct" -v b="$k" -v f="$full" -v s="$secs" -v a="$added" -v o="$ok" \
      'BEGIN{printf "| %s %% | %s | %.2f | %.2f | %.1f %% | %.1f MB | %s |\n", p, b, f, s, 100*s/f, a/1e6, o}'
  done
done
