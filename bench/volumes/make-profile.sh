#!/usr/bin/env bash
# Builds one profile of the benchmark corpus: an ext4 volume image holding
# what a kind of machine holds, from this machine's own files and generated
# data (bench/volumes/gen.py), reproducible from SEED on a given machine.
# Every profile ends with deletions and rewrites, so free blocks hold stale
# data as on a disk that has lived.
#
# Usage (root): bench/volumes/make-profile.sh PROFILE IMAGE [SIZE] [SEED]
#   SIZE as for truncate (default 1G), SEED a number (default 1).
# Profiles:
#   os-root    an installed system: binaries, libraries, docs, package
#              archives, logs; an upgrade rewrote a fifth of it
#   database   a database server: a PostgreSQL cluster after pgbench and
#              deletes, an SQLite application database, a dump
#   developer  a developer's disk: git repositories with history, three
#              checkouts of them, build outputs twice (debug and release)
#   mail       a mail server: maildirs of text messages and base64
#              attachments, an archive copy of one folder, logs
#   media      photos, music and video: already compressed, one album
#              copied twice, archives
#   vm-store   a VM host: raw disk images of installed systems, one a clone
#              of another with a tenth rewritten, sparse holes
set -euo pipefail
profile=${1:?usage: make-profile.sh PROFILE IMAGE [SIZE] [SEED]}
img=${2:?usage: make-profile.sh PROFILE IMAGE [SIZE] [SEED]}
size=${3:-1G}
seed=${4:-1}
here=$(cd "$(dirname "$0")" && pwd)
gen() { python3 "$here/gen.py" "$@"; }
[ "$(id -u)" -eq 0 ] || { echo "make-profile.sh: needs root (loop mounts)" >&2; exit 1; }

rm -f "$img"
truncate -s "$size" "$img"
mkfs.ext4 -q -F -L "$profile" "$img"
mnt=$(mktemp -d)
mount -o loop "$img" "$mnt"
on_exit=()
cleanup() {
  local c
  for c in "${on_exit[@]}"; do eval "$c" || true; done
  umount "$mnt" 2>/dev/null || true
  rmdir "$mnt"
}
trap cleanup EXIT
bytes=$(stat -c %s "$img")
pct() { echo $((bytes * $1 / 100)); }

# copy_budget DEST BUDGET FIND_ARGS...: copies files matching the find
# expression, in an order shuffled by SEED, until BUDGET bytes are copied.
copy_budget() {
  local dest=$1 budget=$2
  shift 2
  mkdir -p "$mnt/$dest"
  find "$@" -type f -readable -printf '%s\t%p\n' 2>/dev/null | sort -t$'\t' -k2 |
    python3 -c "import random,sys; l=sys.stdin.read().splitlines(); random.Random($seed).shuffle(l); print('\n'.join(l))" |
    awk -F'\t' -v b="$budget" '{ if (t + $1 <= b) { t += $1; print $2 } }' |
    tar -c --files-from=- -f - 2>/dev/null | tar -x -C "$mnt/$dest" -f -
}
# stale DIR N: deletes every Nth file of DIR (their blocks keep the bytes).
stale() {
  find "$mnt/$1" -type f | sort | awk -v n="$2" 'NR % n == 0' | xargs -r rm -f
}
# copies SRC DEST...: whole-tree copies (a checkout, an archive folder):
# the same bytes again at other block offsets.
copies() {
  local src=$1 d
  shift
  for d in "$@"; do cp -a "$mnt/$src" "$mnt/$d"; done
}

os_root() {
  copy_budget usr/lib "$(pct 30)" /usr/lib/x86_64-linux-gnu /usr/lib/gcc /usr/libexec
  copy_budget usr/bin "$(pct 6)" /usr/bin /usr/sbin
  copy_budget usr/share "$(pct 14)" /usr/share
  copy_budget etc "$(pct 1)" /etc
  copy_budget var/cache/apt "$(pct 6)" /var/cache/apt /usr/share \( -name '*.deb' -o -name '*.xz' \)
  gen logs "$mnt/var/log/app" "$(pct 4)" "$seed"
  sync
  # An upgrade: a fifth of the libraries replaced by new copies of themselves
  # (same bytes at new offsets), the old ones deleted.
  find "$mnt/usr/lib" -type f | sort | awk 'NR % 5 == 0' | while read -r f; do
    cp -p "$f" "$f.new" && mv -f "$f.new" "$f"
  done
  stale usr/share 4
}

database() {
  local bin sock port=$((20000 + $$ % 20000))
  bin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  sock=$(mktemp -d)
  chmod 755 "$sock"
  mkdir -p "$mnt/pg"
  chown postgres "$mnt/pg" "$sock"
  runuser -u postgres -- "$bin/initdb" -D "$mnt/pg/data" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$mnt/pg/data" -w -l "$mnt/pg/log" \
    -o "-p $port -k $sock -c listen_addresses='' -c max_wal_size=64MB" start >/dev/null
  on_exit+=("runuser -u postgres -- '$bin/pg_ctl' -D '$mnt/pg/data' -m fast -w stop >/dev/null; rm -rf '$sock'")
  local scale=$(($(pct 15) / 16000000 + 1))
  pgbench -q -i -s "$scale" -h "$sock" -p "$port" -U postgres postgres >/dev/null 2>&1
  pgbench -c 2 -T 15 -h "$sock" -p "$port" -U postgres postgres >/dev/null 2>&1
  psql -X -q -h "$sock" -p "$port" -U postgres -d postgres \
    -c "delete from pgbench_accounts where aid % 5 = 0" -c "checkpoint" >/dev/null
  pg_dump -h "$sock" -p "$port" -U postgres -t pgbench_history -t pgbench_branches postgres \
    >"$mnt/pg/dump.sql"
  mkdir -p "$mnt/srv/app"
  gen sqlite "$mnt/srv/app/app.db" "$(pct 15)" "$seed"
  gen logs "$mnt/srv/app/log" "$(pct 5)" "$seed"
  copy_budget usr/lib "$(pct 10)" /usr/lib/x86_64-linux-gnu
  stale usr/lib 3
}

developer() {
  local src=$mnt/home/dev/src/project
  mkdir -p "$src"
  # A repository with history: three commits that each change the tree.
  copy_budget home/dev/src/project "$(pct 6)" /usr/include /usr/share/perl5 /usr/lib/python3
  git -C "$src" init -q
  git -C "$src" -c user.name=dev -c user.email=dev@example.org add -A
  git -C "$src" -c user.name=dev -c user.email=dev@example.org commit -qm one
  find "$src" -type f -not -path '*/.git/*' | sort | awk 'NR % 9 == 0' | xargs -r sed -i 's/a/A/'
  git -C "$src" -c user.name=dev -c user.email=dev@example.org commit -qam two
  git -C "$src" gc -q
  copies home/dev/src/project home/dev/src/project-review home/dev/src/project-bugfix
  # Build outputs: object files and libraries, twice.
  copy_budget home/dev/build/debug "$(pct 15)" /usr/lib/x86_64-linux-gnu -name '*.a'
  copies home/dev/build/debug home/dev/build/release
  copy_budget home/dev/.cache "$(pct 8)" /usr/lib/python3 /usr/share/perl5 /usr/share/doc
  gen logs "$mnt/home/dev/logs" "$(pct 3)" "$seed"
  stale home/dev/.cache 3
}

mail() {
  gen mail "$mnt/var/mail/alice" "$(pct 25)" "$seed"
  gen mail "$mnt/var/mail/bob" "$(pct 15)" "$((seed + 1))"
  copies var/mail/alice/INBOX var/mail/alice/Archive/INBOX-2024
  gen logs "$mnt/var/log/mail" "$(pct 8)" "$seed"
  copy_budget usr "$(pct 8)" /usr/lib/x86_64-linux-gnu /usr/sbin
  stale var/mail/bob 4
}

media() {
  copy_budget photos "$(pct 8)" /usr/share \( -name '*.png' -o -name '*.jpg' -o -name '*.svgz' \)
  copy_budget archives "$(pct 8)" /usr/share /var/cache/apt \( -name '*.gz' -o -name '*.xz' -o -name '*.deb' \)
  mkdir -p "$mnt/video/2024" "$mnt/music"
  local i
  for i in 1 2 3; do gen noise "$mnt/video/2024/clip$i.mp4" "$(pct 8)" "$((seed * 10 + i))"; done
  for i in 1 2 3 4 5 6; do gen noise "$mnt/music/track$i.flac" "$(pct 2)" "$((seed * 100 + i))"; done
  copies video/2024 video/2024-copy   # an album copied to another folder
  stale archives 3
  rm -f "$mnt/music/track6.flac"
}

vm_store() {
  # A small installed system, in a raw disk image of its own.
  local inner=$mnt/vms/base.raw vsize=$(($(pct 22) / 1048576))M
  mkdir -p "$mnt/vms"
  truncate -s "$vsize" "$inner"
  mkfs.ext4 -q -F "$inner"
  local imnt
  imnt=$(mktemp -d)
  mount -o loop "$inner" "$imnt"
  on_exit+=("umount '$imnt' 2>/dev/null; rmdir '$imnt'")
  find /usr/lib/x86_64-linux-gnu /usr/bin /usr/share/doc -type f -readable -printf '%s\t%p\n' 2>/dev/null |
    sort -t$'\t' -k2 | awk -F'\t' -v b="$(($(pct 15)))" '{ if (t + $1 <= b) { t += $1; print $2 } }' |
    tar -c --files-from=- -f - 2>/dev/null | tar -x -C "$imnt" -f -
  umount "$imnt"
  # Two clones: one a tenth rewritten, one with its own extra files.
  cp --sparse=always "$inner" "$mnt/vms/web1.raw"
  cp --sparse=always "$inner" "$mnt/vms/web2.raw"
  gen mutate "$mnt/vms/web1.raw" 10 "$seed"
  mount -o loop "$mnt/vms/web2.raw" "$imnt"
  gen logs "$imnt/var/log" "$(pct 3)" "$seed"
  umount "$imnt"
  gen noise "$mnt/vms/iso-cache.bin" "$(pct 5)" "$seed"
  rm -f "$mnt/vms/iso-cache.bin"  # a deleted download: stale in free blocks
}

case $profile in
  os-root) os_root ;;
  database) database ;;
  developer) developer ;;
  mail) mail ;;
  media) media ;;
  vm-store) vm_store ;;
  *) echo "make-profile.sh: unknown profile '$profile'" >&2; exit 2 ;;
esac
sync
df -h "$mnt" | tail -1 | awk -v img="$img" -v p="$profile" \
  '{ printf "make-profile: %s (%s): %s used of %s (%s)\n", img, p, $3, $2, $5 }' >&2
