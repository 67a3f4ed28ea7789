"""Pure loss functions for reward modelling, SFT, DPO and SimPO (original-spec §2.5-2.7, §3.2-3.5, §3.8, §7.3).

Every loss works on already-computed model outputs (no model call inside) and returns
``LossTerms(loss_sum, count, metrics)``: the per-example mean is ``loss_sum / count`` and every metric is a sum over
the batch, so summing the three over microbatches and dividing once at the end is exact, whatever the microbatch
sizes (the original's "mean of microbatch means" equals this when the microbatches are equal-sized, spec §10).
``valid`` ([B] bool or float weights) marks real rows: padding rows of a short last batch contribute 0 to the sum,
the count and every metric. Losses are computed in at least fp32 whatever the input dtype, and are jit-able (no
Python control flow on traced values).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

# sequence log-probs live with the models: training and scoring both need them
from w2s_jax.models.logps import (  # noqa: F401
    packed_sequence_logps_from_hidden, sequence_logps, sequence_logps_from_hidden)

Array = jax.Array


class LossTerms(NamedTuple):
    """``loss = loss_sum / count``; ``metrics`` are per-batch sums (divide by the accumulated count to log)."""

    loss_sum: Array
    count: Array
    metrics: dict[str, Array]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weak_correct", "alpha"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class ReverseConflict:
    """Explicit conflict of the preference scenario, ``reward_type="reverse"`` (spec §3.8).

    ``weak_correct`` [B] bool is the row's ``acc`` (the weak label agrees with the ground truth), which tells which side
    is GT-harmful; ``alpha`` is ``reward_alpha`` (0.5 in the scripts). A pytree, so it passes through ``jax.jit``.
    """

    weak_correct: Array
    alpha: float | Array


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weak_correct", "alpha", "nll_c", "nll_r"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SFTConflict:
    """Explicit conflict with ``reward_type="sft"`` (spec §3.8): on the same active set M as the reverse term, add
    ``α ·`` the NLL of the GT-harmful side h. ``nll_c`` / ``nll_r`` [B] are each side's NLL as the original takes
    it: ``-Σ_t mask_t log p_t`` over the response, divided by the side's whole length minus one (its mean over
    every shifted position, padding and prompt included, at the original's microbatch of 1)."""

    weak_correct: Array
    alpha: float | Array
    nll_c: Array
    nll_r: Array


def _float_dtype(x: Array) -> jnp.dtype:
    return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def _weights(valid: Array | None, like: Array) -> Array:
    dtype = _float_dtype(like)
    if valid is None:
        return jnp.ones(jnp.shape(like)[:1], dtype)
    return jnp.asarray(valid).astype(dtype)


def _safe_div(num: Array, den: Array) -> Array:
    """num / den with 0 where den == 0 (all-padding rows must not turn a batch sum into NaN)."""
    return num / jnp.where(den > 0, den, 1)


# --------------------------------------------------------------------------------------------------- reward model


def _rm_accuracy(z: Array, labels: Array, gt_labels: Array | None) -> Array:
    """``(z >= 0) == (gt == 1)``, falling back to ``labels >= 0.5`` when no GT is given (spec §2.5)."""
    target = (gt_labels == 1) if gt_labels is not None else (labels >= 0.5)
    return (z >= 0) == target


def rm_bce(z: Array, labels: Array, valid: Array | None = None, gt_labels: Array | None = None) -> LossTerms:
    """Pairwise reward-model loss ``BCE(σ(z), ℓ)`` with ``z = r(A) - r(B)`` and ℓ ∈ [0, 1] soft or hard (§2.5).

    Written as ``-ℓ log σ(z) - (1-ℓ) log σ(-z)`` (optax), which is accurate for every z. The original's torch
    ``binary_cross_entropy(sigmoid(z), ℓ)`` clamps each log at -100: in fp64 that only matters where |z| > ~100,
    but in fp32 (the original's dtype) ``sigmoid`` rounds to exactly 0 or 1 from |z| ≈ 17, where torch returns
    the clamped 100 (times the label weight on the saturated side) with zero gradient, while this stays exact
    (value ≈ |z|, gradient σ(z) - ℓ). For |z| ≲ 10 the two agree to fp32 rounding. Metrics: loss, accuracy.
    """
    dtype = _float_dtype(z)
    z, labels, w = jnp.asarray(z).astype(dtype), jnp.asarray(labels).astype(dtype), _weights(valid, z)
    per_example = optax.sigmoid_binary_cross_entropy(z, labels)
    loss_sum = jnp.sum(w * per_example)
    correct = jnp.sum(w * _rm_accuracy(z, labels, gt_labels))
    return LossTerms(loss_sum, jnp.sum(w), {"loss": loss_sum, "accuracy": correct})


def rm_explicit_conflict(
    z: Array, soft_labels: Array, gt_labels: Array, alpha: float | Array, valid: Array | None = None
) -> LossTerms:
    """Explicit-conflict reward-model loss (``train_reward_model_v2``, §2.7): ``L = L_main + α · L_reward``.

    ``L_main = mean BCE(σ(z), ℓ)``; ``m = 1[(z >= 0) != (g == 1)]`` (the student already ranks the GT-harmful answer
    first; no gradient through m); ``L_reward = mean m · BCE(σ(z), 1 - g)``, pushing further towards the harmful
    answer. Both means run over the whole minibatch: rows with m = 0 add 0 to the second sum but still count (torch's
    ``BCE(σ(z)·m, (1-g)·m)`` is ``BCE(0, 0) = 0`` there). Stable BCE as in ``rm_bce``.
    Metrics: loss, main_loss, conflict_loss (unweighted by α), conflict_active (Σ m), accuracy (vs g).
    """
    dtype = _float_dtype(z)
    z, w = jnp.asarray(z).astype(dtype), _weights(valid, z)
    soft_labels, gt_labels = jnp.asarray(soft_labels).astype(dtype), jnp.asarray(gt_labels).astype(dtype)
    active = lax.stop_gradient(((z >= 0) != (gt_labels == 1)).astype(dtype))
    main_sum = jnp.sum(w * optax.sigmoid_binary_cross_entropy(z, soft_labels))
    conflict_sum = jnp.sum(w * active * optax.sigmoid_binary_cross_entropy(z, 1 - gt_labels))
    loss_sum = main_sum + alpha * conflict_sum
    metrics = {
        "loss": loss_sum,
        "main_loss": main_sum,
        "conflict_loss": conflict_sum,
        "conflict_active": jnp.sum(w * active),
        "accuracy": jnp.sum(w * _rm_accuracy(z, soft_labels, gt_labels)),
    }
    return LossTerms(loss_sum, jnp.sum(w), metrics)


def rm_logconf(
    z: Array,
    labels: Array,
    step_frac: float | Array,
    aux_coef: float = 0.5,
    warmup_frac: float = 0.1,
    valid: Array | None = None,
    gt_labels: Array | None = None,
) -> LossTerms:
    """openai's auxiliary-confidence loss (§7.3) for the scalar pairwise logit z (an option, unused by the paper).

    It is openai's 2-way ``logconf`` on logits ``[0, z]`` with targets ``[1-ℓ, ℓ]``::

        coef = aux_coef · (step_frac if step_frac <= warmup_frac else 1)
        p0 = 1 - σ(z);  t = quantile(p0, mean(ℓ))          # linear interpolation, as torch.quantile
        strong_hard = 1[p0 < t]                             # the strong model's own hard labels, detached;
                                                            # their share of 1s matches the weak labels' mean
        loss = BCE(σ(z), ℓ·(1 - coef) + strong_hard·coef)

    The coefficient jumps from ``aux_coef·warmup_frac`` to ``aux_coef`` at the end of warmup, as in the original
    code (openai PR #33), not the smooth ramp the paper describes. The threshold is a statistic of the *whole batch*
    (padding rows excluded), so this loss is not microbatch-additive: call it on the full optimizer batch, or accept
    per-microbatch thresholds (with microbatch 1 the quantile is degenerate, spec §2.5).
    """
    dtype = _float_dtype(z)
    z, labels, w = jnp.asarray(z).astype(dtype), jnp.asarray(labels).astype(dtype), _weights(valid, z)
    coef = aux_coef * jnp.where(step_frac <= warmup_frac, step_frac, 1.0)
    p0 = lax.stop_gradient(jax.nn.sigmoid(-z))
    mean_weak = _safe_div(jnp.sum(w * labels), jnp.sum(w))
    threshold = jnp.nanquantile(jnp.where(w > 0, p0, jnp.nan), mean_weak)
    strong_hard = (p0 < threshold).astype(dtype)
    target = labels * (1 - coef) + strong_hard * coef
    loss_sum = jnp.sum(w * optax.sigmoid_binary_cross_entropy(z, target))
    correct = jnp.sum(w * _rm_accuracy(z, labels, gt_labels))
    return LossTerms(loss_sum, jnp.sum(w), {"loss": loss_sum, "accuracy": correct})


# ------------------------------------------------------------------------------------------ preference objectives


def sft_loss(summed_chosen: Array, n_tokens_full_mask: Array, valid: Array | None = None) -> LossTerms:
    """SFT stage (§3.3): ``-S(y_c) / Σ mask`` per example, with the *full* mask sum as the original divides by
    (not ``Σ mask[:, 1:]``; the two differ only when the response fills the whole window). Metrics: loss."""
    dtype = _float_dtype(summed_chosen)
    w = _weights(valid, summed_chosen)
    per_example = -_safe_div(jnp.asarray(summed_chosen).astype(dtype), jnp.asarray(n_tokens_full_mask).astype(dtype))
    loss_sum = jnp.sum(w * per_example)
    return LossTerms(loss_sum, jnp.sum(w), {"loss": loss_sum})


def _add_reverse_conflict(
    terms: LossTerms, conflict: ReverseConflict | SFTConflict, score_c: Array, score_r: Array, harmful_logit: Array,
    w: Array
) -> LossTerms:
    """Adds ``α · Σ_{l∈M} -log σ(harmful_logit_l)`` (reverse) or ``α · Σ_{l∈M} NLL(h_l)`` (sft) with
    ``M = {(score_c < score_r) == acc}`` (§3.8).

    M is where the policy already prefers the GT-harmful side; the sum is divided by the same count as the main loss
    (the whole minibatch), so inactive rows count in the denominator.
    """
    acc = jnp.asarray(conflict.weak_correct).astype(bool)
    active = lax.stop_gradient(((score_c < score_r) == acc).astype(w.dtype))
    if isinstance(conflict, SFTConflict):  # h is the rejected side where the weak label is right
        per_example = jnp.where(acc, jnp.asarray(conflict.nll_r), jnp.asarray(conflict.nll_c)).astype(w.dtype)
    else:
        per_example = -jax.nn.log_sigmoid(harmful_logit)
    conflict_sum = jnp.sum(w * active * per_example)
    loss_sum = terms.loss_sum + conflict.alpha * conflict_sum
    metrics = dict(terms.metrics, loss=loss_sum, main_loss=terms.loss_sum, conflict_loss=conflict_sum)
    metrics["conflict_active"] = jnp.sum(w * active)
    return LossTerms(loss_sum, terms.count, metrics)


def dpo_loss(
    policy_chosen: Array,
    policy_rejected: Array,
    reference_chosen: Array,
    reference_rejected: Array,
    beta: float = 0.1,
    valid: Array | None = None,
    conflict: ReverseConflict | SFTConflict | None = None,
) -> LossTerms:
    """DPO (§3.4): ``-log σ(β[(S_π(c) - S_π(r)) - (S_ref(c) - S_ref(r))])`` on summed response log-probs.

    With ``conflict`` (§3.8, reverse; an ``SFTConflict`` adds h's NLL instead): the GT-harmful side h is the
    rejected one where ``acc`` else the chosen one; on ``M = {(S_π(c) < S_π(r)) == acc}`` add
    ``α · -log σ(β · Δ_DPO(h ≻ other))`` (the DPO margin with h first).
    Metrics: loss, chosen_reward / rejected_reward (Σ β(S_π - S_ref)), reward_accuracy (Σ 1[chosen_reward >
    rejected_reward], strict as in TRL), policy_accuracy (Σ 1[S_π(c) >= S_π(r)], the eval rule of §3.6), and with a
    conflict main_loss, conflict_loss (unweighted by α), conflict_active (|M|).
    """
    dtype = _float_dtype(policy_chosen)
    pc, pr, rc, rr = (jnp.asarray(x).astype(dtype) for x in (policy_chosen, policy_rejected, reference_chosen,
                                                                reference_rejected))
    w = _weights(valid, pc)
    chosen_reward, rejected_reward = beta * (pc - rc), beta * (pr - rr)
    margin = chosen_reward - rejected_reward
    loss_sum = jnp.sum(w * -jax.nn.log_sigmoid(margin))
    metrics = {
        "loss": loss_sum,
        "chosen_reward": jnp.sum(w * chosen_reward),
        "rejected_reward": jnp.sum(w * rejected_reward),
        "reward_accuracy": jnp.sum(w * (margin > 0)),
        "policy_accuracy": jnp.sum(w * (pc >= pr)),
    }
    terms = LossTerms(loss_sum, jnp.sum(w), metrics)
    if conflict is None:
        return terms
    harmful_logit = jnp.where(jnp.asarray(conflict.weak_correct).astype(bool), -margin, margin)
    return _add_reverse_conflict(terms, conflict, pc, pr, harmful_logit, w)


def simpo_loss(
    mean_chosen: Array,
    mean_rejected: Array,
    beta: float = 2.0,
    gamma: float = 1.0,
    valid: Array | None = None,
    conflict: ReverseConflict | SFTConflict | None = None,
) -> LossTerms:
    """SimPO (§3.5): ``-log σ(β(S̄_π(c) - S̄_π(r)) - γ)`` on per-token mean response log-probs, no reference.

    With ``conflict`` (§3.8, reverse; an ``SFTConflict`` adds h's NLL instead): on
    ``M = {(S̄_π(c) < S̄_π(r)) == acc}`` add
    ``α · -log σ(β(S̄_π(h) - S̄_π(other)) - γ)``, h the GT-harmful side (γ keeps its sign).
    Metrics: loss, chosen_reward / rejected_reward (Σ β S̄_π), reward_accuracy (Σ 1[S̄_π(c) > S̄_π(r)]),
    policy_accuracy (Σ 1[S̄_π(c) >= S̄_π(r)], the eval rule of §3.6), plus the conflict metrics as in ``dpo_loss``.
    """
    dtype = _float_dtype(mean_chosen)
    mc, mr = jnp.asarray(mean_chosen).astype(dtype), jnp.asarray(mean_rejected).astype(dtype)
    w = _weights(valid, mc)
    diff = beta * (mc - mr)
    loss_sum = jnp.sum(w * -jax.nn.log_sigmoid(diff - gamma))
    metrics = {
        "loss": loss_sum,
        "chosen_reward": jnp.sum(w * beta * mc),
        "rejected_reward": jnp.sum(w * beta * mr),
        "reward_accuracy": jnp.sum(w * (mc > mr)),
        "policy_accuracy": jnp.sum(w * (mc >= mr)),
    }
    terms = LossTerms(loss_sum, jnp.sum(w), metrics)
    if conflict is None:
        return terms
    harmful_logit = jnp.where(jnp.asarray(conflict.weak_correct).astype(bool), -diff, diff) - gamma
    return _add_reverse_conflict(terms, conflict, mc, mr, harmful_logit, w)
