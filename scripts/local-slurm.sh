#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `bench sweep --executor slurm` and for the tests that
# talk to a real SLURM: Debian's slurmctld, slurmd and munge, with slurmdbd on MariaDB for accounting
# (without it sacct fails and a cancelled job cannot be told from a lost one).
#
#   sudo scripts/local-slurm.sh start     # install what is missing, configure, start; prints sinfo
#   sudo scripts/local-slurm.sh stop      # stop the daemons (the packages stay)
#   scripts/local-slurm.sh status
#
# Needs root and Debian or Ubuntu (apt-get). No systemd and no cgroups are needed: processes are tracked
# through /proc (proctrack/linuxproc) and tasks are not confined (task/none). Requeued jobs wait
# cred_expire + 1 s and then a scheduling pass, so both are shortened (to 10 s and 2 s) for quick tests.
set -euo pipefail

STATE=${BENCH_SLURM_STATE:-/var/lib/ddpm-bench-slurm}
CONF=/etc/slurm
PARTITION=${BENCH_SLURM_PARTITION:-debug}

log() { echo "local-slurm: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (it installs packages and starts daemons)"
    exit 2
  fi
}

install_packages() {
  local missing=()
  for pkg in slurmctld slurmd slurm-client munge slurmdbd mariadb-server; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d: the packages must not try to start their services themselves (no systemd here)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force
}

start_database() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
    if [ ! -d /var/lib/mysql/mysql ]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    (mariadbd-safe --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1 &)
  fi
  for _ in $(seq 1 60); do
    mariadb -u root -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

write_config() {
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mkdir -p "$CONF" "$STATE"/{ctld,d,log}
  cat > "$CONF/slurm.conf" <<EOF
ClusterName=ddpm-bench
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5
SlurmctldParameters=preempt_send_user_signal
ReturnToService=2
KillWait=10
MinJobAge=300
MpiDefault=none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  chmod 600 "$CONF/slurmdbd.conf"
  : > "$CONF/cgroup.conf"
}

wait_for() {
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up; see $STATE/log/"
  return 1
}

start() {
  need_root
  install_packages
  start_munge
  start_database
  write_config
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for slurmdbd sacctmgr -i list cluster
  sacctmgr -i add cluster ddpm-bench >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  wait_for slurmd bash -c "sinfo -h -o %t | grep -Eq 'idle|mix|alloc'"
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  sinfo
}

stop() {
  need_root
  for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" || true; done
  sleep 1
  mariadb-admin -u root shutdown >/dev/null 2>&1 || true
  pkill -x munged || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
