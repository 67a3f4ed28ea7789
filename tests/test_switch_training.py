"""The original's training switches: Adafactor (against transformers' Adafactor, the algorithm of the original's
torch_optimizer call) and head-only training (backbone bitwise frozen, head = a NumPy Adam step)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh
from transformers.optimization import Adafactor

import tiny_models
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.models.convert import from_pretrained
from w2s_jax.objectives import RewardModel
from w2s_jax.train import step as step_lib
from w2s_jax.train.optim import make_optimizer
from w2s_jax.train.trainer import Trainer, TrainSpec


def test_adafactor_matches_the_originals_torch_adafactor_over_steps():
    """toptim.Adafactor(params, lr=lr) keeps relative_step=True, so lr is unread: transformers' Adafactor with
    lr=None and the same defaults runs the same algorithm. Matrices (factored), a vector and a [D, 1] head."""
    rng = np.random.RandomState(0)
    shapes = {"w": (6, 5), "b": (5,), "head": (5, 1), "big": (3, 40)}
    init = {k: rng.randn(*s).astype(np.float32) * (0.02 if k == "big" else 1.0) for k, s in shapes.items()}
    grads = [{k: rng.randn(*s).astype(np.float32) * (k == "w" and 10.0 or 1.0) for k, s in shapes.items()}
             for _ in range(4)]
    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt = Adafactor(list(torch_params.values()), lr=None, relative_step=True, scale_parameter=True,
                    warmup_init=False)
    # lr and the schedule are given but unread, as in the original
    ours = make_optimizer(3e-5, 10, "cosine_to_zero", optim="adafactor")
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = ours.init(params)
    for g in grads:
        for k, p in torch_params.items():
            p.grad = torch.tensor(g[k])
        opt.step()
        updates, state = ours.update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        for k in shapes:
            np.testing.assert_allclose(np.asarray(params[k]), torch_params[k].detach().numpy(), rtol=2e-5,
                                       atol=1e-7, err_msg=k)
    moved = {k: np.abs(np.asarray(params[k]) - init[k]).max() for k in shapes}
    assert all(v > 1e-3 for v in moved.values()), moved  # the steps are real, not all clipped to nothing


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer(1e-5, 10, "constant", optim="sgd")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    tiny_models.build("gpt2", directory)
    return from_pretrained(str(directory), reward_head=True)


def pair_batch(n, T=12, seed=0):
    rng = np.random.RandomState(seed)
    batch = {}
    for side in "ab":
        ids, mask = tiny_models.right_padded_batch(rng.randint(2, T + 1, size=n), T=T, seed=seed + ord(side))
        batch[f"ids_{side}"], batch[f"mask_{side}"] = ids, mask
    batch.update(label=rng.rand(n).astype(np.float32), gt=rng.randint(0, 2, n).astype(np.float32),
                 valid=np.arange(n) != 3)
    return batch


def numpy_head_adam_step(model, params, batch, lr):
    """One torch-Adam step on the head alone, in NumPy: the features are the backbone's last-token hidden states,
    dL/dw = Σ_valid (σ(z) - ℓ)(h_a - h_b) / n_valid, and Adam's first step is -lr · g / (|g| + 1e-8)."""
    def last_hidden(ids, mask):
        h = np.asarray(model.apply({"params": params}, ids, mask, method=model.hidden), np.float64)
        return h[np.arange(len(ids)), mask.sum(-1) - 1]

    dh = last_hidden(batch["ids_a"], batch["mask_a"]) - last_hidden(batch["ids_b"], batch["mask_b"])
    w = np.asarray(params["reward_head"]["kernel"], np.float64)
    z = (dh @ w)[:, 0]
    valid = batch["valid"].astype(np.float64)
    g = ((1 / (1 + np.exp(-z)) - batch["label"]) * valid) @ dh / valid.sum()
    return w - lr * (g / (np.abs(g) + 1e-8))[:, None]


@pytest.mark.parametrize("n_micro", [1, 2])
def test_head_only_freezes_the_backbone_bitwise_and_steps_the_head_like_adam(loaded, n_micro):
    batch, lr = pair_batch(8), 1e-3
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    trainer = Trainer(mesh, bucket_lengths(12, 12))
    spec = TrainSpec(lr=lr, batch_size=8, epochs=1, schedule="constant", seed=0, head_only=True)
    params = jax.tree.map(jnp.array, loaded.params)
    before = jax.tree.map(np.asarray, loaded.params)
    optimizer, state = trainer.init(params, spec, nsteps=4)
    step = trainer.step_fn(RewardModel("bce"), loaded.model, optimizer, step_lib.state_shardings(state), 4,
                           head_only=True)
    new_state, _ = step(state, trainer.place(RewardModel("bce").prepare(batch, n_micro, "padded")))
    after = jax.tree.map(np.asarray, new_state.params)
    for got, want in zip(jax.tree.leaves(after["backbone"]), jax.tree.leaves(before["backbone"])):
        assert np.array_equal(got, want) and got.dtype == want.dtype
    assert not np.array_equal(after["reward_head"]["kernel"], before["reward_head"]["kernel"])
    want = numpy_head_adam_step(loaded.model, loaded.params, batch, lr)
    np.testing.assert_allclose(after["reward_head"]["kernel"], want, rtol=1e-4, atol=1e-7)


def test_adafactor_and_head_only_state_on_an_fsdp_mesh():
    """Factored moments have other shapes than their params: they are replicated, the rest keeps the params'
    sharding; one step runs on 8 devices."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.train.optim import head_only

    mesh = make_mesh(1, 8, 1, devices=jax.devices()[:8])
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("fsdp", None)))  # noqa: E731
    params = {"backbone": {"w": put(jnp.ones((16, 24)))}, "reward_head": {"kernel": put(jnp.full((16, 1), 0.5))}}
    for optimizer in (make_optimizer(1e-3, 4, "constant", optim="adafactor"),
                      head_only(make_optimizer(1e-3, 4, "constant", optim="adafactor"))):
        state = step_lib.init_state(params, optimizer)
        updates, _ = jax.jit(optimizer.update)(jax.tree.map(jnp.ones_like, params), state.opt_state, params)
        assert np.isfinite(np.asarray(updates["reward_head"]["kernel"])).all()
