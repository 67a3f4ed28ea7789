"""Sequence packing: many short sequences share a row, so compute is spent on tokens, not on padding.

HH pairs average ~60 tokens a side while the longest reach the 512 cap; padding a batch to its longest
sequence wastes most of the work. Packing fills rows of `row_len` tokens first-fit-decreasing; segment ids
(1, 2, ... per row, 0 = padding) keep attention inside each sequence and restart positions, so every
sequence's hidden states equal those of an unpacked forward. The batch composition is unchanged, so training
is the same math as the padded layout.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from w2s_jax.data.batches import bucket_for


def plan(lengths: Sequence[int], row_len: int, n_rows: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """First-fit-decreasing placement: (row, start) per sequence, and the number of rows (>= the need)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    free: list[int] = []  # remaining space per row
    placement = [(0, 0)] * len(lengths)
    for i in order:
        n = int(lengths[i])
        if n > row_len:
            raise ValueError(f"sequence of {n} tokens does not fit rows of {row_len}")
        row = next((r for r, space in enumerate(free) if space >= n), None)
        if row is None:
            free.append(row_len)
            row = len(free) - 1
        placement[i] = (row, row_len - free[row])
        free[row] -= n
    total = len(free) if n_rows is None else n_rows
    if total < len(free):
        raise ValueError(f"{len(free)} rows needed, {total} given")
    return placement, total


def place(sequences: Sequence[np.ndarray], placement, shape: tuple[int, int]) -> np.ndarray:
    """Write each sequence (ids, a loss mask, ...) at its planned place in a zero [rows, row_len] array."""
    out = np.zeros(shape, np.int32)
    for seq, (row, start) in zip(sequences, placement):
        out[row, start:start + len(seq)] = seq
    return out


def pack(sequences: Sequence[np.ndarray], row_len: int, n_rows: int | None = None,
         aligned: Sequence[Sequence[np.ndarray]] = ()) -> tuple[np.ndarray, ...]:
    """First-fit-decreasing packing into rows of `row_len` -> (ids [R, L], segments [R, L], rows [N], last [N],
    *aligned packed [R, L]).

    Segment ids run 1, 2, ... within each row (0 = padding). `rows[n], last[n]` locate sequence n's last token.
    `n_rows` pads to a fixed row count (it must suffice). Each of `aligned` holds one array per sequence, of that
    sequence's length (a loss mask, say), and is placed exactly where the ids go."""
    placement, total = plan([len(s) for s in sequences], row_len, n_rows)
    shape = (total, row_len)
    counters = np.zeros(total, np.int32)
    segment_values = []
    for row, _ in placement:
        counters[row] += 1
        segment_values.append(counters[row])
    segments = place([np.full(len(s), v) for s, v in zip(sequences, segment_values)], placement, shape)
    rows = np.array([r for r, _ in placement], np.int32)
    last = np.array([start + len(s) - 1 for s, (_, start) in zip(sequences, placement)], np.int32)
    return (place(sequences, placement, shape), segments, rows, last,
            *(place(values, placement, shape) for values in aligned))


def rows_needed(sequences: Sequence[np.ndarray], row_len: int) -> int:
    return plan([len(s) for s in sequences], row_len)[1]


def row_bucket(need: int, multiple: int = 1) -> int:
    """Rows to allocate for `need` rows: the next of 1 ... 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ... (steps of at
    most 25% past 8) times `multiple`, so batches of similar size share one compiled shape."""
    units, m = -(-need // multiple), 1
    while m < units:
        m += max(1, 2 ** (max(m.bit_length() - 3, 0)))
    return m * multiple


def balanced_order(loads: Sequence[int], n_groups: int) -> np.ndarray:
    """A permutation of the examples that puts `len(loads) // n_groups` of them in each consecutive group with the
    groups' summed loads as even as a greedy pass makes them: heaviest first (ties: the earlier example), each into
    the lightest group that has room (ties: the first group); within a group the examples keep their order."""
    size, totals = len(loads) // n_groups, np.zeros(n_groups)
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    for i in sorted(range(len(loads)), key=lambda i: -loads[i]):
        k = min((k for k in range(n_groups) if len(groups[k]) < size), key=lambda k: totals[k])
        groups[k].append(i)
        totals[k] += loads[i]
    return np.array([i for g in groups for i in sorted(g)], np.int64)


def packed_microbatches(batch: dict, n_micro: int, *, sides: Sequence[str], min_row_len: int,
                        buckets: Sequence[int], row_multiple: int, extra_keys: Sequence[str],
                        token_level: bool = False, balance: bool = False) -> dict:
    """A padded batch (`ids{side}`/`mask{side}` per side + per-example extras) -> packed microbatches.

    Microbatch k packs its examples' first side, then their second side, ...: with `sides=("_a", "_b")` sequence
    n < m is A of pair n and n >= m is B of pair n - m. All microbatches share one (rows, row_len) shape: row_len
    is the bucket of the longest sequence (at least `min_row_len`), rows the largest need rounded up to a
    `row_bucket` of `row_multiple` (so the shape set, hence the compile count, stays small and rows split evenly
    over the mesh).

    Always: ids, segments, seq_rows, seq_last (where each sequence ends, for rewards). `token_level` adds what
    per-token log-probs need: `owner` (n + 1 on sequence n's tokens, 0 on padding) and the packed `loss_mask`.

    `balance` (training: a step's loss is a sum over its examples, whatever micro-batch holds them) first permutes
    the examples (`balanced_order` of their summed lengths) so that the micro-batches hold about as many tokens each:
    the shared row count follows the fullest one. Scoring keeps the order, since it reads results by position."""
    size = len(batch[f"ids{sides[0]}"]) // n_micro
    lengths = {side: batch[f"mask{side}"].sum(1) for side in sides}
    if balance and n_micro > 1:
        order = balanced_order(sum(lengths.values()).tolist(), n_micro)
        keys = [f"{k}{side}" for side in sides for k in ("ids", "mask", "loss_mask")[:3 if token_level else 2]]
        batch = {k: np.asarray(batch[k])[order] for k in (*keys, *extra_keys)}
        lengths = {side: v[order] for side, v in lengths.items()}
    seqs = {side: [batch[f"ids{side}"][i, :n] for i, n in enumerate(lengths[side])] for side in sides}
    masks = {side: [batch[f"loss_mask{side}"][i, :n] for i, n in enumerate(lengths[side])] for side in sides} \
        if token_level else {}
    longest = int(max(v.max() for v in lengths.values()))
    row_len = bucket_for(max(longest, min(min_row_len, buckets[-1])), buckets)
    cut = lambda per_side, k: [x for side in sides for x in per_side[side][k * size:(k + 1) * size]]
    micro_seqs = [cut(seqs, k) for k in range(n_micro)]
    need = max(rows_needed(s, row_len) for s in micro_seqs)
    n_rows = row_bucket(need, row_multiple)
    names = ["ids", "segments", "seq_rows", "seq_last"]
    packed = []
    for k, s in enumerate(micro_seqs):
        aligned = [cut(masks, k), [np.full(len(x), n + 1, np.int32) for n, x in enumerate(s)]] if token_level else []
        packed.append(pack(s, row_len, n_rows, aligned))
    if token_level:
        names += ["loss_mask", "owner"]
    out = {name: np.stack([p[j] for p in packed]) for j, name in enumerate(names)}
    for key in extra_keys:
        v = np.asarray(batch[key])
        out[key] = v.reshape(n_micro, size, *v.shape[1:])
    return out


def packed_pair_microbatches(batch: dict, n_micro: int, *, min_row_len: int, buckets: Sequence[int],
                             row_multiple: int, extra_keys: Sequence[str] = ("label", "gt", "valid")) -> dict:
    """Reward-model pairs: A sides then B sides of each microbatch, rewards read at each sequence's end."""
    return packed_microbatches(batch, n_micro, sides=("_a", "_b"), min_row_len=min_row_len, buckets=buckets,
                               row_multiple=row_multiple, extra_keys=extra_keys)


@dataclasses.dataclass(frozen=True)
class Packing:
    """How a batch is packed: rows of at least `min_row_len` tokens (lengths from `buckets`) and a row count that
    is a multiple of `row_multiple` (the mesh's data x fsdp, so rows split evenly over it)."""

    min_row_len: int
    buckets: Sequence[int]
    row_multiple: int
