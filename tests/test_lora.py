"""LoRA on every family against independent references: a `transformers` model whose torch weights get
scale * A @ B added by hand (forward, loss, gradients), zero adapters = the base, and the exports (merged weights;
a `peft` adapter directory loaded by `peft.PeftModel`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import tiny_models
from w2s_jax.models.convert import from_pretrained, save_pretrained
from w2s_jax.models.lora import LORA_KEY, LoraConfig, LoraModel, merge, with_lora

FAMILIES = ["gpt2", "opt", "llama", "mistral", "qwen2", "qwen3", "gemma3"]
ALL_KERNELS = r"backbone/layers/(attn/(q|k|v|o)_proj|mlp/fc_in|mlp/fc_out|gate_proj|up_proj|down_proj)/kernel"
LORA = LoraConfig(rank=3, alpha=6.0, targets=ALL_KERNELS)


def hf_target(variant: str, path: str, i: int):
    """(torch parameter name, column slice or None, transpose) our kernel `path` of layer i lives in, written out
    by hand from each family's `transformers` modelling code."""
    name = path.split("/")[-2]
    if variant == "gpt2":  # Conv1D weights are [in, out]; c_attn holds q, k, v side by side
        if name in ("q_proj", "k_proj", "v_proj"):
            k = ("q_proj", "k_proj", "v_proj").index(name)
            return f"transformer.h.{i}.attn.c_attn.weight", slice(64 * k, 64 * (k + 1)), False
        module = {"o_proj": "attn.c_proj", "fc_in": "mlp.c_fc", "fc_out": "mlp.c_proj"}[name]
        return f"transformer.h.{i}.{module}.weight", None, False
    if variant == "opt":
        module = {"o_proj": "self_attn.out_proj", "fc_in": "fc1", "fc_out": "fc2"}.get(name, f"self_attn.{name}")
        return f"model.decoder.layers.{i}.{module}.weight", None, True
    module = f"self_attn.{name}" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else f"mlp.{name}"
    return f"model.layers.{i}.{module}.weight", None, True


def torch_weights(variant, torch_model, adapters, scale):
    """The torch state with scale * A_i @ B_i (our input axes x output axes, flattened) added to every adapted
    weight; differentiable in the torch copies of A and B."""
    weights = {k: v.detach().clone() for k, v in torch_model.named_parameters()}
    for path, (a, b) in adapters.items():
        for i in range(a.shape[0]):
            d = scale * a[i].reshape(-1, a.shape[-1]) @ b[i].reshape(b.shape[1], -1)  # [in, out]
            name, cols, transpose = hf_target(variant, path, i)
            d = d.T if transpose else d
            if cols is None:
                weights[name] = weights[name] + d
            else:
                weights[name] = torch.cat([weights[name][:, :cols.start], weights[name][:, cols] + d,
                                           weights[name][:, cols.stop:]], dim=1)
    return weights


def response_loss(logits, ids, loss_mask):
    """-sum over tokens t+1 of log p(ids[t+1] | <= t), where loss_mask[t+1] (works on torch or jax arrays)."""
    lib = torch if isinstance(logits, torch.Tensor) else jnp
    logp = (torch.log_softmax(logits, -1) if lib is torch else jax.nn.log_softmax(logits, -1))[:, :-1]
    nxt = ids[:, 1:]
    picked = (torch.gather(logp, -1, nxt[..., None])[..., 0] if lib is torch
              else jnp.take_along_axis(logp, nxt[..., None], -1)[..., 0])
    return -(picked * loss_mask[:, 1:]).sum()


@pytest.fixture(scope="module", params=FAMILIES)
def adapted(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    torch_model = tiny_models.build(request.param, directory)
    ours = from_pretrained(str(directory), reward_head=True)
    model, params = with_lora(ours.model, ours.params, LORA, seed=1)
    rng = np.random.RandomState(0)  # non-zero B, so every adapter changes the forward
    params[LORA_KEY] = {p: {"a": ab["a"], "b": jnp.asarray(0.2 * rng.standard_normal(ab["b"].shape), jnp.float32)}
                        for p, ab in params[LORA_KEY].items()}
    return request.param, directory, torch_model, ours, model, params


def test_every_matching_kernel_is_adapted_with_the_documented_shapes(adapted):
    variant, _, _, ours, _, params = adapted
    kinds = {p.split("/")[-2] for p in params[LORA_KEY]}
    mlp = {"fc_in", "fc_out"} if variant in ("gpt2", "opt") else {"gate_proj", "up_proj", "down_proj"}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj"} | mlp
    cfg = ours.config
    q, o = (params[LORA_KEY][f"backbone/layers/attn/{name}/kernel"] for name in ("q_proj", "o_proj"))
    assert q["a"].shape == (cfg.num_layers, cfg.hidden_size, 3) and q["b"].shape == (cfg.num_layers, 3,
                                                                                   cfg.num_heads, cfg.head_dim)
    assert o["a"].shape == (cfg.num_layers, cfg.num_heads, cfg.head_dim, 3) and o["b"].shape == (
        cfg.num_layers, 3, cfg.hidden_size)


def test_forward_loss_and_gradients_equal_a_hand_written_low_rank_update(adapted):
    variant, _, torch_model, _, model, params = adapted
    ids, mask = tiny_models.right_padded_batch([12, 9, 5], T=12, seed=4)
    loss_mask = mask.copy()
    loss_mask[:, :3] = 0  # the prompt

    def loss(lora_params):
        logits = model.apply({"params": {**params, LORA_KEY: lora_params}}, ids, mask)
        return response_loss(logits, jnp.asarray(ids), jnp.asarray(loss_mask, jnp.float32)), logits

    (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params[LORA_KEY])

    adapters = {p: tuple(torch.tensor(np.asarray(ab[k]), requires_grad=True) for k in ("a", "b"))
                for p, ab in params[LORA_KEY].items()}
    weights = torch_weights(variant, torch_model, adapters, LORA.scale)
    ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    ref_logits = torch.func.functional_call(torch_model, weights, (ids_t,), {"attention_mask": mask_t}).logits
    ref_loss = response_loss(ref_logits, ids_t, torch.tensor(loss_mask, dtype=torch.float32))
    ref_loss.backward()

    real = mask[..., None].astype(bool)
    np.testing.assert_allclose(np.where(real, np.asarray(logits), 0), np.where(real, ref_logits.detach().numpy(), 0),
                               atol=1e-4, rtol=0)
    assert float(value) == pytest.approx(ref_loss.item(), rel=1e-5)
    for p, (a, b) in adapters.items():
        for got, want in ((grads[p]["a"], a.grad), (grads[p]["b"], b.grad)):
            scale = float(want.abs().max()) + 1e-6
            np.testing.assert_allclose(np.asarray(got) / scale, want.numpy() / scale, atol=2e-4, err_msg=p)
    # and the adapters matter: the base model's logits are far from these
    base = np.asarray(model.model.apply({"params": merge({k: v for k, v in params.items() if k != LORA_KEY}, LORA)},
                                        ids, mask))
    assert np.abs(np.where(real, base - np.asarray(logits), 0)).max() > 1e-2


def test_zero_b_and_rank_zero_are_the_base_model(adapted):
    _, _, _, ours, model, params = adapted
    ids, mask = tiny_models.right_padded_batch([8, 3], T=8)
    base = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    zero = {**params, LORA_KEY: jax.tree.map(lambda x: x, params[LORA_KEY])}
    zero[LORA_KEY] = {p: {"a": ab["a"], "b": jnp.zeros_like(ab["b"])} for p, ab in params[LORA_KEY].items()}
    np.testing.assert_array_equal(np.asarray(model.apply({"params": zero}, ids, mask)), base)
    plain, plain_params = with_lora(ours.model, ours.params, LoraConfig(rank=0), seed=0)
    assert plain is ours.model and LORA_KEY not in plain_params
    fresh_model, fresh = with_lora(ours.model, ours.params, LORA, seed=5)  # B starts at zero (peft's init)
    np.testing.assert_array_equal(np.asarray(fresh_model.apply({"params": fresh}, ids, mask)), base)
    assert isinstance(fresh_model, LoraModel)


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()


def test_exports_merged_and_as_a_peft_adapter_give_our_outputs(adapted, tmp_path):
    peft = pytest.importorskip("peft")
    from w2s_jax.models.lora_export import save_peft_adapter

    variant, directory, _, ours, model, params = adapted
    ids, mask = tiny_models.right_padded_batch([10, 6, 2], T=10, seed=9)
    expected = np.asarray(model.apply({"params": params}, ids, mask))
    real = mask[..., None].astype(bool)

    merged_dir = save_pretrained(tmp_path / "merged", ours.config, merge(params, LORA))
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    np.testing.assert_allclose(np.where(real, _torch_logits(merged, ids, mask), 0), np.where(real, expected, 0),
                               atol=1e-4, rtol=0)

    adapter_dir = save_peft_adapter(tmp_path / "adapter", ours.config, params, LORA, base_model=str(directory))
    base = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    with_adapter = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    np.testing.assert_allclose(np.where(real, _torch_logits(with_adapter, ids, mask), 0),
                               np.where(real, expected, 0), atol=1e-4, rtol=0)
