"""A LoRA model's adapters as a `peft` adapter directory (adapter_config.json + adapter_model.safetensors).

`peft.PeftModel.from_pretrained(<the base as transformers loads it>, directory)` then gives our outputs. peft's
factors per module are lora_A [r, in] and lora_B [out, r] with update (lora_alpha / r) * B @ A on the torch weight
[out, in] (transposed for GPT-2's Conv1D, `fan_in_fan_out`). Ours map onto them by flattening each kernel's input
and output axes; whether the family's weight table then agrees (and whether the torch weight is transposed) is
checked on a random probe of each module kind, so a family whose table reorders a kernel is refused, never written
wrong. A Hugging Face tensor that holds several of our kernels (GPT-2's fused `c_attn` = q, k, v) gets one
adapter of rank r x parts: A side by side, B block-diagonal (`rank_pattern` / `alpha_pattern` keep the scale).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from w2s_jax.models import registry
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.files import _atomic_write
from w2s_jax.models.lora import LORA_KEY, LoraConfig, _layout

PEFT_PREFIX = "base_model.model."


def _module_factors(rule, adapters: dict, backbone: dict, lora: LoraConfig, layer):
    """(lora_A [R, in], lora_B [out, R], parts) of one Hugging Face tensor, or None if no part is adapted."""
    paths = ["backbone/" + "/".join(p) for p in rule.flax]
    if not any(p in adapters for p in paths):
        return None
    a_cols, b_blocks = [], []
    for p in paths:
        shape = tuple(_leaf(backbone, p).shape)
        w_shape = shape[1:] if layer is not None else shape
        _, n_in = _layout(p, len(shape))
        n_in_size, n_out = int(np.prod(w_shape[:n_in])), int(np.prod(w_shape[n_in:]))
        if p in adapters:
            a, b = (np.asarray(jax.device_get(adapters[p][k]), np.float32) for k in ("a", "b"))
            if layer is not None:
                a, b = a[layer], b[layer]
            a_cols.append(a.reshape(n_in_size, -1))
            b_blocks.append(b.reshape(-1, n_out))
        else:
            a_cols.append(np.zeros((n_in_size, lora.rank), np.float32))
            b_blocks.append(np.zeros((lora.rank, n_out), np.float32))
    a_all = np.concatenate(a_cols, axis=1)  # [in, R]
    b_all = np.zeros((a_all.shape[1], sum(b.shape[1] for b in b_blocks)), np.float32)
    r0 = c0 = 0
    for b in b_blocks:
        b_all[r0:r0 + b.shape[0], c0:c0 + b.shape[1]] = b
        r0, c0 = r0 + b.shape[0], c0 + b.shape[1]
    return a_all.T.copy(), b_all.T.copy(), len(paths)


def _leaf(tree, path: str):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def _orientation(rule, backbone: dict, cfg: ModelConfig, lora: LoraConfig, layer) -> bool:
    """True when the torch weight is [in, out] (Conv1D), False when [out, in]; checked on random factors through
    the family's own weight table."""
    rng = np.random.default_rng(0)
    probe = {}
    for p in ("backbone/" + "/".join(q) for q in rule.flax):
        shape = tuple(_leaf(backbone, p).shape)
        w_shape = shape[1:] if layer is not None else shape
        _, n_in = _layout(p, len(shape))
        a = rng.standard_normal((*w_shape[:n_in], lora.rank)).astype(np.float32)
        b = rng.standard_normal((lora.rank, *w_shape[n_in:])).astype(np.float32)
        probe[p] = {"a": a[None] if layer is not None else a, "b": b[None] if layer is not None else b}
    a_t, b_t, _ = _module_factors(rule, probe, backbone, lora, 0 if layer is not None else None)
    deltas = tuple(np.tensordot(probe[p]["a"][0] if layer is not None else probe[p]["a"],
                                probe[p]["b"][0] if layer is not None else probe[p]["b"], axes=(-1, 0))
                   for p in probe)
    hf = np.asarray(rule.to_hf(deltas if len(deltas) > 1 else deltas[0], cfg))
    ba = b_t @ a_t
    if hf.shape == ba.shape and np.allclose(hf, ba, rtol=1e-4, atol=1e-4):
        return False
    if hf.shape == ba.T.shape and np.allclose(hf, ba.T, rtol=1e-4, atol=1e-4):
        return True
    raise NotImplementedError(f"LoRA adapter export: {rule.hf} does not map onto a peft low-rank update")


def save_peft_adapter(directory, cfg: ModelConfig, params: dict, lora: LoraConfig, base_model: str = "") -> Path:
    """Write `params[LORA_KEY]` as a peft LoRA adapter for the `transformers` form of the base model."""
    from safetensors.numpy import save_file

    adapters = params.get(LORA_KEY)
    if not adapters:
        raise ValueError("LoRA adapter export: these params carry no adapters (model.lora.rank was 0)")
    fam = registry.family(cfg.family)
    backbone = {"backbone": params["backbone"]}  # paths are as in the full params
    tensors, modules, rank_pattern, alpha_pattern, orient = {}, set(), {}, {}, set()
    for rule in fam.WEIGHT_RULES:
        if not rule.when(cfg) or not any("backbone/" + "/".join(p) in adapters for p in rule.flax):
            continue
        layers = range(cfg.num_layers) if rule.per_layer else [None]
        orient.add(_orientation(rule, backbone, cfg, lora, 0 if rule.per_layer else None))
        for i in layers:
            name = rule.hf.format(i=i) if rule.per_layer else rule.hf
            name = name if rule.absolute else fam.HF_PREFIXES[0] + name
            module = name.removesuffix(".weight")
            a_t, b_t, parts = _module_factors(rule, adapters, backbone, lora, i)
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a_t
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b_t
            short = module.rsplit(".", 1)[-1]
            modules.add(short)
            if parts > 1:  # a fused tensor: rank r x parts, the same scale alpha / r
                rank_pattern[short], alpha_pattern[short] = lora.rank * parts, float(lora.alpha) * parts
    if len(orient) > 1:
        raise NotImplementedError("LoRA adapter export: the adapted modules mix torch Linear and Conv1D layouts")
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank, "lora_alpha": float(lora.alpha),
              "lora_dropout": float(lora.dropout), "bias": "none", "target_modules": sorted(modules),
              "fan_in_fan_out": orient.pop(), "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
              "base_model_name_or_path": base_model, "inference_mode": True, "init_lora_weights": True}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "adapter_model.safetensors", lambda p: save_file(tensors, p))
    _atomic_write(directory / "adapter_config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2)))
    return directory
