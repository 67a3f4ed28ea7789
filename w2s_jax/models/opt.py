"""OPT (125m ... 6.7b): learned positions with offset 2, ReLU MLP, tied LM head.

opt-350m is the odd one: embeddings of width `word_embed_proj_dim` (512) projected in and out of the
1024-wide trunk (`project_in` / `project_out`), and post-LayerNorm blocks without a final norm.
"""
from __future__ import annotations

import flax.linen as nn
import transformers

from w2s_jax.models import layers as L
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.weights import heads_bias, heads_in, heads_out, heads_out_hf, linear, rule

HF_PREFIXES = ("model.decoder.", "decoder.", "")
HF_ARCHITECTURE = "OPTForCausalLM"
POSITION_OFFSET = 2  # OPT's learned position table has two extra leading rows


def config_from_hf(hf: transformers.PretrainedConfig, **runtime) -> ModelConfig:
    proj = hf.word_embed_proj_dim
    return ModelConfig(
        family="opt", model_type="opt", vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads, num_kv_heads=hf.num_attention_heads,
        head_dim=hf.hidden_size // hf.num_attention_heads, intermediate_size=hf.ffn_dim,
        max_positions=hf.max_position_embeddings, activation=hf.activation_function, norm_eps=1e-5,
        qkv_bias=hf.enable_bias, out_bias=hf.enable_bias, mlp_bias=hf.enable_bias,
        tie_embeddings=hf.tie_word_embeddings, pre_norm=hf.do_layer_norm_before,
        final_norm=hf.do_layer_norm_before and not hf._remove_final_layer_norm,
        embed_dim=None if proj == hf.hidden_size else proj, norm_affine=hf.layer_norm_elementwise_affine,
        **runtime)


def config_to_hf(cfg: ModelConfig) -> transformers.PretrainedConfig:
    return transformers.OPTConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, ffn_dim=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        activation_function=cfg.activation, enable_bias=cfg.qkv_bias, tie_word_embeddings=cfg.tie_embeddings,
        do_layer_norm_before=cfg.pre_norm, _remove_final_layer_norm=cfg.pre_norm and not cfg.final_norm,
        word_embed_proj_dim=cfg.output_dim, layer_norm_elementwise_affine=cfg.norm_affine,
        architectures=[HF_ARCHITECTURE])


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, rows, rope):
        cfg = self.cfg
        attn_norm = L.Norm(cfg, "layer", cfg.hidden_size, name="attn_norm")
        mlp_norm = L.Norm(cfg, "layer", cfg.hidden_size, name="mlp_norm")
        h = L.Attention(cfg, name="attn")(attn_norm(x) if cfg.pre_norm else x, rows)
        x = x + h if cfg.pre_norm else attn_norm(x + h)
        h = L.MLP(cfg, name="mlp")(mlp_norm(x) if cfg.pre_norm else x)
        x = x + h if cfg.pre_norm else mlp_norm(x + h)
        return x, None


class Backbone(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        width = cfg.output_dim
        self.embed_tokens = L.token_embedding(cfg, width)
        self.embed_positions = self.param(
            "embed_positions", L.logical(L.DEFAULT_INIT, None, "embed"),
            (cfg.max_positions + POSITION_OFFSET, cfg.hidden_size), cfg.jnp_param_dtype)
        if cfg.embed_dim is not None:
            self.project_in = L.dense(cfg, cfg.hidden_size, ("proj", "embed"), use_bias=False, name="project_in")
            self.project_out = L.dense(cfg, width, ("embed", "proj"), use_bias=False, name="project_out")
        self.layers = L.stacked_layers(Block, cfg)
        if cfg.final_norm:
            self.final_norm = L.Norm(cfg, "layer", cfg.hidden_size)
        if not cfg.tie_embeddings:
            self.lm_head = L.dense(cfg, cfg.vocab_size, ("embed", "vocab"), use_bias=False, name="lm_head")

    def __call__(self, ids_bt, segments_bt, packed: bool = False):
        cfg = self.cfg
        x = self.embed_tokens(ids_bt)
        if cfg.embed_dim is not None:
            x = self.project_in(x)
        positions = L.positions_from_segments(segments_bt) + POSITION_OFFSET
        x = x + self.embed_positions[positions].astype(cfg.jnp_dtype)
        x, _ = self.layers(x, L.attention_rows(segments_bt, packed), None)
        if cfg.final_norm:
            x = self.final_norm(x)
        if cfg.embed_dim is not None:
            x = self.project_out(x)
        return x

    def logits(self, hidden_btd):
        return self.embed_tokens.attend(hidden_btd) if self.cfg.tie_embeddings else self.lm_head(hidden_btd)

    def lm_head_kernel(self):
        return self.embed_tokens.embedding.T if self.cfg.tie_embeddings else self.lm_head.variables["params"]["kernel"]


def _has_proj(cfg):
    return cfg.embed_dim is not None


def _has_final_norm(cfg):
    return cfg.final_norm and cfg.norm_affine


def _affine(cfg):
    return cfg.norm_affine


def _untied(cfg):
    return not cfg.tie_embeddings


_q = heads_in("num_heads")
_qb = heads_bias("num_heads")


def _bias(cfg):
    return cfg.qkv_bias


def _attn_rules():
    out = []
    for hf_name, flax_name in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj")):
        out.append(rule(f"layers.{{i}}.self_attn.{hf_name}.weight", f"layers/attn/{flax_name}/kernel",
                        to_flax=_q[0], to_hf=_q[1]))
        out.append(rule(f"layers.{{i}}.self_attn.{hf_name}.bias", f"layers/attn/{flax_name}/bias",
                        to_flax=_qb[0], to_hf=_qb[1], when=_bias))
    out.append(rule("layers.{i}.self_attn.out_proj.weight", "layers/attn/o_proj/kernel", to_flax=heads_out,
                    to_hf=heads_out_hf))
    out.append(rule("layers.{i}.self_attn.out_proj.bias", "layers/attn/o_proj/bias", when=_bias))
    return out


def _norm_rules(hf_name, flax_name, when=_affine):
    return [rule(f"{hf_name}.weight", f"{flax_name}/scale", when=when),
            rule(f"{hf_name}.bias", f"{flax_name}/bias", when=when)]


WEIGHT_RULES = [
    rule("embed_tokens.weight", "embed_tokens/embedding"),
    rule("embed_positions.weight", "embed_positions"),
    rule("project_in.weight", "project_in/kernel", to_flax=linear, to_hf=linear, when=_has_proj),
    rule("project_out.weight", "project_out/kernel", to_flax=linear, to_hf=linear, when=_has_proj),
    *_norm_rules("final_layer_norm", "final_norm", when=_has_final_norm),
    *_attn_rules(),
    *_norm_rules("layers.{i}.self_attn_layer_norm", "layers/attn_norm"),
    *_norm_rules("layers.{i}.final_layer_norm", "layers/mlp_norm"),
    rule("layers.{i}.fc1.weight", "layers/mlp/fc_in/kernel", to_flax=linear, to_hf=linear),
    rule("layers.{i}.fc1.bias", "layers/mlp/fc_in/bias", when=lambda c: c.mlp_bias),
    rule("layers.{i}.fc2.weight", "layers/mlp/fc_out/kernel", to_flax=linear, to_hf=linear),
    rule("layers.{i}.fc2.bias", "layers/mlp/fc_out/bias", when=lambda c: c.mlp_bias),
    rule("lm_head.weight", "lm_head/kernel", to_flax=linear, to_hf=linear, when=_untied, absolute=True),
]
