#!/usr/bin/env bash
# Prune at the scale of a year of nightly backups: BACKUPS backups of a SIZE
# volume (a make-volume.sh ext4 image on reflink XFS, so incrementals use
# change tracking), each after PERCENT of its blocks changed, then
# `forget --keep-last KEEP` and `prune`. Reports the time and peak RSS of
# prune (and of its dry run, and of a second prune with nothing to do), what
# it freed and wrote, and checks that the remaining backups verify and the
# newest restores byte-identical.
#
# Usage (root): bench/prune-scale.sh [SIZE] [BACKUPS] [PERCENT] [PATTERN] [KEEP]
#   defaults: 4G 100 1 clustered 30 (PATTERN as in mutate.py)
# GNOMON=/path/to/gnomon picks the build (default ../build/tools/gnomon).
set -euo pipefail
size=${1:-4G}
backups=${2:-100}
pct=${3:-1}
pattern=${4:-clustered}
keep=${5:-30}
here=$(cd "$(dirname "$0")" && pwd)
g=${GNOMON:-$here/../build/tools/gnomon}
. "$here/reflink-volume.sh"
export GNOMON_RUNTIME_DIR=$work/run GNOMON_STATE_DIR=$work/state
repo=$work/repo
vol=$work/xfs/vol.img
cp --reflink=always "$work/xfs/base.img" "$vol"
"$g" init -q --repo "$repo"

start=$(date +%s)
for i in $(seq 0 $((backups - 1))); do
  type=incremental
  if [ "$i" = 0 ]; then type=full; else python3 "$here/mutate.py" "$vol" "$pct" "$pattern" "$i" >/dev/null; fi
  # --all-blocks: mutate.py writes free blocks too, which a used-blocks
  # backup would (rightly) restore as zeros.
  "$g" -q --repo "$repo" backup --all-blocks --type "$type" "$vol" >/dev/null
done
echo "made $backups backups of $size ($pct % $pattern change each) in $(( $(date +%s) - start )) s"

# measure LABEL CMD...: runs CMD under /usr/bin/time; prints a table row.
measure() {
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >"$work/out.json"
  read -r secs kib <"$work/t"
  python3 - "$label" "$secs" "$kib" "$work/out.json" <<'EOF'
import json, sys
label, secs, kib, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
j = json.load(open(path))
mib = lambda b: f"{b / 2**20:.0f}"
written, deleted = j["bytes_written"], j["bytes_deleted"]
freed = deleted - written
ratio = f"{written / freed:.2f}" if freed > 0 else "-"
print(f"| {label} | {secs:.2f} | {kib / 1024:.0f} | {j['packs']} | {mib(j['stored_bytes'])} | "
      f"{mib(j['live_bytes'])} | {j['plan']['delete_packs']} / {j['plan']['repack_packs']} | "
      f"{mib(deleted)} | {mib(written)} | {ratio} |")
EOF
}

"$g" -q --repo "$repo" forget --keep-last "$keep" >/dev/null
echo
echo "| run | seconds | peak RSS MiB | packs | stored MiB | live MiB | plan delete / repack | deleted MiB | written MiB | written ÷ freed |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
measure "prune --dry-run" "$g" --json --repo "$repo" prune --dry-run
measure "prune" "$g" --json --repo "$repo" prune
measure "prune again (nothing to do)" "$g" --json --repo "$repo" prune
"$g" -q --repo "$repo" verify --read-data >/dev/null || { echo "verify failed after prune" >&2; exit 1; }
"$g" -q --repo "$repo" restore latest "$work/restored.img"
cmp -s "$work/restored.img" "$vol" || { echo "the newest backup restores different bytes" >&2; exit 1; }
echo
echo "after prune: verify --read-data passed; the newest backup restores byte-identical"
