"""Reward-modelling weak-to-strong with a helpfulness conflict (original-spec §2).

Presets by the config string: `configs/rm_helpful.py` or `...:paper` (gpt2 -> gpt2-medium, 4000/4000/4000,
lr 1e-5, batch 32, max_len 512, 1 epoch),
`...:demo` (tiny models pretrained on the demo world, offline, 3 seeds, minutes on 2 cores),
`...:real` (real weights, offline: SmolLM2 cut to 8 layers -> SmolLM2, 256/256/256 HH pairs at max_len 128, within
the hour on 2 CPU cores) and `...:real_paper` (the same models at 4000/4000/4000, max_len 512: for a GPU).
Override anything with `--config.train.lr=1e-6` and the like; `--config.seeds=0,1,2` runs three seeds.
"""
from w2s_jax.configs import reward_model_config


def get_config(preset: str = "paper"):
    return reward_model_config(preset, __file__)
