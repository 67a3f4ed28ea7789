"""The typed spec of one trained model and the fingerprint derived from it.

Everything that determines what a trained model is goes in `TrainedModelSpec`; its fingerprint is sha256 of
`dataclasses.asdict(spec)`, so a field cannot be forgotten. What changes how a model is computed but not what it
is (`RESULT_NEUTRAL_FIELDS`, config paths) is never read into a spec; the results guard
(`experiments.guard`) ignores the same list when it compares a work directory's config with this run's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any

from w2s_jax.models.lora import LoraConfig
from w2s_jax.train.optim import SCHEDULE_NAMES

# config fields (and subtrees) that change how results are computed, never what they are
RESULT_NEUTRAL_FIELDS = ("mesh", "train.micro_batch_size", "train.save_every", "train.final_checkpoint",
                         "train.eval_batch_size", "train.packing", "train.pack_len", "model.remat_policy",
                         "model.scan_layers", "model.attention_impl", "eval.mode", "po.logp_chunk",
                         "train.eval_every")
STAGES = ("reward_model", "sft", "dpo", "simpo")
OPTION_DEFAULTS = {"optim": "adam", "head_only": False, "reward_index": "last"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_result_neutral(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in RESULT_NEUTRAL_FIELDS)


@dataclasses.dataclass(frozen=True)
class TrainedModelSpec:
    """What one trained model is: its base model, the data it learns from and how, and the seed."""

    model: dict  # the model spec (config.weak / .strong / .intermediate): name, init, tokenizer, arch
    param_dtype: str
    dtype: str
    tokenizer: str  # the tokenizer's fingerprint
    max_len: int
    data: str  # sha256 of the training arrays (token ids, masks, labels)
    n_train: int
    labels: str  # where the labels come from: "gt", or "weak:<labeller fingerprint>[|filter:...]"
    stage: str  # the objective: reward_model, sft, dpo, simpo
    objective: dict  # its hyper-parameters (`Objective.hparams()`)
    lr: float
    epochs: int
    schedule: str
    batch_size: int
    seed: int
    parent: str | None = None  # the fingerprint of the stage this one starts from (SFT before DPO / SimPO)
    lora: dict | None = None  # the adapters' rank, alpha and targets (`models.lora`); None: full fine-tuning
    # the original's result-changing switches at a non-default value (`train_options`): optim, head_only,
    # reward_index. Left out of the fingerprint when empty, so models trained before they existed keep theirs.
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage {self.stage!r} is not one of {STAGES}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            problems.append(f"lr must be a positive finite number, got {self.lr!r}")
        for name in ("epochs", "batch_size", "n_train", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if self.schedule not in SCHEDULE_NAMES:
            problems.append(f"schedule {self.schedule!r} is not one of {SCHEDULE_NAMES}")
        if not _SHA256.fullmatch(self.data):
            problems.append("data must be a sha256 hex digest")
        unknown = set(self.options) - set(OPTION_DEFAULTS)
        if unknown or any(self.options[k] == OPTION_DEFAULTS[k] for k in set(self.options) - unknown):
            problems.append(f"options must hold only non-default {sorted(OPTION_DEFAULTS)}, got {self.options!r}")
        if self.parent is not None and not _SHA256.fullmatch(self.parent):
            problems.append("parent must be a fingerprint (sha256 hex digest) or None")
        if not self.labels or not self.tokenizer:
            problems.append("labels and tokenizer must be named")
        if problems:
            raise ValueError(f"trained-model spec ({self.stage}): " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["lora"] is None:  # full fine-tuning keeps the fingerprints it had before LoRA existed
            del out["lora"]
        if not out["options"]:
            del out["options"]
        return out

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()


def train_options(config, stage: str) -> dict:
    """The switches of `config` that change what a model of `stage` becomes, where not at their default.
    `train.linear_probe` and `train.freeze_lm` both train the reward head alone (the original detaches the
    features or freezes every other parameter: the same updates), so both read as head_only; they and the reward
    position act on the reward model only."""
    t, out = config.train, {}
    if t.get("optim", "adam") != "adam":
        out["optim"] = t.optim
    if stage == "reward_model":
        if t.get("linear_probe", False) or t.get("freeze_lm", False):
            out["head_only"] = True
        if config.model.get("reward_index", "last") != "last":
            out["reward_index"] = config.model.reward_index
    return out


def spec_from_config(config, which: str, model: dict | None = None, **fields) -> TrainedModelSpec:
    """The spec of a model of `config[which]`: the config supplies the base model (or `model`, e.g. with a
    pretrained base's fingerprint), dtypes, max_len, batch size and the switches (`train_options`); `fields` the
    rest (tokenizer, data, n_train, labels, stage, objective, lr, epochs, schedule, seed, parent)."""
    model = config[which].to_dict() if model is None else model
    lora = LoraConfig.from_config(config.model.get("lora")).spec()
    return TrainedModelSpec(model=model, param_dtype=config.model.param_dtype, dtype=config.model.dtype,
                            max_len=config.data.max_len, batch_size=config.train.batch_size, lora=lora,
                            options=train_options(config, fields["stage"]), **fields)
