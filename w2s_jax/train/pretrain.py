"""Pretraining a causal LM from scratch on a text corpus, written as an ordinary Hugging Face directory.

`pretrain(corpus, arch, out_dir, ...)` trains a byte-level BPE tokenizer on the corpus, a random-init model of
`arch` with the plain next-token loss on every token (`policy.sft_objective` with a loss mask of ones), and
writes `config.json`, `model.safetensors` and the tokenizer with `convert.save_pretrained` (no reward head, so
every later run initialises its own from its seed). The experiments then load the directory like any pretrained
model: `--config.weak.name=DIR --config.weak.init=pretrained --config.weak.tokenizer=DIR`.

`pretrain.json` in the directory records the fingerprint of what made it (corpus, arch, tokenizer size, steps,
lr, seed); a call whose fingerprint matches a finished directory returns it without training.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from w2s_jax.atomic import write_json_atomic
from w2s_jax.data.batches import SequenceDataset, bucket_lengths
from w2s_jax.data.tokenize import texts_fingerprint, tokenize_texts
from w2s_jax.data.vocab import train_bpe_tokenizer
from w2s_jax.models.build import random_config
from w2s_jax.models.convert import init_params, save_pretrained
from w2s_jax.models.heads import Transformer
from w2s_jax.train.checkpoint import ModelStore
from w2s_jax.train.loop import TrainSpec, train
from w2s_jax.train.policy import SFT_KEYS, sft_objective
from w2s_jax.train.step import to_microbatches

RECORD = "pretrain.json"


@dataclass(frozen=True)
class PretrainSpec:
    vocab_size: int = 1024
    max_len: int = 40
    lr: float = 3e-3
    batch_size: int = 32
    epochs: int = 6
    schedule: str = "cosine_to_zero"
    seed: int = 0  # init and data order; fixed per ladder size, never an experiment seed


def fingerprint(corpus: Sequence[str], arch: Mapping[str, Any], spec: PretrainSpec) -> str:
    what = {"corpus": texts_fingerprint(corpus), "arch": dict(arch), "spec": asdict(spec)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def is_done(out_dir: Path, fp: str) -> bool:
    try:
        return json.loads((out_dir / RECORD).read_text()).get("fingerprint") == fp
    except (FileNotFoundError, ValueError):
        return False


def pretrain(corpus: Sequence[str], arch: Mapping[str, Any], out_dir: str | Path, spec: PretrainSpec = PretrainSpec(),
             *, mesh=None, log_fn=None, runtime: Mapping[str, Any] | None = None) -> dict:
    """Train (or reuse) the model; returns the record written to `out_dir/pretrain.json`."""
    out_dir = Path(out_dir)
    fp = fingerprint(corpus, arch, spec)
    if is_done(out_dir, fp):
        return json.loads((out_dir / RECORD).read_text())
    started = time.time()
    tokenizer = train_bpe_tokenizer(list(corpus), spec.vocab_size)
    ids = tokenize_texts(list(corpus), tokenizer, spec.max_len)
    dataset = SequenceDataset(ids, [np.ones_like(x) for x in ids])
    runtime = dict(runtime or {"scan_layers": False})
    vocab = -(-len(tokenizer) // 64) * 64
    cfg = random_config(arch, vocab, spec.max_len, **runtime)
    if mesh is None:
        from w2s_jax.models.sharding import make_mesh

        mesh = make_mesh(1, 1, 1, devices=__import__("jax").devices()[:1])
    params = init_params(cfg, mesh, seed=spec.seed, reward_head=False)
    work = out_dir.parent / f".{out_dir.name}.train"
    store = ModelStore(work, "lm", {"pretrain": fp}, save_every=0, final="params")
    tspec = TrainSpec(lr=spec.lr, batch_size=spec.batch_size, epochs=spec.epochs, schedule=spec.schedule,
                      seed=spec.seed)
    buckets = bucket_lengths(spec.max_len, spec.max_len, 1)
    try:
        result = train(params, sft_objective(Transformer(cfg), None), dataset, tspec, mesh=mesh, store=store,
                       buckets=buckets, prepare=lambda batch, n: to_microbatches(batch, n, SFT_KEYS), log_fn=log_fn,
                       desc=f"pretrain {out_dir.name}")
    finally:
        store.close()
    save_pretrained(out_dir, cfg, result.params, tokenizer)
    losses = [h["loss"] for h in result.history]
    record = {"fingerprint": fp, "arch": dict(arch), "spec": asdict(spec), "n_texts": len(corpus),
              "n_tokens": int(sum(len(x) for x in ids)), "steps": len(losses) or None,
              "final_loss": float(np.mean(losses[-20:])) if losses else None,
              "seconds": round(time.time() - started, 1)}
    write_json_atomic(out_dir / RECORD, record)
    shutil.rmtree(work, ignore_errors=True)
    return record
