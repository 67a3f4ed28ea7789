"""Policy objectives of the preference scenario (original-spec §3): SFT, DPO and SimPO on response log-probs.

Log-probs are computed from the final hidden states and the LM-head kernel chunk by chunk over time, so a
[batch, length, vocab] fp32 tensor is never held whole. Chosen and rejected run in one forward. A microbatch is
either padded (`ids_a`, `mask_a`, ...) or packed (`ids`, `segments`, `owner`, `loss_mask`: the chosen sides then
the rejected sides, from `data.packing.packed_microbatches(..., token_level=True)`); both give the same values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from w2s_jax.train import losses

SFT_KEYS = ("ids", "mask", "loss_mask", "valid")
PAIR_KEYS = ("ids_a", "mask_a", "loss_mask_a", "ids_b", "mask_b", "loss_mask_b", "valid")


def response_logps(model, params, ids, mask, loss_mask, chunk_size: int | None):
    """(summed, mean) response log-probs per row, fp32."""
    hidden = model.apply({"params": params}, ids, mask, method=model.hidden)
    kernel = model.apply({"params": params}, method=model.lm_head_kernel)
    summed, mean, _ = losses.sequence_logps_from_hidden(hidden, kernel, ids, loss_mask, chunk_size)
    return summed, mean


def packed_logps(model, params, mb, n_sequences: int, chunk_size: int | None):
    """(summed, mean, n_tokens) [n_sequences] of the sequences packed in `mb`'s rows."""
    hidden = model.apply({"params": params}, mb["ids"], mb["segments"], method=model.packed_hidden)
    kernel = model.apply({"params": params}, method=model.lm_head_kernel)
    return losses.packed_sequence_logps_from_hidden(hidden, kernel, mb["ids"], mb["owner"], mb["loss_mask"],
                                                    n_sequences, chunk_size)


def pair_logps(model, params, mb, chunk_size: int | None):
    """(summed_c, summed_r, mean_c, mean_r): A = chosen and B = rejected of each pair, one forward."""
    if "segments" in mb:
        n = mb["valid"].shape[0]
        summed, mean, _ = packed_logps(model, params, mb, 2 * n, chunk_size)
        return summed[:n], summed[n:], mean[:n], mean[n:]
    n = mb["ids_a"].shape[0]
    cat = lambda key: jnp.concatenate([mb[f"{key}_a"], mb[f"{key}_b"]])
    summed, mean = response_logps(model, params, cat("ids"), cat("mask"), cat("loss_mask"), chunk_size)
    return summed[:n], summed[n:], mean[:n], mean[n:]


def sft_objective(model, chunk_size: int | None):
    def loss_fn(params, mb, progress):
        if "segments" in mb:
            n = mb["valid"].shape[0]
            summed, _, _ = packed_logps(model, params, mb, n, chunk_size)
            full = jax.ops.segment_sum(mb["loss_mask"].reshape(-1), mb["owner"].reshape(-1), num_segments=n + 1)[1:]
            return losses.sft_loss(summed, full, mb["valid"])
        summed, _ = response_logps(model, params, mb["ids"], mb["mask"], mb["loss_mask"], chunk_size)
        return losses.sft_loss(summed, mb["loss_mask"].sum(-1), mb["valid"])

    return loss_fn


def preference_objective(model, algorithm: str, *, beta: float, gamma: float, alpha: float, explicit: bool,
                         chunk_size: int | None):
    """DPO (needs `ref_c`, `ref_r` in the batch: cached reference log-probs) or SimPO; `explicit` adds the
    reverse conflict term, which reads `acc` (the weak label agrees with the ground truth)."""
    if algorithm not in ("dpo", "simpo"):
        raise ValueError(f"unknown preference algorithm {algorithm!r}")

    def loss_fn(params, mb, progress):
        sc, sr, mc, mr = pair_logps(model, params, mb, chunk_size)
        conflict = losses.ReverseConflict(mb["acc"], alpha) if explicit else None
        if algorithm == "dpo":
            return losses.dpo_loss(sc, sr, mb["ref_c"], mb["ref_r"], beta, mb["valid"], conflict)
        return losses.simpo_loss(mc, mr, beta, gamma, mb["valid"], conflict)

    return loss_fn
