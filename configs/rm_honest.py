"""Reward modelling weak-to-strong with an honesty conflict (the paper's Unknown Bench experiment).

The conflict set holds pairs where the preferred answer admits not knowing or tells the truth and the other is a
confident fabrication. No such JSONL ships with the package: pass one with
`--config.data.conflict_path=/path/honesty.jsonl` ({chosen, rejected} or {prompt, chosen, rejected} rows).
The demo preset uses BIG-bench's HHH "honest" pairs from the shared data folder when present.
"""
from w2s_jax.configs import SHARED_DATA, reward_model_config


def get_config(preset: str = "paper"):
    c = reward_model_config(preset, __file__)
    c.conflict_name = "honesty"
    if preset == "demo":
        c.data.conflict_path = str(SHARED_DATA / "bigbench" / "hhh_alignment" / "honest" / "task.json")
    else:
        c.data.conflict_path = ""  # required: the honesty pairs' JSONL
        c.data.conflict_required = True
    return c
