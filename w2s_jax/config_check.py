"""Validate an experiment config before any compute; every message names the offending field."""
from __future__ import annotations

import math
import os

from w2s_jax.configs import PO_DEAD_TRAIN_FIELDS
from w2s_jax.data.hub import HH_NAME
from w2s_jax.data.loading import conflict_file
from w2s_jax.data.readers import SPLITS, default_names
from w2s_jax.experiments import EXPERIMENTS
from w2s_jax.experiments.base import parse_seeds, parse_students
from w2s_jax.experiments.pretrain import DEMO_WORLD, PretrainSpec
from w2s_jax.experiments.sweep import sweep_configs
from w2s_jax.models.config import ATTENTION_IMPLS, DTYPES, REMAT_POLICIES, REWARD_INDEXES
from w2s_jax.objectives.policy import REWARD_TYPES
from w2s_jax.objectives.reward import RM_LOSSES
from w2s_jax.models.sharding import make_mesh
from w2s_jax.train.checkpoint import FINAL_KINDS
from w2s_jax.train.optim import OPTIMIZERS, SCHEDULE_NAMES



class ConfigError(ValueError):
    pass


def _fail(field: str, problem: str, value) -> None:
    raise ConfigError(f"config.{field}: {problem}, got {value!r}")


def _positive_int(c, field: str, allow_zero: bool = False) -> None:
    value = _get(c, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        _fail(field, "must be a " + ("non-negative" if allow_zero else "positive") + " integer", value)


def _choice(c, field: str, choices) -> None:
    value = _get(c, field)
    if value not in choices:
        _fail(field, f"must be one of {list(choices)}", value)


def _get(c, field: str):
    for part in field.split("."):
        c = c[part]
    return c


def _check_files(c, conflict_students: list[str]) -> None:
    """The conflict set is named (or found in data.dir) when a student trains on it (`conflict_students`), and
    only then; the split files themselves are found, and read, before any model trains (`loading.load_splits`)."""
    d = c.data
    for split in SPLITS:
        if not isinstance(d.files.get(split, ""), str):
            _fail(f"data.files.{split}", "must be a path (a string)", d.files[split])
    if d.files.conflict and d.conflict_path:
        _fail("data.files.conflict", "and config.data.conflict_path both name the conflict file; set one",
              d.files.conflict)
    if d.conflict_path and not os.path.isfile(d.conflict_path):
        _fail("data.conflict_path", "file not found", d.conflict_path)
    needs_conflict = bool(conflict_students) and d.n_conflict > 0
    named = conflict_file(d)[0]
    if needs_conflict and not named and d.conflict_required:
        _fail("data.conflict_path", f"this experiment needs its {c.conflict_name} conflict set as a JSONL of "
              "{chosen, rejected} pairs; none ships with the package", d.conflict_path)
    if d.source == "hub" and d.hub_name != HH_NAME:
        if needs_conflict and not named and not d.hub_splits.conflict:
            _fail("data.hub_splits.conflict", f"the student(s) {conflict_students} train on a conflict set: name its "
                  "split here or its file in config.data.files.conflict", d.hub_splits.conflict)
    if d.source != "dir":
        return
    if needs_conflict and not named and not any(os.path.isfile(os.path.join(d.dir, n))
                                                for n in default_names("conflict")):
        _fail("data.conflict_path", f"not set and {d.dir} holds none of {', '.join(default_names('conflict'))} "
              f"(the helpful split is not in every copy of the data; {conflict_students} train on it); name a "
              "conflict file in config.data.files.conflict", named)


def validate(c, n_devices: int | None = None):
    """Raise ConfigError naming the first bad field; return the mesh the config asks for."""
    _choice(c, "experiment", tuple(EXPERIMENTS))
    if "seed" in c:
        _fail("seed", "was replaced by config.seeds (comma-separated, e.g. '0,1,2')", c.seed)
    try:
        parse_seeds(c)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if c.experiment != "reward_model":
        dead = [f"train.{name}" for name in PO_DEAD_TRAIN_FIELDS if name in c.train]
        if dead:
            raise ConfigError(f"config.{', config.'.join(dead)}: not read by {c.experiment} runs (both stages "
                              "read config.po.lr, po.sft_epochs and po.epochs); remove them")
    _choice(c, "eval.mode", ("pmap", "sharded"))
    _choice(c, "data.source", ("dir", "hub", "demo"))
    if c.data.source == "demo":
        from w2s_jax.data.demo_world import World, WorldSettings

        try:
            World(WorldSettings.from_config(c.data))
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e) if str(e).startswith("config.") else f"config.data.world: {e}") from None
    if c.data.source == "dir" and not all(os.path.isabs(c.data.files[s]) for s in ("gt", "weak", "test")) \
            and not os.path.isdir(c.data.dir):
        _fail("data.dir", "is not a directory (it holds the split files; see README 'Your own data')", c.data.dir)
    for field in ("data.n_gt", "data.n_weak", "data.n_test", "data.max_len", "data.bucket_multiple",
                  "data.max_buckets", "train.pack_len", "train.batch_size", "train.eval_batch_size"):
        _positive_int(c, field)
    if not isinstance(c.train.packing, bool):
        _fail("train.packing", "must be true or false", c.train.packing)
    if c.train.get("final_checkpoint", "full") not in FINAL_KINDS:
        _fail("train.final_checkpoint", f"must be one of {FINAL_KINDS}", c.train.final_checkpoint)
    for field in ("data.n_conflict", "train.micro_batch_size", "train.save_every"):
        _positive_int(c, field, allow_zero=True)
    students = parse_students(c)
    models = ("weak", "strong", "intermediate") if any(s.startswith("bootstrap") for s in students) \
        else ("weak", "strong")
    if "intermediate" in models and "intermediate" not in c:
        _fail("intermediate", "bootstrapping students need an intermediate model spec", None)
    for which in models:
        _choice(c, f"{which}.init", ("pretrained", "random", DEMO_WORLD))
        if not c[which].name:
            _fail(f"{which}.name", "must name a model (hub id or local directory)", c[which].name)
        name = c[which].name
        looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf")
        if c[which].init == "pretrained" and looks_local and not os.path.exists(name):
            _fail(f"{which}.name", "no such model directory or file", name)
        layers = c[which].get("num_layers")
        if layers is not None and (c[which].init != "pretrained" or isinstance(layers, bool)
                                   or not isinstance(layers, int) or layers < 1):
            _fail(f"{which}.num_layers", "keeps the first k layers of a pretrained model: a positive integer, "
                  f"and only with init='pretrained' (a {c[which].init} model's depth is arch.num_layers)", layers)
        if c[which].init == DEMO_WORLD:
            if c.data.source != "demo":
                _fail(f"{which}.init", "a demo-world base is pretrained on the demo world: it needs "
                      f"config.data.source='demo' (data.source is {c.data.source!r})", c[which].init)
            if c[which].tokenizer:
                _fail(f"{which}.tokenizer", "a demo-world base brings its own tokenizer (trained on the corpus); "
                      "leave it empty", c[which].tokenizer)
            if "pretrain" not in c:
                _fail("pretrain", "a demo-world base needs the pretraining block (see configs.demo)", None)
            try:
                PretrainSpec.from_config(c.pretrain)
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e)) from None
        if c[which].init in ("random", DEMO_WORLD):
            _choice(c, f"{which}.arch.family", ("gpt2", "opt", "llama"))
        if c[which].init == "random":
            if not (c[which].tokenizer or "").strip():
                _fail(f"{which}.tokenizer", "a random-init model needs a tokenizer ('bpe:<vocab>' or a path)",
                      c[which].tokenizer)
        if c[which].init in ("random", DEMO_WORLD):
            for field in ("hidden_size", "num_layers", "num_heads"):
                _positive_int(c, f"{which}.arch.{field}")
    _choice(c, "model.param_dtype", tuple(DTYPES))
    _choice(c, "model.dtype", tuple(DTYPES))
    _choice(c, "model.remat_policy", REMAT_POLICIES)
    _choice(c, "model.attention_impl", ATTENTION_IMPLS)
    if "lora" in c.model:
        from w2s_jax.models.lora import LoraConfig

        try:
            LoraConfig.from_config(c.model.lora)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.{e}") from None
    if c.experiment == "reward_model":
        lr = c.train.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            _fail("train.lr", "must be a positive finite number", lr)
        _positive_int(c, "train.epochs")
        _choice(c, "train.schedule", SCHEDULE_NAMES)
        _choice(c, "train.loss", RM_LOSSES)
        _choice(c, "train.w2s_loss", ("",) + RM_LOSSES)
        for field in ("train.linear_probe", "train.freeze_lm"):
            if not isinstance(_get(c, field), bool):
                _fail(field, "must be true or false", _get(c, field))
    else:
        po = c.po
        for field in ("lr", "beta"):
            v = po[field]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                _fail(f"po.{field}", "must be a positive finite number", v)
        _positive_int(c, "po.epochs")
        _positive_int(c, "po.sft_epochs")
        _positive_int(c, "po.logp_chunk", allow_zero=True)
        _choice(c, "po.reward_type", REWARD_TYPES)
        if not 0.5 <= po.conf_threshold < 1:
            _fail("po.conf_threshold", "must lie in [0.5, 1)", po.conf_threshold)
    _check_switches(c)
    micro = c.train.micro_batch_size or c.train.batch_size
    if c.train.batch_size % micro:
        _fail("train.micro_batch_size", f"must divide train.batch_size={c.train.batch_size}", micro)
    known = EXPERIMENTS[c.experiment].STUDENTS
    for student in students:
        if student not in known:
            _fail("students", f"unknown student {student!r}; known: {list(known)}", c.students)
    conflict_students = EXPERIMENTS[c.experiment].conflict_students(students)
    if conflict_students and not c.data.n_conflict:
        _fail("data.n_conflict", f"must be > 0 for the conflict student(s) {conflict_students}", c.data.n_conflict)
    alpha = c.conflict.alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        _fail("conflict.alpha", "must be a non-negative number", alpha)
    _check_files(c, conflict_students)
    try:
        import jax

        devices = jax.devices() if n_devices is None else jax.devices()[:n_devices]
        mesh = make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
    except ValueError as e:
        raise ConfigError(f"config.mesh: {e}") from None
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    micro_field = "train.micro_batch_size" if c.train.micro_batch_size else "train.batch_size"
    for field, value in ((micro_field, micro), ("train.eval_batch_size", c.train.eval_batch_size)):
        if value % rows:
            _fail(field, f"must be a multiple of mesh data x fsdp = {rows} (each device takes whole rows)", value)
    if "sweep" in c and c.sweep.pairs:
        try:
            derived = sweep_configs(c)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for weak, strong, pair in derived:
            try:
                validate(pair, n_devices)
            except ConfigError as e:
                raise ConfigError(f"sweep pair {weak}->{strong}: {e}") from None
    return mesh


def _check_switches(c) -> None:
    """The original's switches that every experiment reads (README "The original's switches")."""
    _choice(c, "train.optim", OPTIMIZERS)
    _positive_int(c, "train.eval_every", allow_zero=True)
    _choice(c, "model.reward_index", REWARD_INDEXES)
    if c.model.reward_index != "last" and c.experiment != "reward_model":
        _fail("model.reward_index", f"places the reward head, which {c.experiment} runs never read; leave it 'last'",
              c.model.reward_index)
    if c.model.reward_index != "last" and c.train.packing:
        _fail("model.reward_index", "the 'nonzero_count' quirk reads padded rows: set config.train.packing=False",
              c.model.reward_index)
