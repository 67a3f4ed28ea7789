"""Reward-model losses of w2s_jax.train.losses (BCE, explicit conflict, logconf) against NumPy/torch references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.loss_refs import B, RNG, VALID, W, away_from_zero, bce, conflict_inputs, mean_loss, num_grad, sig
from w2s_jax.train import losses as L


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_rm_bce_matches_numpy_value_grad_and_metrics(x64):
    z = away_from_zero(RNG.normal(size=B) * 3)
    lab = RNG.uniform(size=B)
    gt = (RNG.uniform(size=B) < 0.5).astype(np.float64)
    out = L.rm_bce(jnp.asarray(z), jnp.asarray(lab), jnp.asarray(VALID), jnp.asarray(gt))
    ref = np.sum(W * bce(z, lab)) / W.sum()
    assert out.count == 8
    np.testing.assert_allclose(out.loss_sum / out.count, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.metrics["accuracy"], np.sum(W * ((z >= 0) == (gt == 1))))
    # without gt: falls back to labels >= 0.5
    out2 = L.rm_bce(jnp.asarray(z), jnp.asarray(lab), jnp.asarray(VALID))
    np.testing.assert_allclose(out2.metrics["accuracy"], np.sum(W * ((z >= 0) == (lab >= 0.5))))
    grad = jax.grad(mean_loss(L.rm_bce))(jnp.asarray(z), jnp.asarray(lab), jnp.asarray(VALID))
    np.testing.assert_allclose(grad, W * (sig(z) - lab) / W.sum(), atol=1e-12)
    np.testing.assert_allclose(grad, num_grad(lambda v: np.sum(W * bce(v, lab)) / W.sum(), z), atol=1e-6)


def test_rm_bce_hand_example():
    out = L.rm_bce(jnp.array([0.0, math.log(3.0)]), jnp.array([1.0, 0.25]))
    row1 = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    np.testing.assert_allclose(out.loss_sum / out.count, (math.log(2.0) + row1) / 2, rtol=1e-6)
    assert float(out.metrics["accuracy"]) == 1.0  # z=0 >= 0 vs label 1: right; z>0 vs 0.25: wrong


def test_rm_bce_matches_torch():
    z = RNG.normal(size=32) * 4
    lab = RNG.uniform(size=32)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.functional.binary_cross_entropy(torch.sigmoid(zt), torch.tensor(lab))
    lt.backward()
    fn = mean_loss(L.rm_bce)
    val, grad = jax.value_and_grad(fn)(jnp.asarray(z, jnp.float32), jnp.asarray(lab, jnp.float32))
    np.testing.assert_allclose(val, lt.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)


def _np_rm_conflict(z, soft, gt, alpha, w):
    m = ((z >= 0) != (gt == 1)).astype(np.float64)
    return np.sum(w * (bce(z, soft) + alpha * m * bce(z, 1 - gt))) / w.sum(), m


def test_rm_explicit_conflict_matches_numpy(x64):
    z, soft, gt = conflict_inputs()
    out = L.rm_explicit_conflict(jnp.asarray(z), jnp.asarray(soft), jnp.asarray(gt), 0.5, jnp.asarray(VALID))
    ref, m = _np_rm_conflict(z, soft, gt, 0.5, W)
    assert 0 < np.sum(W * m) < W.sum()
    np.testing.assert_allclose(out.loss_sum / out.count, ref, atol=1e-12)
    np.testing.assert_allclose(out.metrics["conflict_active"], np.sum(W * m))
    np.testing.assert_allclose(out.metrics["main_loss"], np.sum(W * bce(z, soft)), atol=1e-12)
    np.testing.assert_allclose(out.metrics["accuracy"], np.sum(W * (1 - m)))
    grad = jax.grad(mean_loss(L.rm_explicit_conflict))(
        jnp.asarray(z), jnp.asarray(soft), jnp.asarray(gt), 0.5, jnp.asarray(VALID))
    np.testing.assert_allclose(grad, num_grad(lambda v: _np_rm_conflict(v, soft, gt, 0.5, W)[0], z), atol=1e-6)
    analytic = W * ((sig(z) - soft) + 0.5 * m * (sig(z) - (1 - gt))) / W.sum()
    np.testing.assert_allclose(grad, analytic, atol=1e-12)


def test_rm_explicit_conflict_matches_torch_original_formula():
    z, soft, gt = conflict_inputs()
    zt = torch.tensor(z, requires_grad=True)
    gtt, st = torch.tensor(gt), torch.tensor(soft)
    p = torch.sigmoid(zt)
    mask = ((zt >= 0) != (gtt == 1)).double().detach()
    bce_t = torch.nn.functional.binary_cross_entropy
    lt = bce_t(p, st) + 0.5 * bce_t(p * mask, (1 - gtt) * mask)
    lt.backward()
    val, grad = jax.value_and_grad(mean_loss(L.rm_explicit_conflict))(
        jnp.asarray(z, jnp.float32), jnp.asarray(soft, jnp.float32), jnp.asarray(gt, jnp.float32), 0.5)
    np.testing.assert_allclose(val, lt.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_rm_explicit_conflict_hand_example():
    out = L.rm_explicit_conflict(jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5]), jnp.array([1.0, 1.0]), 0.5)
    # BCE(σ(z), 1/2) = (log(1 + e^-z) + log(1 + e^z)) / 2 for both rows
    main = sum(0.5 * math.log1p(math.exp(-v)) + 0.5 * math.log1p(math.exp(v)) for v in (1.0, -2.0))
    conflict = math.log1p(math.exp(-2))  # row 1: z<0 but g=1 -> BCE(σ(-2), 0)
    np.testing.assert_allclose(out.loss_sum / out.count, (main + 0.5 * conflict) / 2, rtol=1e-6)
    assert float(out.metrics["conflict_active"]) == 1.0


def _np_logconf(z, lab, step_frac, aux=0.5, warm=0.1):
    coef = aux * (step_frac if step_frac <= warm else 1.0)
    p0 = 1 - sig(z)
    t = np.quantile(p0, lab.mean())
    hard = (p0 < t).astype(np.float64)
    return np.mean(bce(z, lab * (1 - coef) + hard * coef))


def test_rm_logconf_matches_numpy_and_openai_two_way(x64):
    z = away_from_zero(RNG.normal(size=16) * 2)
    lab = RNG.uniform(size=16)
    for step_frac in (0.0, 0.05, 0.1, 0.11, 0.7):
        out = L.rm_logconf(jnp.asarray(z), jnp.asarray(lab), step_frac)
        np.testing.assert_allclose(out.loss_sum / out.count, _np_logconf(z, lab, step_frac), atol=1e-12)
        # openai's 2-way logconf on logits [0, z] with labels [1-ℓ, ℓ], written in torch from spec §7.3
        logits = torch.tensor(np.stack([np.zeros_like(z), z], 1))
        labels = torch.tensor(np.stack([1 - lab, lab], 1))
        coef = 0.5 * (step_frac if step_frac <= 0.1 else 1.0)
        probs = torch.softmax(logits, -1)
        thr = torch.quantile(probs[:, 0], labels.mean(0)[1])
        hard = torch.stack([probs[:, 0] >= thr, probs[:, 0] < thr], 1).double()
        target = labels * (1 - coef) + hard * coef
        ref = torch.nn.functional.cross_entropy(logits, target).item()
        np.testing.assert_allclose(out.loss_sum / out.count, ref, atol=1e-12)
    grad = jax.grad(mean_loss(L.rm_logconf))(jnp.asarray(z), jnp.asarray(lab), 0.7)
    np.testing.assert_allclose(grad, num_grad(lambda v: _np_logconf(v, lab, 0.7), z), atol=1e-6)
    # padding rows do not move the threshold
    zp, lp = np.concatenate([z, [9.0, -9.0]]), np.concatenate([lab, [1.0, 1.0]])
    padded = L.rm_logconf(jnp.asarray(zp), jnp.asarray(lp), 0.7, valid=jnp.arange(18) < 16)
    np.testing.assert_allclose(padded.loss_sum / padded.count, _np_logconf(z, lab, 0.7), atol=1e-12)


def test_rm_logconf_hand_example_and_coef_jump():
    z, lab = jnp.array([2.0, -1.0, 0.5, -3.0]), jnp.array([0.6, 0.6, 0.4, 0.4])
    # p0 = σ(-z) = [.12, .73, .38, .95]; median 0.55 -> strong hard labels [1, 0, 1, 0]; coef 0.5
    target = [0.8, 0.3, 0.7, 0.2]
    expect = np.mean([bce(float(a), t) for a, t in zip(z, target)])
    out = jax.jit(L.rm_logconf)(z, lab, 1.0)
    np.testing.assert_allclose(out.loss_sum / out.count, expect, rtol=1e-6)
    at_end = L.rm_logconf(z, lab, 0.1).loss_sum
    after = L.rm_logconf(z, lab, 0.1 + 1e-6).loss_sum
    manual = lambda c: np.sum([bce(float(a), l * (1 - c) + h * c) for a, l, h in zip(z, lab, [1, 0, 1, 0])])
    np.testing.assert_allclose([at_end, after], [manual(0.05), manual(0.5)], rtol=1e-6)


def test_rm_bce_stays_exact_where_fp32_torch_saturates():
    # torch fp32: sigmoid(30) == 1, so BCE(., 0) is clamped to 100 with zero gradient; ours is log(1 + e^30) ≈ 30
    val, grad = jax.value_and_grad(mean_loss(L.rm_bce))(jnp.array([30.0]), jnp.array([0.0]))
    np.testing.assert_allclose([val, grad[0]], [30.0, 1.0], rtol=1e-6)
