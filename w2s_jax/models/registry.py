"""Which family file owns which Hugging Face `model_type`."""
from __future__ import annotations

import types

import transformers

from w2s_jax.models import gemma3, gpt2, llama, opt
from w2s_jax.models.config import ModelConfig, runtime_overrides

FAMILIES: dict[str, types.ModuleType] = {"gpt2": gpt2, "opt": opt, "llama": llama, "gemma3": gemma3}
MODEL_TYPE_TO_FAMILY = {"gpt2": "gpt2", "opt": "opt", **{t: "llama" for t in llama.MODEL_TYPES},
                        **{t: "gemma3" for t in gemma3.MODEL_TYPES}}


def family(name: str) -> types.ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of_model_type(model_type: str) -> types.ModuleType:
    if model_type not in MODEL_TYPE_TO_FAMILY:
        raise NotImplementedError(
            f"model_type {model_type!r} is not supported; supported: {sorted(MODEL_TYPE_TO_FAMILY)}")
    return FAMILIES[MODEL_TYPE_TO_FAMILY[model_type]]


def config_from_hf(hf_config: transformers.PretrainedConfig, **runtime) -> ModelConfig:
    """Our config for a Hugging Face config; `runtime` holds dtype/remat/scan/attention knobs (None = default)."""
    return family_of_model_type(hf_config.model_type).config_from_hf(hf_config, **runtime_overrides(**runtime))


def config_to_hf(cfg: ModelConfig) -> transformers.PretrainedConfig:
    return family(cfg.family).config_to_hf(cfg)
