# Shared by the peer benchmarks (sourced): a scratch directory, the volume
# image, medians and the checks every restore passes. Callers set `img`
# (empty: make a 2 GiB bench/make-volume.sh volume) before bench_setup.
me=$(basename "$0" .sh)

# Makes $work (with mount points a and b), removed on exit; sets img and size.
bench_setup() {
  work=$(mktemp -d "/var/tmp/gnomon-$me.XXXXXX")
  trap 'umount "$work/a" "$work/b" 2>/dev/null || true; rm -rf "$work"' EXIT
  mkdir -p "$work/a" "$work/b"
  if [ -z "$img" ]; then
    img=$work/volume.img
    bash "$(dirname "${BASH_SOURCE[0]}")/make-volume.sh" "$img" 2G
  fi
  size=$(stat -L -c %s "$img")
  cat "$img" >/dev/null
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbs() { awk -v s="$size" -v w="$1" 'BEGIN{printf "%.0f", s/w/1e6}'; }
# Whole-volume imaging must restore every byte.
check_bytes() {
  cmp -s "$img" "$1" || { echo "$me: $2 restore differs from the image" >&2; exit 1; }
}
# Used-block imaging restores free blocks as zeros: the filesystem must be
# clean and every file identical.
check_files() {
  e2fsck -fn "$1" >/dev/null 2>&1 || { echo "$me: $2 restore fails e2fsck" >&2; exit 1; }
  mount -o loop,ro "$img" "$work/a"
  mount -o loop,ro,norecovery "$1" "$work/b" 2>/dev/null || mount -o loop,ro "$1" "$work/b"
  local rc=0
  diff -r --no-dereference "$work/a" "$work/b" >/dev/null || rc=1
  umount "$work/a" "$work/b"
  [ $rc -eq 0 ] || { echo "$me: $2 restore has different files" >&2; exit 1; }
}
# Replaces the part of RESULTS.md between <!-- NAME:begin --> and
# <!-- NAME:end --> with the file SECTION, or appends it under "## TITLE".
results_section() {  # NAME TITLE SECTION
  python3 - "$(dirname "${BASH_SOURCE[0]}")/RESULTS.md" "$@" <<'PY'
import sys
path, name, title, section = sys.argv[1], sys.argv[2], sys.argv[3], open(sys.argv[4]).read()
text = open(path).read()
begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + begin + "\n" + section + end + rest.split(end, 1)[1]
else:
    text += "\n## " + title + "\n\n" + begin + "\n" + section + end + "\n"
open(path, "w").write(text)
PY
}
