"""Scoring of a split by a model: one result per example, in dataset order.

Reward models give `z = r(A) - r(B)`; A and B of each pair run in one forward. Batches are sharded over the
mesh's data x fsdp axes with `jax.jit`; the last batch is padded and its filler rows dropped.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from w2s_jax.data.batches import PairDataset, eval_batches, num_eval_batches
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import batch_sharding


def pair_rewards(model: Transformer, params, batch) -> jax.Array:
    """r(A) - r(B) for a batch holding ids_a/mask_a/ids_b/mask_b, both sides in one forward."""
    n = batch["ids_a"].shape[0]
    ids = jnp.concatenate([batch["ids_a"], batch["ids_b"]])
    mask = jnp.concatenate([batch["mask_a"], batch["mask_b"]])
    r = model.apply({"params": params}, ids, mask, method=model.reward)
    return r[:n] - r[n:]


def score_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                buckets: Sequence[int], desc: str = "score") -> np.ndarray:
    """z for every pair of `dataset`, in order (float32 [N])."""
    keys = ("ids_a", "mask_a", "ids_b", "mask_b")
    fn = jax.jit(lambda p, b: pair_rewards(model, p, b))
    out = np.full(len(dataset), np.nan, np.float32)
    for batch in tqdm(eval_batches(dataset, batch_size, buckets=buckets), total=num_eval_batches(len(dataset),
                      batch_size), desc=desc, leave=False):
        placed = {k: jax.device_put(batch[k], batch_sharding(mesh, batch[k].ndim)) for k in keys}
        z = np.asarray(jax.device_get(fn(params, placed)))
        keep = batch["valid"]
        out[batch["index"][keep]] = z[keep]
    if np.isnan(out).any():
        raise AssertionError("scoring left examples without a result")
    return out


def score_policy_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                       buckets: Sequence[int], chunk_size: int | None, desc: str = "score") -> np.ndarray:
    """[4, N] float32: summed log-probs of A (chosen) and B (rejected), then their per-token means, per pair."""
    from w2s_jax.train.policy import PAIR_KEYS, pair_scores

    keys = tuple(k for k in PAIR_KEYS if k != "valid")
    fn = pair_scores(model, chunk_size)
    out = np.full((4, len(dataset)), np.nan, np.float32)
    for batch in tqdm(eval_batches(dataset, batch_size, buckets=buckets), total=num_eval_batches(len(dataset),
                      batch_size), desc=desc, leave=False):
        placed = {k: jax.device_put(batch[k], batch_sharding(mesh, batch[k].ndim)) for k in keys}
        scores = np.asarray(jax.device_get(fn(params, placed)))
        keep = batch["valid"]
        out[:, batch["index"][keep]] = scores[:, keep]
    if np.isnan(out).any():
        raise AssertionError("scoring left examples without a result")
    return out
