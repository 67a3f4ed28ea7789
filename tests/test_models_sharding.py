"""The same forward on 8 fake CPU devices as on one; runtime knobs that must not change the math."""
import jax
import numpy as np
import pytest

import tiny_models
from w2s_jax.models import sharding
from w2s_jax.models.convert import from_pretrained, init_params, shardings_for
from w2s_jax.models.heads import Transformer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for variant in ("gpt2", "llama", "opt-350m", "gemma3", "qwen3"):
        directory = tmp_path_factory.mktemp(variant)
        tiny_models.build(variant, directory)
        out[variant] = directory
    return out


def _forward(loaded, ids, mask, mesh=None):
    model = loaded.model
    def run(params, i, m):
        return model.apply({"params": params}, i, m), model.apply({"params": params}, i, m, method=model.reward)
    if mesh is None:
        return jax.tree.map(np.asarray, jax.jit(run)(loaded.params, ids, mask))
    batch = sharding.batch_sharding(mesh)
    placed = [jax.device_put(x, batch) for x in (ids, mask)]
    return jax.tree.map(np.asarray, jax.jit(run)(loaded.params, *placed))


@pytest.mark.parametrize("variant", ["gpt2", "llama", "opt-350m", "gemma3", "qwen3"])
@pytest.mark.parametrize("mesh_shape", [dict(fsdp=4, tensor=2), dict(fsdp=8, tensor=1), dict(data=2, fsdp=4)])
def test_sharded_forward_equals_single_device(checkpoints, variant, mesh_shape):
    assert len(jax.devices()) == 8, "conftest must create 8 fake CPU devices"
    ids, mask = tiny_models.right_padded_batch([16, 9, 12, 3, 16, 1, 7, 10], T=16)
    single = from_pretrained(str(checkpoints[variant]), reward_head=True)
    ref_logits, ref_reward = _forward(single, ids, mask)
    mesh = sharding.make_mesh(**mesh_shape)
    sharded = from_pretrained(str(checkpoints[variant]), reward_head=True, mesh=mesh)
    # weights really are split: the per-device share of the parameters is below the whole
    leaves = jax.tree.leaves(sharded.params)
    per_device = sum(x.addressable_shards[0].data.size for x in leaves)
    assert per_device < sum(x.size for x in leaves)
    logits, reward = _forward(sharded, ids, mask, mesh)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reward, ref_reward, atol=1e-5, rtol=0)


def test_rule_table_splits_the_right_dimensions():
    mesh = sharding.make_mesh(fsdp=4, tensor=2)
    spec = sharding.logical_to_spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh)
    assert tuple(spec) == ("fsdp", "tensor", None)
    # a vocabulary the tensor axis does not divide stays replicated on that dimension
    assert tuple(sharding.logical_to_spec(("vocab", "embed"), (50257, 64), mesh)) == (None, "fsdp")
    assert tuple(sharding.logical_to_spec(("layers", "embed", "mlp"), (2, 64, 128), mesh)) == (None, "fsdp", "tensor")


@pytest.mark.parametrize("bad, message", [
    (dict(fsdp=16), "16 devices, but 8 are available"),
    (dict(data=3, fsdp=-1), "cannot be split"),
    (dict(data=-1, fsdp=-1), "only one mesh axis"),
    (dict(tensor=0), "mesh.tensor must be a positive integer"),
])
def test_mesh_validation_names_the_problem(bad, message):
    with pytest.raises(sharding.MeshError, match=message):
        sharding.make_mesh(**bad)


@pytest.mark.parametrize("knobs", [dict(scan_layers=False), dict(remat_policy="full"),
                                   dict(remat_policy="dots", scan_layers=False), dict(attention_impl="xla")])
@pytest.mark.parametrize("variant", ["llama", "gemma3"])  # gemma3 scans a per-layer input (the layer kind)
def test_runtime_knobs_keep_the_math(checkpoints, knobs, variant):
    ids, mask = tiny_models.right_padded_batch([8, 5], T=8)
    base = from_pretrained(str(checkpoints[variant]))
    other = from_pretrained(str(checkpoints[variant]), **knobs)
    loss = lambda m: (lambda p: m.apply({"params": p}, ids, mask).astype("float32").mean())
    np.testing.assert_allclose(np.asarray(other.model.apply({"params": other.params}, ids, mask)),
                               np.asarray(base.model.apply({"params": base.params}, ids, mask)), atol=1e-5)
    g_base, g_other = jax.grad(loss(base.model))(base.params), jax.grad(loss(other.model))(other.params)
    for a, b in zip(jax.tree.leaves(g_base), jax.tree.leaves(g_other)):
        # fp32 reassociation noise scales with the leaf (Gemma's embedding gradient is in the hundreds)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6 * max(1.0, float(np.abs(a).max())))


def test_bf16_compute_with_fp32_master_weights(checkpoints):
    ids, mask = tiny_models.right_padded_batch([8, 5], T=8)
    fp32 = from_pretrained(str(checkpoints["gpt2"]))
    bf16 = from_pretrained(str(checkpoints["gpt2"]), dtype="bfloat16")
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16.params))
    out = bf16.model.apply({"params": bf16.params}, ids, mask)
    assert out.dtype == jax.numpy.bfloat16
    ref = np.asarray(fp32.model.apply({"params": fp32.params}, ids, mask))
    assert np.abs(np.asarray(out, np.float32) - ref).max() < 0.1 * np.abs(ref).max()


def test_init_params_creates_every_leaf_in_its_sharding(checkpoints):
    cfg = from_pretrained(str(checkpoints["llama"]), load_tokenizer=False).config
    mesh = sharding.make_mesh(fsdp=4, tensor=2)
    params = init_params(cfg, mesh, seed=1)
    expected = shardings_for(cfg, mesh)
    for leaf, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
    ids, mask = tiny_models.right_padded_batch([8, 5], T=8)
    assert np.isfinite(np.asarray(Transformer(cfg).apply({"params": params}, ids, mask))).all()
