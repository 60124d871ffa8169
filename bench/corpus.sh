#!/usr/bin/env bash
# The corpus benchmark: every profile of bench/volumes/ through
# bench/compare-peers.sh (gnomon and its peers, side by side, in one
# session), then, per tool, the geometric mean over the profiles of backup
# MB/s, restore MB/s and ratio; issue 19's targets checked per profile; and
# a chart (gnuplot): ratio against backup MB/s, one panel per profile.
#
# Usage (root): bench/corpus.sh [RUNS]          (also: compare-peers.sh corpus)
#   PROFILES (default: all six), SIZE (default 1G) and SEED (default 1)
#   choose the images, kept in /var/tmp/gnomon-corpus/PROFILE-SIZE-SEED.img
#   and built when missing (REBUILD=1: always). With RESULTS=1 the tables
#   replace the "Corpus" section of RESULTS.md and the chart goes to
#   bench/corpus.svg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-3}
profiles=${PROFILES:-os-root database developer mail media vm-store}
size=${SIZE:-1G}
seed=${SEED:-1}
[ "$(id -u)" -eq 0 ] || { echo "corpus.sh: needs root (loop mounts)" >&2; exit 1; }
command -v gnuplot >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
store=/var/tmp/gnomon-corpus
mkdir -p "$store"
out=$(mktemp -d /var/tmp/gnomon-corpus-run.XXXXXX)
trap 'rm -rf "$out"' EXIT
for p in $profiles; do
  img=$store/$p-$size-$seed.img
  if [ ! -f "$img" ] || [ "${REBUILD:-0}" = 1 ]; then
    bash "$here/volumes/make-profile.sh" "$p" "$img.tmp" "$size" "$seed"
    mv -f "$img.tmp" "$img"
  fi
  echo "corpus: $p" >&2
  TABLE_OUT=$out/$p.md RESULTS=0 bash "$here/compare-peers.sh" "$img" "$runs" >/dev/null
done
# shellcheck disable=SC2086
python3 "$here/corpus_report.py" "$out" $profiles >"$out/report.md"
svg=$out/corpus.svg
gnuplot -e "datafile='$out/points.tsv'; outfile='$svg'; profiles='$profiles'" \
  "$here/corpus.gnuplot"
cat "$out/report.md"
if [ "${RESULTS:-0}" = 1 ]; then
  source "$here/lib.sh"
  {
    echo "Run $(date -u +%Y-%m-%d) by \`sudo RESULTS=1 bench/corpus.sh $runs\` on $(nproc) ×" \
      "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r);" \
      "six $size ext4 profiles (bench/volumes/make-profile.sh, seed $seed), page cache warm," \
      "median of $runs runs per tool and profile. Chart: [corpus.svg](corpus.svg)."
    echo
    cat "$out/report.md"
  } >"$out/section"
  results_section corpus "Corpus (bench/corpus.sh, issue 19)" "$out/section"
  cp "$svg" "$here/corpus.svg"
  echo "corpus: tables written to $here/RESULTS.md, chart to $here/corpus.svg" >&2
fi
