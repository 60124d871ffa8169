#!/usr/bin/env bash
# Builds the .deb from a finished build tree and checks what it installs:
# the files are where Debian puts them, gnomon runs and reports its version,
# man -l renders gnomon(1), and apt would install it on this Debian (every
# dependency resolvable), without installing it.
# Usage: tests/package_test.sh BUILD_DIR
set -euo pipefail
build=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package_test: FAIL: $*" >&2; exit 1; }

(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >/dev/null) ||
  fail "cpack failed"
deb=$(ls "$work"/out/gnomon_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no .deb was made"
dpkg-deb -x "$deb" "$work/root"
for f in usr/bin/gnomon usr/bin/gnomon-writer-sqlite usr/bin/gnomon-writer-postgres \
         usr/share/man/man1/gnomon.1.gz; do
  [ -e "$work/root/$f" ] || fail "$f is not in the package"
done
ver=$("$work/root/usr/bin/gnomon" --version) || fail "gnomon --version failed"
[[ $ver == "gnomon "* ]] || fail "unexpected version output: $ver"
page=$(MANPAGER=cat MANWIDTH=100 man -l "$work/root/usr/share/man/man1/gnomon.1.gz" 2>&1) ||
  fail "man -l failed: $page"
for want in "NAME" "gnomon - block-level" "COMMANDS" "restore" "--read-data" "EXIT STATUS"; do
  grep -qF -- "$want" <<<"$page" || fail "gnomon(1) lacks '$want'"
done
deps=$(dpkg-deb -f "$deb" Depends)
for lib in libzstd libtbb libext2fs; do
  grep -q "$lib" <<<"$deps" || fail "Depends lacks $lib: $deps"
done
apt-get install --simulate -o Debug::NoLocking=1 "$deb" >"$work/apt.log" 2>&1 ||
  fail "apt would not install it: $(tail -5 "$work/apt.log")"
echo "package_test: $(basename "$deb") ($ver) installs gnomon, the writers and gnomon(1); Depends: $deps"
