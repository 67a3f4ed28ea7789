"""LoRA dropout (peft's `lora_dropout`): the adapter branch reads x * keep / (1 - p), the base kernel reads x; only in a
train step (a key in context), a mask per adapted Dense and per layer of the scanned stack, and the p = 0 model keeps
its fingerprint. The reference is NumPy on the mask recovered from the same draw."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from w2s_jax.data.batches import SequenceDataset, bucket_lengths
from w2s_jax.models.convert import from_pretrained
from w2s_jax.models.lora import LORA_KEY, RNG_STREAM, LoraConfig, _adapter_interceptor, dropout_key, with_lora
from w2s_jax.objectives import SFT
from w2s_jax.train.trainer import Trainer, TrainSpec

P_DROP = 0.3


def _dense_out(x, params, scale, p, key):
    dense = nn.Dense(params["kernel"].shape[1])
    with nn.intercept_methods(_adapter_interceptor(scale, p)):
        return dense.apply({"params": params}, x, rngs={RNG_STREAM: key} if key is not None else {})


def test_adapter_input_dropout_against_numpy():
    rng = np.random.RandomState(0)
    n, d, r, scale = 64, 16, 16, 2.0
    x = rng.standard_normal((n, d)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    # A = B = I and W = 0: the output is scale * dropout(x), so the mask shows itself
    eye = {"kernel": np.zeros((d, d), np.float32), "bias": np.zeros(d, np.float32), "lora_a": np.eye(d, r,
           dtype=np.float32), "lora_b": np.eye(r, d, dtype=np.float32)}
    shown = np.asarray(_dense_out(x, eye, scale, P_DROP, key)) / scale
    keep = shown != 0
    np.testing.assert_allclose(shown[keep], x[keep] / (1 - P_DROP), rtol=1e-6)
    sigma = np.sqrt(P_DROP * (1 - P_DROP) / x.size)
    assert abs((~keep).mean() - P_DROP) < 5 * sigma
    # any W, A, B with the same draw: x @ W + b + scale * ((x * keep / (1 - p)) @ A) @ B
    params = {"kernel": rng.standard_normal((d, 5)).astype(np.float32), "bias": rng.standard_normal(5).astype(
        np.float32), "lora_a": rng.standard_normal((d, 3)).astype(np.float32),
        "lora_b": rng.standard_normal((3, 5)).astype(np.float32)}
    want = x @ params["kernel"] + params["bias"] + scale * ((np.where(keep, x / (1 - P_DROP), 0) @ params["lora_a"])
                                                             @ params["lora_b"])
    np.testing.assert_allclose(np.asarray(_dense_out(x, params, scale, P_DROP, key)), want, rtol=1e-5, atol=1e-5)
    no_key = x @ params["kernel"] + params["bias"] + scale * (x @ params["lora_a"]) @ params["lora_b"]
    np.testing.assert_allclose(np.asarray(_dense_out(x, params, scale, P_DROP, None)), no_key, rtol=1e-5, atol=1e-5)


def _lora_model(loaded, p):
    model, params = with_lora(loaded.model, dict(loaded.params), LoraConfig(rank=2, alpha=4.0, dropout=p), seed=0)
    rng = np.random.RandomState(1)  # B != 0: the adapters act
    params[LORA_KEY] = {k: {"a": ab["a"], "b": jnp.asarray(0.3 * rng.standard_normal(ab["b"].shape), jnp.float32)}
                        for k, ab in params[LORA_KEY].items()}
    return model, params


def test_dropout_acts_only_with_a_key_and_each_layer_draws_its_own_mask(loaded):
    model, params = _lora_model(loaded, P_DROP)
    plain, _ = _lora_model(loaded, 0.0)
    ids = jnp.asarray(np.random.RandomState(2).randint(1, 250, (2, 9)), jnp.int32)
    mask = jnp.ones_like(ids)
    hidden = lambda m, key=None: m.apply({"params": params}, ids, mask, method=m.hidden) if key is None else \
        _keyed(m, key, lambda: m.apply({"params": params}, ids, mask, method=m.hidden))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(hidden(model)), np.asarray(hidden(plain)))  # scoring: no dropout
    k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    assert np.abs(np.asarray(hidden(model, k0)) - np.asarray(hidden(plain))).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(hidden(model, k0)), np.asarray(hidden(model, k0)))
    assert np.abs(np.asarray(hidden(model, k0)) - np.asarray(hidden(model, k1))).max() > 1e-4
    assert np.asarray(hidden(plain, k0)).tolist() == np.asarray(hidden(plain)).tolist()  # p = 0 ignores the key

    seen = []  # the q_proj key of every layer of the scanned stack, recorded from inside the scan

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name == "q_proj" and \
                context.module.has_rng(RNG_STREAM):
            jax.debug.callback(lambda k: seen.append(np.asarray(k).tolist()), context.module.make_rng(RNG_STREAM))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.block_until_ready(hidden(model, k0))
    assert len(seen) == loaded.model.cfg.num_layers >= 2
    assert len({tuple(k) for k in seen}) == len(seen)


def _keyed(model, key, fn):
    with dropout_key(key):
        return fn()


def _fit(loaded, p, devices=1, seed=0):
    mesh = Mesh(np.asarray(jax.devices()[:devices]).reshape(1, devices, 1), ("data", "fsdp", "tensor"))
    if devices > 1:
        loaded = from_pretrained(loaded.source, mesh=mesh, reward_head=True)
    model, params = with_lora(loaded.model, {**loaded.params, "reward_head": jax.tree.map(
        jnp.array, loaded.params["reward_head"])}, LoraConfig(rank=2, alpha=4.0, dropout=p), seed=0)
    rng = np.random.RandomState(0)
    ids = [rng.randint(1, 250, size=rng.randint(4, 11)).astype(np.int32) for _ in range(8)]
    masks = [np.r_[np.zeros(2, np.int32), np.ones(len(x) - 2, np.int32)] for x in ids]
    spec = TrainSpec(lr=1e-2, batch_size=8, micro_batch_size=4, epochs=2, schedule="constant", seed=seed)
    result = Trainer(mesh, bucket_lengths(10, 10)).fit(params, SFT(), model, SequenceDataset(ids, masks), spec)
    return {k: np.asarray(v["a"]) for k, v in result.params[LORA_KEY].items()}, [h["loss"] for h in result.history]


def test_dropout_in_the_train_step_is_seeded_sharded_and_off_at_zero(loaded):
    a, losses = _fit(loaded, P_DROP)
    again, losses_again = _fit(loaded, P_DROP)
    assert losses == losses_again  # the same seed draws the same masks
    for k in a:
        np.testing.assert_array_equal(a[k], again[k])
    off, losses_off = _fit(loaded, 0.0)
    assert losses[0] == losses_off[0]  # B = 0 at the start: the adapter branch adds nothing whatever the mask
    assert losses[-1] != losses_off[-1] and any(np.abs(a[k] - off[k]).max() > 1e-6 for k in a)
    other, losses_other = _fit(loaded, P_DROP, seed=1)
    assert losses_other != losses
    sharded, losses_sharded = _fit(loaded, P_DROP, devices=4)  # masks do not depend on the mesh
    np.testing.assert_allclose(losses_sharded, losses, rtol=1e-5)
    for k in a:
        np.testing.assert_allclose(sharded[k], a[k], atol=1e-5, err_msg=k)


def test_dropout_enters_the_fingerprint_only_when_on_and_is_a_probability():
    assert LoraConfig(rank=4, dropout=0.0).spec() == {"rank": 4, "alpha": 16.0, "targets": LoraConfig().pattern}
    assert LoraConfig(rank=4, dropout=0.1).spec()["dropout"] == 0.1
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="dropout"):
            LoraConfig(rank=4, dropout=bad)
