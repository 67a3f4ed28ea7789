"""The splits and tokenizers of an experiment, and content hashes of tokenized data (for model fingerprints)."""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from w2s_jax.data import hub, readers
from w2s_jax.data.pairs import DataError, PairSplits
from w2s_jax.data.vocab import train_bpe_tokenizer

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def conflict_file(data) -> tuple[str, str]:
    """(the conflict file named by the config, the field that named it): `data.files.conflict` (relative to
    `data.dir` like every `data.files` entry), or the older `data.conflict_path` (relative to the working
    directory); ("", "") when neither is set."""
    if data.files.conflict:
        return data.files.conflict, "data.files.conflict"
    if data.conflict_path:
        return os.path.abspath(data.conflict_path), "data.conflict_path"
    return "", ""


def split_paths(data, with_conflict: bool) -> dict[str, str]:
    """The file of every split a `data.source="dir"` run reads (see `readers.split_path` for the rule)."""
    roles = ["gt", "weak", "test"] + (["conflict"] if with_conflict else [])
    named = {role: (data.files[role], f"data.files.{role}") for role in roles[:3]}
    if with_conflict:
        named["conflict"] = conflict_file(data)
    return {role: readers.split_path(data.dir, role, *named[role]) for role in roles}


def load_splits(data, need_conflict: bool = True) -> PairSplits:
    """D_gt, D_weak, D_test and, when a student needs it (`need_conflict`) and `data.n_conflict > 0`, the conflict
    set (GT pairs of the other objective)."""
    if data.source == "demo":  # the offline world: every split, the conflict set included, is generated
        from w2s_jax.data.demo_world import demo_splits

        return demo_splits(data)
    n_conflict = int(data.n_conflict) if need_conflict else 0
    sizes = {"gt": data.n_gt, "weak": data.n_weak, "test": data.n_test}
    named_conflict, _ = conflict_file(data)
    if data.source == "dir":
        paths = split_paths(data, bool(n_conflict))
        conflict_path = paths.pop("conflict", None)
        got, reports = readers.read_splits(paths, sizes, allow_skips=data.allow_skips)
        splits = PairSplits(got["gt"], got["weak"], got["test"], None, reports)
        if conflict_path:
            _read_conflict(splits, conflict_path, n_conflict, data.allow_skips)
        return splits
    if data.source != "hub":
        raise ValueError(f"config.data.source must be 'dir', 'hub' or 'demo', got {data.source!r}")
    conflict_from_file = bool(n_conflict and named_conflict)
    if data.hub_name == hub.HH_NAME:
        splits = hub.load_hub_hh(data.hub_subset, sizes=(data.n_gt, data.n_weak, data.n_test), seed=data.seed,
                                 conflict_data_dir=data.hub_conflict_subset if n_conflict else None,
                                 n_conflict=0 if conflict_from_file else n_conflict)
    else:
        roles = {role: (data.hub_splits[role], n) for role, n in sizes.items()}
        if n_conflict and not conflict_from_file:
            if not data.hub_splits.conflict:
                raise DataError(f"hf:{data.hub_name}", None, None, "a student needs the conflict set: set "
                                "config.data.hub_splits.conflict or config.data.files.conflict", "missing_file")
            roles["conflict"] = (data.hub_splits.conflict, n_conflict)
        got, reports = hub.load_hub_dataset(data.hub_name, roles, config_name=data.hub_config, seed=data.seed,
                                            allow_skips=data.allow_skips)
        splits = PairSplits(got["gt"], got["weak"], got["test"], got.get("conflict"), reports)
    if conflict_from_file:
        _read_conflict(splits, readers.split_path(data.dir, "conflict", *conflict_file(data)), n_conflict,
                       data.allow_skips)
    return splits


def _read_conflict(splits: PairSplits, path: str, n_conflict: int, allow_skips: bool) -> None:
    """The conflict set's first n pairs; a smaller set is used whole (a BIG-bench task has a few dozen)."""
    pairs, splits.skip_reports["conflict"] = readers.read_pairs_file(path, allow_skips=allow_skips)
    if len(pairs) < n_conflict:
        log.warning("conflict set %s has %d pairs; config.data.n_conflict=%d, using all", path, len(pairs),
                    n_conflict)
    splits.conflict = pairs[:n_conflict]


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
