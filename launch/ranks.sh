# Runs mpirun so that a stop signal reaches the ranks the way the trainer expects: sourced
# by launch/mpirun.sh and launch/slurm.sbatch, which then call
#
#   run_ranks mpirun ARGS...      # sets RANKS_RC (mpirun's exit code) and RANKS_SIGNAL
#
# After a stop signal, mpirun's exit code says little (it reports the signal): the caller
# judges by the checkpoint written since. RANKS_FAILED=1 says the ranks of this node had
# already exited when the signal came, or that mpirun outlived them (a failed job): the
# caller must not report a clean stop.
#
# A rank that fails makes mpirun kill the job's other processes, waiting the sigkill
# timeout (110 s, see below) before each SIGKILL, twice: minutes before a job whose every
# rank has already exited comes back. So once no rank of this node has run for 3 s while
# mpirun still does, and no stop signal came, mpirun is ended at once and the job counts as
# failed. Likewise when some ranks of this node have exited and the others still run after
# 10 s (they wait in a collective for a failed rank). The long grace stays for what it is
# for: ranks checkpointing after a stop signal.
# A rank that fails before it was ever seen counts only where every rank runs on this node
# (RANKS_ALL_LOCAL=1, set by mpirun.sh without a hostfile): after 10 s without one, mpirun
# has nothing left to start. A launch node that hosts no rank never ends mpirun this way.
#
# mpirun answers SIGINT and SIGTERM by killing its ranks within a second (odls'
# sigkill timeout), too soon for rank 0 to write a BERT-base checkpoint, and Open MPI puts
# each rank in a process group of its own, so Ctrl-C and a signal to the job's process
# group never reach them. So mpirun runs in a session of its own (the launchers also give
# it `--mca odls_base_sigkill_timeout 110`, for schedulers that signal every process of
# the job), and the first INT, TERM or USR1 that reaches this shell is passed as SIGTERM
# to the ranks of this node: every rank then stops after the same step (the trainer agrees
# on it), rank 0 checkpoints, and they exit 0. A second signal ends mpirun at once.

_ranks_descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    _ranks_descendants "$child"
  done
}

_ranks_stop() {
  local pid
  if [ -n "$RANKS_SIGNAL" ]; then
    kill -TERM "$_ranks_job" 2>/dev/null || true
    return
  fi
  RANKS_SIGNAL=$1
  if [ "$_ranks_seen" = 1 ] && ! _ranks_alive; then RANKS_FAILED=1; fi
  echo "launch: SIG$1: the ranks finish their step, checkpoint and stop" >&2
  for pid in $(_ranks_descendants "$_ranks_job"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = biobert-core ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
}

run_ranks() {
  RANKS_SIGNAL="" RANKS_RC=0 RANKS_FAILED=0
  _ranks_seen=0
  trap '_ranks_stop INT' INT
  trap '_ranks_stop TERM' TERM
  trap '_ranks_stop USR1' USR1
  setsid "$@" &
  _ranks_job=$!
  # Polled, not waited for: a trapped signal is handled within half a second either way.
  # After a stop, mpirun may itself be in its slow kill sequence (a scheduler signalled it
  # too): once the ranks of this node are gone, it has nothing left to do. Without one,
  # mpirun outliving its ranks is the failed-job case above.
  local idle=0 polls=0 partial=0 most=0 alive
  while kill -0 "$_ranks_job" 2>/dev/null; do
    polls=$((polls + 1))
    # A signal that reaches the job's processes also ends this substitution's subshell:
    # under `set -e` a bare failed assignment would end the caller's script.
    alive=$(_ranks_alive_count) || alive=0
    alive=${alive:-0}
    if [ "$alive" -gt "$most" ]; then most=$alive; fi
    # Some ranks of this node gone while the others run, with no stop asked for: a rank
    # failed and the others wait in a collective for it (they catch mpirun's SIGTERM as a
    # stop request and cannot act on it there). Ranks that end normally leave together,
    # past the trainer's last barrier.
    if [ -z "$RANKS_SIGNAL" ] && [ "$alive" -gt 0 ] && [ "$alive" -lt "$most" ]; then
      partial=$((partial + 1))
    else
      partial=0
    fi
    if [ "$partial" -ge 20 ]; then
      echo "launch: a rank of this node has exited while the others wait for it: the job failed; ending it now" >&2
      RANKS_FAILED=1
      _ranks_kill_all
    fi
    if [ "$alive" -gt 0 ]; then
      idle=0 _ranks_seen=1
    elif [ "$_ranks_seen" = 1 ] || { [ "${RANKS_ALL_LOCAL:-0}" = 1 ] && [ "$polls" -ge 20 ]; }; then
      idle=$((idle + 1))
    fi
    if [ -n "$RANKS_SIGNAL" ] && [ "$idle" -ge 10 ]; then _ranks_kill_all; fi
    if [ -z "$RANKS_SIGNAL" ] && [ "$idle" -ge 6 ]; then
      echo "launch: the ranks of this node have exited and mpirun is still killing the job's processes: ending it now" >&2
      RANKS_FAILED=1
      _ranks_kill_all
    fi
    sleep 0.5 || true  # a signal to the job ends it too; under set -e that must not end us
  done
  wait "$_ranks_job" 2>/dev/null && RANKS_RC=0 || RANKS_RC=$?
  # mpirun killed here reports the SIGKILL (137): the job's own failure is exit code 1.
  if [ "$RANKS_FAILED" = 1 ] && { [ -z "$RANKS_SIGNAL" ] || [ "$RANKS_RC" -eq 0 ]; }; then
    RANKS_RC=1
  fi
  trap - INT TERM USR1
}

# After a failed job: the lines of the ranks that ended because their peers were gone
# (OUT/heartbeat/ended-rank-N.txt, written by the trainer's collective watchdog), which
# mpirun, past forwarding output once it lost a node, may not have shown.
ranks_print_verdicts() {
  local out=$1 f
  for f in "$out"/heartbeat/ended-rank-*.txt; do
    [ -f "$f" ] && echo "launch: $(cat "$f")" >&2
  done
  return 0
}

# Whether a rank of this node still runs (an exited one stays a zombie until mpirun reaps it).
_ranks_alive() {
  [ "$(_ranks_alive_count)" -gt 0 ]
}

_ranks_alive_count() {
  local pid n=0
  for pid in $(_ranks_descendants "$_ranks_job"); do
    case $(ps -o stat=,comm= -p "$pid" 2>/dev/null) in
      Z*) ;;
      *biobert-core) n=$((n + 1)) ;;
    esac
  done
  echo "$n"
}

# Ends the ranks of this node, mpirun and everything it started (its remote shells too: one
# whose node is unreachable would otherwise hold the terminal or pipe until TCP gives up),
# at once: a failed job.
_ranks_kill_all() {
  local pid
  for pid in $(_ranks_descendants "$_ranks_job"); do kill -KILL "$pid" 2>/dev/null || true; done
  kill -KILL "$_ranks_job" 2>/dev/null || true
}
