#!/usr/bin/env bash
# A single-node Ceph 16.2 cluster on loopback for tests and benchmarks, without systemd:
# 1 mon, 1 mgr, 1 OSD (BlueStore on a sparse file), pool "rbd" of size 1, cephx with keys
# generated for this cluster only.
#
#   scripts/ceph_dev.sh start  [--dir DIR] [--lease PID]   start (or join) the cluster in DIR
#   scripts/ceph_dev.sh stop   [--dir DIR]                 stop its daemons by pid, delete DIR
#   scripts/ceph_dev.sh env    [--dir DIR]                 print CEPH_CONF, keyring, pool, ...
#   scripts/ceph_dev.sh status [--dir DIR]                 exit 0 when up and all PGs are clean
#
# DIR defaults to $PRESYNC_CEPH_DIR, else ${TMPDIR:-/tmp}/presync-ceph. Nothing outside DIR is
# written (apart from DIR.lock beside it). The mon listens on a free port of 127.0.0.1 picked
# at start; the mgr and the OSD bind the first free ports of Ceph's range (6800-7300), so
# clusters in different directories run side by side.
#
# --lease PID ties the cluster to a process: a watchdog stops the cluster once every process
# that leased it has exited (tests pass their own pid, so a killed test run leaves nothing
# behind). A cluster started without --lease runs until `stop`.
#
# Environment: PRESYNC_CEPH_OSD_GIB (size of the sparse OSD file, default 10),
# PRESYNC_CEPH_START_TIMEOUT_S (default 120).
set -euo pipefail

command_name=${1:-}
[ $# -gt 0 ] && shift
dir=${PRESYNC_CEPH_DIR:-${TMPDIR:-/tmp}/presync-ceph}
lease=""
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --lease) lease=$2; shift 2 ;;
    *) echo "ceph_dev.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
dir=$(realpath -m "$dir")
conf=$dir/ceph.conf
pool=rbd
osd_gib=${PRESYNC_CEPH_OSD_GIB:-10}
start_timeout_s=${PRESYNC_CEPH_START_TIMEOUT_S:-120}
daemons=(mon.a mgr.x osd.0)

die() {
  echo "ceph_dev.sh: $*" >&2
  exit 1
}

# A TCP port of 127.0.0.1 that nothing listens on or talks from now.
free_port() {
  local port hex
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 30000))
    hex=$(printf ':%04X ' "$port")
    grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$port"; return; }
  done
  die "no free TCP port found on 127.0.0.1"
}

# The start time of process $1 (field 22 of /proc/PID/stat), empty when it does not exist or
# has exited and waits to be reaped (a zombie); a pid and its start time name one process even
# after the pid is reused.
start_time_of() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  case ${stat%% *} in Z | X) return 0 ;; esac
  cut -d' ' -f20 <<<"$stat"
}

# Whether the daemon recorded in pid file $1 still runs (and is ours: its start time matches).
pid_alive() {
  local pid time
  [ -f "$1" ] || return 1
  read -r pid time <"$1"
  [ -n "$pid" ] && [ "$(start_time_of "$pid")" = "$time" ]
}

record_pid() { echo "$1 $(start_time_of "$1")" >"$2"; }

ceph_cli() { timeout 30 ceph --conf "$conf" --connect-timeout 10 "$@"; }

# Runs a daemon in the foreground of its own session, its output in DIR/log, its pid recorded.
spawn() {
  local name=$1
  shift
  setsid "$@" --conf "$conf" -f </dev/null >>"$dir/log/$name.out" 2>&1 9>&- &
  record_pid $! "$dir/run/$name.pid"
}

write_conf() {
  local port=$1 fsid=$2
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = true
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# The test cluster lives on whatever disk holds DIR: do not warn at 30% free or stop at 5%.
mon data avail warn = 1
mon data avail crit = 0
mgr initial modules =
# PG states reach the mgr and the mon every second instead of every 5 s: start waits on them.
mgr stats period = 1
mon mgr digest period = 1

[client]
# Clients (the CLI, tests) run many at once: no admin socket, whose fixed path they would share.
admin socket =

[mon]
mon data = $dir/mon
mon cluster log file = $dir/log/cluster.log
# A snapshot create or remove is a mon (Paxos) proposal, batched for 1 s by default: every RBD
# commit (one snapshot) would then take a second. One mon on loopback has nothing to batch.
paxos propose interval = 0.05
paxos min wait = 0.01

[mgr]
mgr data = $dir/mgr
# No Python modules: the mgr's C++ core (PG stats, quotas, df) is all the tests need, and the
# modules would add ~15 s of start-up and ~280 MiB. The always-on ones then report
# MGR_MODULE_ERROR, which start mutes.
mgr module path = $dir/mgr-modules

[osd]
osd data = $dir/osd
osd objectstore = bluestore
bluestore block path = $dir/osd.block
bluestore block create = true
bluestore block size = $((osd_gib << 30))
bluestore fsck on mkfs = false
# Virtual disks report rotational; the sparse file is not. Do not take BlueStore's HDD path
# of deferring every small write through the RocksDB WAL.
bluestore prefer deferred size hdd = 0
# The smallest memory target Ceph accepts (896 MiB; smaller values are ignored).
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 2
EOF
}

# Whether every PG of every pool is active+clean, at most also trimming snapshots or scrubbing
# (what a cluster in use does now and then; a new one shows none of it).
pgs_clean() {
  local stat total clean=0 name num
  stat=$(ceph_cli pg stat -f json 2>/dev/null) || return 1
  [[ $stat =~ \"num_pgs\":([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ] || return 1
  total=${BASH_REMATCH[1]}
  while read -r name num; do
    [[ $name =~ ^active\+clean(\+(snaptrim|snaptrim_wait|scrubbing|deep))*$ ]] &&
      clean=$((clean + num))
  done < <(grep -o '"name":"[a-z_+]*","num":[0-9]*' <<<"$stat" |
    sed 's/"name":"\([^"]*\)","num":\([0-9]*\)/\1 \2/')
  [ "$clean" -eq "$total" ]
}

# Polls pgs_clean until it holds; fails early when a daemon exits.
wait_clean() {
  local deadline=$((SECONDS + start_timeout_s)) name
  until pgs_clean; do
    [ $SECONDS -lt $deadline ] ||
      die "PGs in $dir not active+clean after ${start_timeout_s}s (logs in $dir/log)"
    for name in "${daemons[@]}"; do
      pid_alive "$dir/run/$name.pid" ||
        die "$name exited during start; see $dir/log/$name.out and $name.log"
    done
    sleep 0.5
  done
}

running() {
  local name
  [ -f "$conf" ] || return 1
  for name in "${daemons[@]}"; do pid_alive "$dir/run/$name.pid" || return 1; done
}

add_lease() {
  [ -n "$lease" ] || return 0
  local time
  time=$(start_time_of "$lease")
  [ -n "$time" ] || die "--lease $lease: no such process"
  mkdir -p "$dir/leases"
  echo "$time" >"$dir/leases/$lease"
}

any_lease_alive() {
  local file pid
  for file in "$dir"/leases/*; do
    [ -f "$file" ] || continue
    pid=${file##*/}
    [ "$(start_time_of "$pid")" = "$(cat "$file" 2>/dev/null)" ] && return 0
  done
  return 1
}

# Kills the daemons of DIR by their recorded pids (TERM, then KILL after 10 s).
kill_daemons() {
  local name pid time deadline
  for name in watchdog "${daemons[@]}"; do
    [ "$name" = watchdog ] && [ "${PRESYNC_CEPH_WATCHDOG:-}" = 1 ] && continue
    pid_alive "$dir/run/$name.pid" || continue
    read -r pid time <"$dir/run/$name.pid"
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 10))
  for name in "${daemons[@]}"; do
    while pid_alive "$dir/run/$name.pid"; do
      if [ $SECONDS -ge $deadline ]; then
        read -r pid time <"$dir/run/$name.pid"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.1
    done
  done
}

stop_cluster() {
  kill_daemons
  rm -rf "$dir"
}

# Runs until no process holds a lease, then stops the cluster. Checks again under the lock: a
# start may have added a lease meanwhile, and then it goes on watching.
watchdog() {
  export PRESYNC_CEPH_WATCHDOG=1
  while :; do
    while any_lease_alive; do sleep 1; done
    exec 9>"$dir.lock"
    flock 9
    if ! any_lease_alive; then
      stop_cluster
      return
    fi
    exec 9>&-
  done
}

# Starts the watchdog of a leased cluster unless it runs already.
ensure_watchdog() {
  pid_alive "$dir/run/watchdog.pid" && return
  setsid "$0" _watchdog --dir "$dir" </dev/null >>"$dir/log/watchdog.out" 2>&1 9>&- &
  record_pid $! "$dir/run/watchdog.pid"
}

start_cluster() {
  command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null &&
    command -v ceph-mgr >/dev/null && command -v ceph >/dev/null ||
    die "Ceph is not installed (run scripts/setup.sh as root, or apt-get install ceph-mon ceph-osd ceph-mgr ceph-common)"
  rm -rf "$dir"
  mkdir -p "$dir"/{mon,mgr,mgr-modules,osd,run,log,crash,leases}
  chmod 700 "$dir"
  local port fsid osd_uuid
  port=$(free_port)
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$port" "$fsid"

  # Every key the cluster needs, generated here and known to the mon from its first start.
  local keyring=$dir/keyring
  ceph-authtool --create-keyring "$keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$keyring" --gen-key -n mgr.x \
    --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$keyring" >/dev/null
  chmod 600 "$keyring" "$dir/mon.keyring"

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
  ceph-mon --conf "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
    >>"$dir/log/mon.a.out" 2>&1 || die "ceph-mon --mkfs failed; see $dir/log/mon.a.out"
  spawn mon.a ceph-mon -i a
  spawn mgr.x ceph-mgr -i x

  # The pool is created while the OSD is made (each ceph command takes about a second).
  {
    ceph_cli osd pool create "$pool" 8 8 &&
      ceph_cli osd pool application enable "$pool" rbd &&
      ceph_cli health mute MGR_MODULE_ERROR --sticky
  } >>"$dir/log/setup.out" 2>&1 &
  local pool_job=$!
  ceph_cli osd new "$osd_uuid" 0 >/dev/null
  ceph-osd --conf "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/osd.0.out" 2>&1 ||
    die "ceph-osd --mkfs failed; see $dir/log/osd.0.out"
  spawn osd.0 ceph-osd -i 0
  wait "$pool_job" || die "creating pool $pool failed; see $dir/log/setup.out"
  wait_clean
}

print_env() {
  [ -f "$conf" ] || die "no cluster in $dir (run: scripts/ceph_dev.sh start --dir $dir)"
  echo "CEPH_CONF=$conf"
  echo "CEPH_KEYRING=$dir/keyring"
  echo "CEPH_ID=admin"
  echo "PRESYNC_CEPH_POOL=$pool"
  echo "PRESYNC_CEPH_DIR=$dir"
  echo "PRESYNC_CEPH_MON_HOST=$(sed -n 's/^mon host = //p' "$conf")"
  echo "PRESYNC_CEPH_OSD_PID=$(cut -d' ' -f1 "$dir/run/osd.0.pid")"
}

case $command_name in
  start)
    mkdir -p "$(dirname "$dir")"
    exec 9>"$dir.lock"
    flock 9
    if running; then
      add_lease
      # A cluster started with a lease keeps a watchdog (one started without runs until stop).
      [ -n "$lease" ] && [ -f "$dir/run/watchdog.pid" ] && ensure_watchdog
    else
      started=$SECONDS
      trap kill_daemons EXIT
      start_cluster
      trap - EXIT
      add_lease
      [ -n "$lease" ] && ensure_watchdog
      echo "ceph_dev.sh: cluster up in $dir after $((SECONDS - started)) s" >&2
    fi
    print_env
    ;;
  stop)
    exec 9>"$dir.lock"
    flock 9
    stop_cluster
    ;;
  env) print_env ;;
  status)
    running || die "no cluster running in $dir"
    ceph_cli -s
    pgs_clean || die "cluster in $dir is up but not all PGs are active+clean"
    ;;
  _watchdog) watchdog ;;
  *)
    echo "usage: scripts/ceph_dev.sh start|stop|env|status [--dir DIR] [--lease PID]" >&2
    exit 2
    ;;
esac
