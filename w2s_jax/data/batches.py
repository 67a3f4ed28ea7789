"""Padded, length-bucketed numpy batches for training and evaluation.

Why buckets: every distinct [batch, T] shape is a new XLA compilation, so T is rounded up to one of a handful of
bucket lengths instead of padding everything to max_len (most HH pairs are far shorter than 512 tokens).

Batch layout (a dict of numpy arrays, i.e. a pytree that `jax.device_put` and `jit` take as is):
* pairs (`PairDataset`): `ids_a, mask_a, ids_b, mask_b` [B, T] int32, plus `loss_mask_a, loss_mask_b` [B, T]
  int32 when the dataset has loss masks (preference optimisation). A and B share one T, so a model can run both
  sides in one forward by concatenating them along the batch axis.
* single sequences (`SequenceDataset`, e.g. SFT on the chosen side): `ids, mask` (+ `loss_mask`).
* always: `index` [B] int32 (position in the dataset, -1 for padding rows), `valid` [B] bool, and every per-example
  extra array (labels, gt labels, ...) gathered along its first axis, dtype kept.
Right padding uses id 0 as the original does; `mask` is 1 on real tokens.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from w2s_jax.data.tokenize import TokenizedTexts

PAD_ID = 0
Batch = dict[str, np.ndarray]


def _check_extras(extras: Mapping[str, np.ndarray], n: int, reserved: set[str]) -> dict[str, np.ndarray]:
    checked = {}
    for name, values in extras.items():
        values = np.asarray(values)
        if name in reserved:
            raise ValueError(f"extra array name {name!r} clashes with a batch field")
        if values.ndim == 0 or len(values) != n:
            raise ValueError(f"extra array {name!r} has shape {values.shape}, expected a first axis of {n}")
        checked[name] = values
    return checked


def _check_side(name: str, ids: Sequence[np.ndarray], loss_mask: Sequence[np.ndarray] | None, n: int) -> None:
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} sequences, expected {n}")
    if loss_mask is not None:
        if len(loss_mask) != n or any(len(m) != len(x) for m, x in zip(loss_mask, ids)):
            raise ValueError(f"loss mask of {name} does not match its ids in count or lengths")


@dataclasses.dataclass(frozen=True)
class PairDataset:
    """Tokenized pairs: side A/B ids (ragged int sequences), optional per-token loss masks, per-pair extras."""

    ids_a: Sequence[np.ndarray]
    ids_b: Sequence[np.ndarray]
    loss_mask_a: Sequence[np.ndarray] | None = None
    loss_mask_b: Sequence[np.ndarray] | None = None
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.loss_mask_a is None) != (self.loss_mask_b is None):
            raise ValueError("give loss masks for both sides or for neither")
        _check_side("ids_a", self.ids_a, self.loss_mask_a, len(self))
        _check_side("ids_b", self.ids_b, self.loss_mask_b, len(self))
        reserved = {"index", "valid"} | {f"{f}_{s}" for f in ("ids", "mask", "loss_mask") for s in "ab"}
        object.__setattr__(self, "extras", _check_extras(self.extras, len(self), reserved))

    def __len__(self) -> int:
        return len(self.ids_a)

    def sides(self) -> dict[str, tuple[Sequence[np.ndarray], Sequence[np.ndarray] | None]]:
        return {"_a": (self.ids_a, self.loss_mask_a), "_b": (self.ids_b, self.loss_mask_b)}


@dataclasses.dataclass(frozen=True)
class SequenceDataset:
    """Tokenized single sequences (e.g. the chosen side for SFT) with optional loss masks and extras."""

    ids: Sequence[np.ndarray]
    loss_mask: Sequence[np.ndarray] | None = None
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_side("ids", self.ids, self.loss_mask, len(self))
        reserved = {"index", "valid", "ids", "mask", "loss_mask"}
        object.__setattr__(self, "extras", _check_extras(self.extras, len(self), reserved))

    def __len__(self) -> int:
        return len(self.ids)

    def sides(self) -> dict[str, tuple[Sequence[np.ndarray], Sequence[np.ndarray] | None]]:
        return {"": (self.ids, self.loss_mask)}


TokenDataset = Union[PairDataset, SequenceDataset]


# ------------------------------------------------------------------------------------------------ buckets


def bucket_lengths(max_len: int, bucket_multiple: int = 64, max_buckets: int = 8) -> tuple[int, ...]:
    """The fixed set of padded lengths a run may use: multiples of `bucket_multiple` up to `max_len`, always
    ending with `max_len`. When there would be more than `max_buckets`, geometrically spaced multiples are kept
    (relative padding waste stays bounded while the number of compiled shapes stays at `max_buckets`).
    E.g. (512, 64) -> 64, 128, ..., 512; (2048, 64, 8) -> 64, 128, 192, 320, 512, 768, 1280, 2048."""
    if max_len < 1 or bucket_multiple < 1 or max_buckets < 1:
        got = (max_len, bucket_multiple, max_buckets)
        raise ValueError(f"max_len, bucket_multiple, max_buckets must all be >= 1, got {got}")
    candidates = list(range(bucket_multiple, max_len, bucket_multiple)) + [max_len]
    if len(candidates) <= max_buckets:
        return tuple(candidates)
    targets = np.geomspace(bucket_multiple, max_len, max_buckets)
    rounded = {min(max_len, math.ceil(t / bucket_multiple - 1e-9) * bucket_multiple) for t in targets}
    return tuple(sorted(rounded | {max_len}))


def longest_sequence(dataset: "PairDataset | SequenceDataset") -> int:
    """Tokens in the dataset's longest sequence (either side of a pair)."""
    sides = (dataset.ids_a, dataset.ids_b) if isinstance(dataset, PairDataset) else (dataset.ids,)
    return max((len(x) for side in sides for x in side), default=1)


def pack_row_len(pack_len: int, dataset: "PairDataset | SequenceDataset") -> int:
    """The row length to pack a dataset's batches into: >= pack_len and >= its longest sequence. Fixed per dataset
    (not per batch), so the packed shapes of a stage differ only in their row counts: few compiles."""
    return max(pack_len, longest_sequence(dataset))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= length; a longer sequence than the largest bucket is a bug upstream (truncation)."""
    position = bisect.bisect_left(buckets, length)
    if position == len(buckets):
        raise ValueError(f"sequence of {length} tokens is longer than the largest bucket {buckets[-1]}")
    return buckets[position]


def pad_right(sequences: Sequence[np.ndarray], length: int, pad_id: int = PAD_ID) -> np.ndarray:
    """[len(sequences), length] int32, each sequence left-aligned, the rest `pad_id`."""
    out = np.full((len(sequences), length), pad_id, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


def attention_mask(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)


def make_batch(dataset: TokenDataset, indices: np.ndarray, valid: np.ndarray, buckets: Sequence[int]) -> Batch:
    """Gather `indices` (padding rows repeat a real example and have valid=False) into one padded batch."""
    sides = dataset.sides()
    picked = {suffix: [ids[i] for i in indices] for suffix, (ids, _) in sides.items()}
    length = bucket_for(max(len(s) for seqs in picked.values() for s in seqs), buckets)
    batch: Batch = {}
    for suffix, (_, loss_mask) in sides.items():
        batch[f"ids{suffix}"] = pad_right(picked[suffix], length)
        batch[f"mask{suffix}"] = attention_mask(picked[suffix], length)
        if loss_mask is not None:
            batch[f"loss_mask{suffix}"] = pad_right([loss_mask[i] for i in indices], length, pad_id=0)
    for name, values in dataset.extras.items():
        batch[name] = values[indices]
    batch["index"] = np.where(valid, indices, -1).astype(np.int32)
    batch["valid"] = np.asarray(valid, dtype=bool)
    return batch


# ---------------------------------------------------------------------------------------------- iterators


def num_train_steps(n_examples: int, epochs: int, batch_size: int) -> int:
    """The original's `len(ds) * epochs // batch_size`: the leftover examples are never trained on."""
    return n_examples * epochs // batch_size


def train_order(n_examples: int, epochs: int, seed: int, *, reshuffle_each_epoch: bool = False) -> np.ndarray:
    """Example order over all epochs, chained.

    Default (faithful): one permutation `np.random.default_rng(seed).permutation(n)` repeated every epoch. This is
    exactly `datasets.Dataset.shuffle(seed=seed)` followed by the original's `itertools.repeat(ds, epochs)`.
    `reshuffle_each_epoch=True` draws a new permutation per epoch from the same generator instead.
    """
    rng = np.random.default_rng(seed)
    first = rng.permutation(n_examples)
    epochs_order = [first] + [rng.permutation(n_examples) if reshuffle_each_epoch else first for _ in range(epochs - 1)]
    return np.concatenate(epochs_order) if epochs_order else np.zeros(0, np.int64)


def train_batches(
    dataset: TokenDataset,
    batch_size: int,
    *,
    epochs: int,
    seed: int,
    buckets: Sequence[int],
    reshuffle_each_epoch: bool = False,
    start_step: int = 0,
) -> Iterator[Batch]:
    """`num_train_steps` full batches of `batch_size` examples cut from the chained epoch orders (a batch may
    straddle two epochs). `start_step` skips that many batches without building them, for resuming."""
    if batch_size < 1 or epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {batch_size}, {epochs}")
    order = train_order(len(dataset), epochs, seed, reshuffle_each_epoch=reshuffle_each_epoch)
    all_valid = np.ones(batch_size, dtype=bool)
    for step in range(start_step, num_train_steps(len(dataset), epochs, batch_size)):
        yield make_batch(dataset, order[step * batch_size : (step + 1) * batch_size], all_valid, buckets)


def num_eval_batches(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def eval_batches(dataset: TokenDataset, batch_size: int, *, buckets: Sequence[int]) -> Iterator[Batch]:
    """All examples in dataset order, every batch exactly `batch_size` rows (one compiled shape per bucket).

    The last batch is filled with copies of its last real example marked `valid=False`, `index=-1`;
    keep `out[batch["valid"]]` (or scatter by `batch["index"][batch["valid"]]`) and every example gets exactly
    one result."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    for start in range(0, n, batch_size):
        real = np.arange(start, min(start + batch_size, n))
        indices = np.concatenate([real, np.full(batch_size - len(real), real[-1])])
        yield make_batch(dataset, indices, np.arange(batch_size) < len(real), buckets)


def pair_dataset_from_tokenized(
    side_a: TokenizedTexts, side_b: TokenizedTexts, **extras: np.ndarray
) -> PairDataset:
    """Glue for `tokenize.TokenizedTexts` of the A and B (or chosen and rejected) texts of the same pairs."""
    return PairDataset(side_a.ids, side_b.ids, side_a.loss_mask, side_b.loss_mask, extras)
