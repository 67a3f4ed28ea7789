"""Reward-modelling weak-to-strong with a helpfulness conflict (original-spec §2).

Presets by the config string: `configs/rm_helpful.py` or `...:paper` (gpt2 -> gpt2-medium, 4000/4000/4000,
lr 1e-5, batch 32, max_len 512, 1 epoch) and `...:demo` (tiny models pretrained on the demo world, offline, 3 seeds, minutes on 2 cores).
Override anything with `--config.train.lr=1e-6` and the like; `--config.seeds=0,1,2` runs three seeds.
"""
from w2s_jax.configs import reward_model_config


def get_config(preset: str = "paper"):
    return reward_model_config(preset, __file__)
