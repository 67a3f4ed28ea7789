"""Preference optimisation weak-to-strong with DPO (original-spec §3): SFT 1 epoch, then DPO 3 epochs.

Presets: `paper` (gpt2 -> gpt2-medium, lr 1e-6 with 10% warmup then constant, beta 0.1, batch 32, max_len 512)
and `demo` (tiny random-init models, offline).
"""
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict

_spec = importlib.util.spec_from_file_location("rm_helpful", Path(__file__).with_name("rm_helpful.py"))
rm_helpful = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rm_helpful)

ALGORITHMS = {"dpo": {"epochs": 3, "beta": 0.1}, "simpo": {"epochs": 1, "beta": 2.0}}


def preference_config(algorithm: str, preset: str) -> ConfigDict:
    c = rm_helpful.get_config(preset)
    c.experiment = algorithm
    c.po = ConfigDict({"lr": 1e-6, "sft_epochs": 1, "gamma": 1.0, "conf_threshold": 0.75,
                       "logp_chunk": 128,  # time steps per chunk of the log-softmax (0: all at once)
                       **ALGORITHMS[algorithm]})
    if preset == "demo":
        c.po.lr = 1e-3
        c.po.epochs = 1
        c.data.n_gt = c.data.n_weak = c.data.n_test = 300  # the demo world at a third of the reward-model size
        c.data.n_conflict = 100
    return c


def get_config(preset: str = "paper") -> ConfigDict:
    return preference_config("dpo", preset)
