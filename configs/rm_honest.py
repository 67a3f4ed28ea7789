"""Reward modelling weak-to-strong with an honesty conflict (the paper's Unknown Bench experiment).

The conflict set holds pairs where the preferred answer admits not knowing or tells the truth and the other is a
confident fabrication. No such JSONL ships with the package: pass one with
`--config.data.conflict_path=/path/honesty.jsonl` ({chosen, rejected} or {prompt, chosen, rejected} rows).
The demo preset uses BIG-bench's HHH "honest" pairs from the shared data folder when present.
"""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("rm_helpful", Path(__file__).with_name("rm_helpful.py"))
rm_helpful = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rm_helpful)


def get_config(preset: str = "paper"):
    c = rm_helpful.get_config(preset)
    c.conflict_name = "honesty"
    if preset == "demo":
        c.data.conflict_path = str(rm_helpful.SHARED_DATA / "bigbench" / "hhh_alignment" / "honest" / "task.json")
    else:
        c.data.conflict_path = ""  # required: the honesty pairs' JSONL
        c.data.conflict_required = True
    return c
