#!/usr/bin/env bash
# Single-node SLURM on this machine (Debian 12), bound to 127.0.0.1 / localhost only.
#
#   scripts/slurm_local.sh install   apt-get install munge slurmctld slurmd slurm-client slurmdbd
#                                    mariadb-server (idempotent; skipped when already installed)
#   scripts/slurm_local.sh start     install if needed, write configs, start munged, mariadbd,
#                                    slurmdbd, slurmctld, slurmd (no systemd); waits until the
#                                    node is idle and sacct answers. A healthy instance already
#                                    running in the state folder is reused (nothing restarted).
#   scripts/slurm_local.sh stop      stop what this state folder's instance runs: its jobs, then
#                                    each daemon by its pid file (one already down is skipped,
#                                    the others are still stopped), then leftover job processes
#   scripts/slurm_local.sh status    daemon pids + sinfo
#   scripts/slurm_local.sh env       print `export SLURM_CONF=...` for this instance
#
# Needs root. Everything an instance runs and writes lives in its state folder
# $UWMBENCH_SLURM_DIR (default /var/lib/uwmbench-slurm): slurm.conf and slurmdbd.conf, its own
# MariaDB (data, socket, a TCP port on 127.0.0.1), pid files, logs, controller and slurmd state.
# munged is the machine's (/run/munge: slurm 22.05 connects to slurmdbd through the default MUNGE
# socket whatever AuthInfo says); it is started if needed and stopped by the `stop` of the last
# running instance, unless it was running before any instance started it. Its TCP ports (slurmctld, slurmd, slurmdbd, MariaDB) are
# picked free on the first start and kept in $STATE/ports.env, so several instances (e.g. two
# test runs at once) run side by side without touching each other. Client commands find an
# instance through SLURM_CONF=$STATE/slurm.conf (`start` prints it on stdout; for the default
# state folder /etc/slurm/slurm.conf is also linked to it, so plain `sinfo` works).
set -euo pipefail

STATE=${UWMBENCH_SLURM_DIR:-/var/lib/uwmbench-slurm}
STATE=$(realpath -m "$STATE")
DEFAULT_STATE=/var/lib/uwmbench-slurm
PARTITION=${UWMBENCH_SLURM_PARTITION:-debug}
CLUSTER=uwmbench
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
CONF=$STATE/slurm.conf
DBDCONF=$STATE/slurmdbd.conf
RUN=$STATE/run
DB_SOCKET=$RUN/mysqld.sock
MUNGE_PID=/run/munge/munged.pid
export SLURM_CONF=$CONF  # the client commands below talk to this instance

# every daemon started here (and what they start, e.g. slurmstepd) carries this marker, so that
# `stop` finds them even when their pid files are gone
daemon() { env UWMBENCH_SLURM_INSTANCE="$STATE" "$@"; }

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

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

# --------------------------------------------------------------------------- ports
listening_ports() {  # TCP ports in LISTEN state on this machine (decimal, one per line)
  awk 'FNR > 1 && $4 == "0A" { split($2, a, ":"); print strtonum("0x" a[2]) }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

pick_ports() {  # CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT: kept from an earlier start, else free ones
  if [ -f "$STATE/ports.env" ]; then . "$STATE/ports.env"; return 0; fi
  local used p n=0 picked=()
  used=" $(listening_ports | tr '\n' ' ') "
  while [ ${#picked[@]} -lt 4 ]; do
    p=$((20000 + RANDOM % 12000)); n=$((n + 1))  # below the ephemeral range (32768-)
    [ $n -gt 1000 ] && die "found no free TCP ports"
    case "$used ${picked[*]} " in *" $p "*) continue ;; esac
    picked+=("$p")
  done
  CTLD_PORT=${picked[0]} SLURMD_PORT=${picked[1]} DBD_PORT=${picked[2]} DB_PORT=${picked[3]}
  printf 'CTLD_PORT=%s\nSLURMD_PORT=%s\nDBD_PORT=%s\nDB_PORT=%s\n' $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT \
    > "$STATE/ports.env"
}

# --------------------------------------------------------------------------- configs
write_configs() {
  mkdir -p "$STATE"/{ctld,slurmd,log,mysql} "$RUN"
  chmod 755 "$STATE" "$RUN"
  pick_ports
  local cpus mem
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc obeys OMP_NUM_THREADS
  mem=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)
  cat > "$CONF.tmp" <<CONFEOF
# written by uwmbench scripts/slurm_local.sh (instance $STATE)
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
PlugStackConfig=$STATE/plugstack.conf
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
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFEOF
  mv "$CONF.tmp" "$CONF"
  : > "$STATE/plugstack.conf"
  umask 077
  cat > "$DBDCONF.tmp" <<DBDEOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
DBDEOF
  mv "$DBDCONF.tmp" "$DBDCONF"
  chmod 600 "$DBDCONF"
  umask 022
  if [ "$STATE" = "$DEFAULT_STATE" ]; then  # the default instance also answers plain `sinfo`
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  fi
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local n=$1 what=$2; shift 2
  local i
  for ((i = 0; i < n * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${n}s waiting for $what (logs: $STATE/log)"
}

db() { mariadb --socket="$DB_SOCKET" "$@"; }

healthy() {
  local d
  pid_alive "$MUNGE_PID" || return 1
  for d in mariadb slurmdbd slurmctld slurmd; do pid_alive "$RUN/$d.pid" || return 1; done
  scontrol ping >/dev/null 2>&1 || return 1
  sinfo -h -n localhost -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)' || return 1
  sacct -n -X -S now >/dev/null 2>&1
}

do_start() {
  need_root
  local t0=$SECONDS
  if [ -f "$CONF" ] && healthy; then
    log "SLURM instance in $STATE is up: reusing it (nothing restarted)"
    echo "SLURM_CONF=$CONF"
    echo "REUSED=1"
    return 0
  fi
  installed || do_install
  write_configs
  # munge: the machine's daemon (shared by the instances)
  mkdir -p /run/munge; chown munge:munge /run/munge; chmod 755 /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || \
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; \
      chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  if ! pid_alive "$MUNGE_PID"; then
    daemon runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
  fi
  wait_for 10 munge sh -c 'munge -n | unmunge'
  # mariadb: this instance's own data folder, socket and 127.0.0.1 port
  if ! pid_alive "$RUN/mariadb.pid"; then
    if [ ! -d "$STATE/mysql/mysql" ]; then
      mariadb-install-db --user=root --datadir="$STATE/mysql" --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed (log: $STATE/log/mariadb-install.log)"
    fi
    daemon nohup /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$DB_SOCKET" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$RUN/mariadb.pid" \
      --innodb-buffer-pool-size=32M --log-error="$STATE/log/mariadb.log" >/dev/null 2>&1 &
  fi
  wait_for 60 mariadb db -e 'select 1'
  if [ ! -f "$STATE/ctld/job_state" ] && ! pid_alive "$RUN/slurmdbd.pid"; then
    # fresh controller state: job ids restart at 1, so old accounting rows would collide
    db -e "DROP DATABASE IF EXISTS slurm_acct_db"
  fi
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  # slurmdbd, slurmctld, slurmd
  pid_alive "$RUN/slurmdbd.pid" || daemon /usr/sbin/slurmdbd
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
  # the controller needs its cluster (and TRES) in the database before its first start
  sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
  if pid_alive "$RUN/slurmctld.pid"; then
    scontrol reconfigure || true
  else
    daemon /usr/sbin/slurmctld -f "$CONF"
  fi
  wait_for 30 slurmctld scontrol ping
  pid_alive "$RUN/slurmd.pid" || daemon /usr/sbin/slurmd -f "$CONF"
  wait_for 30 "node localhost idle" sh -c "sinfo -h -n localhost -o %t | grep -Eq '^(idle|mix|alloc)'"
  wait_for 30 sacct sacct -n -X -S now
  log "SLURM up in $((SECONDS - t0)) s: partition=$PARTITION cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) state $STATE" \
      "(ports ctld $CTLD_PORT, slurmd $SLURMD_PORT, dbd $DBD_PORT, db $DB_PORT); export SLURM_CONF=$CONF"
  echo "SLURM_CONF=$CONF"
  echo "REUSED=0"
}

# --------------------------------------------------------------------------- stop
stop_pid() {  # stop_pid <pidfile> <name>: never fails; a daemon already down is reported and skipped
  local p
  if ! pid_alive "$1"; then
    log "$2: not running"
    rm -f "$1"
    return 0
  fi
  p=$(cat "$1")
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$p" 2>/dev/null; then log "$2 ($p) did not stop, sending KILL"; kill -9 "$p" 2>/dev/null || true; fi
  rm -f "$1"
  log "stopped $2 ($p)"
}

proc_env() { { tr '\0' '\n' < "/proc/$1/environ"; } 2>/dev/null; }

other_instances() {  # state folders of other instances with a live daemon (munged aside)
  local d p env
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$(cat "$MUNGE_PID" 2>/dev/null)" ] && continue
    env=$(proc_env "$p") || continue
    grep -x 'UWMBENCH_SLURM_INSTANCE=.*' <<<"$env" | grep -vxF "UWMBENCH_SLURM_INSTANCE=$STATE" | cut -d= -f2-
  done | sort -u
}

instance_processes() {  # pids of processes of this instance: marked daemons (slurmstepd...) and its jobs
  local d p env
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case "$p" in "$$" | "$PPID" | "$BASHPID" | "$(cat "$MUNGE_PID" 2>/dev/null)") continue ;; esac
    env=$(proc_env "$p") || continue
    if grep -qxF "UWMBENCH_SLURM_INSTANCE=$STATE" <<<"$env" \
       || { grep -qxF "SLURM_CONF=$CONF" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env"; }; then
      echo "$p"
    fi
  done
}

do_stop() {
  need_root
  set +e  # stop everything that can be stopped, whatever is already down
  # jobs first, so nothing keeps running after the controller is gone
  if pid_alive "$RUN/slurmctld.pid" && timeout 20 scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs=$(timeout 20 squeue -h -o %A 2>/dev/null)
    if [ -n "$jobs" ]; then
      timeout 20 scancel $jobs 2>/dev/null
      for _ in $(seq 50); do [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
      log "cancelled job(s) $(echo $jobs)"
    fi
  fi
  stop_pid "$RUN/slurmd.pid" slurmd
  stop_pid "$RUN/slurmctld.pid" slurmctld
  stop_pid "$RUN/slurmdbd.pid" slurmdbd
  stop_pid "$RUN/mariadb.pid" mariadbd
  # munged is shared: stopped only if an instance started it and no other instance runs
  if pid_alive "$MUNGE_PID"; then
    local others
    others=$(other_instances)
    if ! proc_env "$(cat "$MUNGE_PID")" | grep -q '^UWMBENCH_SLURM_INSTANCE='; then
      log "munged: left running (not started by this script)"
    elif [ -n "$others" ]; then
      log "munged: left running (used by the instance(s) in $(echo $others))"
    else
      stop_pid "$MUNGE_PID" munged
    fi
  fi
  # what is left: job steps (slurmstepd) and job processes of this instance
  local left
  left=$(instance_processes)
  if [ -n "$left" ]; then
    log "killing leftover processes of this instance: $(echo $left)"
    kill -9 $left 2>/dev/null
  fi
  set -e
  return 0
}

do_status() {
  local d
  if pid_alive "$MUNGE_PID"; then echo "munged: running ($(cat "$MUNGE_PID"), shared)"; else echo "munged: stopped"; fi
  for d in mariadb slurmdbd slurmctld slurmd; do
    if pid_alive "$RUN/$d.pid"; then echo "$d: running ($(cat "$RUN/$d.pid"))"; else echo "$d: stopped"; fi
  done
  echo "SLURM_CONF=$CONF"
  [ -f "$CONF" ] && timeout 20 sinfo 2>/dev/null || true
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 {install|start|stop|restart|status|env}" >&2; exit 2 ;;
esac
