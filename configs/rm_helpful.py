"""Reward-modelling weak-to-strong with a helpfulness conflict (original-spec §2).

Presets by the config string: `configs/rm_helpful.py` or `...:paper` (gpt2 -> gpt2-medium, 4000/4000/4000,
lr 1e-5, batch 32, max_len 512, 1 epoch) and `...:demo` (tiny random-init models, offline, minutes on 2 cores).
Override anything with `--config.train.lr=1e-6` and the like.
"""
import dataclasses
from pathlib import Path

from ml_collections import ConfigDict

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def model_spec(name: str, init: str = "pretrained", tokenizer: str = "", **arch) -> ConfigDict:
    spec = ConfigDict({"name": name, "init": init, "tokenizer": tokenizer,
                       "arch": {"family": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                "num_kv_heads": 0, "intermediate_size": 0}})
    spec.arch.update(arch)
    return spec


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.experiment = "reward_model"
    c.seed = 0
    c.data = ConfigDict({
        "source": "dir",  # "dir": the paper's JSONL layout in data.dir; "hub": Anthropic/hh-rlhf
        "dir": str(SHARED_DATA / "hh-single-turn"),
        "hub_subset": "harmless-base", "hub_conflict_subset": "helpful-base",
        "n_gt": 4000, "n_weak": 4000, "n_test": 4000,
        "conflict_path": "",  # JSONL of {chosen, rejected} / {prompt, chosen, rejected}, or a BIG-bench task.json
        "n_conflict": 4000,
        "max_len": 512, "bucket_multiple": 64, "max_buckets": 8,
        "allow_skips": False, "seed": 0,
        "conflict_required": False,  # True: data.conflict_path must be given (no default file)
    })
    c.weak = model_spec("gpt2")
    c.strong = model_spec("gpt2-medium")
    c.intermediate = model_spec("")  # bootstrapping students only (weak -> intermediate -> strong)
    c.model = ConfigDict({"param_dtype": "float32", "dtype": "float32", "remat_policy": "none",
                          "scan_layers": True, "attention_impl": "auto", "trust_remote_code": False})
    c.train = ConfigDict({"lr": 1e-5, "batch_size": 32, "micro_batch_size": 0, "epochs": 1,
                          "schedule": "cosine_to_zero", "loss": "bce", "save_every": 50, "eval_batch_size": 32,
                          # pack the sequences of a batch into rows of >= pack_len tokens (same math, less padding)
                          "packing": True, "pack_len": 256,
                          # what a finished model keeps: "full" (train state, resumable) or "params" (a third
                          # of the disk; earlier checkpoints are dropped)
                          "final_checkpoint": "full"})
    # scoring: "pmap" replicates the model on every local device; "sharded" keeps the training sharding (models
    # too large to replicate)
    c.eval = ConfigDict({"mode": "pmap"})
    # a capability-ladder sweep (w2s_jax/sweep.py): "weak->strong,..." over the specs named in sweep.models
    c.sweep = ConfigDict({"pairs": "", "models": ConfigDict()})
    c.students = "no_conflict,implicit,explicit"
    c.conflict_name = "helpfulness"
    c.conflict = ConfigDict({"alpha": 0.5})
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    return c


def demo(c: ConfigDict) -> ConfigDict:
    """Offline and small: the generated demo world (`w2s_jax/data/demo_world.py`) and the bottom and the top of its
    model ladder as weak and strong models. `--config.data.source=dir --config.data.conflict_path=<pairs>` runs the
    same models on the shared HH pairs instead."""
    from w2s_jax.data.demo_world import DEMO_LADDER, WorldSettings

    c.data.source = "demo"
    c.data.n_gt, c.data.n_weak, c.data.n_test, c.data.n_conflict = 1000, 1000, 1000, 300
    c.data.conflict_path = ""
    c.data.max_len, c.data.bucket_multiple = 40, 40  # the world's dialogues are under 40 tokens: one shape
    # the world's knobs (demo_world.WorldSettings); data.seed seeds it
    c.data.world = ConfigDict({f.name: f.default for f in dataclasses.fields(WorldSettings) if f.name != "seed"})
    (weak_name, weak_h, weak_l, weak_a), (strong_name, strong_h, strong_l, strong_a) = DEMO_LADDER[0], DEMO_LADDER[-1]
    c.weak = model_spec(weak_name, init="random", tokenizer="bpe:1024", hidden_size=weak_h, num_layers=weak_l,
                        num_heads=weak_a)
    c.strong = model_spec(strong_name, init="random", tokenizer="bpe:1024", hidden_size=strong_h,
                          num_layers=strong_l, num_heads=strong_a)
    c.train.lr = 1e-3
    c.train.batch_size = 16
    c.train.eval_batch_size = 200
    c.train.epochs = 20
    c.train.packing = False  # short dialogues in one 40-token bucket: one compiled shape, nothing to pack
    c.train.save_every = 0  # each model trains in well under a minute: only its final checkpoint is written
    c.model.scan_layers = False  # two layers at most: unrolled compiles faster than a scan
    return c


def get_config(preset: str = "paper") -> ConfigDict:
    c = base_config()
    if preset == "demo":
        return demo(c)
    if preset not in ("paper", ""):
        raise ValueError(f"unknown preset {preset!r} for configs/rm_helpful.py; use 'paper' or 'demo'")
    return c
