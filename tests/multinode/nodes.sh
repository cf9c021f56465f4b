#!/usr/bin/env bash
# Emulated nodes on this machine, for multi-node tests: each node is a process holding its
# own network namespace (an address on a private bridge, nothing routed outside the
# machine), its own hostname (UTS namespace) and its own node-local scratch folder (a mount
# namespace in which DIR/scratch is DIR/<node>/scratch). Open MPI reaches a node through
# DIR/agent (its plm_rsh_agent, in place of ssh), which runs the command in the node's
# namespaces. Needs root and a kernel that allows namespaces.
#
#   tests/multinode/nodes.sh start DIR N   # nodes node1..nodeN; prints the subnet and agent
#   tests/multinode/nodes.sh stop DIR      # ends every process in the nodes, by namespace
#   tests/multinode/nodes.sh signal DIR NODE SIG [COMM]  # SIG to NODE's processes (named COMM)
#   tests/multinode/nodes.sh link DIR NODE up|down       # NODE's cable, on the bridge side
#   tests/multinode/nodes.sh run DIR NODE CMD...         # CMD on NODE (as logged in there)
#
# DIR/env after start: SUBNET (e.g. 10.213.3.0/24), BRIDGE, AGENT, and NODE<i>_PID.
# Each cluster takes a free bridge bbiob<k> (k = 0..63) and subnet 10.213.<k>.0/24, so
# tests may run several at once; the bridge holds 10.213.<k>.254, the nodes .1 to .N.
set -euo pipefail
cmd=${1:?usage: nodes.sh start DIR N | stop DIR}
DIR=${2:?usage: nodes.sh start DIR N | stop DIR}
die() { echo "nodes.sh: $*" >&2; exit 1; }

# Every process whose network namespace is a node's (the holder, and what the agent ran).
node_processes() {
  local holder=$1 ns pid
  ns=$(readlink "/proc/$holder/ns/net" 2>/dev/null) || return 0
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$ns" ] && echo "$pid"
  done
  return 0
}

stop() {
  [ -f "$DIR/env" ] || return 0
  # shellcheck disable=SC1091
  source "$DIR/env"
  local var pid pids
  for var in $(compgen -v | grep '^NODE[0-9]*_PID$'); do
    pids=$(node_processes "${!var}")
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do kill -0 "${!var}" 2>/dev/null || break; sleep 0.1; done
  done
  # The cables (a namespace outlives its processes while its sockets wind down, and its
  # cable with it) and the bridge.
  for var in $(compgen -v | grep '^NODE[0-9]*_PID$'); do
    var=${var#NODE}
    ip link del "v$BRIDGE-${var%_PID}" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$DIR/env"
}

start() {
  local n=$1 k bridge="" i holder
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
  command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v ip >/dev/null ||
    die "needs unshare, nsenter (util-linux) and ip (iproute2)"
  mkdir -p "$DIR/scratch"
  for k in $(seq 0 63); do
    if ip link add "bbiob$k" type bridge 2>/dev/null; then bridge=bbiob$k; break; fi
  done
  [ -n "$bridge" ] || die "no free bridge name bbiob0..63 (stale clusters? nodes.sh stop them)"
  local net=10.213.$k
  printf 'SUBNET=%s\nBRIDGE=%s\nAGENT=%s\n' "$net.0/24" "$bridge" "$DIR/agent" >"$DIR/env"
  ip addr add "$net.254/24" dev "$bridge"
  ip link set "$bridge" up
  for i in $(seq 1 "$n"); do
    mkdir -p "$DIR/node$i/scratch"
    # The holder: hostname and scratch mount set inside, then it sleeps until stopped.
    unshare --uts --net --mount --propagation private --fork --kill-child \
      sh -c "hostname node$i && mount --bind '$DIR/node$i/scratch' '$DIR/scratch' && touch '$DIR/node$i/ready' && exec sleep infinity" \
      </dev/null >/dev/null 2>&1 &
    local unshare_pid=$!
    for _ in $(seq 50); do [ -f "$DIR/node$i/ready" ] && break; sleep 0.1; done
    [ -f "$DIR/node$i/ready" ] || die "node$i did not start (does the kernel allow namespaces?)"
    holder=$(pgrep -P "$unshare_pid" || true)
    [ -n "$holder" ] || die "node$i: its holder process is gone"
    echo "NODE${i}_PID=$holder" >>"$DIR/env"
    # A cable of a cluster on this bridge name that was just stopped may still be going.
    ip link del "v$bridge-$i" 2>/dev/null || true
    ip link add "v$bridge-$i" type veth peer name "n$bridge-$i"
    ip link set "n$bridge-$i" netns "$holder"
    ip link set "v$bridge-$i" master "$bridge" up
    nsenter -t "$holder" -n sh -c "ip link set 'n$bridge-$i' name eth0 && ip addr add $net.$i/24 dev eth0 && ip link set eth0 up && ip link set lo up"
  done
  # As sshd would, the agent starts the command in the node as a process of the node's own
  # (not a descendant of mpirun: a launcher that watches its children sees only its node's
  # ranks), and relays its output until it ends.
  cat >"$DIR/agent" <<EOF
#!/bin/sh
# Open MPI's remote shell for the emulated nodes: AGENT HOST COMMAND... runs COMMAND in
# HOST's namespaces, as ssh would run it on HOST.
host=\$1; shift
pid=\$(sed -n "s/^NODE\${host#node}_PID=//p" '$DIR/env')
[ -n "\$pid" ] || { echo "agent: no emulated node \$host" >&2; exit 255; }
fifo=\$(mktemp -u '$DIR/agent.XXXXXX')
mkfifo "\$fifo"
nsenter -t "\$pid" -u -n -m -- setsid -f sh -c "exec >'\$fifo' 2>&1 </dev/null; \$*" ||
  { rm -f "\$fifo"; echo "agent: \$host is down" >&2; exit 255; }
exec 3<"\$fifo"
rm -f "\$fifo"
exec cat <&3
EOF
  chmod +x "$DIR/agent"
  cat "$DIR/env"
}

# The holder's pid of NODE (node1, node2, ...).
holder_of() {
  local pid
  pid=$(sed -n "s/^NODE${1#node}_PID=//p" "$DIR/env" 2>/dev/null)
  [ -n "$pid" ] || die "no emulated node $1 in $DIR"
  echo "$pid"
}

# Sends SIG to NODE's processes (those named COMM only, when given), its holder and the
# unshare above it excepted (the node stays up for the next job); prints how many.
signal() {
  local node=$1 sig=$2 comm=${3:-} pid n=0 holder parent
  holder=$(holder_of "$node")
  parent=$(ps -o ppid= -p "$holder" | tr -d ' ')
  for pid in $(node_processes "$holder"); do
    [ "$pid" = "$holder" ] || [ "$pid" = "$parent" ] && continue
    if [ -n "$comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then continue; fi
    kill -s "$sig" "$pid" 2>/dev/null && n=$((n + 1))
  done
  echo "$n"
}

link() {
  local node=$1 state=$2
  holder_of "$node" >/dev/null
  # shellcheck disable=SC1091
  source "$DIR/env"
  ip link set "v$BRIDGE-${node#node}" "$state"
}

case $cmd in
  start) start "${3:?usage: nodes.sh start DIR N}" ;;
  stop) stop ;;
  signal) signal "${3:?NODE}" "${4:?SIG}" "${5:-}" ;;
  link) link "${3:?NODE}" "${4:?up|down}" ;;
  run)
    node=${3:?NODE}
    shift 3
    exec nsenter -t "$(holder_of "$node")" -u -n -m --wd="$PWD" -- "$@"
    ;;
  *) die "usage: nodes.sh start DIR N | stop DIR | signal DIR NODE SIG [COMM] | link DIR NODE up|down" ;;
esac
