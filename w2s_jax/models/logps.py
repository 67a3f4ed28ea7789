"""Response log-probabilities of a causal LM (original-spec §3.2), from logits or chunk by chunk from hidden states.

Pure jnp, used by the forwards both training and scoring run (`models.forwards`) and by the loss tests.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _float_dtype(x: Array) -> jnp.dtype:
    return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def _safe_div(num: Array, den: Array) -> Array:
    """num / den with 0 where den == 0 (all-padding rows must not turn a batch sum into NaN)."""
    return num / jnp.where(den > 0, den, 1)


def _token_logp_sum(logits_bcv: Array, targets_bc: Array, mask_bc: Array, dtype: jnp.dtype) -> Array:
    logits = logits_bcv.astype(dtype)
    picked = jnp.take_along_axis(logits, targets_bc[..., None], axis=-1)[..., 0]
    logp = picked - jax.nn.logsumexp(logits, axis=-1)
    return jnp.sum(logp * mask_bc, axis=-1)


def _chunked_logps(logits_at, ids_bt: Array, loss_mask_bt: Array, chunk_size: int | None, dtype: jnp.dtype):
    """Σ_t logp(ids[t+1] | ≤ t)·mask[t+1] over t < T-1, with ``logits_at(start, size)`` giving [B, size, V] logits.

    Chunks of the time axis run in a ``lax.scan`` whose body is rematerialised, so neither the forward nor the
    backward pass holds more than one [B, chunk, V] fp32 block. When chunk_size does not divide T-1 the last chunk
    is shifted left to end at T-1 and its already-counted positions are masked out (no padding of the logits).
    """
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of time steps or None, got {chunk_size}")
    batch, t_pred = ids_bt.shape[0], ids_bt.shape[1] - 1
    targets = ids_bt[:, 1:]
    mask = loss_mask_bt[:, 1:].astype(dtype)
    n_tokens = jnp.sum(mask, axis=-1)
    if t_pred <= 0:
        summed = jnp.zeros((batch,), dtype)
    elif chunk_size is None or chunk_size >= t_pred:
        summed = _token_logp_sum(logits_at(0, t_pred), targets, mask, dtype)
    else:
        n_chunks = -(-t_pred // chunk_size)

        def body(acc: Array, i: Array) -> tuple[Array, None]:
            start = jnp.minimum(i * chunk_size, t_pred - chunk_size)
            fresh = (start + jnp.arange(chunk_size)) >= i * chunk_size
            tgt = lax.dynamic_slice_in_dim(targets, start, chunk_size, axis=1)
            msk = lax.dynamic_slice_in_dim(mask, start, chunk_size, axis=1) * fresh
            return acc + _token_logp_sum(logits_at(start, chunk_size), tgt, msk, dtype), None

        body = jax.checkpoint(body, prevent_cse=False)
        summed, _ = lax.scan(body, jnp.zeros((batch,), dtype), jnp.arange(n_chunks))
    return summed, _safe_div(summed, n_tokens), n_tokens


def sequence_logps(
    logits_btv: Array, ids_bt: Array, loss_mask_bt: Array, chunk_size: int | None = None
) -> tuple[Array, Array, Array]:
    """Response log-probabilities of §3.2 (``get_log_ps``): ``(S(y), S̄(y), n_tokens)``, each [B], in ≥ fp32.

    ``logp_t = log_softmax(logits)[:, :-1]`` gathered at ``ids[:, 1:]`` and multiplied by ``mask[:, 1:]``;
    ``S = Σ_t logp_t``, ``n_tokens = Σ mask[:, 1:]``, ``S̄ = S / n_tokens`` (0 for rows without response tokens,
    e.g. padding). ``chunk_size`` splits the time axis so the fp32 log-softmax is never built for all of [B, T, V];
    see ``sequence_logps_from_hidden`` to avoid holding the logits themselves.
    """

    def logits_at(start, size):
        return lax.dynamic_slice_in_dim(logits_btv, start, size, axis=1)

    return _chunked_logps(logits_at, ids_bt, loss_mask_bt, chunk_size, _float_dtype(logits_btv))


def sequence_logps_from_hidden(
    hidden_btd: Array, lm_head_dv: Array, ids_bt: Array, loss_mask_bt: Array, chunk_size: int | None = None
) -> tuple[Array, Array, Array]:
    """``sequence_logps(hidden @ lm_head, ...)`` with the logits made chunk by chunk (fp32 accumulation).

    This is what keeps memory at O(B·chunk·V): the [B, T, V] logits exist neither in the forward nor (thanks to the
    rematerialised scan body) in the backward pass. ``lm_head_dv`` is the [D, V] kernel (the transposed embedding for
    tied heads); ``hidden_btd`` is the final-norm output (after any output projection).
    """

    dtype = jnp.promote_types(_float_dtype(hidden_btd), _float_dtype(lm_head_dv))

    def logits_at(start, size):
        hidden = lax.dynamic_slice_in_dim(hidden_btd, start, size, axis=1)
        return jnp.einsum("bcd,dv->bcv", hidden, lm_head_dv, preferred_element_type=dtype)

    return _chunked_logps(logits_at, ids_bt, loss_mask_bt, chunk_size, dtype)


def packed_sequence_logps_from_hidden(
    hidden_rld: Array, lm_head_dv: Array, ids_rl: Array, owner_rl: Array, loss_mask_rl: Array, n_sequences: int,
    chunk_size: int | None = None,
) -> tuple[Array, Array, Array]:
    """``sequence_logps_from_hidden`` for sequences packed into rows: ``(S(y), S̄(y), n_tokens)``, each [N].

    ``owner[r, t] = n + 1`` on the tokens of sequence n (0 on padding). Token t+1 is predicted from position t
    only when both belong to the same sequence, so nothing leaks across the sequences sharing a row; the
    per-token log-probs (fp32, [R, L]: small) are then summed per owner. The logits are made ``chunk_size``
    steps at a time in a rematerialised scan, as in the unpacked function.
    """
    dtype = jnp.promote_types(_float_dtype(hidden_rld), _float_dtype(lm_head_dv))
    rows, t_pred = ids_rl.shape[0], ids_rl.shape[1] - 1
    targets, owner = ids_rl[:, 1:], owner_rl[:, 1:]
    weight = (loss_mask_rl[:, 1:] > 0) & (owner == owner_rl[:, :-1]) & (owner > 0)
    chunk = t_pred if chunk_size is None or chunk_size >= t_pred else chunk_size
    if chunk <= 0:
        raise ValueError(f"chunk_size must be a positive number of time steps or None, got {chunk_size}")
    n_chunks = -(-t_pred // chunk)
    pad = n_chunks * chunk - t_pred
    hidden = jnp.pad(hidden_rld[:, :-1], ((0, 0), (0, pad), (0, 0)))
    targets_p = jnp.pad(targets, ((0, 0), (0, pad)))

    def body(_, i):
        h = lax.dynamic_slice_in_dim(hidden, i * chunk, chunk, axis=1)
        tgt = lax.dynamic_slice_in_dim(targets_p, i * chunk, chunk, axis=1)
        logits = jnp.einsum("bcd,dv->bcv", h, lm_head_dv, preferred_element_type=dtype).astype(dtype)
        picked = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
        return None, picked - jax.nn.logsumexp(logits, axis=-1)

    _, logp = lax.scan(jax.checkpoint(body, prevent_cse=False), None, jnp.arange(n_chunks))
    logp = jnp.moveaxis(logp, 0, 1).reshape(rows, n_chunks * chunk)[:, :t_pred]
    w = weight.astype(dtype)
    segment = lambda x: jax.ops.segment_sum(x.reshape(-1), owner.reshape(-1), num_segments=n_sequences + 1)[1:]
    summed, n_tokens = segment(logp * w), segment(w)
    return summed, _safe_div(summed, n_tokens), n_tokens
