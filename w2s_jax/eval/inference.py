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

Either way, `pack_len` packs each device's share of a batch into rows of >= pack_len tokens (segment-masked
attention, the same numbers as padding) so compute goes to tokens, not padding.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from w2s_jax import distributed
from w2s_jax.data.batches import PairDataset, eval_batches, num_eval_batches, pack_row_len
from w2s_jax.data.packing import packed_microbatches
from w2s_jax.models.forwards import pair_logps, pair_rewards
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import activation_sharding, batch_sharding
from w2s_jax.progress import progress

EVAL_MODES = ("pmap", "sharded")
REWARD_KEYS = ("ids_a", "mask_a", "ids_b", "mask_b")


def local_mesh_devices(mesh: Mesh) -> list:
    """The mesh's devices that belong to this process, in mesh order."""
    return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


_COMPILED: dict = {}


def _compiled(key, fn: Callable, mode: str, devices) -> Callable:
    """One pmap / jit wrapper per (what is computed, mode, devices): scoring the next model of the same
    architecture, or the same model again, reuses the compiled executables instead of tracing anew."""
    if key is None or (key, mode, devices) not in _COMPILED:
        wrapped = jax.pmap(fn, in_axes=(None, 0), devices=list(devices)) if mode == "pmap" else jax.jit(fn)
        if key is None:
            return wrapped
        _COMPILED[(key, mode, devices)] = wrapped
    return _COMPILED[(key, mode, devices)]


def _model_key(model) -> tuple:
    """What a compiled scoring function of `model` depends on: its config and, for a LoRA model (`models.lora`),
    its adapters' settings. A plain and a LoRA model of one config must not share one: the function closes over the
    model, and the plain one's forward never adds the adapters' term."""
    return model.cfg, type(model).__name__, getattr(model, "lora", None)


def score_dataset(fn: Callable, params, dataset: PairDataset, keys: Sequence[str], *, batch_size: int, mesh: Mesh,
                  buckets: Sequence[int], mode: str = "pmap", pack_len: int | None = None, token_level: bool = False,
                  desc: str = "score", cache_key=None) -> np.ndarray:
    """`fn(params, batch) -> [..., rows]` over every example of `dataset` -> float32 [..., N] in dataset order.

    `pack_len`: each device's share of a batch is packed into rows of >= pack_len tokens (A sides, then B sides)
    instead of padded, and `fn` receives the packed arrays (`token_level` adds owner and loss_mask); the filler
    rows of a short last batch are packed empty. `cache_key` (hashable, naming what `fn` computes) lets later
    calls reuse the compiled function."""
    if mode not in EVAL_MODES:
        raise ValueError(f"config.eval.mode must be one of {EVAL_MODES}, got {mode!r}")
    if mode == "pmap":
        devices = tuple(local_mesh_devices(mesh))
        n_groups = len(devices)
        batch_size = -(-batch_size // n_groups) * n_groups
        run_fn = _compiled(cache_key, fn, mode, devices)
        # one full copy of the parameters on each device, placed once (not per batch)
        run_params = distributed.local_replicas(params, devices)

        def run(groups):  # [n_dev, ...] per field -> [n_dev, ..., rows / n_dev] -> [..., rows]
            out = np.asarray(jax.device_get(run_fn(run_params, groups)))
            return np.concatenate(list(out), axis=-1)
    else:
        n_groups, rows = 1, mesh.shape["data"] * mesh.shape["fsdp"]
        batch_size = -(-batch_size // rows) * rows
        jitted = _compiled(cache_key, fn, mode, tuple(mesh.devices.flat))

        def run(groups):
            placed = {k: jax.device_put(v[0], batch_sharding(mesh, v.ndim - 1) if k not in ("seq_rows", "seq_last")
                                        else NamedSharding(mesh, P())) for k, v in groups.items()}
            with activation_sharding(mesh):  # layers gather weights, not the batch's activations
                return distributed.fetch_global(jitted(params, placed))

    row_len = None if pack_len is None else pack_row_len(pack_len, dataset)

    def split(batch):
        if pack_len is None:
            return {k: batch[k].reshape(n_groups, -1, *batch[k].shape[1:]) for k in keys}
        row_multiple = 1 if mode == "pmap" else mesh.shape["data"] * mesh.shape["fsdp"]
        if not batch["valid"].all():  # filler rows: empty sequences, nothing to compute
            batch = {**batch, "mask_a": batch["mask_a"] * batch["valid"][:, None],
                     "mask_b": batch["mask_b"] * batch["valid"][:, None]}
        return packed_microbatches(batch, n_groups, sides=("_a", "_b"), min_row_len=row_len, buckets=buckets,
                                   row_multiple=row_multiple, extra_keys=("valid",), token_level=token_level)

    out = None
    for batch in progress(eval_batches(dataset, batch_size, buckets=buckets), total=num_eval_batches(len(dataset),
                          batch_size), desc=desc, unit="batch", leave=False, disable=not distributed.is_primary()):
        scores = np.asarray(run(split(batch)), np.float32)
        if out is None:
            out = np.full((*scores.shape[:-1], len(dataset)), np.nan, np.float32)
        keep = batch["valid"]
        out[..., batch["index"][keep]] = scores[..., keep]
    if out is None or np.isnan(out).any():
        raise AssertionError("scoring left examples without a result")
    return out


def score_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                buckets: Sequence[int], mode: str = "pmap", pack_len: int | None = None,
                desc: str = "score") -> np.ndarray:
    """z = r(A) - r(B) for every pair of `dataset`, in order (float32 [N])."""
    layout = "packed" if pack_len else "padded"
    return score_dataset(lambda p, b: pair_rewards(model, p, b, layout), params, dataset, REWARD_KEYS, batch_size=batch_size,
                         mesh=mesh, buckets=buckets, mode=mode, pack_len=pack_len, desc=desc,
                         cache_key=("reward", _model_key(model), bool(pack_len)))


def score_policy_pairs(model: Transformer, params, dataset: PairDataset, *, batch_size: int, mesh: Mesh,
                       buckets: Sequence[int], chunk_size: int | None, mode: str = "pmap",
                       pack_len: int | None = None, desc: str = "score") -> np.ndarray:
    """[4, N] float32: summed log-probs of A (chosen) and B (rejected), then their per-token means, per pair."""
    keys = ("ids_a", "mask_a", "loss_mask_a", "ids_b", "mask_b", "loss_mask_b")
    layout = "packed" if pack_len else "padded"
    fn = lambda p, b: jnp.stack(pair_logps(model, p, b, chunk_size, layout))  # noqa: E731
    return score_dataset(fn, params, dataset, keys, batch_size=batch_size, mesh=mesh, buckets=buckets, mode=mode,
                         pack_len=pack_len, token_level=True, desc=desc,
                         cache_key=("policy", _model_key(model), chunk_size, bool(pack_len)))
