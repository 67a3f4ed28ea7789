#!/usr/bin/env bash
# One host, all its GPUs, one process: the mesh spans every visible device (config.mesh: FSDP over all of them
# by default), so nothing about processes needs setting up.
#
#   launch/local.sh --config=configs/rm_mistral7b.py --workdir=runs/mistral7b [--config.a.b=v ...]
#   GPUS=0,1,2,3 launch/local.sh --config=configs/rm_helpful.py --workdir=runs/gpt2     # a subset of the GPUs
#
# GPUS selects devices (CUDA_VISIBLE_DEVICES); PYTHON the interpreter (default: python). XLA may take the GPUs'
# memory as it needs it (preallocation off) unless XLA_PYTHON_CLIENT_PREALLOCATE is already set.
set -euo pipefail
PYTHON=${PYTHON:-python}
if [[ -n "${GPUS:-}" ]]; then
  export CUDA_VISIBLE_DEVICES=$GPUS
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
# Overlap FSDP's all-gathers with compute on GPUs (harmless elsewhere).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
"$PYTHON" -c 'import jax; print(f"local.sh: {jax.device_count()} {jax.default_backend()} devices: {jax.devices()}")'
exec "$PYTHON" -m w2s_jax.main "$@"
