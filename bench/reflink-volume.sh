# Sourced by the incremental benchmarks (after `set -euo pipefail` and
# setting `here`): makes a scratch reflink XFS on a loop device in $work
# (a new directory under /var/tmp, removed on exit, whatever the exit) and
# a make-volume.sh image of $size in it, $work/xfs/base.img: a disk image
# on a reflink filesystem, as a VM disk would be.
work=$(mktemp -d /var/tmp/gnomon-bench.XXXXXX)
cleanup() { umount "$work/xfs" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/xfs"
truncate -s 40G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mount -o loop "$work/xfs.img" "$work/xfs"
bash "$here/make-volume.sh" "$work/xfs/base.img" "$size" 2>/dev/null
