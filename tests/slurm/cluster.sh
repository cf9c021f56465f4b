#!/usr/bin/env bash
# A single-node Slurm on this machine, for testing launch/slurm.sbatch for real: munged
# with a generated key, slurmctld and slurmd with this host as the only node (its CPUs, no
# cgroups: proctrack/linuxproc, task/none), everything under one folder, on ports of its
# own. Needs root (slurmd starts jobs as their owner) and Debian's slurmctld, slurmd,
# slurm-client and munge (launch/setup.sh installs them when BIOBERT_TEST_SLURM=1).
#
#   tests/slurm/cluster.sh start DIR    # prints "export SLURM_CONF=DIR/slurm.conf"
#   tests/slurm/cluster.sh stop DIR     # stops the daemons by their process ids
set -euo pipefail
cmd=${1:?usage: cluster.sh start|stop DIR}
DIR=${2:?usage: cluster.sh start|stop DIR}
die() { echo "cluster.sh: $*" >&2; exit 1; }

stop() {
  # Jobs first, so that their slurmstepd processes end with them.
  if [ -f "$DIR/slurmctld.pid" ] && [ -f "$DIR/slurm.conf" ]; then
    SLURM_CONF=$DIR/slurm.conf scancel --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 60); do
      [ -z "$(SLURM_CONF=$DIR/slurm.conf squeue -h 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  for daemon in slurmd slurmctld munged; do
    local pidfile=$DIR/$daemon.pid
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

wait_for() { # SECONDS DESCRIPTION CMD...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what did not come up in $seconds s (logs in $DIR)"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs jobs as their owner)"
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || die "$tool not found: BIOBERT_TEST_SLURM=1 ./launch/setup.sh installs Slurm and munge"
  done
  stop
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
  chown munge: "$DIR/munge"
  chmod 700 "$DIR/munge"
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chown munge: "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
  # munged runs as the munge user; it writes its pid file and socket in its own folder.
  runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" --force
  wait_for 10 munged test -S "$DIR/munge/socket"
  cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
  cat > "$DIR/slurm.conf" <<CONF
ClusterName=biobert-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
# Requeued jobs wait cred_expire (default 120 s) before they may start again.
AuthInfo=socket=$DIR/munge/socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$DIR/slurm.conf
  slurmctld -i
  wait_for 20 slurmctld scontrol ping
  slurmd
  wait_for 30 "slurmd (node $host idle)" bash -c "sinfo -h -N -o %t | grep -qx idle"
  echo "export SLURM_CONF=$DIR/slurm.conf"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) die "unknown command $cmd (start or stop)" ;;
esac
