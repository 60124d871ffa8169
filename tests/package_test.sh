#!/usr/bin/env bash
# Builds the .deb from a finished build tree and installs it for real into a
# fresh, minimal Debian 12 root (debootstrap --variant=minbase, in a chroot):
# apt resolves and installs its Depends from the mirror, gnomon and the writers
# run, man -l renders gnomon(1), and dpkg -r removes it all again.
# A minbase root has none of gnomon's libraries, so a Depends the package
# forgot shows up as a binary that cannot load.
# Needs root, debootstrap and the Debian mirror; without them it skips (exit
# 77) saying what is missing, and under GNOMON_TEST_REQUIRE_ALL=1 it fails.
# Takes about a minute here (debootstrap ~30 s, the installs a few seconds).
# Usage: tests/package_test.sh BUILD_DIR
# GNOMON_TEST_DEBIAN_MIRROR overrides the mirror (default: the host's bookworm
# source, else deb.debian.org).
set -euo pipefail
build=$(realpath "$1")
work=$(mktemp -d -t gnomon-package-test.XXXXXX)   # a name that says whose it is
root="$work/root"
fail() { echo "package_test: FAIL: $*" >&2; exit 1; }

# Unmount whatever we mounted in the chroot before deleting it; never delete
# through a mount that would not come off (--one-file-system stays out of it).
cleanup() {
  if mountpoint -q "$root/proc" 2>/dev/null; then
    umount "$root/proc" 2>/dev/null || umount -l "$root/proc" ||
      echo "package_test: could not unmount $root/proc" >&2
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP   # Ctrl-C or kill: clean up too
# ctest's TIMEOUT (900 s) kills with SIGKILL, which no trap sees; so every
# network step has its own timeout and they add up to well under it.

# --- The package itself: cheap checks that need no root and no network. ---
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >/dev/null) ||
  fail "cpack failed"
deb=$(ls "$work"/out/gnomon_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no .deb was made"
files=$(dpkg-deb -c "$deb")
bins=(usr/bin/gnomon usr/bin/gnomon-writer-sqlite usr/bin/gnomon-writer-postgres)
manpage=usr/share/man/man1/gnomon.1.gz
# The scheduled jobs: units naming the installed gnomon-job, which names the
# installed gnomon (both are filled in at install time: the build was
# configured for /usr/local, the package installs into /usr).
units=()
for j in backup prune verify; do
  units+=("usr/lib/systemd/system/gnomon-$j.service" "usr/lib/systemd/system/gnomon-$j.timer")
done
job=usr/libexec/gnomon/gnomon-job
conf=etc/gnomon/gnomon.conf
plugin=usr/lib/gnomon/nbdkit-gnomon-plugin.so   # gnomon serve runs nbdkit with it
for f in "${bins[@]}" "$manpage" "${units[@]}" "$job" "$conf" "$plugin"; do
  grep -q " \./$f\$" <<<"$files" || fail "$f is not in the package"
done
grep -q "^-rwxr-xr-x root/root .* \./$job\$" <<<"$files" ||
  fail "$job is not root's and executable: $(grep "$job" <<<"$files")"
from_deb() { dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$1"; }
for j in backup prune verify; do
  exec_start=$(from_deb "usr/lib/systemd/system/gnomon-$j.service" | grep '^ExecStart=')
  [ "$exec_start" = "ExecStart=/$job $j" ] ||
    fail "gnomon-$j.service runs '$exec_start', not /$job $j"
done
# Read whole first: grep -q stops at the first match, and under pipefail the
# writer's SIGPIPE would fail the check at random.
job_text=$(from_deb "$job")
# shellcheck disable=SC2016  # the script's own text, not an expansion
grep -qx 'gnomon=${GNOMON_BIN:-/usr/bin/gnomon}' <<<"$job_text" ||
  fail "$job does not default to /usr/bin/gnomon: $(grep '^gnomon=' <<<"$job_text")"
conffiles=$(dpkg-deb -I "$deb" conffiles 2>&1) || fail "the package has no conffiles: $conffiles"
[ "$conffiles" = "/$conf" ] || fail "conffiles lists '$conffiles', not /$conf"
deps=$(dpkg-deb -f "$deb" Depends)
for lib in libzstd libtbb libext2fs; do
  grep -q "$lib" <<<"$deps" || fail "Depends lacks $lib: $deps"
done
# Recommends as plain names: versions and alternatives after the first dropped.
recommends=$(dpkg-deb -f "$deb" Recommends | sed 's/([^)]*)//g; s/|[^,]*//g; s/,/ /g')

# --- What the real install needs; say exactly what is missing. ---
# The Debian 12 suites the host uses (main, updates, security), so the root
# gets what a fresh Debian 12 install has; a non-Debian-12 host gets defaults.
mirror=${GNOMON_TEST_DEBIAN_MIRROR:-}
suites=()
if [ -z "$mirror" ] && command -v apt-get >/dev/null; then
  while read -r uri suite; do
    [ "$suite" = bookworm ] && mirror=${uri%/}
    suites+=("${uri%/} $suite")
  done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
             'Identifier: Packages' 'Component: main' 2>/dev/null |
           grep -E ' bookworm(-updates|-security)?$' | sort -u)
fi
mirror=${mirror:-http://deb.debian.org/debian}
[ ${#suites[@]} -gt 0 ] || suites=("$mirror bookworm" "$mirror bookworm-updates")

missing=()
[ "$(id -u)" -eq 0 ] || missing+=("root (debootstrap and chroot need it)")
command -v debootstrap >/dev/null || missing+=("debootstrap (apt-get install debootstrap)")
# A dead mirror would make debootstrap hang for minutes; ask it first.
if command -v wget >/dev/null; then
  timeout 30 wget -q -O /dev/null "$mirror/dists/bookworm/InRelease" ||
    missing+=("the Debian mirror $mirror (no $mirror/dists/bookworm/InRelease)")
else
  missing+=("wget (debootstrap depends on it)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  list=$(printf '%s; ' "${missing[@]}")
  why="cannot install the .deb into a fresh Debian 12 root; missing: ${list%; }"
  [ "${GNOMON_TEST_REQUIRE_ALL:-0}" = 1 ] && fail "$why"
  echo "package_test: SKIP: $why (the package's file list and Depends were checked)"
  exit 77
fi

# --- A fresh minimal Debian 12, then the package installed into it. ---
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
                     LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
log="$work/log"
timeout 240 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$log" 2>&1 ||
  fail "debootstrap from $mirror failed: $(tail -5 "$log")"
chroot "$root" /bin/true || fail "cannot chroot into $root"
mount -t proc proc "$root/proc"   # apt, dpkg and ASan builds read /proc
# Keep package scripts from starting daemons in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf 'deb %s main\n' "${suites[@]}" >"$root/etc/apt/sources.list"
cp "$deb" "$root/tmp/"
in_root timeout 120 apt-get update >"$log" 2>&1 ||
  fail "apt-get update in the chroot failed: $(tail -5 "$log")"
# Depends only, no Recommends: nothing but what the package declares is
# there when its binaries first run.
in_root timeout 120 apt-get install -y --no-install-recommends "/tmp/$(basename "$deb")" \
  >"$log" 2>&1 || fail "apt-get install of the .deb failed: $(tail -8 "$log")"

# A binary that cannot load names the library its Depends forgot.
unresolved() { in_root ldd "/$1" 2>&1 | grep 'not found' | tr -s ' \t\n' ' '; }
for b in "${bins[@]}"; do
  out=$(in_root "/$b" --help 2>&1) ||
    fail "/$b --help fails on a fresh Debian 12: ${out:0:300} $(unresolved "$b")"
done
ver=$(in_root gnomon --version 2>&1) || fail "gnomon --version failed: $ver"
[[ $ver == "gnomon "* ]] || fail "unexpected version output: $ver"

# man-db is not in minbase; it (and the Recommends) come only after the run
# above, so their libraries could not have hidden a missing Depends.
# shellcheck disable=SC2086  # $recommends is a list of package names
in_root timeout 120 apt-get install -y --no-install-recommends man-db $recommends \
  >"$log" 2>&1 || fail "installing man-db and the Recommends ($recommends) failed: $(tail -8 "$log")"
page=$(in_root env MANPAGER=cat MANWIDTH=100 man -l "/$manpage" 2>&1) ||
  fail "man -l failed: $page"
for want in "NAME" "gnomon - block-level" "COMMANDS" "restore" "--read-data" "EXIT STATUS"; do
  grep -qF -- "$want" <<<"$page" || fail "gnomon(1) lacks '$want'"
done

# The installed job script finds the installed config, root's and 0644, and
# refuses to back up until it names a repository (exit 2, naming the file).
out=$(in_root "/$job" backup 2>&1) && fail "/$job backup succeeded with the default config: $out"
rc=$?
if [ "$rc" -ne 2 ] || ! grep -q "GNOMON_REPO is not set in /$conf" <<<"$out"; then
  fail "/$job backup with the default config: exit $rc, not 2 naming /$conf: $out"
fi

in_root dpkg -r gnomon >"$log" 2>&1 || fail "dpkg -r gnomon failed: $(tail -5 "$log")"
status=$(in_root dpkg-query -W -f='${db:Status-Abbrev}' gnomon 2>/dev/null || true)
[[ $status != ii* ]] || fail "gnomon is still installed after dpkg -r (status $status)"
for f in "${bins[@]}" "$manpage" "${units[@]}" "$job"; do
  [ ! -e "$root/$f" ] || fail "/$f is left behind after dpkg -r"
done
# A conffile outlives dpkg -r (the administrator's settings) and goes with purge.
[ -e "$root/$conf" ] || fail "/$conf was removed by dpkg -r; a conffile stays until purge"
in_root dpkg --purge gnomon >"$log" 2>&1 || fail "dpkg --purge gnomon failed: $(tail -5 "$log")"
[ ! -e "$root/$conf" ] || fail "/$conf is left behind after dpkg --purge"

echo "package_test: $(basename "$deb") ($ver) installs on a fresh Debian 12 minbase root" \
     "from $mirror, runs, shows gnomon(1), installs the scheduled jobs and removes cleanly" \
     "(its config kept until purge); Depends: $deps"
