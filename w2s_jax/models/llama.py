"""The Llama family, config-driven: Llama, Mistral (sliding window), Qwen2 (q/k/v bias), Qwen3 (per-head q/k
RMSNorm), SmolLM2 (tied).

RMSNorm, rotary positions, grouped-query attention and a SiLU-gated MLP. What differs between members is
read from the Hugging Face config: biases, window, tying, RoPE base and scaling.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import transformers

from w2s_jax.models import layers as L
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.weights import heads_bias, heads_in, heads_out, heads_out_hf, linear, rule

HF_PREFIXES = ("model.", "")
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM"}


def _rope(hf) -> tuple[float, tuple]:
    params = dict(getattr(hf, "rope_parameters", None) or {})
    legacy = getattr(hf, "rope_scaling", None)  # transformers 4.x keeps scaling apart from rope_theta
    if legacy and not params.get("rope_type"):
        params.update(legacy)
    theta = float(params.pop("rope_theta", getattr(hf, "rope_theta", 10000.0)))
    params.pop("type", None)
    params.setdefault("rope_type", "default")
    return theta, tuple(sorted((k, v) for k, v in params.items() if v is not None))


def _window(hf) -> int | None:
    layer_types = getattr(hf, "layer_types", None)
    window = getattr(hf, "sliding_window", None)
    if hf.model_type in ("qwen2", "qwen3") and not getattr(hf, "use_sliding_window", False):
        return None
    if layer_types:
        sliding = {t == "sliding_attention" for t in layer_types}
        if len(sliding) > 1:
            raise NotImplementedError("models mixing sliding-window and full-attention layers are not supported")
        return window if sliding == {True} else None
    return window


def config_from_hf(hf: transformers.PretrainedConfig, **runtime) -> ModelConfig:
    if hf.model_type not in MODEL_TYPES:
        raise NotImplementedError(f"model_type {hf.model_type!r} is not in the Llama family {sorted(MODEL_TYPES)}")
    theta, scaling = _rope(hf)
    qwen = hf.model_type == "qwen2"
    attn_bias = bool(getattr(hf, "attention_bias", False))
    heads = hf.num_attention_heads
    return ModelConfig(
        family="llama", model_type=hf.model_type, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=heads, num_kv_heads=hf.num_key_value_heads or heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads, intermediate_size=hf.intermediate_size,
        max_positions=hf.max_position_embeddings, activation=hf.hidden_act, norm_eps=hf.rms_norm_eps,
        qkv_bias=qwen or attn_bias, out_bias=attn_bias, mlp_bias=bool(getattr(hf, "mlp_bias", False)),
        tie_embeddings=bool(hf.tie_word_embeddings), rope_theta=theta, rope_scaling=scaling,
        sliding_window=_window(hf), qk_norm=hf.model_type == "qwen3", **runtime)


def config_to_hf(cfg: ModelConfig) -> transformers.PretrainedConfig:
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_theta": cfg.rope_theta, **dict(cfg.rope_scaling)},
        architectures=[MODEL_TYPES[cfg.model_type]])
    if cfg.model_type == "mistral":
        return transformers.MistralConfig(sliding_window=cfg.sliding_window, **common)
    window = cfg.sliding_window
    if cfg.model_type == "qwen2":
        return transformers.Qwen2Config(use_sliding_window=window is not None, sliding_window=window,
                                        max_window_layers=0, **common)
    if cfg.model_type == "qwen3":
        return transformers.Qwen3Config(use_sliding_window=window is not None, sliding_window=window,
                                        max_window_layers=0, attention_bias=cfg.qkv_bias, **common)
    return transformers.LlamaConfig(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias, **common)


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, rows, rope):
        cfg = self.cfg
        h = L.Norm(cfg, "rms", cfg.hidden_size, name="attn_norm")(x)
        x = x + L.Attention(cfg, use_rope=True, name="attn")(h, rows, rope)
        h = L.Norm(cfg, "rms", cfg.hidden_size, name="mlp_norm")(x)
        gate = L.dense(cfg, cfg.intermediate_size, ("embed", "mlp"), use_bias=cfg.mlp_bias, name="gate_proj")(h)
        up = L.dense(cfg, cfg.intermediate_size, ("embed", "mlp"), use_bias=cfg.mlp_bias, name="up_proj")(h)
        h = L.activation(cfg.activation)(gate) * up
        x = x + L.dense(cfg, cfg.hidden_size, ("mlp", "embed"), use_bias=cfg.mlp_bias, name="down_proj")(h)
        return x, None


class Backbone(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = L.token_embedding(cfg)
        self.layers = L.stacked_layers(Block, cfg)
        self.final_norm = L.Norm(cfg, "rms", cfg.hidden_size)
        if not cfg.tie_embeddings:
            self.lm_head = L.dense(cfg, cfg.vocab_size, ("embed", "vocab"), use_bias=False, name="lm_head")

    def __call__(self, ids_bt, segments_bt, packed: bool = False):
        rope = L.rope_tables(self.cfg, L.positions_from_segments(segments_bt))
        x, _ = self.layers(self.embed_tokens(ids_bt), L.attention_rows(segments_bt, packed), rope)
        return self.final_norm(x)

    def logits(self, hidden_btd):
        return self.embed_tokens.attend(hidden_btd) if self.cfg.tie_embeddings else self.lm_head(hidden_btd)

    def lm_head_kernel(self):
        if self.cfg.tie_embeddings:
            return self.embed_tokens.embedding.T
        return jnp.asarray(self.lm_head.variables["params"]["kernel"])


_q, _kv = heads_in("num_heads"), heads_in("num_kv_heads")
_qb, _kvb = heads_bias("num_heads"), heads_bias("num_kv_heads")


def attn_rules():
    out = []
    for name, (w, b) in {"q_proj": (_q, _qb), "k_proj": (_kv, _kvb), "v_proj": (_kv, _kvb)}.items():
        out.append(rule(f"layers.{{i}}.self_attn.{name}.weight", f"layers/attn/{name}/kernel",
                        to_flax=w[0], to_hf=w[1]))
        out.append(rule(f"layers.{{i}}.self_attn.{name}.bias", f"layers/attn/{name}/bias",
                        to_flax=b[0], to_hf=b[1], when=lambda c: c.qkv_bias))
    out.append(rule("layers.{i}.self_attn.o_proj.weight", "layers/attn/o_proj/kernel", to_flax=heads_out,
                    to_hf=heads_out_hf))
    out.append(rule("layers.{i}.self_attn.o_proj.bias", "layers/attn/o_proj/bias", when=lambda c: c.out_bias))
    for name in ("q_norm", "k_norm"):
        out.append(rule(f"layers.{{i}}.self_attn.{name}.weight", f"layers/attn/{name}/scale",
                        when=lambda c: c.qk_norm))
    return out


def mlp_rules():
    out = []
    for name in ("gate_proj", "up_proj", "down_proj"):
        out.append(rule(f"layers.{{i}}.mlp.{name}.weight", f"layers/{name}/kernel", to_flax=linear, to_hf=linear))
        out.append(rule(f"layers.{{i}}.mlp.{name}.bias", f"layers/{name}/bias", when=lambda c: c.mlp_bias))
    return out


WEIGHT_RULES = [
    rule("embed_tokens.weight", "embed_tokens/embedding"),
    *attn_rules(),
    *mlp_rules(),
    rule("layers.{i}.input_layernorm.weight", "layers/attn_norm/scale"),
    rule("layers.{i}.post_attention_layernorm.weight", "layers/mlp_norm/scale"),
    rule("norm.weight", "final_norm/scale"),
    rule("lm_head.weight", "lm_head/kernel", to_flax=linear, to_hf=linear, when=lambda c: not c.tie_embeddings,
         absolute=True),
]
