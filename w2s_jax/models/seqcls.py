"""Reward models as `transformers` sequence classifiers (`AutoModelForSequenceClassification`, one label).

This is the layout TRL's reward trainer saves: the family's `*ForSequenceClassification` with the backbone under
the causal LM's own prefix (`transformer.`, `model.decoder.`, `model.`), no LM head, and `score.weight` [1, D], a
`Linear(D, 1, bias=False)` read at the last non-padding token. Our reward head is the same linear map read at the
last real token of the attention mask, so the two score a right-padded batch alike when `pad_token_id` does not
occur inside a text.

Out: `save_reward_model`. In: `from_pretrained(dir, reward_head=True)` reads `score.weight` (convert.py); an
absent LM head (untied families) is filled with zeros (`WithoutLMHead`): a reward model never reads it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from w2s_jax.models.config import ModelConfig
from w2s_jax.models.files import ModelFileError

SCORE_KEY = "score.weight"
LM_HEAD_KEY = "lm_head.weight"


def is_sequence_classifier(hf_config: Any) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in getattr(hf_config, "architectures", None) or [])


def sequence_classification_class(model_type: str) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as names

    if model_type not in names:
        raise NotImplementedError(f"transformers has no sequence-classification model for {model_type!r}")
    return names[model_type]


def score_kernel(get_tensor, cfg: ModelConfig) -> np.ndarray:
    """Our reward head kernel [D, 1] from `score.weight` [1, D]; a head with several labels is refused."""
    weight = np.asarray(get_tensor(SCORE_KEY, True))
    if weight.shape != (1, cfg.output_dim):
        raise ModelFileError(f"{get_tensor.file_name(SCORE_KEY)}: {SCORE_KEY} has shape {weight.shape}; a reward "
                             f"model has one label: (1, {cfg.output_dim})")
    return weight.T


class WithoutLMHead:
    """A TensorSource whose absent `lm_head.weight` reads as zeros [V, D] (the shapes come from the first call)."""

    def __init__(self, source, cfg: ModelConfig | None = None):
        self.source, self.cfg = source, cfg
        self.directory, self.file_of, self.prefixes = source.directory, source.file_of, source.prefixes

    def _absent(self, name: str) -> bool:
        return name == LM_HEAD_KEY and not any(p + name in self.file_of for p in ("", *self.prefixes))

    def resolve(self, name: str, absolute: bool) -> str:
        return name if self._absent(name) else self.source.resolve(name, absolute)

    def file_name(self, key: str) -> Path:
        return self.source.file_name(key)

    def __call__(self, name: str, absolute: bool = False) -> np.ndarray:
        if self._absent(name):
            if self.cfg is None:
                raise ModelFileError(f"{self.directory}: no {LM_HEAD_KEY} and no config to size it")
            return np.zeros((self.cfg.vocab_size, self.cfg.output_dim), np.float32)
        return self.source(name, absolute)

    def close(self):
        self.source.close()


def save_reward_model(directory: str | os.PathLike, cfg: ModelConfig, params: dict, tokenizer=None,
                      pad_token_id: int | None = None, max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write a directory `transformers.AutoModelForSequenceClassification.from_pretrained` loads as this reward
    model (num_labels=1, `score.weight`), with the tokenizer. `config.pad_token_id` is the tokenizer's pad token
    (else its EOS; `pad_token_id` overrides both): the classifier reads the last token that is not it."""
    import jax

    from w2s_jax.models import registry
    from w2s_jax.models.files import _atomic_write, write_safetensors
    from w2s_jax.models.weights import params_to_hf

    if "reward_head" not in params:
        raise ValueError("save_reward_model: params have no reward_head")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fam = registry.family(cfg.family)
    backbone = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), params["backbone"])
    tensors = {k: v for k, v in params_to_hf(backbone, fam.WEIGHT_RULES, cfg, prefix=fam.HF_PREFIXES[0])
               if k != LM_HEAD_KEY}
    tensors[SCORE_KEY] = np.asarray(jax.device_get(params["reward_head"]["kernel"])).T.copy()
    write_safetensors(directory, tensors, max_shard_bytes)
    hf_config = registry.config_to_hf(cfg)
    hf_config.architectures = [sequence_classification_class(cfg.model_type)]
    hf_config.num_labels = 1
    hf_config.dtype = cfg.param_dtype
    pad = pad_token_id
    if pad is None and tokenizer is not None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is not None:
        hf_config.pad_token_id = int(pad)
    _atomic_write(directory / "config.json", lambda p: Path(p).write_text(hf_config.to_json_string()))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
