#!/usr/bin/env bash
# Incremental backups: what a second backup costs after PERCENT of a
# realistic volume's 4 KiB blocks changed, for gnomon (reflink change
# tracking) beside restic, borg and casync doing their second backup of the
# same image after the same change. Prints a Markdown table.
#
# Usage (root): bench/incremental.sh [SIZE] [PERCENTS] [PATTERNS]
#   defaults: 4G "0.1 1 10" "scattered clustered"
# The volume is a disk image on a reflink XFS (as a VM disk would be); every
# tool backs up the same base image, then its second backup after the same
# mutation. Tools are installed from Debian if missing.
# gnomon images every block (--all-blocks), as the other tools do: mutate.py
# writes raw blocks, free ones included, and the restore is checked
# byte-identical.
# PEERS=0 runs gnomon alone. GNOMON_B=/path/to/another/gnomon adds a row for
# a second build on the same mutation (an A/B of a change, in one session).
# COLD=1 drops the page cache before every backup: a snapshot clone has a
# page cache of its own, so with a warm cache the tools that read the live
# image (restic, borg, casync) read memory while gnomon reads the disk.
set -euo pipefail
size=${1:-4G}
percents=${2:-0.1 1 10}
patterns=${3:-scattered clustered}
here=$(cd "$(dirname "$0")" && pwd)
gnomon=${GNOMON:-$here/../build/tools/gnomon}
for t in restic borg casync; do
  command -v $t >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup casync >/dev/null
done
. "$here/reflink-volume.sh"
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
export RESTIC_PASSWORD=bench BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

secs() {
  if [ "${COLD:-0}" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
  /usr/bin/time -f %e -o "$work/t" "$@" >/dev/null 2>&1
  cat "$work/t"
}
bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }
peers=${PEERS:-1}
gnomon_b=${GNOMON_B:-}
# peer CMD...: runs a peer tool's command unless PEERS=0 (then prints 0).
peer() { if [ "$peers" = 1 ]; then "$@"; else echo 0; fi; }

echo "| pattern | changed | tool | full s | second backup s | second ÷ full | bytes added |"
echo "|---|---:|---|---:|---:|---:|---:|"
for pattern in $patterns; do
  for pct in $percents; do
    rm -rf "$work/r" "$work/state" && mkdir -p "$work/r"
    cp --reflink=always "$work/xfs/base.img" "$work/xfs/vol.img"
    cat "$work/xfs/vol.img" >/dev/null
    "$gnomon" init -q --repo "$work/r/gnomon"
    [ -z "$gnomon_b" ] || "$gnomon_b" init -q --repo "$work/r/gnomon_b"
    if [ "$peers" = 1 ]; then
      restic init -q --repository-version 2 -r "$work/r/restic" >/dev/null
      borg init -e none "$work/r/borg" >/dev/null
    fi
    mkdir -p "$work/r/casync"
    cd "$work/xfs"
    f_g=$(secs "$gnomon" -q --repo "$work/r/gnomon" backup --all-blocks vol.img)
    if [ -n "$gnomon_b" ]; then
      cp --reflink=always vol.img vol_b.img
      f_gb=$(GNOMON_STATE_DIR=$work/state_b secs "$gnomon_b" -q --repo "$work/r/gnomon_b" backup --all-blocks vol_b.img)
      b_gb=$(bytes "$work/r/gnomon_b")
    fi
    f_r=$(peer secs restic -q -r "$work/r/restic" backup vol.img)
    f_b=$(peer secs borg create --compression zstd,3 "$work/r/borg::one" vol.img)
    f_c=$(peer secs casync make --store="$work/r/casync/store" "$work/r/casync/one.caibx" vol.img)
    b_g=$(bytes "$work/r/gnomon"); b_r=$(bytes "$work/r/restic")
    b_b=$(bytes "$work/r/borg"); b_c=$(bytes "$work/r/casync")
    python3 "$here/mutate.py" vol.img "$pct" "$pattern" 7 >/dev/null
    cat vol.img >/dev/null
    s_g=$(secs "$gnomon" -q --repo "$work/r/gnomon" backup --all-blocks --type incremental vol.img)
    if [ -n "$gnomon_b" ]; then
      python3 "$here/mutate.py" vol_b.img "$pct" "$pattern" 7 >/dev/null
      s_gb=$(GNOMON_STATE_DIR=$work/state_b secs "$gnomon_b" -q --repo "$work/r/gnomon_b" backup --all-blocks --type incremental vol_b.img)
    fi
    s_r=$(peer secs restic -q -r "$work/r/restic" backup vol.img)
    s_b=$(peer secs borg create --compression zstd,3 "$work/r/borg::two" vol.img)
    s_c=$(peer secs casync make --store="$work/r/casync/store" "$work/r/casync/two.caibx" vol.img)
    cd - >/dev/null
    # gnomon's incremental must restore byte-identical to the mutated image.
    "$gnomon" -q --repo "$work/r/gnomon" restore latest "$work/restored.img"
    cmp -s "$work/restored.img" "$work/xfs/vol.img" || { echo "gnomon restore differs" >&2; exit 1; }
    rm -f "$work/restored.img"
    tools="gnomon"
    [ -z "$gnomon_b" ] || tools="$tools gnomon_b"
    [ "$peers" = 1 ] && tools="$tools restic borg casync"
    for t in $tools; do
      case $t in
        gnomon) f=$f_g s=$s_g a=$(( $(bytes "$work/r/gnomon") - b_g ));;
        gnomon_b) f=$f_gb s=$s_gb a=$(( $(bytes "$work/r/gnomon_b") - b_gb ));;
        restic) f=$f_r s=$s_r a=$(( $(bytes "$work/r/restic") - b_r ));;
        borg)   f=$f_b s=$s_b a=$(( $(bytes "$work/r/borg") - b_b ));;
        casync) f=$f_c s=$s_c a=$(( $(bytes "$work/r/casync") - b_c ));;
      esac
      awk -v p="$pattern" -v c="$pct" -v t="$t" -v f="$f" -v s="$s" -v a="$a" \
        'BEGIN{printf "| %s | %s %% | %s | %.2f | %.2f | %.1f %% | %.1f MB |\n", p, c, t, f, s, 100*s/f, a/1e6}'
    done
    rm -f "$work/xfs/vol.img" "$work/xfs/vol_b.img"
  done
done
