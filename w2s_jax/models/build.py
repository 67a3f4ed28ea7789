"""A model from an experiment's model spec: pretrained (local directory / hub id) or random-init from an arch."""
from __future__ import annotations

from typing import Any, Mapping

from jax.sharding import Mesh

from w2s_jax.models.config import ModelConfig, runtime_overrides
from w2s_jax.models.convert import Pretrained, from_pretrained, init_params
from w2s_jax.models.heads import Transformer
from w2s_jax.models.lora import LoraConfig, with_lora

MODEL_TYPE_OF_FAMILY = {"gpt2": "gpt2", "opt": "opt", "llama": "llama"}
LEARNED_POSITIONS = ("gpt2", "opt")


class ModelSpecError(ValueError):
    pass


def random_config(arch: Mapping[str, Any], vocab_size: int, max_len: int, **runtime) -> ModelConfig:
    """ModelConfig for a model trained from scratch: `arch` gives family, hidden_size, num_layers, num_heads and
    optionally num_kv_heads, intermediate_size."""
    family = arch["family"]
    if family not in MODEL_TYPE_OF_FAMILY:
        raise ModelSpecError(f"arch.family must be one of {sorted(MODEL_TYPE_OF_FAMILY)}, got {family!r}")
    hidden, heads = int(arch["hidden_size"]), int(arch["num_heads"])
    if hidden % heads:
        raise ModelSpecError(f"arch.hidden_size={hidden} is not a multiple of arch.num_heads={heads}")
    kv = int(arch.get("num_kv_heads") or heads) if family == "llama" else heads
    extra = dict(activation="silu", norm_eps=1e-6, qkv_bias=False, out_bias=False, mlp_bias=False,
                 tie_embeddings=False) if family == "llama" else {}
    if family == "opt":
        extra = dict(activation="relu")
    return ModelConfig(
        family=family, model_type=MODEL_TYPE_OF_FAMILY[family], vocab_size=vocab_size, hidden_size=hidden,
        num_layers=int(arch["num_layers"]), num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads,
        intermediate_size=int(arch.get("intermediate_size") or 4 * hidden), max_positions=max_len,
        **extra, **runtime_overrides(**runtime))


def check_compatible(cfg: ModelConfig, tokenizer, max_len: int, what: str) -> None:
    """Fail before compute when the tokenizer or the sequence length does not fit the model."""
    n_tokens = len(tokenizer)
    if n_tokens > cfg.vocab_size:
        raise ModelSpecError(f"{what}: tokenizer has {n_tokens} tokens but the model's vocabulary is "
                             f"{cfg.vocab_size}; ids beyond it would index past the embedding")
    if cfg.family in LEARNED_POSITIONS and max_len > cfg.max_positions:
        raise ModelSpecError(f"{what}: data.max_len={max_len} exceeds the model's {cfg.max_positions} "
                             f"learned positions")


def build_model(spec: Mapping[str, Any], *, what: str, mesh: Mesh, seed: int, max_len: int,
                runtime: Mapping[str, Any], tokenizer=None, trust_remote_code: bool = False,
                cache_dir=None, lora: Mapping[str, Any] | None = None) -> Pretrained:
    """Fresh base weights (+ a reward head initialised with `seed`) for one training run.

    A pretrained spec may set `num_layers` (keep the checkpoint's first k layers); a GGUF name
    (`gguf:<package>`, `<path>.gguf`) is dequantised once into `cache_dir` (default ~/.cache/w2s_jax/gguf).
    What was done is in the result's `.provenance`. With `lora` (`model.lora`, rank > 0) the model is a
    `models.lora.LoraModel` and the params carry fresh adapters (seeded by `seed`) beside the frozen base."""
    init = spec.get("init", "pretrained")
    if init == "pretrained":
        layers = spec.get("num_layers", None)
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
            raise ModelSpecError(f"{what}.num_layers must be an integer, got {layers!r}")
        loaded = from_pretrained(spec["name"], mesh=mesh, reward_head=True, seed=seed,
                                 trust_remote_code=trust_remote_code, cache_dir=cache_dir, num_layers=layers,
                                 **runtime)
        tokenizer = loaded.tokenizer if tokenizer is None else tokenizer
        if tokenizer is None:
            raise ModelSpecError(f"{what}: {spec['name']} ships no tokenizer; set {what}.tokenizer")
        loaded.tokenizer = tokenizer
    elif init == "random":
        if tokenizer is None:
            raise ModelSpecError(f"{what}: a random-init model needs a tokenizer")
        vocab = -(-len(tokenizer) // 64) * 64  # round up: friendlier shapes, and room for added tokens
        cfg = random_config(spec["arch"], vocab, max_len, **runtime)
        loaded = Pretrained(Transformer(cfg), cfg, init_params(cfg, mesh, seed=seed), tokenizer, f"random:{what}")
    else:
        raise ModelSpecError(f"{what}.init must be 'pretrained' or 'random', got {init!r}")
    check_compatible(loaded.config, loaded.tokenizer, max_len, what)
    try:
        lora_cfg = LoraConfig.from_config(lora)
    except ValueError as e:
        raise ModelSpecError(f"{what}: {e}") from None
    loaded.model, loaded.params = with_lora(loaded.model, loaded.params, lora_cfg, seed)
    return loaded
