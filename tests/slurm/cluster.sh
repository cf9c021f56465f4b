#!/usr/bin/env bash
# A single-node Slurm on this machine, for testing launch/slurm.sbatch for real: munged
# with a generated key, slurmctld and slurmd with this host as the only node (its CPUs, no
# cgroups: proctrack/linuxproc, task/none), everything under one folder, on ports of its
# own. Needs root (slurmd starts jobs as their owner) and Debian's slurmctld, slurmd,
# slurm-client and munge (launch/setup.sh installs them when BIOBERT_TEST_SLURM=1).
#
#   tests/slurm/cluster.sh start DIR    # prints "export SLURM_CONF=DIR/slurm.conf"
#   tests/slurm/cluster.sh start DIR NODES  # one slurmd per emulated node of NODES
#   tests/slurm/cluster.sh stop DIR     # stops the daemons by their process ids
#
# NODES: the folder of emulated nodes that tests/multinode/nodes.sh started. Each node's
# slurmd runs inside it (its address, its hostname node<i>), the controller beside them on
# the bridge's address, so that a job spans the nodes as on a cluster.
set -euo pipefail
cmd=${1:?usage: cluster.sh start|stop DIR [NODES]}
DIR=${2:?usage: cluster.sh start|stop DIR [NODES]}
NODES=${3:-}
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
  local pidfile
  for pidfile in "$DIR"/slurmd*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
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
  local host cpus memory controller nodes="" node_lines="" count i net
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
  controller=$host
  nodes=$host
  node_lines="NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN"
  if [ -n "$NODES" ]; then
    [ -f "$NODES/env" ] || die "$NODES: no emulated nodes there (tests/multinode/nodes.sh start)"
    # shellcheck disable=SC1091
    source "$NODES/env"
    net=${SUBNET%.0/24}
    count=$(compgen -v | grep -c '^NODE[0-9]*_PID$')
    controller="$host($net.254)"
    nodes="node[1-$count]"
    node_lines=""
    for i in $(seq "$count"); do
      node_lines+="NodeName=node$i NodeAddr=$net.$i CPUs=$cpus RealMemory=$((memory / count)) State=UNKNOWN"$'\n'
    done
  fi
  cat > "$DIR/slurm.conf" <<CONF
ClusterName=biobert-test
SlurmctldHost=$controller
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
# Requeued jobs wait cred_expire (default 120 s) before they may start again.
AuthInfo=socket=$DIR/munge/socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
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
$node_lines
PartitionName=test Nodes=$nodes Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$DIR/slurm.conf
  slurmctld -i
  wait_for 20 slurmctld scontrol ping
  if [ -z "$NODES" ]; then
    mkdir -p "$DIR/spool/$host"
    slurmd
    wait_for 30 "slurmd (node $host idle)" bash -c "sinfo -h -N -o %t | grep -qx idle"
  else
    for i in $(seq "$count"); do
      mkdir -p "$DIR/spool/node$i"
      "$(dirname "${BASH_SOURCE[0]}")/../multinode/nodes.sh" run "$NODES" "node$i" slurmd -N "node$i"
    done
    wait_for 30 "slurmd on every node (idle)" bash -c "[ \"\$(sinfo -h -N -o %t | sort -u)\" = idle ]"
  fi
  echo "export SLURM_CONF=$DIR/slurm.conf"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) die "unknown command $cmd (start or stop)" ;;
esac
