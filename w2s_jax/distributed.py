"""Several processes, one program: JAX's distributed runtime and the few helpers the package needs from it.

One process per host (or per GPU under SLURM) runs the same `w2s_jax.main`; `initialize` joins them before any
other JAX call, after which `jax.devices()` lists every device of every process and one mesh spans them all.
Every process builds the same host batches (the data pipeline is seeded) and copies only the rows its own
devices hold (`train.step.place_batch`); results that leave the devices are gathered with `fetch_global`;
only the primary process (index 0) writes files; stage boundaries meet at `sync`.

Where the coordinates come from, first match wins:
  1. flags of `w2s_jax.main`: --coordinator_address, --num_processes, --process_id, --local_device_ids;
  2. W2S_COORDINATOR, W2S_NUM_PROCESSES, W2S_PROCESS_ID, W2S_LOCAL_DEVICE_IDS;
  3. JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_LOCAL_DEVICE_IDS;
  4. a SLURM job step with more than one task (`srun`): JAX reads SLURM's variables itself;
  5. none of these: a single process, no distributed runtime.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

ENV_PREFIXES = ("W2S", "JAX")
CPU_COLLECTIVES = "gloo"


class DistributedError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """Where this process sits in a multi-process run. `auto=True`: let JAX read the cluster (SLURM)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto: bool = False

    @property
    def multi_process(self) -> bool:
        return self.auto or (self.num_processes or 1) > 1


def _int_or_none(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistributedError(f"{name} must be an integer, got {value!r}") from None


def _device_ids(value, name: str) -> tuple[int, ...] | None:
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(v) for v in items if str(v).strip() != "")
    except ValueError:
        raise DistributedError(f"{name} must be comma-separated integers, got {value!r}") from None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, local_device_ids: str | Sequence[int] | None = None,
            environ: Mapping[str, str] | None = None) -> ProcessSpec:
    """The process coordinates from explicit values, else the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    given = {"coordinator_address": coordinator_address or None,
             "num_processes": _int_or_none(num_processes, "--num_processes"),
             "process_id": _int_or_none(process_id, "--process_id"),
             "local_device_ids": _device_ids(local_device_ids, "--local_device_ids")}
    names = {"coordinator_address": ("W2S_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
             "num_processes": ("W2S_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
             "process_id": ("W2S_PROCESS_ID", "JAX_PROCESS_ID"),
             "local_device_ids": ("W2S_LOCAL_DEVICE_IDS", "JAX_LOCAL_DEVICE_IDS")}
    for field, env_names in names.items():
        if given[field] is not None:
            continue
        for env_name in env_names:
            raw = env.get(env_name, "")
            if raw.strip():
                given[field] = (raw.strip() if field == "coordinator_address" else
                                _device_ids(raw, env_name) if field == "local_device_ids" else
                                _int_or_none(raw, env_name))
                break
    n, pid = given["num_processes"], given["process_id"]
    if n is not None and n < 1:
        raise DistributedError(f"num_processes must be >= 1, got {n}")
    if n is not None and n > 1:
        if pid is None or not 0 <= pid < n:
            raise DistributedError(f"process_id must lie in [0, {n}) for a {n}-process run, got {pid}")
        if not given["coordinator_address"]:
            raise DistributedError(f"a {n}-process run needs a coordinator address (host:port of process 0): "
                                   "--coordinator_address or W2S_COORDINATOR")
        return ProcessSpec(**given)
    if n is None and _slurm_step_tasks(env) > 1:
        return ProcessSpec(local_device_ids=given["local_device_ids"],
                           coordinator_address=given["coordinator_address"], auto=True)
    return ProcessSpec(local_device_ids=given["local_device_ids"])


def _slurm_step_tasks(env: Mapping[str, str]) -> int:
    """Tasks of the current SLURM job step (0 outside `srun`: a batch script itself is not a multi-task step)."""
    if "SLURM_STEP_NODELIST" not in env or "SLURM_PROCID" not in env:
        return 0
    return _int_or_none(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"), "SLURM_NTASKS") or 0


def initialize(spec: ProcessSpec) -> bool:
    """Join the distributed runtime when `spec` asks for several processes; must precede any other JAX use.

    Returns whether a multi-process runtime was started. Non-primary processes get `TQDM_DISABLE=1` (read by
    tqdm when it is imported) so only one progress bar is drawn."""
    import jax

    if not spec.multi_process:
        return False
    try:  # gloo is the default in recent JAX; say it so an older default ("none") cannot hang a CPU run
        jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
    except (AttributeError, ValueError) as e:  # a JAX without the option: GPU/TPU runs do not need it
        log.info("cpu collectives not configurable: %s", e)
    kwargs: dict[str, Any] = {}
    if spec.coordinator_address:
        kwargs["coordinator_address"] = spec.coordinator_address
    if spec.num_processes is not None:
        kwargs.update(num_processes=spec.num_processes, process_id=spec.process_id)
    if spec.local_device_ids is not None:
        kwargs["local_device_ids"] = list(spec.local_device_ids)
    jax.distributed.initialize(**kwargs)
    if jax.process_index() != 0:
        os.environ.setdefault("TQDM_DISABLE", "1")
    log.info("process %d of %d: %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


# ---------------------------------------------------------------------------------------------------------------
# Helpers that are no-ops in a single process


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """True in the process that writes files (results, logs, model.json)."""
    return process_index() == 0


def sync(name: str) -> None:
    """Barrier across every process (a stage boundary); `name` must be the same string in all of them."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def fetch_global(x) -> np.ndarray:
    """Host copy of a (possibly sharded) jax.Array that every process can read whole.

    `jax.device_get` fails on an array with shards on other processes' devices; gather those with
    `process_allgather`. Every process must call this for the same array (it is a collective then)."""
    import jax

    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fetch_global_tree(tree):
    import jax

    return jax.tree.map(fetch_global, tree)


def local_replicas(tree, devices: Sequence):
    """`tree` (global arrays in any mesh sharding) as one full copy on each of `devices`, this process's own.

    `jax.device_put` onto local devices would be a cross-host transfer for shards held by other processes, which
    CPU and most GPU backends refuse; instead one all-gather on the global mesh (a collective: every process
    calls this with the same tree) replicates each leaf, and the local copies are reused as they are."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    local = NamedSharding(Mesh(np.array(devices), ("replica",)), P())
    leaves, treedef = jax.tree.flatten(tree)
    remote = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if remote:
        meshes = {leaves[i].sharding.mesh for i in remote}
        if len(meshes) != 1:
            raise DistributedError("local_replicas: the sharded leaves must share one mesh")
        replicated = NamedSharding(meshes.pop(), P())
        gathered = jax.jit(lambda xs: xs, out_shardings=replicated)([leaves[i] for i in remote])
        for i, full in zip(remote, gathered):
            by_device = {s.device: s.data for s in full.addressable_shards}
            leaves[i] = jax.make_array_from_single_device_arrays(full.shape, local, [by_device[d] for d in devices])
    rest = [i for i in range(len(leaves)) if i not in set(remote)]
    placed = jax.device_put([leaves[i] for i in rest], local)
    for i, x in zip(rest, placed):
        leaves[i] = x
    return jax.tree.unflatten(treedef, leaves)


def agree(value: int | bool) -> int:
    """The primary process's value of a small integer decision (e.g. "this model is finished"), in every process,
    so that processes reading a shared file system at slightly different moments still take the same branch."""
    if process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray(int(value), np.int64)))


def check_same(text: str, what: str) -> None:
    """Fail loudly when processes disagree on `text` (e.g. a model fingerprint: same data, same tokenizer)."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int64)
    digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
    if (digests != digests[0]).any():
        differing = [i for i, d in enumerate(digests) if d != digests[0]]
        raise DistributedError(f"{what} differs between processes (process 0 vs {differing}); every process must "
                               "see the same data, tokenizer and config")
