"""Preference optimisation weak-to-strong with SimPO (original-spec §3.5): SFT 1 epoch, then SimPO 1 epoch,
beta 2.0, gamma 1.0, no reference model. Presets `paper` and `demo`, as `dpo_helpful.py`."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("dpo_helpful", Path(__file__).with_name("dpo_helpful.py"))
dpo_helpful = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dpo_helpful)


def get_config(preset: str = "paper"):
    return dpo_helpful.preference_config("simpo", preset)
