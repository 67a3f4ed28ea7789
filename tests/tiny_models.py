"""Tiny random `transformers` models of every supported family and variant, saved to disk for loading."""
from __future__ import annotations

import numpy as np
import torch
import transformers

V = 256
COMMON_LLAMA = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

VARIANTS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=128),
    "opt": lambda: transformers.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                          num_attention_heads=4, max_position_embeddings=128,
                                          word_embed_proj_dim=64),
    # opt-350m's shape: narrower embeddings projected in/out, post-LayerNorm blocks, no final norm.
    "opt-350m": lambda: transformers.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                               num_attention_heads=4, max_position_embeddings=128,
                                               word_embed_proj_dim=32, do_layer_norm_before=False),
    "llama": lambda: transformers.LlamaConfig(**COMMON_LLAMA, tie_word_embeddings=False),
    "llama3-rope": lambda: transformers.LlamaConfig(
        **COMMON_LLAMA, tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "mistral": lambda: transformers.MistralConfig(**COMMON_LLAMA, sliding_window=5, tie_word_embeddings=False),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON_LLAMA, tie_word_embeddings=False),
    # SmolLM2: Llama with tied embeddings and a RoPE base of 100000 given in rope_parameters.
    "smollm2": lambda: transformers.LlamaConfig(**{**COMMON_LLAMA, "num_key_value_heads": 1},
                                                tie_word_embeddings=True,
                                                rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
}


def build(variant: str, directory, seed: int = 0):
    """Save a random model of `variant` under `directory`; return the eval-mode torch model."""
    torch.manual_seed(seed)
    config = VARIANTS[variant]()
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # make biases and norms non-trivial so a mapping mistake cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    return model


def right_padded_batch(lengths, T, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, V, size=(len(lengths), T))
    mask = (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    return (ids * mask).astype(np.int32), mask


def torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()
