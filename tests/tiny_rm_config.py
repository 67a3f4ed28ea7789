"""A tiny reward-model config for runs of `python -m w2s_jax.main --config=tests/tiny_rm_config.py` in tests.

Two small random-init models on 64 HH pairs per split, one student, a checkpoint every 2 of 8 steps, one padded
shape: a whole run takes seconds. Data paths point at the shared data folder; tests override them.
"""
from pathlib import Path

from w2s_jax.configs import model_spec, reward_model_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
HH = SHARED / "hh-single-turn"
HELPFUL = SHARED / "bigbench" / "hhh_alignment" / "helpful" / "task.json"


def get_config():
    c = reward_model_config("paper")
    c.data.dir, c.data.conflict_path = str(HH), str(HELPFUL)
    c.data.n_gt = c.data.n_weak = c.data.n_test = 64
    c.data.n_conflict = 16
    c.data.max_len, c.data.bucket_multiple = 64, 64
    c.weak = model_spec("tiny-weak", init="random", tokenizer="bpe:320", hidden_size=16, num_layers=1,
                               num_heads=2)
    c.strong = model_spec("tiny-strong", init="random", tokenizer="bpe:320", hidden_size=32, num_layers=2,
                                 num_heads=2)
    c.train.update(lr=1e-3, batch_size=8, epochs=1, eval_batch_size=32, save_every=2, packing=False)
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1})
    c.students = "no_conflict"
    return c
