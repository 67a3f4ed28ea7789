"""Scoring of a split by a model: exactly one result per example, in dataset order.

Reward models give `z = r(A) - r(B)`; policies give the summed and per-token mean log-probs of A (chosen) and
B (rejected). A and B of each pair run in one forward. Two ways to run it, chosen by `config.eval.mode`:

* `"pmap"` (default): the parameters are replicated on every local device of the mesh and each global batch is
  split evenly over them with `jax.pmap`, each device scoring its slice as one vectorized batch. Batches are
  padded to `batch_size` rows (rounded up to a multiple of the device count) and the filler rows dropped by their
  `valid` flag, so the result never depends on the device count, batch size or dataset length. In a multi-process
  run every process scores the whole split on its own devices (no collective; identical results everywhere).
* `"sharded"`: one `jax.jit` over the mesh, batch rows split over data x fsdp (the batch rounded up to a
  multiple of their size) and the parameters kept in their training sharding, for models too large to
  replicate on one device.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from w2s_jax import distributed
from w2s_jax.data.batches import PairDataset, eval_batches, num_eval_batches
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import batch_sharding

EVAL_MODES = ("pmap", "sharded")
REWARD_KEYS = ("ids_a", "mask_a", "ids_b", "mask_b")


def pair_rewards(model: Transformer, params, batch) -> jax.Array:
    """r(A) - r(B) for a batch holding ids_a/mask_a/ids_b/mask_b, both sides in one forward."""
    n = batch["ids_a"].shape[0]
    ids = jnp.concatenate([batch["ids_a"], batch["ids_b"]])
    mask = jnp.concatenate([batch["mask_a"], batch["mask_b"]])
    r = model.apply({"params": params}, ids, mask, method=model.reward)
    return r[:n] - r[n:]


def local_mesh_devices(mesh: Mesh) -> list:
    """The mesh's devices that belong to this process, in mesh order."""
    return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


def score_dataset(fn: Callable, params, dataset: PairDataset, keys: Sequence[str], *, batch_size: int, mesh: Mesh,
                  buckets: Sequence[int], mode: str = "pmap", desc: str = "score") -> np.ndarray:
    """`fn(params, batch) -> [..., rows]` over every example of `dataset` -> float32 [..., N] in dataset order."""
    if mode not in EVAL_MODES:
        raise ValueError(f"config.eval.mode must be one of {EVAL_MODES}, got {mode!r}")
    if mode == "pmap":
        devices = local_mesh_devices(mesh)
        n_dev = len(devices)
        batch_size = -(-batch_size // n_dev) * n_dev
        run_fn = jax.pmap(fn, in_axes=(None, 0), devices=devices)
        # one full copy of the parameters on each device, placed once (not per batch)
        run_params = jax.device_put(params, NamedSharding(Mesh(np.array(devices), ("replica",)), P()))

        def run(batch):
            split = {k: batch[k].reshape(n_dev, -1, *batch[k].shape[1:]) for k in keys}
            out = np.asarray(jax.device_get(run_fn(run_params, split)))  # [n_dev, ..., rows / n_dev]
            return np.concatenate(list(out), axis=-1)
    else:
        rows = mesh.shape["data"] * mesh.shape["fsdp"]
        batch_size = -(-batch_size // rows) * rows
        jitted = jax.jit(fn)

        def run(batch):
            placed = {k: jax.device_put(batch[k], batch_sharding(mesh, batch[k].ndim)) for k in keys}
            return distributed.fetch_global(jitted(params, placed))

    out = None
    for batch in tqdm(eval_batches(dataset, batch_size, buckets=buckets), total=num_eval_batches(len(dataset),
                      batch_size), desc=desc, leave=False, disable=not distributed.is_primary()):
        scores = np.asarray(run(batch), np.float32)
        if out is None:
            out = np.full((*scores.shape[:-1], len(dataset)), np.nan, np.float32)
        keep = batch["valid"]
        out[..., batch["index"][keep]] = scores[..., keep]
    if out is None or np.isnan(out).any():
        raise AssertionError("scoring left examples without a result")
    return out


def score_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                buckets: Sequence[int], mode: str = "pmap", desc: str = "score") -> np.ndarray:
    """z = r(A) - r(B) for every pair of `dataset`, in order (float32 [N])."""
    return score_dataset(lambda p, b: pair_rewards(model, p, b), params, dataset, REWARD_KEYS,
                         batch_size=batch_size, mesh=mesh, buckets=buckets, mode=mode, desc=desc)


def score_policy_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                       buckets: Sequence[int], chunk_size: int | None, mode: str = "pmap",
                       desc: str = "score") -> np.ndarray:
    """[4, N] float32: summed log-probs of A (chosen) and B (rejected), then their per-token means, per pair."""
    from w2s_jax.train.policy import PAIR_KEYS, pair_logps

    keys = tuple(k for k in PAIR_KEYS if k != "valid")
    fn = lambda p, b: jnp.stack(pair_logps(model, p, b, chunk_size))
    return score_dataset(fn, params, dataset, keys, batch_size=batch_size, mesh=mesh, buckets=buckets, mode=mode,
                         desc=desc)
