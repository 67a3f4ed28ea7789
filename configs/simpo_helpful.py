"""Preference optimisation weak-to-strong with SimPO (original-spec §3.5): SFT 1 epoch, then SimPO 1 epoch,
beta 2.0, gamma 1.0, no reference model. Presets `paper`, `demo`, `real` and `real_paper`, as
`dpo_helpful.py`."""
from w2s_jax.configs import preference_config


def get_config(preset: str = "paper"):
    return preference_config("simpo", preset, __file__)
