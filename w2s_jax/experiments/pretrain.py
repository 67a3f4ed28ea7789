"""Pretraining a causal LM from scratch on a text corpus, written as an ordinary Hugging Face directory.

`pretrain(corpus, arch, out_dir, spec)` trains a byte-level BPE tokenizer on the corpus and a random-init model of
`arch` with the plain next-token loss on every token (`objectives.SFT` with a loss mask of ones, through
`Trainer.fit`), and writes `config.json`, `model.safetensors` and the tokenizer with `convert.save_pretrained` (no
reward head: every later run draws its own from its seed). `pretrain.json` records the fingerprint of what made it
(corpus texts, arch, `PretrainSpec`); a call whose fingerprint matches a finished directory returns its record.

`demo_world_bases(...)` is the experiments' stage: a model spec with `init="demo-world"` gets a base pretrained on
the demo world's corpus (`data/demo_corpus.py`), built once under `<store_root>/models/base/<name>-<fp>` and then
loaded like any pretrained model. The pretraining seed is `PretrainSpec.seed`, never an experiment seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from w2s_jax import distributed
from w2s_jax.atomic import write_json_atomic
from w2s_jax.data.batches import SequenceDataset, bucket_lengths
from w2s_jax.data.tokenize import texts_fingerprint, tokenize_texts
from w2s_jax.data.vocab import train_bpe_tokenizer
from w2s_jax.models.build import random_config
from w2s_jax.models.convert import init_params, save_pretrained
from w2s_jax.models.heads import Transformer
from w2s_jax.objectives import SFT
from w2s_jax.train.checkpoint import ModelStore
from w2s_jax.train.trainer import Trainer, TrainSpec

RECORD = "pretrain.json"
DEMO_WORLD = "demo-world"  # the model-spec init kind that asks for a base pretrained on the demo world


@dataclass(frozen=True)
class PretrainSpec:
    """How a base is pretrained (the demo presets copy these defaults into `config.pretrain`)."""

    vocab_size: int = 1024
    max_len: int = 40
    lr: float = 3e-3
    batch_size: int = 32
    epochs: int = 30
    schedule: str = "cosine_to_zero"
    seed: int = 0  # init and data order; fixed, never an experiment seed
    # dialogues of the corpus whose reply follows the world's facts (`demo_corpus.behaving_dialogues`); it enters
    # the fingerprint through the corpus texts
    behaving_dialogues: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "batch_size", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"config.pretrain.{name}: must be a positive integer, got {v!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise ValueError(f"config.pretrain.lr: must be a positive finite number, got {self.lr!r}")
        for name in ("seed", "behaving_dialogues"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"config.pretrain.{name}: must be a non-negative integer, got {v!r}")

    @classmethod
    def from_config(cls, block) -> "PretrainSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"config.pretrain: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(block))


def fingerprint(corpus: Sequence[str], arch: Mapping[str, Any], spec: PretrainSpec) -> str:
    training = {k: v for k, v in asdict(spec).items() if k != "behaving_dialogues"}  # a corpus setting: in the texts
    what = {"corpus": texts_fingerprint(list(corpus)), "arch": dict(arch), "spec": training}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def read_record(out_dir: Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None


def pretrain(corpus: Sequence[str], arch: Mapping[str, Any], out_dir: str | Path, spec: PretrainSpec = PretrainSpec(),
             *, mesh=None, log_fn=None, desc: str | None = None) -> dict:
    """Train (or reuse) the model; returns the record written to `out_dir/pretrain.json` (`reused` says which)."""
    out_dir = Path(out_dir)
    fp = fingerprint(corpus, arch, spec)
    record = read_record(out_dir)
    if record is not None and record.get("fingerprint") == fp:
        return {**record, "reused": True}
    started = time.time()
    tokenizer = train_bpe_tokenizer(list(corpus), spec.vocab_size)
    ids = tokenize_texts(list(corpus), tokenizer, spec.max_len)
    dataset = SequenceDataset(ids, [np.ones_like(x) for x in ids])
    vocab = -(-len(tokenizer) // 64) * 64
    # float32 and unrolled layers whatever the run's runtime: the base must not depend on it
    cfg = random_config(arch, vocab, spec.max_len, scan_layers=False)
    if mesh is None:
        import jax

        from w2s_jax.models.sharding import make_mesh

        mesh = make_mesh(1, 1, 1, devices=jax.local_devices()[:1])  # one device: the same base on any mesh
    params = init_params(cfg, mesh, seed=spec.seed, reward_head=False)
    work = out_dir.parent / f".{out_dir.name}.train"
    store = ModelStore(work, "lm", {"pretrain": fp}, save_every=0, final="params")
    trainer = Trainer(mesh, bucket_lengths(spec.max_len, spec.max_len, 1), log_fn=log_fn)
    tspec = TrainSpec(lr=spec.lr, batch_size=spec.batch_size, epochs=spec.epochs, schedule=spec.schedule,
                      seed=spec.seed)
    try:
        result = trainer.fit(params, SFT(), Transformer(cfg), dataset, tspec, store=store,
                             desc=desc or f"pretrain {out_dir.name}")
    finally:
        store.close()
    losses = [h["loss"] for h in result.history]
    record = {"fingerprint": fp, "arch": dict(arch), "spec": asdict(spec), "n_texts": len(corpus),
              "n_tokens": int(sum(len(x) for x in ids)), "steps": len(losses) or None,
              "final_loss": float(np.mean(losses[-20:])) if losses else None,
              "seconds": round(time.time() - started, 1)}
    if distributed.is_primary():  # written beside, then moved in: a crash never leaves a half directory
        tmp = out_dir.parent / f".{out_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(tmp, cfg, result.params, tokenizer)
        write_json_atomic(tmp / RECORD, record)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
        shutil.rmtree(work, ignore_errors=True)
    distributed.sync(f"pretrain:{fp}")
    return {**record, "reused": False}


# ------------------------------------------------------------------------------------- the experiments' stage


def split_prompts(splits) -> set[str]:
    """The prompts of every pair of the experiment's splits: the corpus never holds one of them as a dialogue."""
    from w2s_jax.data.pairs import single_turn_prompt

    pairs = [p for name in ("gt", "weak", "test", "conflict") for p in (getattr(splits, name) or [])]
    return {q for q in (single_turn_prompt(p.chosen) for p in pairs) if q}


def base_plan(config, model_keys: Sequence[str], splits, store_root: str | Path) -> dict[str, dict]:
    """{which: {fingerprint, directory, arch, name, spec, corpus}} for every model key whose spec has
    `init == "demo-world"`, without training: where its base lies or will lie (one per arch)."""
    wanted = [w for w in model_keys if config[w].init == DEMO_WORLD]
    if not wanted:
        return {}
    from w2s_jax.data import demo_corpus, demo_world

    if config.data.source != "demo":
        raise ValueError(f"config.{wanted[0]}.init={DEMO_WORLD!r} needs config.data.source='demo' (the base "
                         f"is pretrained on the demo world), got {config.data.source!r}")
    spec = PretrainSpec.from_config(config.pretrain)
    corpus = demo_corpus.pretraining_corpus(demo_world.WorldSettings.from_config(config.data),
                                            demo_corpus.CorpusSettings(n_behaving=spec.behaving_dialogues),
                                            exclude=split_prompts(splits))
    out, by_arch = {}, {}
    for which in wanted:
        arch = dict(config[which].arch)
        key = json.dumps(arch, sort_keys=True)
        if key not in by_arch:
            fp = fingerprint(corpus, arch, spec)
            name = config[which].name
            by_arch[key] = {"fingerprint": fp, "arch": arch, "name": name, "spec": spec, "corpus": corpus,
                            "directory": Path(store_root) / "models" / "base" / f"{name or 'lm'}-{fp[:16]}"}
        out[which] = by_arch[key]
    return out


def demo_world_bases(config, model_keys: Sequence[str], splits, store_root: str | Path, log_fn=None) -> dict[str, dict]:
    """{which: record + "directory"} for every model key whose spec has `init == "demo-world"`: its base
    pretrained on the world's corpus (built once per fingerprint; a sweep's pairs share them)."""
    out, built = {}, {}
    for which, plan in base_plan(config, model_keys, splits, store_root).items():
        directory = plan["directory"]
        if directory not in built:
            record = pretrain(plan["corpus"], plan["arch"], directory, plan["spec"], log_fn=log_fn,
                              desc=f"pretrain base {plan['name']}")
            if distributed.is_primary():
                how = "reused" if record["reused"] else f"{record['steps']} steps, {record['seconds']} s"
                print(f"base {plan['name']}: {directory} ({how}, loss {record['final_loss']:.3f})", flush=True)
            built[directory] = {**record, "directory": str(directory)}
        out[which] = built[directory]
    return out
