#!/usr/bin/env bash
# A real S3 store for gnomon's end-to-end tests and benchmarks: a throw-away
# Ceph cluster (1 mon, M OSDs on sparse files, N radosgw) from Debian 12's
# packages, serving S3 on 127.0.0.1, with all its state under one folder.
#
#   tools/rgw.sh install                     install the packages (root; idempotent)
#   tools/rgw.sh start DIR [--gateways N] [--osds M] [--port BASE] [--bucket NAME]
#                                            prints KEY=VALUE lines: eval "$(tools/rgw.sh start DIR)"
#   tools/rgw.sh stop DIR                    stop its daemons and remove DIR (safe to repeat)
#   tools/rgw.sh kill-gateway DIR I          SIGKILL gateway I (0-based)
#   tools/rgw.sh start-gateway DIR I         restart gateway I, wait until it answers
#   tools/rgw.sh gc DIR                      radosgw-admin gc process --include-all
#   tools/rgw.sh allocated DIR               print the bytes the OSDs hold allocated (store size)
#
# Gateway I listens on 127.0.0.1:BASE+I (BASE 7480). S3 user: access key
# gnomontest, secret gnomontestsecret, region us-east-1, path-style addressing.
# Environment: GNOMON_RGW_TIMEOUT (start deadline, 120 s), GNOMON_RGW_OSD_GIB
# (sparse size of each OSD's block file, 32). The cluster's own state is in DIR/env,
# DIR/ceph.conf (for ceph/radosgw-admin -c DIR/ceph.conf) and DIR/log.
#
# Why the non-obvious settings (each was met on this machine):
# - bluestore_block_path lies outside osd_data: bluestore symlinks osd_data/block to it.
# - cephx is off inside the cluster (S3 requests are still signed); radosgw then
#   hangs at start unless ms_mon_client_mode = crc.
# - paxos_propose_interval 0.05 / paxos_min_wait 0.01: radosgw creates its pools one
#   by one, each waiting for a map proposal (start-up about 4x faster).
# - mon_data_avail_warn/crit 2/1 %: below crit the monitor shuts itself down.
# - mon_cluster_log_file, log_file, run_dir, crash_dir, *_data point into DIR, else
#   the daemons write to /var/log/ceph, /var/lib/ceph and /var/run/ceph.
# - rgw_gc_obj_min_wait 60 s (default 2 h keeps deleted objects' space); see also `gc`.
# - rgw_enable_lc_threads/objexp_threads off: the lifecycle worker made radosgw take ~5 s to stop.
# - Without a mgr `ceph df` shows nothing and the sparse block files never shrink:
#   `allocated` sums bluestore_allocated from the OSDs' admin sockets instead.
# - 8 PGs per pool, autoscaler off, mon_max_pg_per_osd raised, pool size 1.
# - tcp_nodelay=1 on the beast frontend: without it radosgw sends a response's
#   body after its headers only when the client acknowledges them, and the
#   client delays that acknowledgement 40 ms: every small request took ~45 ms.
# - osd_memory_target 1 GiB and rgw_thread_pool_size 64 keep RSS low.
# - OSDs take ports in 6800-7300 (Ceph's default range): keep --port outside it.
# - The monitor gets a free port of its own, so instances in different DIRs coexist.
# - Daemons fork and are re-parented to init: they are stopped by their pid files, and
#   a pid whose /proc/PID/cmdline is gone (a zombie) counts as stopped.
# - install: a temporary /usr/sbin/policy-rc.d exiting 101 keeps apt from starting daemons.
set -euo pipefail

readonly PKGS=(ceph-mon ceph-osd radosgw ceph-common curl)
readonly ACCESS_KEY=gnomontest SECRET_KEY=gnomontestsecret REGION=us-east-1
readonly TIMEOUT=${GNOMON_RGW_TIMEOUT:-120}
readonly OSD_GIB=${GNOMON_RGW_OSD_GIB:-32}
readonly POLICY=/usr/sbin/policy-rc.d POLICY_SAVED=/usr/sbin/policy-rc.d.rgw-sh-saved
DIR="" CONF="" LOGS="" RUN="" DEADLINE=0 ON_FAIL=""

say() { printf 'rgw.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '\%^#   tools/rgw.sh install%,\%^#   tools/rgw.sh allocated%s/^#//p' "$0" >&2
  exit 2
}

# ---- install -------------------------------------------------------------

missing_packages() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || printf '%s\n' "$p"
  done
}

block_service_starts() {
  [ -e "$POLICY_SAVED" ] || [ ! -e "$POLICY" ] || cp -p "$POLICY" "$POLICY_SAVED"
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
}

restore_service_starts() {
  if [ -e "$POLICY_SAVED" ]; then mv -f "$POLICY_SAVED" "$POLICY"; else rm -f "$POLICY"; fi
}

cmd_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -eq 0 ]; then say "packages already installed"; return; fi
  [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root to install)"
  say "installing ${missing[*]}"
  block_service_starts
  trap restore_service_starts EXIT
  export DEBIAN_FRONTEND=noninteractive
  local log
  log=$(mktemp /tmp/rgw-sh-install.XXXXXX)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
      >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "apt-get failed (whole output in $log)"
  fi
  rm -f "$log"
  restore_service_starts
  trap - EXIT
  say "installed"
}

# ---- helpers shared by the commands ----------------------------------------

set_dir() {
  [ -n "${1:-}" ] || usage
  DIR=$(realpath -m -- "$1")
  CONF=$DIR/ceph.conf LOGS=$DIR/log RUN=$DIR/run
}

# True when PID is a live process (not a zombie) started with -c $CONF.
ours() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$CONF"
}

# The live pid recorded in a daemon's pid file (e.g. client.rgw.gw0), or nothing.
daemon_pid() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 0
  if ours "$pid"; then echo "$pid"; fi
}

# Every live process of this instance: pid files first, then any other process
# started with -c $CONF (one that died or hung before writing its pid file).
instance_pids() {
  local f pid cmd
  {
    for f in "$RUN"/*.pid; do
      if [ -e "$f" ]; then daemon_pid "$(basename "$f" .pid)"; fi
    done
    for cmd in /proc/[0-9]*/cmdline; do
      pid=${cmd#/proc/} pid=${pid%/cmdline}
      if ours "$pid"; then echo "$pid"; fi
    done
  } | sort -un
}

remaining() {
  local n=$((DEADLINE - SECONDS))
  if [ "$n" -lt 1 ]; then echo 1; else echo "$n"; fi
}

# fail MESSAGE [LOG]: report, show the log's tail, undo what was started, exit 1.
fail() {
  trap - ERR
  say "error: $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    say "last lines of $2:"
    tail -n 25 "$2" >&2
  fi
  [ "$SECONDS" -lt "$DEADLINE" ] || say "(the ${TIMEOUT}s deadline has passed)"
  [ "$BASH_SUBSHELL" -eq 0 ] || exit 1
  if [ -n "$ON_FAIL" ]; then $ON_FAIL; fi
  [ "$ON_FAIL" != stop_daemons ] || say "stopped; logs kept in $DIR (tools/rgw.sh stop $DIR removes it)"
  exit 1
}

on_err() {
  local rc=$? line=$1 cmd=$2
  [ "$BASH_SUBSHELL" -eq 0 ] || exit "$rc"
  fail "line $line: '$cmd' exited with $rc" "$LOGS/setup.log"
}

# wait_until WHAT LOG COMMAND...: retries COMMAND every 0.2 s until the deadline.
wait_until() {
  local what=$1 log=$2
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$DEADLINE" ] || fail "timed out (${TIMEOUT}s) waiting for $what" "$log"
    sleep 0.2
  done
}

ceph_() { timeout "$(remaining)" ceph -c "$CONF" --connect-timeout 10 "$@" 2>>"$LOGS/setup.log"; }

# s3 ENDPOINT METHOD PATH [CURL ARGS...]: a SigV4-signed request; prints the HTTP status.
# curl 7.88's --aws-sigv4 needs x-amz-content-sha256 on every request for RGW.
s3() {
  local ep=$1 method=$2 path=$3
  shift 3
  curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X "$method" \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "$ep$path" 2>/dev/null || true
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- stop --------------------------------------------------------------------

# term_wait PIDS...: SIGTERM them, wait up to 10 s, SIGKILL what is left.
term_wait() {
  local pid left i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 100; i++)); do
    left=()
    for pid in "$@"; do if ours "$pid"; then left+=("$pid"); fi; done
    [ ${#left[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  say "SIGKILL after 10 s: ${left[*]}"
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "$@"; do if ours "$pid"; then left+=("$pid"); fi; done
    [ ${#left[@]} -gt 0 ] || return 0
    sleep 0.1
  done
}

# Stops gateways and tools first, then the OSDs, then the monitor.
stop_daemons() {
  local pid kind first=() osds=() mons=()
  while read -r pid; do
    kind=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
    case $kind in
      *ceph-mon*) mons+=("$pid") ;;
      *ceph-osd*) osds+=("$pid") ;;
      *) first+=("$pid") ;;
    esac
  done < <(instance_pids)
  [ ${#first[@]} -eq 0 ] || term_wait "${first[@]}"
  [ ${#osds[@]} -eq 0 ] || term_wait "${osds[@]}"
  [ ${#mons[@]} -eq 0 ] || term_wait "${mons[@]}"
}

cmd_stop() {
  set_dir "${1:-}"
  if [ ! -d "$DIR" ]; then say "$DIR: nothing to stop"; return; fi
  [ -e "$DIR/.rgw-sh" ] || [ -z "$(ls -A "$DIR")" ] \
    || die "$DIR was not made by rgw.sh start; not touching it"
  stop_daemons
  [ -z "$(instance_pids)" ] || die "processes of $DIR still running: $(instance_pids | xargs)"
  rm -rf -- "$DIR"
  say "stopped, removed $DIR"
}

# ---- start -------------------------------------------------------------------

write_conf() { # write_conf FSID MONPORT GATEWAYS BASEPORT
  local i
  cat >"$CONF" <<EOF
[global]
fsid = $1
mon_host = v2:127.0.0.1:$2
ms_bind_msgr1 = false
ms_mon_client_mode = crc
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $DIR/keyring
run_dir = $RUN
crash_dir = $DIR/crash
log_file = $LOGS/\$name.log
mon_cluster_log_file = $LOGS/cluster.log
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000

[mon]
mon_data = $DIR/mon/\$id
pid_file = $RUN/\$name.pid
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mon_data_avail_warn = 2
mon_data_avail_crit = 1

[osd]
osd_data = $DIR/osd/\$id
pid_file = $RUN/\$name.pid
osd_objectstore = bluestore
bluestore_block_path = $DIR/block/osd.\$id
bluestore_block_size = $((OSD_GIB << 30))
osd_memory_target = 1073741824
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1

[client]
rgw_data = $DIR/rgw/\$name
rgw_thread_pool_size = 64
rgw_gc_obj_min_wait = 60
rgw_enable_lc_threads = false
rgw_enable_objexp_threads = false
EOF
  for ((i = 0; i < $3; i++)); do
    printf "\n[client.rgw.gw%d]\npid_file = %s/\$name.pid\nrgw_frontends = beast endpoint=127.0.0.1:%d tcp_nodelay=1\n" \
      "$i" "$RUN" $(($4 + i)) >>"$CONF"
    echo "$i $(($4 + i))" >>"$DIR/gateways"
  done
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_mon() {
  local fsid=$1 port=$2
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$DIR/monmap" \
    >>"$LOGS/setup.log" 2>&1
  timeout "$(remaining)" ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" >>"$LOGS/setup.log" 2>&1 \
    || fail "ceph-mon --mkfs failed" "$LOGS/setup.log"
  timeout "$(remaining)" ceph-mon -c "$CONF" -i a </dev/null >>"$LOGS/mon.a.out" 2>&1 \
    || fail "ceph-mon did not start" "$LOGS/mon.a.log"
  wait_until "the monitor" "$LOGS/mon.a.log" mon_answers
}

mon_answers() {
  [ -n "$(daemon_pid mon.a)" ] || fail "ceph-mon exited" "$LOGS/mon.a.log"
  ceph_ --connect-timeout 3 mon stat >/dev/null
}

# mkfs_and_start_osd ID UUID: runs in the background, one per OSD.
mkfs_and_start_osd() {
  local id=$1 uuid=$2 t
  t=$(remaining)
  mkdir -p "$DIR/osd/$id"
  timeout "$t" ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" \
    </dev/null >>"$LOGS/osd.$id.out" 2>&1
  timeout "$t" ceph-osd -c "$CONF" -i "$id" </dev/null >>"$LOGS/osd.$id.out" 2>&1
}

start_osds() {
  local n=$1 i uuid id pids=() ids=()
  for ((i = 0; i < n; i++)); do
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph_ osd new "$uuid")
    mkfs_and_start_osd "$id" "$uuid" &
    pids+=($!) ids+=("$id")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || fail "osd.${ids[$i]} failed to start" "$LOGS/osd.${ids[$i]}.log"
  done
  wait_until "$n OSD(s) up" "$LOGS/cluster.log" osds_up "$n"
}

osds_up() {
  local json
  json=$(ceph_ osd stat -f json) || return 1
  [[ $json == *"\"num_up_osds\":$1,"* ]]
}

start_gateway() { # start_gateway I
  timeout "$(remaining)" radosgw -c "$CONF" -n "client.rgw.gw$1" \
    </dev/null >>"$LOGS/client.rgw.gw$1.out" 2>&1 \
    || fail "radosgw gw$1 did not start" "$LOGS/client.rgw.gw$1.log"
}

gateway_port() {
  local i=$1 p
  p=$(awk -v i="$i" '$1 == i { print $2 }' "$DIR/gateways" 2>/dev/null)
  [ -n "$p" ] || die "$DIR has no gateway $i"
  echo "$p"
}

gateway_answers() { # gateway_answers I
  local pid
  pid=$(daemon_pid "client.rgw.gw$1")
  [ -n "$pid" ] || [ ! -e "$RUN/client.rgw.gw$1.pid" ] \
    || fail "radosgw gw$1 exited" "$LOGS/client.rgw.gw$1.log"
  [ "$(s3 "http://127.0.0.1:$(gateway_port "$1")" GET /)" = 200 ]
}

create_user() {
  timeout "$(remaining)" radosgw-admin -c "$CONF" user create --uid=gnomontest \
    --display-name="gnomon tests" --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" \
    >>"$LOGS/setup.log" 2>&1 || fail "radosgw-admin user create failed" "$LOGS/setup.log"
}

create_bucket() {
  local code
  code=$(s3 "http://127.0.0.1:$(gateway_port 0)" PUT "/$1" -H 'Content-Length: 0')
  [ "$code" = 200 ] || fail "creating bucket $1 answered HTTP $code" "$LOGS/client.rgw.gw0.log"
}

print_env() {
  local i suffix
  for ((i = 0; i < $1; i++)); do
    suffix=$((i + 1))
    [ "$suffix" -gt 1 ] || suffix=""
    echo "GNOMON_S3_ENDPOINT$suffix=http://127.0.0.1:$(gateway_port "$i")"
  done
  echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
  echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
  echo "AWS_DEFAULT_REGION=$REGION"
}

# Makes DIR (empty or new), refusing one in use or holding anything else.
prepare_dir() {
  if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
    [ -z "$(instance_pids 2>/dev/null)" ] || die "$DIR is running; stop it first"
    die "$DIR is not empty (tools/rgw.sh stop $DIR removes an old instance)"
  fi
  mkdir -p "$DIR"
  touch "$DIR/.rgw-sh"
  mkdir -p "$LOGS" "$RUN" "$DIR/mon" "$DIR/osd" "$DIR/block" "$DIR/rgw" "$DIR/crash"
  : >"$DIR/keyring"
}

parse_start_args() {
  GATEWAYS=1 OSDS=1 PORT=7480 BUCKET=""
  while [ $# -gt 0 ]; do
    case $1 in
      --gateways) GATEWAYS=${2:-} ;;
      --osds) OSDS=${2:-} ;;
      --port) PORT=${2:-} ;;
      --bucket) BUCKET=${2:-} ;;
      *) usage ;;
    esac
    shift 2 || usage
  done
  [[ $GATEWAYS =~ ^[1-9][0-9]*$ && $OSDS =~ ^[1-9][0-9]*$ && $PORT =~ ^[1-9][0-9]*$ ]] \
    || die "--gateways, --osds and --port take positive numbers"
  [ $((PORT + GATEWAYS - 1)) -lt 6800 ] || [ "$PORT" -gt 7300 ] \
    || die "--port: 6800-7300 is where the OSDs bind"
  [ $((PORT + GATEWAYS - 1)) -le 65535 ] || die "--port: too high for $GATEWAYS gateway(s)"
}

cmd_start() {
  set_dir "${1:-}"
  shift
  parse_start_args "$@"
  local missing i fsid monport
  missing=$(missing_packages | xargs)
  [ -z "$missing" ] || die "missing packages: $missing (run: tools/rgw.sh install)"
  for ((i = 0; i < GATEWAYS; i++)); do
    ! port_busy $((PORT + i)) || die "port $((PORT + i)) is already in use"
  done
  prepare_dir
  DEADLINE=$((SECONDS + TIMEOUT)) ON_FAIL=stop_daemons
  set -E
  trap 'on_err $LINENO "$BASH_COMMAND"' ERR
  trap 'fail interrupted' INT TERM
  fsid=$(cat /proc/sys/kernel/random/uuid)
  monport=$(free_port)
  write_conf "$fsid" "$monport" "$GATEWAYS" "$PORT"
  say "starting in $DIR: 1 mon, $OSDS OSD(s), $GATEWAYS gateway(s) from port $PORT"
  start_mon "$fsid" "$monport"
  start_osds "$OSDS"
  for ((i = 0; i < GATEWAYS; i++)); do start_gateway "$i"; done
  create_user
  for ((i = 0; i < GATEWAYS; i++)); do
    wait_until "gateway $i to answer S3" "$LOGS/client.rgw.gw$i.log" gateway_answers "$i"
  done
  if [ -n "$BUCKET" ]; then create_bucket "$BUCKET"; fi
  trap - ERR INT TERM
  print_env "$GATEWAYS" | tee "$DIR/env"
  say "up after ${SECONDS}s (environment also in $DIR/env)"
}

# ---- single gateways, gc -------------------------------------------------------

cmd_kill_gateway() {
  set_dir "${1:-}"
  local i=${2:-} pid n
  [[ $i =~ ^[0-9]+$ ]] || usage
  gateway_port "$i" >/dev/null
  pid=$(daemon_pid "client.rgw.gw$i")
  [ -n "$pid" ] || { say "gateway $i is not running"; return; }
  kill -KILL "$pid"
  for ((n = 0; n < 100; n++)); do ours "$pid" || break; sleep 0.1; done
  ! ours "$pid" || die "gateway $i (pid $pid) survived SIGKILL"
  say "killed gateway $i (pid $pid)"
}

kill_gateway_quietly() { cmd_kill_gateway "$DIR" "$GW" 2>/dev/null || true; }

cmd_start_gateway() {
  set_dir "${1:-}"
  GW=${2:-}
  [[ $GW =~ ^[0-9]+$ ]] || usage
  local port
  port=$(gateway_port "$GW")
  [ -z "$(daemon_pid "client.rgw.gw$GW")" ] || die "gateway $GW is already running"
  ! port_busy "$port" || die "port $port is already in use"
  DEADLINE=$((SECONDS + TIMEOUT)) ON_FAIL=kill_gateway_quietly
  rm -f "$RUN/client.rgw.gw$GW.pid"
  start_gateway "$GW"
  wait_until "gateway $GW to answer S3" "$LOGS/client.rgw.gw$GW.log" gateway_answers "$GW"
  say "gateway $GW answers on port $port after ${SECONDS}s"
}

cmd_gc() {
  set_dir "${1:-}"
  [ -f "$CONF" ] || die "$DIR has no cluster"
  radosgw-admin -c "$CONF" gc process --include-all >&2
}

cmd_allocated() {
  set_dir "${1:-}"
  local sock total=0 n
  for sock in "$RUN"/ceph-osd.*.asok; do
    [ -S "$sock" ] || die "$DIR has no running OSD"
    n=$(ceph --admin-daemon "$sock" perf dump bluestore \
      | sed -n 's/.*"bluestore_allocated": *\([0-9]*\).*/\1/p')
    [ -n "$n" ] || die "no bluestore_allocated from $sock"
    total=$((total + n))
  done
  echo "$total"
}

main() {
  local cmd=${1:-}
  [ $# -eq 0 ] || shift
  case $cmd in
    install) cmd_install ;;
    start) [ $# -ge 1 ] || usage; cmd_start "$@" ;;
    stop) [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    kill-gateway) [ $# -eq 2 ] || usage; cmd_kill_gateway "$@" ;;
    start-gateway) [ $# -eq 2 ] || usage; cmd_start_gateway "$@" ;;
    gc) [ $# -eq 1 ] || usage; cmd_gc "$1" ;;
    allocated) [ $# -eq 1 ] || usage; cmd_allocated "$1" ;;
    *) usage ;;
  esac
}

main "$@"
