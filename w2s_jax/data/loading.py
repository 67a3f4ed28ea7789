"""The splits and tokenizers of an experiment, and content hashes of tokenized data (for model fingerprints)."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from w2s_jax.data import pairs as pairs_lib
from w2s_jax.data.bigbench import read_bigbench_pairs
from w2s_jax.data.vocab import train_bpe_tokenizer

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_splits(data) -> pairs_lib.PairSplits:
    """D_gt, D_weak, D_test and, when `data.n_conflict > 0`, the conflict set (GT pairs of the other objective)."""
    n_conflict = int(data.n_conflict)
    if data.source == "demo":  # the offline world: every split, the conflict set included, is generated
        from w2s_jax.data.demo_world import demo_splits

        return demo_splits(data)
    from_file = n_conflict > 0 and (data.conflict_path or data.source == "dir")
    if data.source == "dir":
        splits = pairs_lib.load_paper_dir(data.dir, n_gt=data.n_gt, n_weak=data.n_weak, n_test=data.n_test,
                                          allow_skips=data.allow_skips)
    elif data.source == "hub":
        splits = pairs_lib.load_hub_hh(data.hub_subset, sizes=(data.n_gt, data.n_weak, data.n_test), seed=data.seed,
                                       conflict_data_dir=None if from_file or not n_conflict else
                                       data.hub_conflict_subset, n_conflict=0 if from_file else n_conflict)
    else:
        raise ValueError(f"config.data.source must be 'dir', 'hub' or 'demo', got {data.source!r}")
    if from_file:
        path = data.conflict_path or str(Path(data.dir) / pairs_lib.CONFLICT_FILE)
        conflict, report = (read_bigbench_pairs(path), None) if path.endswith(".json") else \
            pairs_lib.read_jsonl_pairs(path, allow_skips=data.allow_skips)
        if report is not None:
            splits.skip_reports["conflict"] = report
        if len(conflict) < n_conflict:
            log.warning("conflict set %s has %d pairs; config.data.n_conflict=%d, using all", path, len(conflict),
                        n_conflict)
        splits.conflict = conflict[:n_conflict]
    return splits


def load_tokenizer(spec, texts, trust_remote_code: bool):
    """`spec.tokenizer` (or the model's own): `bpe:<vocab>` trains one on `texts`, anything else is a Hugging Face
    tokenizer (a directory holding a tokenizer alone, or a model's source)."""
    from w2s_jax.models.convert import resolve_source

    name = spec.tokenizer or spec.name
    if name.startswith("bpe:"):
        return train_bpe_tokenizer(texts, int(name.split(":", 1)[1]))
    import transformers

    source = name if any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES) else resolve_source(name)
    return transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def hash_arrays(*arrays) -> str:
    """sha256 over arrays; a list argument is hashed row by row (ragged token sequences)."""
    h = hashlib.sha256()
    for a in arrays:
        for row in (a if isinstance(a, list) else [a]):
            h.update(np.ascontiguousarray(row).tobytes())
            h.update(b"|")
    return h.hexdigest()
