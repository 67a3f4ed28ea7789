"""Preference optimisation weak-to-strong with DPO (original-spec §3): SFT 1 epoch, then DPO 3 epochs.

Presets: `paper` (gpt2 -> gpt2-medium, lr 1e-6 with 10% warmup then constant, beta 0.1, batch 32, max_len 512),
`demo` (tiny models pretrained on the demo world, offline), `real` and `real_paper` (SmolLM2 cut to 8 layers ->
SmolLM2 on the shared HH pairs, offline; see `rm_helpful.py`; `real` takes 128 pairs per split). Both stages read
`po.lr`, `po.sft_epochs` and `po.epochs` (`train.lr/epochs/schedule/loss` do not exist here).
"""
from w2s_jax.configs import preference_config


def get_config(preset: str = "paper"):
    return preference_config("dpo", preset, __file__)
