"""Building blocks shared by the backbone families: norms, attention, rotary embeddings, layer stacking.

Every parameter is declared with logical axis names (`nn.with_logical_partitioning`); `sharding.py` maps them
onto the device mesh. Layers are always stored stacked (leading `layers` axis) so one weight table and one
partitioning serve both `scan_layers=True` (a `lax.scan`) and `False` (the same scan fully unrolled).
"""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.models import sharding
from w2s_jax.models.config import ModelConfig

ACTIVATIONS: dict[str, Callable] = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def logical(init, *axes):
    return nn.with_logical_partitioning(init, axes)


DEFAULT_INIT = nn.initializers.normal(0.02)


class Norm(nn.Module):
    """LayerNorm (with bias) or RMSNorm, computed in fp32 and cast back to the input dtype."""

    cfg: ModelConfig
    kind: str  # "layer" | "rms"
    features: int

    @nn.compact
    def __call__(self, x):
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        if self.kind == "layer":
            mean = x32.mean(-1, keepdims=True)
            x32 = x32 - mean
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.cfg.norm_eps)
        if self.cfg.norm_affine:
            pd = self.cfg.jnp_param_dtype
            # Gemma stores the scale as an offset from one (y * (1 + w)), so its neutral value is zero
            init = nn.initializers.zeros if self.cfg.norm_plus_one else nn.initializers.ones
            scale = self.param("scale", logical(init, "norm"), (self.features,), pd).astype(jnp.float32)
            y = y * (1.0 + scale if self.cfg.norm_plus_one else scale)
            if self.kind == "layer":
                bias = self.param("bias", logical(nn.initializers.zeros, "norm"), (self.features,), pd)
                y = y + bias.astype(jnp.float32)
        return y.astype(dtype)


def token_embedding(cfg: ModelConfig, width: int | None = None) -> nn.Embed:
    """The [vocab, width] token table (also the tied LM head through `.attend`)."""
    return nn.Embed(cfg.vocab_size, width or cfg.hidden_size, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                    embedding_init=logical(DEFAULT_INIT, "vocab", "embed"))


def dense(cfg: ModelConfig, features, axes: tuple[str, ...], *, use_bias: bool, name: str,
          axis=-1) -> nn.DenseGeneral:
    """A DenseGeneral whose kernel/bias carry logical axes. `axes` names every kernel dimension."""
    n_out = 1 if isinstance(features, int) else len(features)
    return nn.DenseGeneral(
        features=features, axis=axis, use_bias=use_bias, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
        kernel_init=logical(DEFAULT_INIT, *axes), bias_init=logical(nn.initializers.zeros, *axes[-n_out:]),
        name=name)


# ---------------------------------------------------------------------------------------------------------------
# Rotary position embeddings (Llama convention: halves rotated, not interleaved)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    params = dict(cfg.rope_scaling)
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(params["factor"])
    if rope_type == "llama3":
        factor = float(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        old_len = float(params["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return np.where(medium, smoothed, scaled)
    raise NotImplementedError(f"rope_type {rope_type!r} is not supported (supported: default, linear, llama3)")


def rope_tables(cfg: ModelConfig, positions_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [B, T, 1, head_dim] in fp32."""
    inv_freq = jnp.asarray(rope_inv_freq(cfg), jnp.float32)
    angles = positions_bt.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_bthd: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    x = x_bthd.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(x_bthd.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Attention


def attention_implementation(cfg: ModelConfig) -> str | None:
    """'auto' picks cuDNN flash attention on GPU for half-precision compute, XLA otherwise."""
    if cfg.attention_impl != "auto":
        return cfg.attention_impl
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and cfg.dtype in ("bfloat16", "float16") and cfg.head_dim <= 128 else "xla"


def window_mask(length: int, window: int, sliding: jax.Array) -> jax.Array:
    """[1, 1, T, T] mask of a layer whose kind is only known when traced (a scanned per-layer flag): keys at most
    `window - 1` positions back when `sliding`, every key otherwise (causality is applied separately)."""
    idx = jnp.arange(length)
    near = (idx[:, None] - idx[None, :]) < window
    return (near | ~sliding.astype(bool))[None, None]


class Attention(nn.Module):
    """Causal multi-head / grouped-query self-attention over right-padded sequences."""

    cfg: ModelConfig
    use_rope: bool = False

    @nn.compact
    def __call__(self, x, rows, rope=None, sliding=None):
        """`rows` is `attention_rows(...)`: lengths [B] of right-padded rows, or segment ids [B, T] of packed rows.
        `sliding` (a traced bool, per layer) switches `cfg.sliding_window` on for models that mix layer kinds;
        when None the window applies to every layer if the config has one."""
        cfg = self.cfg
        h, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = dense(cfg, (h, d), ("embed", "heads", "head_dim"), use_bias=cfg.qkv_bias, name="q_proj")(x)
        k = dense(cfg, (kv, d), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, name="k_proj")(x)
        v = dense(cfg, (kv, d), ("embed", "kv_heads", "head_dim"), use_bias=cfg.qkv_bias, name="v_proj")(x)
        if cfg.qk_norm:
            q, k = Norm(cfg, "rms", d, name="q_norm")(q), Norm(cfg, "rms", d, name="k_norm")(k)
        if self.use_rope:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        scale = (cfg.query_pre_attn_scalar or d) ** -0.5
        window, mask = None, None
        if cfg.sliding_window is not None and sliding is None:
            window = (cfg.sliding_window - 1, 0)
        elif cfg.sliding_window is not None:
            mask = window_mask(x.shape[1], cfg.sliding_window, sliding)
        impl = attention_implementation(cfg)
        if rows.ndim == 1:  # right padding: padded keys come after every real query, lengths are enough
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask, scale=scale, is_causal=True, key_value_seq_lengths=rows,
                local_window_size=window, implementation=impl)
        else:  # packed rows: a token sees only earlier tokens of its own segment
            same_segment = rows[:, None, :, None] == rows[:, None, None, :]
            mask = same_segment if mask is None else same_segment & mask
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask, scale=scale, is_causal=True, local_window_size=window, implementation=impl)
        return dense(cfg, cfg.hidden_size, ("heads", "head_dim", "embed"), use_bias=cfg.out_bias, name="o_proj",
                     axis=(-2, -1))(out)


# ---------------------------------------------------------------------------------------------------------------
# Layer stacking


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def stacked_layers(block_cls: type, cfg: ModelConfig, name: str = "layers", per_layer: bool = False) -> nn.Module:
    """`cfg.num_layers` copies of `block_cls` with stacked params; scanned, or fully unrolled.

    A block is called as `block(x, rows, rope) -> (x, None)`, the signature nn.scan expects; with `per_layer`,
    as `block(x, rows, rope, xs)` where `xs` is this layer's slice of an array with a leading `num_layers` axis.
    """
    layer = _batch_sharded_input(block_cls)
    if cfg.remat_policy != "none":
        layer = nn.remat(layer, policy=_REMAT[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    scanned = nn.scan(
        layer, variable_axes={"params": 0}, split_rngs={"params": True, "lora_dropout": True},  # a mask per layer
        in_axes=(nn.broadcast, nn.broadcast, 0) if per_layer else (nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        unroll=1 if cfg.scan_layers else cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(cfg, name=name)


def _batch_sharded_input(block_cls: type) -> type:
    """`block_cls` whose input (the residual stream) is pinned to batch-sharded, features whole, under
    `sharding.activation_sharding`: so FSDP all-gathers each layer's weights, never the activations."""

    class BatchShardedInput(block_cls):
        def __call__(self, x, rows, rope, *per_layer):
            return block_cls.__call__(self, sharding.constrain(x, ("batch", None, None)), rows, rope, *per_layer)

    BatchShardedInput.__name__ = BatchShardedInput.__qualname__ = block_cls.__name__
    return BatchShardedInput


class MLP(nn.Module):
    """fc_in -> activation -> fc_out (GPT-2 and OPT)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        h = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), use_bias=cfg.mlp_bias, name="fc_in")(x)
        h = activation(cfg.activation)(h)
        return dense(cfg, cfg.hidden_size, ("mlp", "embed"), use_bias=cfg.mlp_bias, name="fc_out")(h)


def positions_from_segments(segments_bt: jax.Array) -> jax.Array:
    """0, 1, 2, ... restarting at every segment change. An attention mask (1 = real) is the segment ids of an
    unpacked batch, so real tokens of right- or left-padded rows get 0..len-1; packed sequences each start at 0."""
    idx = jnp.arange(segments_bt.shape[-1], dtype=jnp.int32)
    starts = jnp.concatenate([jnp.ones_like(segments_bt[:, :1], bool), segments_bt[:, 1:] != segments_bt[:, :-1]],
                             axis=1)
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def attention_rows(segments_bt: jax.Array, packed: bool) -> jax.Array:
    """What attention needs about the rows: segment ids [B, T] when packed, else real-token counts [B]
    (>= 1 so an all-padding filler row never yields NaN)."""
    if packed:
        return segments_bt.astype(jnp.int32)
    return jnp.maximum(segments_bt.sum(-1), 1).astype(jnp.int32)
