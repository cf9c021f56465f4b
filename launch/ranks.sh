# Runs mpirun so that a stop signal reaches the ranks the way the trainer expects: sourced
# by launch/mpirun.sh and launch/slurm.sbatch, which then call
#
#   run_ranks mpirun ARGS...      # sets RANKS_RC (mpirun's exit code) and RANKS_SIGNAL
#
# After a stop signal, mpirun's exit code says little (it reports the signal): the caller
# judges by the checkpoint written since.
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
  echo "launch: SIG$1: the ranks finish their step, checkpoint and stop" >&2
  for pid in $(_ranks_descendants "$_ranks_job"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = biobert-core ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
}

run_ranks() {
  RANKS_SIGNAL="" RANKS_RC=0
  trap '_ranks_stop INT' INT
  trap '_ranks_stop TERM' TERM
  trap '_ranks_stop USR1' USR1
  setsid "$@" &
  _ranks_job=$!
  # `wait` returns early when a trapped signal arrives: wait until mpirun is gone. After a
  # stop, mpirun may itself be in its slow kill sequence (a scheduler signalled it too):
  # once the ranks of this node are gone, it has nothing left to do.
  local idle=0
  while kill -0 "$_ranks_job" 2>/dev/null; do
    if [ -z "$RANKS_SIGNAL" ]; then
      wait "$_ranks_job" && RANKS_RC=0 || RANKS_RC=$?
      continue
    fi
    if _ranks_alive; then idle=0; else idle=$((idle + 1)); fi
    if [ "$idle" -ge 10 ]; then kill -KILL "$_ranks_job" 2>/dev/null || true; fi
    sleep 0.5
  done
  wait "$_ranks_job" 2>/dev/null && RANKS_RC=0 || RANKS_RC=$?
  trap - INT TERM USR1
}

# Whether a rank of this node still runs (an exited one stays a zombie until mpirun reaps it).
_ranks_alive() {
  local pid
  for pid in $(_ranks_descendants "$_ranks_job"); do
    case $(ps -o stat=,comm= -p "$pid" 2>/dev/null) in
      Z*) ;;
      *biobert-core) return 0 ;;
    esac
  done
  return 1
}
