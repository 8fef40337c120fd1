#!/usr/bin/env bash
# Single-node SLURM on this machine (Debian 12), bound to 127.0.0.1 / localhost only.
#
#   scripts/slurm_local.sh install   apt-get install munge slurmctld slurmd slurm-client slurmdbd
#                                    mariadb-server (idempotent; skipped when already installed)
#   scripts/slurm_local.sh start     install if needed, write configs, start munged, mariadbd,
#                                    slurmdbd, slurmctld, slurmd (no systemd); waits until the
#                                    node is idle and sacct answers
#   scripts/slurm_local.sh stop      stop the daemons this script started (by their pid files)
#   scripts/slurm_local.sh status    sinfo + daemon pids
#
# Needs root. State lives in $UWMBENCH_SLURM_DIR (default /var/lib/uwmbench-slurm); the config
# is written to /etc/slurm/slurm.conf (the path the Debian client tools read).
# Debian 12 slurm 22.05 packages; no systemd, so munged, mariadbd, slurmdbd, slurmctld and slurmd are
# started by hand (submitit polls sacct, which needs the accounting daemon).
set -euo pipefail

STATE=${UWMBENCH_SLURM_DIR:-/var/lib/uwmbench-slurm}
PARTITION=${UWMBENCH_SLURM_PARTITION:-debug}
CLUSTER=uwmbench
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf

log() { echo "[slurm_local] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (apt-get and daemons)"; }

installed() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

do_install() {
  need_root
  if installed; then log "packages already installed: ${PKGS[*]}"; return 0; fi
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d: no daemon may start from the package scripts (we start them by hand)
  local prc=/usr/sbin/policy-rc.d created_prc=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' > $prc; chmod +x $prc; created_prc=1; fi
  apt-get update -qq || log "apt-get update failed; trying the existing package lists"
  apt-get install -y --no-install-recommends -qq "${PKGS[@]}" >/dev/null
  [ $created_prc = 1 ] && rm -f $prc
  installed || die "apt-get install did not install all of ${PKGS[*]}"
  log "installed ${PKGS[*]} in $((SECONDS - t0)) s"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_configs() {
  mkdir -p /etc/slurm "$STATE"/{ctld,slurmd,log,run} /run/munge /run/mysqld
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)
  cat > $CONF.tmp <<CONFEOF
# written by uwmbench scripts/slurm_local.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
KillWait=5
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MessageTimeout=20
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFEOF
  mv $CONF.tmp $CONF
  umask 077
  cat > $DBDCONF.tmp <<DBDEOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
DBDEOF
  mv $DBDCONF.tmp $DBDCONF
  chmod 600 $DBDCONF
  umask 022
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local n=$1 what=$2; shift 2
  local i
  for ((i = 0; i < n * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${n}s waiting for $what (logs: $STATE/log)"
}

do_start() {
  need_root
  local t0=$SECONDS
  installed || do_install
  write_configs
  # munge
  chown munge:munge /run/munge; chmod 755 /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || \
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; \
      chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  if ! pid_alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  fi
  wait_for 10 munge sh -c 'munge -n | unmunge'
  # mariadb (socket only, no TCP)
  chown mysql:mysql /run/mysqld
  if ! pid_alive /run/mysqld/mariadb.pid; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1
    nohup /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mariadb.pid \
      --log-error=/run/mysqld/mariadb.log >/dev/null 2>&1 &
  fi
  wait_for 30 mariadb mariadb --socket=/run/mysqld/mysqld.sock -e 'select 1'
  if [ ! -f "$STATE/ctld/job_state" ] && ! pid_alive "$STATE/run/slurmdbd.pid"; then
    # fresh controller state: job ids restart at 1, so old accounting rows would collide
    mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  # slurmdbd, slurmctld, slurmd
  pid_alive "$STATE/run/slurmdbd.pid" || /usr/sbin/slurmdbd
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
  # the controller needs its cluster (and TRES) in the database before its first start
  sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
  if pid_alive "$STATE/run/slurmctld.pid"; then
    scontrol reconfigure || true
  else
    /usr/sbin/slurmctld -f $CONF
  fi
  wait_for 30 slurmctld scontrol ping
  pid_alive "$STATE/run/slurmd.pid" || /usr/sbin/slurmd -f $CONF
  wait_for 30 "node localhost idle" sh -c "sinfo -h -n localhost -o %t | grep -Eq '^(idle|mix|alloc)'"
  wait_for 30 sacct sacct -n -X -S now
  log "SLURM up in $((SECONDS - t0)) s: partition=$PARTITION cpus=$(nproc) (conf $CONF, state $STATE)"
}

stop_pid() {  # stop_pid <pidfile> <name>
  if pid_alive "$1"; then
    local p; p=$(cat "$1")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && { log "$2 ($p) did not stop, sending KILL"; kill -9 "$p" || true; }
    log "stopped $2 ($p)"
  fi
}

do_stop() {
  need_root
  # jobs first, so nothing keeps running after the controller is gone
  # the controller needs its cluster (and TRES) in the database before its first start
  sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
  if pid_alive "$STATE/run/slurmctld.pid"; then scancel --full --state=RUNNING,PENDING 2>/dev/null || true; fi
  stop_pid "$STATE/run/slurmd.pid" slurmd
  stop_pid "$STATE/run/slurmctld.pid" slurmctld
  stop_pid "$STATE/run/slurmdbd.pid" slurmdbd
  stop_pid /run/mysqld/mariadb.pid mariadbd
  stop_pid /run/munge/munged.pid munged
}

do_status() {
  for d in munged mariadb slurmdbd slurmctld slurmd; do
    f="$STATE/run/$d.pid"; [ $d = munged ] && f=/run/munge/munged.pid; [ $d = mariadb ] && f=/run/mysqld/mariadb.pid
    if pid_alive "$f"; then echo "$d: running ($(cat "$f"))"; else echo "$d: stopped"; fi
  done
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  *) echo "usage: $0 {install|start|stop|restart|status}" >&2; exit 2 ;;
esac
