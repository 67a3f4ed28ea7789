"""One decoder configuration for every supported family.

Each family file turns a Hugging Face config into a `ModelConfig` (architecture fields) and the user's
runtime knobs (dtypes, remat, scan, attention implementation) are set on the same object. Keeping both in
one frozen dataclass makes it hashable, so it can be a static field of a Flax module and part of a model
fingerprint.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
REWARD_INDEXES = ("last", "nonzero_count")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer plus how to run it.

    Architecture fields mirror the Hugging Face config they come from; `family` names the file in
    `w2s_jax/models/` that owns the module and the weight table.
    """

    family: str  # "gpt2" | "opt" | "llama" | "gemma3"
    model_type: str  # the Hugging Face model_type (gpt2, opt, llama, mistral, qwen2, qwen3, gemma3_text, ...)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    activation: str = "gelu_new"
    norm_eps: float = 1e-5
    # Family-specific switches (ignored by families that do not have them).
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # extra rope_parameters (linear / llama3), as sorted items
    sliding_window: int | None = None
    pre_norm: bool = True  # OPT-350m is post-norm
    final_norm: bool = True
    embed_dim: int | None = None  # OPT word_embed_proj_dim when it differs from hidden_size
    norm_affine: bool = True
    norm_plus_one: bool = False  # Gemma: RMSNorm scale stored as w, applied as (1 + w)
    qk_norm: bool = False  # Qwen3 / Gemma 3: RMSNorm over each head's q and k before RoPE
    # Gemma 3: per-layer "sliding_attention" / "full_attention"; sliding layers use `rope_local_theta`.
    layer_types: tuple[str, ...] = ()
    rope_local_theta: float | None = None
    query_pre_attn_scalar: float | None = None  # attention scale is its -1/2 power (default head_dim)
    final_logit_softcap: float | None = None
    # Runtime knobs.
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype of matmuls and attention
    remat_policy: str = "none"
    scan_layers: bool = True
    attention_impl: str = "auto"
    # where the reward head reads: "last" real token, or "nonzero_count", the original's (ids != 0).sum() - 1
    # quirk (heads.reward_index). Unlike the knobs above it changes results: it enters the trained-model spec.
    reward_index: str = "last"

    def __post_init__(self):
        if self.param_dtype not in DTYPES or self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got param_dtype={self.param_dtype!r}, "
                             f"dtype={self.dtype!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}; got {self.remat_policy!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}; got {self.attention_impl!r}")
        if self.reward_index not in REWARD_INDEXES:
            raise ValueError(f"reward_index must be one of {REWARD_INDEXES}; got {self.reward_index!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def output_dim(self) -> int:
        """Width of the final hidden state (what the LM head and the reward head read)."""
        return self.embed_dim or self.hidden_size

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


RUNTIME_FIELDS = ("param_dtype", "dtype", "remat_policy", "scan_layers", "attention_impl", "reward_index")


def runtime_overrides(**knobs) -> dict:
    """Keep only the runtime knobs that were given (None means: keep the default)."""
    unknown = set(knobs) - set(RUNTIME_FIELDS)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; expected {RUNTIME_FIELDS}")
    return {k: v for k, v in knobs.items() if v is not None}
