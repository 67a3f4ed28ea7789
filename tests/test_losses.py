"""Losses of w2s_jax.train.losses against NumPy/torch implementations of the formulas in original-spec.md."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from w2s_jax.train import losses as L


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------ NumPy references


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def bce(z, t):  # BCE(σ(z), t), written as the formula
    p = sig(z)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def nls(x):  # -log σ(x)
    return -np.log(sig(x))


def num_grad(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def mean_loss(fn):
    """jax function of the inputs -> loss_sum / count, for jax.grad."""
    def f(*args, **kw):
        out = fn(*args, **kw)
        return out.loss_sum / out.count
    return f


def away_from_zero(x, eps=0.05):
    return np.where(np.abs(x) < eps, np.sign(x + 1e-12) * eps, x)


RNG = np.random.default_rng(0)
B = 10
VALID = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)  # two padding rows
W = VALID.astype(np.float64)


# ------------------------------------------------------------------------------------------------ reward model


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


def _conflict_inputs():
    # rows where the student prefers the GT-harmful side (mask on) and rows where it does not (mask off)
    z = np.array([1.5, -0.7, 2.2, -1.1, 0.3, -2.5, 0.9, -0.2, 1.0, -1.0])
    gt = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 1], np.float64)
    soft = RNG.uniform(size=B)
    return z, soft, gt


def _np_rm_conflict(z, soft, gt, alpha, w):
    m = ((z >= 0) != (gt == 1)).astype(np.float64)
    return np.sum(w * (bce(z, soft) + alpha * m * bce(z, 1 - gt))) / w.sum(), m


def test_rm_explicit_conflict_matches_numpy(x64):
    z, soft, gt = _conflict_inputs()
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
    z, soft, gt = _conflict_inputs()
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


# ------------------------------------------------------------------------------------------ sequence log-probs


def _np_seq_logps(logits, ids, mask):
    lse = np.log(np.sum(np.exp(logits), -1))
    tok = (np.take_along_axis(logits[:, :-1], ids[:, 1:, None], -1)[..., 0] - lse[:, :-1]) * mask[:, 1:]
    n = mask[:, 1:].sum(1)
    summed = tok.sum(1)
    return summed, np.where(n > 0, summed / np.maximum(n, 1), 0.0), n


def _seq_inputs(bsz=4, t=11, v=7, d=5):
    ids = RNG.integers(0, v, size=(bsz, t))
    mask = np.zeros((bsz, t))
    mask[0, 3:] = 1
    mask[1, 5:9] = 1  # prompt, response, right padding
    mask[2, :] = 1
    # row 3: all-zero mask (a padding row)
    hidden = RNG.normal(size=(bsz, t, d))
    head = RNG.normal(size=(d, v))
    return ids, mask, hidden, head


@pytest.mark.parametrize("chunk", [None, 1, 3, 4, 10, 16])
def test_sequence_logps_chunks_match_numpy(x64, chunk):
    ids, mask, hidden, head = _seq_inputs()
    logits = hidden @ head
    ref = _np_seq_logps(logits, ids, mask)
    got = jax.jit(L.sequence_logps, static_argnums=3)(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask), chunk)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, atol=1e-12)
    got_h = L.sequence_logps_from_hidden(jnp.asarray(hidden), jnp.asarray(head), jnp.asarray(ids),
                                         jnp.asarray(mask), chunk)
    for a, b in zip(got_h, ref):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_sequence_logps_fp32_and_bf16_inputs():
    ids, mask, hidden, head = _seq_inputs()
    logits = (hidden @ head).astype(np.float32)
    ref = _np_seq_logps(logits.astype(np.float64), ids, mask)
    got = L.sequence_logps(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask), 4)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    bf = L.sequence_logps(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(ids), jnp.asarray(mask), 4)
    assert bf[0].dtype == jnp.float32 and bf[1].dtype == jnp.float32


def test_sequence_logps_chunked_gradients_match_unchunked(x64):
    ids, mask, hidden, head = _seq_inputs()
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    w = jnp.asarray(RNG.normal(size=4))

    def from_logits(lg, chunk):
        s, m, _ = L.sequence_logps(lg, ids, mask, chunk)
        return jnp.sum(w * s) + jnp.sum(m)

    def from_hidden(h, k, chunk):
        s, m, _ = L.sequence_logps_from_hidden(h, k, ids, mask, chunk)
        return jnp.sum(w * s) + jnp.sum(m)

    lg = jnp.asarray(hidden @ head)
    np.testing.assert_allclose(jax.grad(from_logits)(lg, 3), jax.grad(from_logits)(lg, None), atol=1e-12)
    g_chunk = jax.grad(from_hidden, argnums=(0, 1))(jnp.asarray(hidden), jnp.asarray(head), 4)
    g_full = jax.grad(from_logits)(lg, None)
    np.testing.assert_allclose(g_chunk[0], np.einsum("btv,dv->btd", g_full, head), atol=1e-10)
    np.testing.assert_allclose(g_chunk[1], np.einsum("btd,btv->dv", hidden, g_full), atol=1e-10)


def test_sequence_logps_from_hidden_never_holds_full_logits():
    bsz, t, d, v = 4, 256, 32, 4096
    ids, mask = jnp.zeros((bsz, t), jnp.int32), jnp.ones((bsz, t))

    def f(h, k):
        return L.sequence_logps_from_hidden(h, k, ids, mask, 32)[0].sum()

    compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(jnp.ones((bsz, t, d)), jnp.ones((d, v))).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("no memory analysis on this backend")
    assert analysis.temp_size_in_bytes < bsz * t * v * 4 / 2


# ------------------------------------------------------------------------------------------ preference objectives


def test_sft_loss_numpy_hand_and_grad(x64):
    s, n = -RNG.uniform(1, 30, size=B), RNG.integers(1, 20, size=B).astype(np.float64)
    n[-1] = 0  # a padding row without tokens must not produce NaN
    out = L.sft_loss(jnp.asarray(s), jnp.asarray(n), jnp.asarray(VALID))
    np.testing.assert_allclose(out.loss_sum / out.count, np.sum(W * (-s / np.maximum(n, 1))) / W.sum(), atol=1e-12)
    grad = jax.grad(mean_loss(L.sft_loss))(jnp.asarray(s), jnp.asarray(n), jnp.asarray(VALID))
    np.testing.assert_allclose(grad, -W / np.maximum(n, 1) / W.sum(), atol=1e-12)
    hand = L.sft_loss(jnp.array([-6.0, -1.0]), jnp.array([3.0, 4.0]))
    np.testing.assert_allclose(hand.loss_sum / hand.count, (2.0 + 0.25) / 2, rtol=1e-6)


def _pref_inputs():
    pc, pr = -RNG.uniform(5, 40, size=B), -RNG.uniform(5, 40, size=B)
    pc[:4], pr[:4] = [-10.0, -12.0, -9.0, -15.0], [-12.0, -10.0, -15.0, -9.0]  # both orders, both acc values
    acc = np.array([True, True, False, False, True, False, True, False, True, False])
    rc, rr = pc + RNG.normal(size=B), pr + RNG.normal(size=B)
    return pc, pr, rc, rr, acc


def _np_dpo(pc, pr, rc, rr, beta, w, acc=None, alpha=0.0):
    per = nls(beta * ((pc - pr) - (rc - rr)))
    if acc is not None:
        for l in range(len(pc)):
            # h = GT-harmful side: weak-rejected if the weak label is right, else weak-chosen
            (ph, po, qh, qo) = (pr[l], pc[l], rr[l], rc[l]) if acc[l] else (pc[l], pr[l], rc[l], rr[l])
            active = (pc[l] < pr[l]) == acc[l]
            per[l] = per[l] + alpha * active * nls(beta * ((ph - po) - (qh - qo)))
    return np.sum(w * per) / w.sum()


def _np_simpo(mc, mr, beta, gamma, w, acc=None, alpha=0.0):
    per = nls(beta * (mc - mr) - gamma)
    if acc is not None:
        for l in range(len(mc)):
            h, o = (mr[l], mc[l]) if acc[l] else (mc[l], mr[l])
            active = (mc[l] < mr[l]) == acc[l]
            per[l] = per[l] + alpha * active * nls(beta * (h - o) - gamma)
    return np.sum(w * per) / w.sum()


@pytest.mark.parametrize("with_conflict", [False, True])
def test_dpo_matches_numpy(x64, with_conflict):
    pc, pr, rc, rr, acc = _pref_inputs()
    conflict = L.ReverseConflict(jnp.asarray(acc), 0.5) if with_conflict else None
    args = tuple(jnp.asarray(x) for x in (pc, pr, rc, rr))
    out = jax.jit(L.dpo_loss)(*args, 0.1, jnp.asarray(VALID), conflict)
    kw = dict(acc=acc, alpha=0.5) if with_conflict else {}
    np.testing.assert_allclose(out.loss_sum / out.count, _np_dpo(pc, pr, rc, rr, 0.1, W, **kw), atol=1e-12)
    np.testing.assert_allclose(out.metrics["chosen_reward"], np.sum(W * 0.1 * (pc - rc)), atol=1e-12)
    np.testing.assert_allclose(out.metrics["policy_accuracy"], np.sum(W * (pc >= pr)))
    np.testing.assert_allclose(out.metrics["reward_accuracy"], np.sum(W * ((pc - rc) > (pr - rr))))
    if with_conflict:
        active = (pc < pr) == acc
        assert 0 < np.sum(W * active) < W.sum()
        np.testing.assert_allclose(out.metrics["conflict_active"], np.sum(W * active))
    f = mean_loss(L.dpo_loss)
    grads = jax.grad(f, argnums=(0, 1))(*args, 0.1, jnp.asarray(VALID), conflict)
    np.testing.assert_allclose(grads[0], num_grad(lambda v: _np_dpo(v, pr, rc, rr, 0.1, W, **kw), pc), atol=1e-6)
    np.testing.assert_allclose(grads[1], num_grad(lambda v: _np_dpo(pc, v, rc, rr, 0.1, W, **kw), pr), atol=1e-6)


@pytest.mark.parametrize("with_conflict", [False, True])
def test_simpo_matches_numpy(x64, with_conflict):
    pc, pr, _, _, acc = _pref_inputs()
    mc, mr = pc / 10, pr / 10
    conflict = L.ReverseConflict(jnp.asarray(acc), 0.5) if with_conflict else None
    out = jax.jit(L.simpo_loss)(jnp.asarray(mc), jnp.asarray(mr), 2.0, 1.0, jnp.asarray(VALID), conflict)
    kw = dict(acc=acc, alpha=0.5) if with_conflict else {}
    np.testing.assert_allclose(out.loss_sum / out.count, _np_simpo(mc, mr, 2.0, 1.0, W, **kw), atol=1e-12)
    np.testing.assert_allclose(out.metrics["policy_accuracy"], np.sum(W * (mc >= mr)))
    f = mean_loss(L.simpo_loss)
    grads = jax.grad(f, argnums=(0, 1))(jnp.asarray(mc), jnp.asarray(mr), 2.0, 1.0, jnp.asarray(VALID), conflict)
    np.testing.assert_allclose(grads[0], num_grad(lambda v: _np_simpo(v, mr, 2.0, 1.0, W, **kw), mc), atol=1e-6)
    np.testing.assert_allclose(grads[1], num_grad(lambda v: _np_simpo(mc, v, 2.0, 1.0, W, **kw), mr), atol=1e-6)


def test_preference_hand_examples():
    dpo = L.dpo_loss(jnp.array([-10.0]), jnp.array([-12.0]), jnp.array([-11.0]), jnp.array([-11.0]), 0.1)
    np.testing.assert_allclose(dpo.loss_sum, math.log1p(math.exp(-0.2)), rtol=1e-6)
    # weak label right (acc) but the policy prefers the rejected (harmful) side: the reverse term is on,
    # margin with h = rejected first: 0.1 * ((-10 - -12) - (-11 - -11)) = 0.2
    c = L.ReverseConflict(jnp.array([True]), 0.5)
    dpo_c = L.dpo_loss(jnp.array([-12.0]), jnp.array([-10.0]), jnp.array([-11.0]), jnp.array([-11.0]), 0.1,
                       conflict=c)
    np.testing.assert_allclose(dpo_c.loss_sum, math.log1p(math.exp(0.2)) + 0.5 * math.log1p(math.exp(-0.2)),
                               rtol=1e-6)
    simpo = L.simpo_loss(jnp.array([-1.0]), jnp.array([-2.0]))
    np.testing.assert_allclose(simpo.loss_sum, math.log1p(math.exp(-1.0)), rtol=1e-6)
    # weak label wrong (h = chosen) and the policy prefers the chosen side: term = -log σ(2·1 - 1)
    simpo_c = L.simpo_loss(jnp.array([-1.0]), jnp.array([-2.0]), conflict=L.ReverseConflict(jnp.array([False]), 0.5))
    np.testing.assert_allclose(simpo_c.loss_sum, 1.5 * math.log1p(math.exp(-1.0)), rtol=1e-6)
    # weak label right and the policy agrees: no reverse term
    simpo_off = L.simpo_loss(jnp.array([-1.0]), jnp.array([-2.0]), conflict=L.ReverseConflict(jnp.array([True]), 0.5))
    np.testing.assert_allclose(simpo_off.loss_sum, math.log1p(math.exp(-1.0)), rtol=1e-6)
    assert float(simpo_off.metrics["conflict_active"]) == 0.0


# ------------------------------------------------------------------------------------------ accumulation


def _all_losses(idx, pad_to=None):
    """Each loss on rows idx of one fixed batch, optionally right-padded with garbage rows marked invalid."""
    pc, pr, rc, rr, acc = _pref_inputs_fixed
    z, soft, gt = _conflict_fixed
    n = len(idx)
    size = pad_to or n
    valid = np.arange(size) < n

    def take(x):
        x = np.asarray(x)[idx]
        return jnp.asarray(np.concatenate([x, np.resize(x[:1] * 0 + 7, size - n)]) if size > n else x)

    v = jnp.asarray(valid)
    conflict = L.ReverseConflict(take(acc), 0.5)
    return {
        "rm_bce": L.rm_bce(take(z), take(soft), v, take(gt)),
        "rm_conflict": L.rm_explicit_conflict(take(z), take(soft), take(gt), 0.5, v),
        "sft": L.sft_loss(take(pc), take(np.abs(rr)), v),
        "dpo": L.dpo_loss(take(pc), take(pr), take(rc), take(rr), 0.1, v, conflict),
        "simpo": L.simpo_loss(take(pc / 10), take(pr / 10), 2.0, 1.0, v, conflict),
    }


_pref_inputs_fixed = _pref_inputs()
_conflict_fixed = _conflict_inputs()


def test_microbatch_accumulation_is_exact():
    full = _all_losses(np.arange(B))
    first, second = _all_losses(np.arange(3)), _all_losses(np.arange(3, B), pad_to=9)  # unequal, padded
    for name, out in full.items():
        a, b = first[name], second[name]
        np.testing.assert_allclose((a.loss_sum + b.loss_sum) / (a.count + b.count), out.loss_sum / out.count,
                                   rtol=1e-6, err_msg=name)
        assert float(a.count + b.count) == B
        for key, value in out.metrics.items():
            np.testing.assert_allclose(a.metrics[key] + b.metrics[key], value, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name}.{key}")


def test_rm_bce_stays_exact_where_fp32_torch_saturates():
    # torch fp32: sigmoid(30) == 1, so BCE(., 0) is clamped to 100 with zero gradient; ours is log(1 + e^30) ≈ 30
    val, grad = jax.value_and_grad(mean_loss(L.rm_bce))(jnp.array([30.0]), jnp.array([0.0]))
    np.testing.assert_allclose([val, grad[0]], [30.0, 1.0], rtol=1e-6)


def test_jit_with_traced_alpha_and_bad_chunk_size():
    z, soft, gt = (jnp.asarray(x, jnp.float32) for x in _conflict_inputs())
    eager = L.rm_explicit_conflict(z, soft, gt, 0.5)
    jitted = jax.jit(L.rm_explicit_conflict)(z, soft, gt, jnp.float32(0.5))
    np.testing.assert_allclose(jitted.loss_sum, eager.loss_sum, rtol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        L.sequence_logps(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)), 0)
