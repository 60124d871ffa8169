#!/usr/bin/env bash
# The scheduled jobs as systemd runs them: the units of tools/systemd, the job
# script tools/gnomon-job.in and its config (tools/gnomon.conf), as the build
# generated them.
#  (a) systemd-analyze verify finds nothing to say about the six units, with
#      their gnomon-job pointed at the build tree's copy;
#  (b) each service's own ExecStart= line, read from the unit, runs against a
#      scratch repository and two ext4 image files: backup twice, prune, verify;
#  (c) a backup of a missing source, or of a glob (never expanded), and a
#      verify of a missing repository fail with gnomon's exit code and a line
#      saying what it means;
#  (d) a config without GNOMON_REPO is refused with exit 2, naming the file;
#  (e) a config that others can write (the file, or its directory) or that
#      another user owns is refused with exit 2.
# Needs systemd-analyze (package systemd), mkfs.ext4, flock and python3, not
# root; without them it skips (exit 77) saying what is missing, and under
# GNOMON_TEST_REQUIRE_ALL=1 it fails. The ownership check of (e) runs as root
# only (a user cannot give a file away). Takes a few seconds.
# Usage: tests/systemd_units_test.sh BUILD_DIR
# GNOMON_TEST_BINARY runs the jobs with another gnomon (as the C++ tests do).
set -euo pipefail
build=$(realpath "$1")
gen="$build/tools/systemd"  # the units and gnomon-job, as configured for this build
gnomon=${GNOMON_TEST_BINARY:-$build/tools/gnomon}
fail() { echo "systemd_units_test: FAIL: $*" >&2; exit 1; }

missing=()
for tool in systemd-analyze:systemd mkfs.ext4:e2fsprogs flock:util-linux python3:python3; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (apt-get install ${tool#*:})")
done
if [ ${#missing[@]} -gt 0 ]; then
  list=$(printf '%s; ' "${missing[@]}")
  why="cannot check the systemd units; missing: ${list%; }"
  [ "${GNOMON_TEST_REQUIRE_ALL:-0}" = 1 ] && fail "$why"
  echo "systemd_units_test: SKIP: $why"
  exit 77
fi
[ -x "$gnomon" ] || fail "no gnomon at $gnomon (build first)"
[ -x "$gen/gnomon-job" ] || fail "no executable $gen/gnomon-job (build first)"

work=$(mktemp -d -t gnomon-systemd-test.XXXXXX)  # 0700 and ours, as the config's directory must be
trap 'rm -rf --one-file-system "$work"' EXIT
[[ $work != *[[:space:]]* ]] || fail "the scratch directory $work has blanks; GNOMON_SOURCES splits on them"
# gnomon's state, locks, writers and hooks in the scratch directory: nothing
# of this machine's (and no script writer of /etc/gnomon/writers.d) takes part.
export GNOMON_STATE_DIR="$work/state" GNOMON_RUNTIME_DIR="$work/run" \
       GNOMON_HOOKS_DIR="$work/hooks" GNOMON_WRITER_DIR="$work/run/writers"
mkdir "$work/hooks"
# The units run gnomon-job with nothing set: it finds the config and gnomon at
# their installed paths. Here they are the scratch config and the build's gnomon.
export GNOMON_BIN="$gnomon"
mkdir -m 0755 "$work/etc"
export GNOMON_CONFIG="$work/etc/gnomon.conf"
unset GNOMON_REPO

# --- (a) The units, with gnomon-job's installed path pointed at the build tree. ---
jobs=(backup prune verify)
units=()
for j in "${jobs[@]}"; do units+=("gnomon-$j.service" "gnomon-$j.timer"); done
mkdir "$work/units"
for u in "${units[@]}"; do
  [ -f "$gen/$u" ] || fail "$gen/$u was not generated"
  sed -E "s#^(ExecStart=)/[^ ]*/gnomon-job( |\$)#\\1$gen/gnomon-job\\2#" "$gen/$u" >"$work/units/$u"
done
# gnomon(1), for Documentation=man:gnomon(1): the build's page when man can
# show it, else that check is left out.
man_check=--man=no
if command -v man >/dev/null && [ -f "$build/tools/gnomon.1.gz" ]; then
  mkdir -p "$work/man/man1"
  ln -s "$build/tools/gnomon.1.gz" "$work/man/man1/gnomon.1.gz"
  export MANPATH="$work/man"
  man_check=--man=yes
fi
paths=()
for u in "${units[@]}"; do paths+=("$work/units/$u"); done
out=$(systemd-analyze verify "$man_check" "${paths[@]}" 2>&1) ||
  fail "systemd-analyze verify failed: $out"
# It exits 0 on an unknown key or a setting it ignores, saying so: anything it
# says about our units is a failure. What it says of the host's units is not ours.
if [ -n "$out" ]; then
  ours=$(grep -E "gnomon-|$work" <<<"$out" || true)
  [ -z "$ours" ] || fail "systemd-analyze verify: $ours"
  echo "systemd_units_test: note: systemd-analyze verify on this host's units: $out"
fi

# What the units promise, beyond what systemd-analyze checks.
for j in "${jobs[@]}"; do
  svc="$work/units/gnomon-$j.service" timer="$work/units/gnomon-$j.timer"
  grep -qx 'Type=oneshot' "$svc" || fail "gnomon-$j.service is not Type=oneshot"
  # A block device, a loop device or device-mapper must stay readable.
  bad=$(grep -E '^(PrivateDevices|DevicePolicy|DeviceAllow|ProtectClock)=' "$svc" || true)
  [ -z "$bad" ] || fail "gnomon-$j.service closes devices ($bad): backups read block devices"
  grep -q '^ProtectSystem=strict' "$svc" && ! grep -q '^ReadWritePaths=' "$svc" &&
    fail "gnomon-$j.service: ProtectSystem=strict without ReadWritePaths= leaves no repository writable"
  grep -qx 'Persistent=true' "$timer" || fail "gnomon-$j.timer is not Persistent=true"
  grep -qx 'WantedBy=timers.target' "$timer" || fail "gnomon-$j.timer is not WantedBy=timers.target"
done
for j in prune verify; do
  grep -qx 'IOSchedulingClass=idle' "$work/units/gnomon-$j.service" ||
    fail "gnomon-$j.service does not run at idle I/O priority"
done

# --- (b) Each service's own command line. ---
# The words of UNIT's ExecStart=, into `cmd`. The test runs them as systemd
# would: so the unit must set nothing this test does not set too.
exec_start() {
  local unit="$work/units/$1" lines line
  lines=$(grep -c '^ExecStart=' "$unit" || true)
  [ "$lines" -eq 1 ] || fail "$1 has $lines ExecStart= lines, not 1"
  line=$(grep '^ExecStart=' "$unit")
  line=${line#ExecStart=}
  # A - prefix would hide a failure from systemctl --failed.
  local plain_words='^/[A-Za-z0-9/._ -]*$'
  [[ $line =~ $plain_words ]] ||
    fail "$1: ExecStart=$line has a prefix, quotes, specifiers or variables this test does not parse"
  local env
  env=$(grep -E '^(Environment|EnvironmentFile|User|Group|WorkingDirectory|UnsetEnvironment)=' "$unit" || true)
  [ -z "$env" ] || fail "$1 sets $env, which this test does not apply to its ExecStart= (teach it)"
  read -r -a cmd <<<"$line"
  [ "${cmd[0]}" = "$gen/gnomon-job" ] || fail "$1 runs ${cmd[0]}, not gnomon-job"
}
# Runs service JOB's ExecStart=; its exit code into `rc`, output in out/err.
run_service() {
  exec_start "gnomon-$1.service"
  rc=0
  "${cmd[@]}" >"$work/out" 2>"$work/err" </dev/null || rc=$?
}
# Writes the config, root's (or ours) and 0600.
config() {
  printf '%s\n' "$@" >"$GNOMON_CONFIG"
  chmod 0600 "$GNOMON_CONFIG"
}
expect_ok() {  # JOB
  run_service "$1"
  [ "$rc" -eq 0 ] || fail "gnomon-$1.service exited $rc: $(cat "$work/out" "$work/err")"
}
backups() {  # the repository's backups, oldest first: id parent type tags
  "$gnomon" --repo "$work/repo" --json list | python3 -c '
import json, sys
for b in json.load(sys.stdin):
    print(b["id"], b["parent"] or "-", b["type"], ",".join(b["tags"]) or "-")'
}

"$gnomon" --repo "$work/repo" init >/dev/null || fail "gnomon init $work/repo failed"
truncate -s 64M "$work/vol-a.img"
truncate -s 16M "$work/vol-b.img"
mkfs.ext4 -q -F "$work/vol-a.img" >/dev/null || fail "mkfs.ext4 $work/vol-a.img failed"
mkfs.ext4 -q -F "$work/vol-b.img" >/dev/null || fail "mkfs.ext4 $work/vol-b.img failed"
good=(
  "# the test's config"
  "GNOMON_REPO=$work/repo"
  "GNOMON_SOURCES=\"$work/vol-a.img $work/vol-b.img\""
  "GNOMON_BACKUP_ARGS='--type incremental --tag nightly'"
  "GNOMON_KEEP=\"--keep-last 1\""
  "GNOMON_VERIFY_SUBSET=100%"
)
config "${good[@]}"

expect_ok backup
mapfile -t list < <(backups)
[ ${#list[@]} -eq 1 ] || fail "after one backup job the repository holds ${#list[@]} backups: ${list[*]}"
read -r first _ type tags <<<"${list[0]}"
if [ "$type" != incremental ] || [ "$tags" != nightly ]; then
  fail "the backup job ignored GNOMON_BACKUP_ARGS: type $type, tags $tags"
fi

expect_ok backup
mapfile -t list < <(backups)
[ ${#list[@]} -eq 2 ] || fail "after two backup jobs the repository holds ${#list[@]} backups: ${list[*]}"
read -r second parent _ <<<"${list[1]}"
[ "$parent" = "$first" ] || fail "the second backup's parent is $parent, not the first backup $first"

expect_ok prune
mapfile -t list < <(backups)
if [ ${#list[@]} -ne 1 ] || [ "${list[0]%% *}" != "$second" ]; then
  fail "after the prune job (--keep-last 1) the repository holds: ${list[*]}, not just $second"
fi

expect_ok verify
grep -q -- "verify --read-data-subset 100%" "$work/out" ||
  fail "the verify job did not run verify --read-data-subset 100%: $(cat "$work/out")"

# Jobs wait for each other instead of failing on the repository lock.
flock "$GNOMON_RUNTIME_DIR/jobs.lock" sleep 2 &
holder=$!
sleep 0.5
expect_ok verify
wait "$holder"
grep -q "waiting for the gnomon job that is running now" "$work/err" ||
  fail "the verify job did not wait for the job holding the lock: $(cat "$work/err")"

# --- (c) A failed run: gnomon's exit code, and one line saying what it means. ---
expect_fail() {  # JOB CODE_PATTERN MEANING_PATTERN WHY
  run_service "$1"
  [ "$rc" -ne 0 ] || fail "$4: gnomon-$1.service succeeded"
  [[ $rc =~ ^($2)$ ]] || fail "$4: gnomon-$1.service exited $rc, not $2: $(cat "$work/err")"
  local last want="^gnomon-job $1: failed with exit $rc \\((.+)\\)\$"
  last=$(tail -n 1 "$work/err")
  [[ $last =~ $want ]] ||
    fail "$4: the last line on stderr does not give exit $rc and its meaning: $last"
  [[ ${BASH_REMATCH[1]} =~ $3 ]] || fail "$4: exit $rc is explained as '${BASH_REMATCH[1]}'"
}
config "${good[@]}" "GNOMON_SOURCES=$work/missing.img"
expect_fail backup 1 "failed" "a backup of a missing source"
# set -f in gnomon-job: a * in GNOMON_SOURCES is a name, not the two images.
config "${good[@]}" "GNOMON_SOURCES=$work/vol-*.img"
expect_fail backup 1 "failed" "a backup of $work/vol-*.img"
config "${good[@]}" "GNOMON_REPO=$work/no-repo"
expect_fail verify 10 "no repository at $work/no-repo" "a verify of a missing repository"
mapfile -t list < <(backups)
[ ${#list[@]} -eq 1 ] || fail "failed jobs changed the repository: ${list[*]}"

# --- (d) and (e): configs gnomon-job refuses, exit 2 naming the file; gnomon never runs. ---
expect_refused() {  # JOB WANT WHY
  run_service "$1"
  [ "$rc" -eq 2 ] || fail "$3: gnomon-$1.service exited $rc, not 2: $(cat "$work/err")"
  grep -qF -- "$2" "$work/err" || fail "$3: stderr does not say '$2': $(cat "$work/err")"
  ! grep -q "running" "$work/out" || fail "$3: gnomon ran: $(cat "$work/out")"
}
config "GNOMON_SOURCES=$work/vol-a.img" "GNOMON_KEEP=\"--keep-last 1\""
for j in "${jobs[@]}"; do
  expect_refused "$j" "GNOMON_REPO is not set in $GNOMON_CONFIG" "a config without GNOMON_REPO"
done
config "GNOMON_REPO=$work/repo"
expect_refused backup "GNOMON_SOURCES is not set in $GNOMON_CONFIG" "a config without GNOMON_SOURCES"
config "${good[@]}" "GNOMON_SOURCE=$work/vol-a.img"
expect_refused backup "$GNOMON_CONFIG:7: unknown setting GNOMON_SOURCE" "a misspelt setting"

config "${good[@]}"
chmod 0666 "$GNOMON_CONFIG"
expect_refused backup "refusing the config file $GNOMON_CONFIG: it is writable by group or others" \
  "a world-writable config"
chmod 0620 "$GNOMON_CONFIG"
expect_refused verify "refusing the config file $GNOMON_CONFIG: it is writable by group or others" \
  "a group-writable config"
chmod 0600 "$GNOMON_CONFIG"
chmod 0777 "$work/etc"
expect_refused prune "refusing the config file's directory $work/etc: it is writable by group or others" \
  "a config in a world-writable directory"
chmod 0755 "$work/etc"
owner_check="skipped (not root)"
if [ "$(id -u)" -eq 0 ]; then
  chown 65534 "$GNOMON_CONFIG"
  expect_refused backup "refusing the config file $GNOMON_CONFIG: it is owned by uid 65534" \
    "a config another user owns"
  chown 0 "$GNOMON_CONFIG"
  owner_check="checked"
fi
expect_ok verify  # the same config, safe again, is accepted

echo "systemd_units_test: the six units verify; backup, prune and verify ran from their" \
     "ExecStart= lines; failures give their exit code and its meaning; unsafe and" \
     "incomplete configs are refused (ownership: $owner_check)"
