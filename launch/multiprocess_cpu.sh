#!/usr/bin/env bash
# N processes x M CPU devices on this machine, joined by JAX's distributed runtime (gloo CPU collectives).
# The same code path as a multi-host GPU run, without GPUs: what tests/test_multiprocess.py uses.
#
#   launch/multiprocess_cpu.sh NPROC NDEV [main.py flags...]
#   launch/multiprocess_cpu.sh 2 2 --config=configs/rm_helpful.py:demo --workdir=runs/demo-2x2
#
# Process 0 prints to this terminal; process i > 0 logs to ${W2S_LOG_DIR:-<workdir>/logs}/process-<i>.log.
# W2S_PORT picks the coordinator port (default: a free one); PYTHON the interpreter (default: python).
# Exits with the first non-zero status of any process; a failure in one process stops the others.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[0-9]+$ || ! "$2" =~ ^[0-9]+$ ]]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
NPROC=$1
NDEV=$2
shift 2
PYTHON=${PYTHON:-python}

workdir=workdir
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
LOG_DIR=${W2S_LOG_DIR:-$workdir/logs}
mkdir -p "$LOG_DIR"
PORT=${W2S_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

# Keep only our own device-count flag; other XLA flags pass through.
xla_flags="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g') --xla_force_host_platform_device_count=$NDEV"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < NPROC; i++)); do
  run=(env XLA_FLAGS="$xla_flags" JAX_PLATFORMS=cpu W2S_COORDINATOR="127.0.0.1:$PORT"
       W2S_NUM_PROCESSES="$NPROC" W2S_PROCESS_ID="$i" "$PYTHON" -m w2s_jax.main "$@")
  if ((i == 0)); then
    "${run[@]}" &
  else
    "${run[@]}" > "$LOG_DIR/process-$i.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  set +e
  wait -n -p done_pid "${running[@]}"
  rc=$?
  set -e
  running=($(printf '%s\n' "${running[@]}" | grep -vx "$done_pid" || true))
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "multiprocess_cpu: a process exited with status $rc; stopping the others (logs: $LOG_DIR)" >&2
    cleanup
  fi
done
exit $status
