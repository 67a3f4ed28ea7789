"""The forwards both training and scoring use: pair rewards and response log-probs, padded or packed.

`layout` is explicit: "padded" batches hold `ids_a`/`mask_a`/`ids_b`/`mask_b` (and `loss_mask_*` for policies);
"packed" ones hold the rows of `data.packing.packed_microbatches` (A sides first, then B sides): `ids`,
`segments`, `seq_rows`/`seq_last` (rewards) or `owner`/`loss_mask` (log-probs). Both give the same values.
Log-probs come from the final hidden states and the LM-head kernel chunk by chunk over time
(`losses.sequence_logps_from_hidden`), so a [batch, length, vocab] fp32 tensor is never held whole.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from w2s_jax.models import logps as logps_lib

LAYOUTS = ("padded", "packed")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"batch layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def pair_rewards(model, params, batch, layout: str = "padded") -> jax.Array:
    """z = r(A) - r(B) per pair, both sides in one forward."""
    if check_layout(layout) == "packed":
        r = model.apply({"params": params}, batch["ids"], batch["segments"], batch["seq_rows"], batch["seq_last"],
                        method=model.packed_rewards)
        return r[: r.shape[0] // 2] - r[r.shape[0] // 2:]
    n = batch["ids_a"].shape[0]
    ids = jnp.concatenate([batch["ids_a"], batch["ids_b"]])
    mask = jnp.concatenate([batch["mask_a"], batch["mask_b"]])
    r = model.apply({"params": params}, ids, mask, method=model.reward)
    return r[:n] - r[n:]


def response_logps(model, params, ids, mask, loss_mask, chunk_size: int | None):
    """(summed, mean) response log-probs per padded row, fp32."""
    hidden = model.apply({"params": params}, ids, mask, method=model.hidden)
    kernel = model.apply({"params": params}, method=model.lm_head_kernel)
    summed, mean, _ = logps_lib.sequence_logps_from_hidden(hidden, kernel, ids, loss_mask, chunk_size)
    return summed, mean


def packed_logps(model, params, mb, n_sequences: int, chunk_size: int | None):
    """(summed, mean, n_tokens) [n_sequences] of the sequences packed in `mb`'s rows."""
    hidden = model.apply({"params": params}, mb["ids"], mb["segments"], method=model.packed_hidden)
    kernel = model.apply({"params": params}, method=model.lm_head_kernel)
    return logps_lib.packed_sequence_logps_from_hidden(hidden, kernel, mb["ids"], mb["owner"], mb["loss_mask"],
                                                       n_sequences, chunk_size)


def pair_logps(model, params, mb, chunk_size: int | None, layout: str = "padded"):
    """(summed_c, summed_r, mean_c, mean_r): A = chosen and B = rejected of each pair, one forward. A packed
    batch must carry `valid` (one flag per pair) to say how many pairs it packs."""
    if check_layout(layout) == "packed":
        n = mb["valid"].shape[0]
        summed, mean, _ = packed_logps(model, params, mb, 2 * n, chunk_size)
        return summed[:n], summed[n:], mean[:n], mean[n:]
    n = mb["ids_a"].shape[0]
    cat = lambda key: jnp.concatenate([mb[f"{key}_a"], mb[f"{key}_b"]])  # noqa: E731
    summed, mean = response_logps(model, params, cat("ids"), cat("mask"), cat("loss_mask"), chunk_size)
    return summed[:n], summed[n:], mean[:n], mean[n:]
