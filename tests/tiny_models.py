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
    "qwen3": lambda: transformers.Qwen3Config(**COMMON_LLAMA, head_dim=32, tie_word_embeddings=False),
    "qwen3-tied-bias": lambda: transformers.Qwen3Config(**COMMON_LLAMA, tie_word_embeddings=True,
                                                        attention_bias=True),
    # Gemma 3: 4 layers, sliding (window 5) / global interleaved, distinct local and global RoPE bases, the
    # global one with linear scaling; head_dim and query_pre_attn_scalar set apart from hidden/heads.
    "gemma3": lambda: transformers.Gemma3TextConfig(
        **{**COMMON_LLAMA, "num_hidden_layers": 4}, head_dim=24, query_pre_attn_scalar=20, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
    # untied LM head, attention biases and final logit softcapping
    "gemma3-untied-softcap": lambda: transformers.Gemma3TextConfig(
        **COMMON_LLAMA, head_dim=16, sliding_window=3, tie_word_embeddings=False, attention_bias=True,
        final_logit_softcapping=2.0, layer_types=["full_attention", "sliding_attention"]),
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
