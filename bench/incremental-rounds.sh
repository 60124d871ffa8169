#!/usr/bin/env bash
# Repeated incrementals: what the Nth incremental costs when each follows the
# same kind of change, on a volume image that keeps the history of its
# copy-on-write writes (as a VM disk backed up every night does). Every
# write after a reflink snapshot moves the written blocks, so the image
# gains extents with every round; this measures what that does to each
# backup's wall time and to its hold window (writers frozen, Freeze to Thaw).
#
# Usage (root): bench/incremental-rounds.sh [SIZE] [ROUNDS] [PERCENT] [PATTERN]
#   defaults: 4G 6 1 scattered (PATTERN as in mutate.py)
# GNOMON_B=/path/to/another/gnomon runs a second build on its own reflink
# copy of the same image, through the same mutations, round by round (an A/B
# in one session). Both images are restored and compared at the end.
# FULL_OPTS_A / FULL_OPTS_B: extra options for build A's / B's full backup
# (e.g. FULL_OPTS_A=--for-differentials with GNOMON_B=$GNOMON: the same
# build, with and without a full's base kept for differentials).
set -euo pipefail
size=${1:-4G}
rounds=${2:-6}
pct=${3:-1}
pattern=${4:-scattered}
here=$(cd "$(dirname "$0")" && pwd)
builds=("${GNOMON:-$here/../build/tools/gnomon}")
[ -z "${GNOMON_B:-}" ] || builds+=("$GNOMON_B")
full_opts=("${FULL_OPTS_A:-}" "${FULL_OPTS_B:-}")
. "$here/reflink-volume.sh"
export GNOMON_RUNTIME_DIR=$work/run

# backup K TYPE: one backup with build K of its own image; prints "secs frozen_ms".
backup() {
  local k=$1 g=${builds[$1]} extra=()
  [ "$2" != full ] || read -r -a extra <<<"${full_opts[$k]}"
  cat "$work/xfs/vol$k.img" >/dev/null
  GNOMON_STATE_DIR=$work/state$k /usr/bin/time -f %e -o "$work/t" \
    "$g" -q --repo "$work/repo$k" backup --all-blocks --type "$2" "${extra[@]}" "$work/xfs/vol$k.img" >/dev/null
  local frozen
  frozen=$(GNOMON_STATE_DIR=$work/state$k "$g" --json --repo "$work/repo$k" show latest |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["vss"]["frozen_ms"]))')
  echo "$(cat "$work/t") $frozen"
}

header="| round | extents |"
rule="|---:|---:|"
for k in "${!builds[@]}"; do
  header="$header build $k s | build $k frozen ms |"
  rule="$rule---:|---:|"
  cp --reflink=always "$work/xfs/base.img" "$work/xfs/vol$k.img"
  "${builds[$k]}" init -q --repo "$work/repo$k"
done
[ ${#builds[@]} = 1 ] || { header="$header B ÷ A |"; rule="$rule---:|"; }
echo "$header"
echo "$rule"
for round in $(seq 0 "$rounds"); do
  row="| $round |"
  declare -a secs=()
  for k in "${!builds[@]}"; do
    type=incremental
    if [ "$round" = 0 ]; then
      type=full
    else
      python3 "$here/mutate.py" "$work/xfs/vol$k.img" "$pct" "$pattern" $((round + 6)) >/dev/null
    fi
    [ "$k" != 0 ] || row="$row $(filefrag "$work/xfs/vol0.img" | awk '{print $2}') |"
    read -r s f < <(backup "$k" "$type")
    secs+=("$s")
    row="$row $s | $f |"
  done
  [ ${#builds[@]} = 1 ] || row="$row $(awk -v a="${secs[0]}" -v b="${secs[1]}" 'BEGIN{printf "%.2f", b/a}') |"
  echo "$row"
done
for k in "${!builds[@]}"; do
  GNOMON_STATE_DIR=$work/state$k "${builds[$k]}" -q --repo "$work/repo$k" restore latest "$work/restored.img"
  cmp -s "$work/restored.img" "$work/xfs/vol$k.img" || { echo "build $k: restore differs" >&2; exit 1; }
  rm -f "$work/restored.img"
done
echo "(extents: the image's extent count before that round's backup; round 0 is the full backup)"
