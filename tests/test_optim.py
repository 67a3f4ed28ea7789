"""Schedules and Adam of w2s_jax.train.optim against torch and the hand values of original-spec §2.5, §3.3, §10."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from w2s_jax.train import optim


def torch_lrs(lr, nsteps, make_scheduler):
    """lr used by each of the nsteps optimizer updates, scheduler stepped after each update (as the original)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(nsteps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def test_cosine_to_zero_matches_torch_cosine_annealing():
    lr, nsteps = 1e-5, 125
    ref = torch_lrs(lr, nsteps, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=nsteps))
    schedule = optim.cosine_to_zero(lr, nsteps)
    ours = np.array([schedule(k) for k in range(nsteps)], np.float64)
    formula = lr * (1 + np.cos(np.pi * np.arange(nsteps) / nsteps)) / 2
    np.testing.assert_allclose(ours[:3], ref[:3], rtol=1e-6)
    np.testing.assert_allclose(ours[-3:], ref[-3:], rtol=1e-3)  # lr·1e-4 there: fp32 cancellation in 1 + cos
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7 * lr)
    np.testing.assert_allclose(ref, formula, rtol=1e-9, atol=1e-15)
    assert ours[0] == np.float32(lr) and 0 < ours[-1] < 2e-4 * lr


def test_warmup_constant_hand_values_and_torch_lambda():
    lr, nsteps = 1e-6, 125
    schedule = jax.jit(optim.warmup_constant(lr, nsteps))
    values = np.array([schedule(k) for k in range(nsteps)], np.float64)
    np.testing.assert_allclose(values[0], lr / 13, rtol=1e-6)
    np.testing.assert_allclose(values[11], 12 * lr / 13, rtol=1e-6)
    np.testing.assert_allclose(values[12:], lr, rtol=1e-6)
    warmup = int(0.1 * nsteps)
    ref = torch_lrs(lr, nsteps, lambda o: torch.optim.lr_scheduler.LambdaLR(
        o, lambda k: min(1.0, (k + 1) / (warmup + 1))))
    np.testing.assert_allclose(values, ref, rtol=1e-6)


def test_constant_schedule():
    schedule = optim.constant(3e-4)
    np.testing.assert_allclose([schedule(0), schedule(10_000)], [3e-4, 3e-4], rtol=1e-7)
    np.testing.assert_allclose(optim.make_schedule(3e-4, 7, "constant")(5), 3e-4, rtol=1e-7)


@pytest.mark.parametrize("name,torch_sched", [
    ("cosine_to_zero", lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n)),
    ("cosine_anneal", lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n)),
    ("warmup_constant", lambda o, n: torch.optim.lr_scheduler.LambdaLR(
        o, lambda k: min(1.0, (k + 1) / (int(0.1 * n) + 1)))),
    ("constant", lambda o, n: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1.0)),
])
def test_adam_matches_torch(name, torch_sched):
    lr, nsteps = 1e-2, 12
    rng = np.random.default_rng(1)
    init = rng.normal(size=6).astype(np.float32)
    grads = [rng.normal(size=6).astype(np.float32) * (k + 1) for k in range(nsteps)]

    p = torch.tensor(init.copy(), requires_grad=True)
    opt = torch.optim.Adam([p], lr=lr)
    sched = torch_sched(opt, nsteps)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        sched.step()

    tx = optim.make_optimizer(lr, nsteps, name)
    params = jnp.asarray(init)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params, p.detach().numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(params, init, atol=1e-3)  # the updates were not vacuous


@pytest.mark.parametrize("lr,nsteps,name", [
    (1e-5, 125, "cosine"),
    (1e-5, 125, None),
    (0.0, 125, "constant"),
    (-1e-5, 125, "cosine_to_zero"),
    (float("nan"), 125, "warmup_constant"),
    (True, 125, "constant"),
    (1e-5, 0, "cosine_to_zero"),
    (1e-5, -3, "warmup_constant"),
    (1e-5, 2.5, "constant"),
])
def test_make_optimizer_rejects_bad_arguments(lr, nsteps, name):
    with pytest.raises(ValueError):
        optim.make_optimizer(lr, nsteps, name)


def test_unknown_schedule_message_lists_the_choices():
    with pytest.raises(ValueError, match="cosine_to_zero.*warmup_constant"):
        optim.make_optimizer(1e-5, 10, "linear")


def test_schedules_accept_numpy_scalars_and_jit_counts():
    schedule = optim.warmup_constant(np.float32(1e-3), np.int64(30))  # w = int(0.1 * 30) = 3
    counts = jnp.arange(6, dtype=jnp.int32)
    np.testing.assert_allclose(jax.vmap(schedule)(counts), [1e-3 * min(1, (k + 1) / 4) for k in range(6)],
                               rtol=1e-6)
    assert math.isclose(float(optim.cosine_to_zero(1e-3, 10)(jnp.int32(10))), 0.0, abs_tol=1e-12)
