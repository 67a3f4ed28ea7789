"""Sequence log-probs, SFT, DPO and SimPO of w2s_jax.train.losses against NumPy references; microbatch accumulation
of every loss."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.loss_refs import B, RNG, VALID, W, conflict_inputs, mean_loss, nls, num_grad, pref_inputs
from w2s_jax.train import losses as L


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


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


def test_sft_loss_numpy_hand_and_grad(x64):
    s, n = -RNG.uniform(1, 30, size=B), RNG.integers(1, 20, size=B).astype(np.float64)
    n[-1] = 0  # a padding row without tokens must not produce NaN
    out = L.sft_loss(jnp.asarray(s), jnp.asarray(n), jnp.asarray(VALID))
    np.testing.assert_allclose(out.loss_sum / out.count, np.sum(W * (-s / np.maximum(n, 1))) / W.sum(), atol=1e-12)
    grad = jax.grad(mean_loss(L.sft_loss))(jnp.asarray(s), jnp.asarray(n), jnp.asarray(VALID))
    np.testing.assert_allclose(grad, -W / np.maximum(n, 1) / W.sum(), atol=1e-12)
    hand = L.sft_loss(jnp.array([-6.0, -1.0]), jnp.array([3.0, 4.0]))
    np.testing.assert_allclose(hand.loss_sum / hand.count, (2.0 + 0.25) / 2, rtol=1e-6)


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
    pc, pr, rc, rr, acc = pref_inputs()
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
    pc, pr, _, _, acc = pref_inputs()
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


_pref_inputs_fixed = pref_inputs()
_conflict_fixed = conflict_inputs()


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


def test_jit_with_traced_alpha_and_bad_chunk_size():
    z, soft, gt = (jnp.asarray(x, jnp.float32) for x in conflict_inputs())
    eager = L.rm_explicit_conflict(z, soft, gt, 0.5)
    jitted = jax.jit(L.rm_explicit_conflict)(z, soft, gt, jnp.float32(0.5))
    np.testing.assert_allclose(jitted.loss_sum, eager.loss_sum, rtol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        L.sequence_logps(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)), 0)
