"""Gemma 3 (text): Gemma3ForCausalLM, model_type `gemma3_text` (e.g. gemma-3-270m, or the text tower of 1B).

Llama-like grouped-query attention and a gated MLP, with Gemma's differences, each checked against
`transformers/models/gemma3/modeling_gemma3.py`: token embeddings scaled by sqrt(hidden); every RMSNorm applies
(1 + w); RMSNorm over each head's q and k before RoPE; a norm after attention and after the MLP as well as before;
sliding-window layers interleaved with global ones by `layer_types`, each kind with its own RoPE base; the
attention scale from `query_pre_attn_scalar`; a GELU(tanh)-gated MLP; optional final logit softcapping.
`attn_logit_softcapping` is read but, as in transformers 5 (whose Gemma 3 attention never passes it on), not
applied.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import transformers

from w2s_jax.models import layers as L
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.llama import attn_rules, mlp_rules
from w2s_jax.models.weights import linear, rule

HF_PREFIXES = ("model.", "")
MODEL_TYPES = {"gemma3_text": "Gemma3ForCausalLM"}
LAYER_KINDS = ("sliding_attention", "full_attention")


def _rope_params(hf, kind: str) -> dict:
    params = dict((getattr(hf, "rope_parameters", None) or {}).get(kind) or {})
    params.pop("type", None)
    params.setdefault("rope_type", "default")
    return params


def config_from_hf(hf: transformers.PretrainedConfig, **runtime) -> ModelConfig:
    if hf.model_type not in MODEL_TYPES:
        raise NotImplementedError(f"model_type {hf.model_type!r} is not in the Gemma 3 family {sorted(MODEL_TYPES)}"
                                  f" (the multimodal 'gemma3' wrapper is not supported: export its text model)")
    if getattr(hf, "use_bidirectional_attention", False):
        raise NotImplementedError("Gemma 3 with use_bidirectional_attention=True (an encoder) is not supported")
    layer_types = tuple(hf.layer_types)
    unknown = set(layer_types) - set(LAYER_KINDS)
    if unknown:
        raise NotImplementedError(f"Gemma 3 layer_types {sorted(unknown)} are not supported (known: {LAYER_KINDS})")
    full, local = _rope_params(hf, "full_attention"), _rope_params(hf, "sliding_attention")
    if local.get("rope_type") != "default":
        raise NotImplementedError(f"Gemma 3 sliding-layer rope_type {local.get('rope_type')!r} is not supported")
    theta = float(full.pop("rope_theta", 1_000_000.0))
    heads = hf.num_attention_heads
    bias = bool(getattr(hf, "attention_bias", False))
    return ModelConfig(
        family="gemma3", model_type=hf.model_type, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=heads, num_kv_heads=hf.num_key_value_heads or heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads, intermediate_size=hf.intermediate_size,
        max_positions=hf.max_position_embeddings, activation=hf.hidden_activation, norm_eps=hf.rms_norm_eps,
        qkv_bias=bias, out_bias=bias, mlp_bias=False, tie_embeddings=bool(hf.tie_word_embeddings),
        rope_theta=theta, rope_scaling=tuple(sorted((k, v) for k, v in full.items() if v is not None)),
        rope_local_theta=float(local.get("rope_theta", 10_000.0)),
        sliding_window=hf.sliding_window if "sliding_attention" in layer_types else None,
        layer_types=layer_types, query_pre_attn_scalar=float(hf.query_pre_attn_scalar),
        final_logit_softcap=getattr(hf, "final_logit_softcapping", None), norm_plus_one=True, qk_norm=True,
        **runtime)


def config_to_hf(cfg: ModelConfig) -> transformers.PretrainedConfig:
    qpas = cfg.query_pre_attn_scalar
    return transformers.Gemma3TextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        hidden_activation=cfg.activation, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=cfg.qkv_bias, query_pre_attn_scalar=int(qpas) if float(qpas).is_integer() else qpas,
        sliding_window=cfg.sliding_window or 4096, layer_types=list(cfg.layer_types),
        final_logit_softcapping=cfg.final_logit_softcap,
        rope_parameters={"full_attention": {"rope_theta": cfg.rope_theta, **dict(cfg.rope_scaling)},
                         "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta}},
        architectures=[MODEL_TYPES[cfg.model_type]])


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, rows, ropes, sliding):
        cfg = self.cfg
        (cos_g, sin_g), (cos_l, sin_l) = ropes
        rope = (jnp.where(sliding, cos_l, cos_g), jnp.where(sliding, sin_l, sin_g))
        h = L.Norm(cfg, "rms", cfg.hidden_size, name="attn_norm")(x)
        h = L.Attention(cfg, use_rope=True, name="attn")(h, rows, rope, sliding)
        x = x + L.Norm(cfg, "rms", cfg.hidden_size, name="post_attn_norm")(h)
        h = L.Norm(cfg, "rms", cfg.hidden_size, name="mlp_norm")(x)
        gate = L.dense(cfg, cfg.intermediate_size, ("embed", "mlp"), use_bias=False, name="gate_proj")(h)
        up = L.dense(cfg, cfg.intermediate_size, ("embed", "mlp"), use_bias=False, name="up_proj")(h)
        h = L.dense(cfg, cfg.hidden_size, ("mlp", "embed"), use_bias=False, name="down_proj")(
            L.activation(cfg.activation)(gate) * up)
        return x + L.Norm(cfg, "rms", cfg.hidden_size, name="post_mlp_norm")(h), None


class Backbone(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = L.token_embedding(cfg)
        self.layers = L.stacked_layers(Block, cfg, per_layer=True)
        self.final_norm = L.Norm(cfg, "rms", cfg.hidden_size)
        if not cfg.tie_embeddings:
            self.lm_head = L.dense(cfg, cfg.vocab_size, ("embed", "vocab"), use_bias=False, name="lm_head")

    def __call__(self, ids_bt, segments_bt, packed: bool = False):
        cfg = self.cfg
        positions = L.positions_from_segments(segments_bt)
        ropes = (L.rope_tables(cfg, positions),
                 L.rope_tables(cfg.replace(rope_theta=cfg.rope_local_theta, rope_scaling=()), positions))
        sliding = jnp.asarray(np.array([t == "sliding_attention" for t in cfg.layer_types]))
        # transformers casts sqrt(hidden) to the weights' dtype first (bf16 weights: 25.25 -> 25.25, 55.43 -> 55.5)
        scale = jnp.asarray(math.sqrt(cfg.hidden_size), cfg.jnp_param_dtype).astype(cfg.jnp_dtype)
        x, _ = self.layers(self.embed_tokens(ids_bt) * scale, L.attention_rows(segments_bt, packed), ropes, sliding)
        return self.final_norm(x)

    def logits(self, hidden_btd):
        cfg = self.cfg
        out = self.embed_tokens.attend(hidden_btd) if cfg.tie_embeddings else self.lm_head(hidden_btd)
        if cfg.final_logit_softcap:
            out = jnp.tanh(out / cfg.final_logit_softcap) * cfg.final_logit_softcap
        return out

    def lm_head_kernel(self):
        if self.cfg.final_logit_softcap:
            raise NotImplementedError("log-probs from the bare LM-head kernel would skip Gemma's final logit "
                                      "softcapping; this model sets final_logit_softcapping")
        if self.cfg.tie_embeddings:
            return self.embed_tokens.embedding.T
        return jnp.asarray(self.lm_head.variables["params"]["kernel"])


WEIGHT_RULES = [
    rule("embed_tokens.weight", "embed_tokens/embedding"),
    *attn_rules(),
    *mlp_rules(),
    rule("layers.{i}.input_layernorm.weight", "layers/attn_norm/scale"),
    rule("layers.{i}.post_attention_layernorm.weight", "layers/post_attn_norm/scale"),
    rule("layers.{i}.pre_feedforward_layernorm.weight", "layers/mlp_norm/scale"),
    rule("layers.{i}.post_feedforward_layernorm.weight", "layers/post_mlp_norm/scale"),
    rule("norm.weight", "final_norm/scale"),
    rule("lm_head.weight", "lm_head/kernel", to_flax=linear, to_hf=linear, when=lambda c: not c.tie_embeddings,
         absolute=True),
]
