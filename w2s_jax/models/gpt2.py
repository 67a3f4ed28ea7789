"""GPT-2 (gpt2 ... gpt2-xl): learned positions, pre-LayerNorm, Conv1D weights, fused qkv, tied LM head."""
from __future__ import annotations

import flax.linen as nn
import numpy as np
import transformers

from w2s_jax.models import layers as L
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.weights import rule

HF_PREFIXES = ("transformer.", "")
HF_ARCHITECTURE = "GPT2LMHeadModel"


def config_from_hf(hf: transformers.PretrainedConfig, **runtime) -> ModelConfig:
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise NotImplementedError("GPT-2 with scale_attn_by_inverse_layer_idx=True is not supported")
    if not getattr(hf, "scale_attn_weights", True):
        raise NotImplementedError("GPT-2 with scale_attn_weights=False is not supported")
    return ModelConfig(
        family="gpt2", model_type="gpt2", vocab_size=hf.vocab_size, hidden_size=hf.n_embd, num_layers=hf.n_layer,
        num_heads=hf.n_head, num_kv_heads=hf.n_head, head_dim=hf.n_embd // hf.n_head,
        intermediate_size=hf.n_inner or 4 * hf.n_embd, max_positions=hf.n_positions,
        activation=hf.activation_function, norm_eps=hf.layer_norm_epsilon, tie_embeddings=True, **runtime)


def config_to_hf(cfg: ModelConfig) -> transformers.PretrainedConfig:
    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size, n_positions=cfg.max_positions, activation_function=cfg.activation,
        layer_norm_epsilon=cfg.norm_eps, architectures=[HF_ARCHITECTURE])


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, rows, rope):
        cfg = self.cfg
        x = x + L.Attention(cfg, name="attn")(L.Norm(cfg, "layer", cfg.hidden_size, name="attn_norm")(x), rows)
        x = x + L.MLP(cfg, name="mlp")(L.Norm(cfg, "layer", cfg.hidden_size, name="mlp_norm")(x))
        return x, None


class Backbone(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = L.token_embedding(cfg)
        self.embed_positions = self.param("embed_positions", L.logical(nn.initializers.normal(0.01), None, "embed"),
                                          (cfg.max_positions, cfg.hidden_size), cfg.jnp_param_dtype)
        self.layers = L.stacked_layers(Block, cfg)
        self.final_norm = L.Norm(cfg, "layer", cfg.hidden_size)

    def __call__(self, ids_bt, segments_bt, packed: bool = False):
        positions = L.positions_from_segments(segments_bt)
        x = self.embed_tokens(ids_bt) + self.embed_positions[positions].astype(self.cfg.jnp_dtype)
        x, _ = self.layers(x, L.attention_rows(segments_bt, packed), None)
        return self.final_norm(x)

    def logits(self, hidden_btd):
        return self.embed_tokens.attend(hidden_btd)

    def lm_head_kernel(self):
        return self.embed_tokens.embedding.T


# c_attn (Conv1D, [E, 3E]) holds q, k and v side by side; each becomes a [E, heads, head_dim] kernel.
def _split_qkv_kernel(w, cfg):
    w = w.reshape(w.shape[0], 3, cfg.num_heads, cfg.head_dim)
    return tuple(np.ascontiguousarray(w[:, j]) for j in range(3))


def _merge_qkv_kernel(parts, cfg):
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)


def _split_qkv_bias(b, cfg):
    return tuple(b.reshape(3, cfg.num_heads, cfg.head_dim))


def _merge_qkv_bias(parts, cfg):
    return np.concatenate([p.reshape(-1) for p in parts])


def _proj_to_heads(w, cfg):  # Conv1D [H*D, E] -> [H, D, E]
    return w.reshape(cfg.num_heads, cfg.head_dim, w.shape[1])


def _proj_from_heads(k, cfg):
    return k.reshape(-1, k.shape[-1])


QKV = ("layers/attn/q_proj/{}", "layers/attn/k_proj/{}", "layers/attn/v_proj/{}")

WEIGHT_RULES = [
    rule("wte.weight", "embed_tokens/embedding"),
    rule("wpe.weight", "embed_positions"),
    rule("h.{i}.ln_1.weight", "layers/attn_norm/scale"),
    rule("h.{i}.ln_1.bias", "layers/attn_norm/bias"),
    rule("h.{i}.attn.c_attn.weight", *(p.format("kernel") for p in QKV), to_flax=_split_qkv_kernel,
         to_hf=_merge_qkv_kernel),
    rule("h.{i}.attn.c_attn.bias", *(p.format("bias") for p in QKV), to_flax=_split_qkv_bias,
         to_hf=_merge_qkv_bias),
    rule("h.{i}.attn.c_proj.weight", "layers/attn/o_proj/kernel", to_flax=_proj_to_heads, to_hf=_proj_from_heads),
    rule("h.{i}.attn.c_proj.bias", "layers/attn/o_proj/bias"),
    rule("h.{i}.ln_2.weight", "layers/mlp_norm/scale"),
    rule("h.{i}.ln_2.bias", "layers/mlp_norm/bias"),
    rule("h.{i}.mlp.c_fc.weight", "layers/mlp/fc_in/kernel"),  # Conv1D is already [in, out]
    rule("h.{i}.mlp.c_fc.bias", "layers/mlp/fc_in/bias"),
    rule("h.{i}.mlp.c_proj.weight", "layers/mlp/fc_out/kernel"),
    rule("h.{i}.mlp.c_proj.bias", "layers/mlp/fc_out/bias"),
    rule("ln_f.weight", "final_norm/scale"),
    rule("ln_f.bias", "final_norm/bias"),
]
