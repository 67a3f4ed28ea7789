"""The original's remaining reward-model losses (original-spec §2.5, §7.3; `loss.py` of the deception repo):
``xent``, ``product`` and ``logconf_bce``, beside ``rm_bce`` / ``rm_logconf`` in `losses`.

openai wrote ``xent``, ``product`` and ``logconf`` for a 2-way head. The deception repo's reward model has ONE
logit per pair (``z = r(A) - r(B)``, shape [B, 1]), so called literally they degenerate: a softmax over one
column is 1, hence ``xent`` is identically 0 (no gradient), ``product``'s target is 0/0 where ℓ = 0, and
``logconf`` fails its ``mean_weak.shape == (2,)`` assertion. Here, as for ``rm_logconf``, each is the 2-way loss
on logits ``[0, z]`` with targets ``[1-ℓ, ℓ]`` (the pairwise model's own two classes), which is what the options
mean; ``logconf_bce`` was written for the scalar logit and is ported as it is. Same contract as `losses`:
``LossTerms`` of sums, ``valid`` masks padding rows, fp32 at least, jit-able.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from w2s_jax.train.losses import LossTerms, _float_dtype, _rm_accuracy, _weights

Array = jax.Array


def _terms(z: Array, per_example: Array, labels: Array, w: Array, gt_labels: Array | None) -> LossTerms:
    loss_sum = jnp.sum(w * per_example)
    return LossTerms(loss_sum, jnp.sum(w), {"loss": loss_sum, "accuracy": jnp.sum(w * _rm_accuracy(z, labels,
                                                                                                      gt_labels))})


def rm_xent(z: Array, labels: Array, valid: Array | None = None, gt_labels: Array | None = None) -> LossTerms:
    """openai's ``xent``: ``CE(softmax([0, z]), [1-ℓ, ℓ])``. On two classes this is ``BCE(σ(z), ℓ)`` exactly
    (``log softmax([0, z])_1 = log σ(z)``), so it gives ``rm_bce``'s values; it exists so the original's
    ``--loss xent`` runs by name."""
    dtype = _float_dtype(z)
    z, labels, w = jnp.asarray(z).astype(dtype), jnp.asarray(labels).astype(dtype), _weights(valid, z)
    return _terms(z, optax.sigmoid_binary_cross_entropy(z, labels), labels, w, gt_labels)


def rm_product(z: Array, labels: Array, alpha: float = 1.0, beta: float = 1.0, valid: Array | None = None,
               gt_labels: Array | None = None) -> LossTerms:
    """openai's ``product`` loss: ``target ∝ softmax(logits)^β · labels^α`` (detached), then CE, with logits
    ``[0, z]`` and labels ``[1-ℓ, ℓ]``. The normalised target's class-1 share is ``σ(β z + α logit(ℓ))``, written
    that way so ℓ ∈ {0, 1} gives the hard target 0 / 1 instead of 0/0. α = β = 1 as in the original."""
    dtype = _float_dtype(z)
    z, labels, w = jnp.asarray(z).astype(dtype), jnp.asarray(labels).astype(dtype), _weights(valid, z)
    logit_l = jnp.log(labels) - jnp.log1p(-labels)  # ±inf at hard labels, where σ(±inf) is exact
    target = lax.stop_gradient(jax.nn.sigmoid(beta * z + alpha * logit_l))
    return _terms(z, optax.sigmoid_binary_cross_entropy(z, target), labels, w, gt_labels)


def _lower_median(x: Array, w: Array) -> Array:
    """torch.median of the valid entries: the LOWER of the two middle values for an even count."""
    ordered = jnp.sort(jnp.where(w > 0, x, jnp.inf))
    n = jnp.sum(w > 0)
    return ordered[jnp.maximum(n - 1, 0) // 2]


def rm_logconf_bce(
    z: Array,
    labels: Array,
    step_frac: float | Array,
    aux_coef: float = 0.5,
    warmup_frac: float = 0.2,
    valid: Array | None = None,
    gt_labels: Array | None = None,
) -> LossTerms:
    """The deception repo's ``logconf_bce`` ("TO BE TESTED", spec §2.5), on the scalar logit::

        coef = aux_coef · (step_frac if step_frac <= warmup_frac else 1)     # warmup_frac 0.2 here, not 0.1
        t = quantile(σ(z), median(ℓ))                                         # torch.quantile (linear), torch's
                                                                               # lower median
        target = ℓ·(1 - coef) + 1[σ(z) >= t]·coef                             # detached
        loss = BCE(σ(z), target)

    Like ``rm_logconf`` the threshold is a statistic of the rows of one call (padding excluded): with the
    original's microbatch of 1 it is degenerate (t = σ(z), every row is its own "strong" label)."""
    dtype = _float_dtype(z)
    z, labels, w = jnp.asarray(z).astype(dtype), jnp.asarray(labels).astype(dtype), _weights(valid, z)
    coef = aux_coef * jnp.where(step_frac <= warmup_frac, step_frac, 1.0)
    preds = lax.stop_gradient(jax.nn.sigmoid(z))
    threshold = jnp.nanquantile(jnp.where(w > 0, preds, jnp.nan), _lower_median(labels, w))
    strong = (preds >= threshold).astype(dtype)
    target = labels * (1 - coef) + strong * coef
    return _terms(z, optax.sigmoid_binary_cross_entropy(z, target), labels, w, gt_labels)
