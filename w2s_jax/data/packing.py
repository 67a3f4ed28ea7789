"""Sequence packing: many short sequences share a row, so compute is spent on tokens, not on padding.

HH pairs average ~60 tokens a side while the longest reach the 512 cap; padding a batch to its longest
sequence wastes most of the work. Packing fills rows of `row_len` tokens first-fit-decreasing; segment ids
(1, 2, ... per row, 0 = padding) keep attention inside each sequence and restart positions, so every
sequence's hidden states equal those of an unpacked forward. The batch composition is unchanged, so training
is the same math as the padded layout.
"""
from __future__ import annotations

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


def pack(sequences: Sequence[np.ndarray], row_len: int, n_rows: int | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First-fit-decreasing packing into rows of `row_len` -> (ids [R, L], segments [R, L], rows [N], last [N]).

    Segment ids run 1, 2, ... within each row (0 = padding). `rows[n], last[n]` locate sequence n's last token.
    `n_rows` pads to a fixed row count (it must suffice)."""
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
    return place(sequences, placement, shape), segments, rows, last


def rows_needed(sequences: Sequence[np.ndarray], row_len: int) -> int:
    return plan([len(s) for s in sequences], row_len)[1]


def packed_pair_microbatches(batch: dict, n_micro: int, *, min_row_len: int, buckets: Sequence[int],
                             row_multiple: int, extra_keys: Sequence[str] = ("label", "gt", "valid")) -> dict:
    """A padded pair batch (`ids_a/mask_a/ids_b/mask_b` + per-pair extras) -> packed microbatches.

    Each microbatch packs its A sides then B sides (sequence n < m is A of pair n, n >= m is B of pair n - m).
    All microbatches share one (rows, row_len) shape: row_len is the bucket of the longest sequence (at least
    `min_row_len`), rows the largest need rounded up to `row_multiple` (so the shape set stays small and rows
    split evenly over the mesh)."""
    lengths_a, lengths_b = batch["mask_a"].sum(1), batch["mask_b"].sum(1)
    seqs = [[batch["ids_a"][i, :n] for i, n in enumerate(lengths_a)],
            [batch["ids_b"][i, :n] for i, n in enumerate(lengths_b)]]
    longest = int(max(lengths_a.max(), lengths_b.max()))
    row_len = bucket_for(max(longest, min(min_row_len, buckets[-1])), buckets)
    size = len(lengths_a) // n_micro
    micro_seqs = [seqs[0][k * size:(k + 1) * size] + seqs[1][k * size:(k + 1) * size] for k in range(n_micro)]
    need = max(rows_needed(s, row_len) for s in micro_seqs)
    n_rows = -(-need // row_multiple) * row_multiple
    packed = [pack(s, row_len, n_rows) for s in micro_seqs]
    out = {name: np.stack([p[j] for p in packed]) for j, name in enumerate(("ids", "segments", "seq_rows",
                                                                            "seq_last"))}
    for key in extra_keys:
        v = np.asarray(batch[key])
        out[key] = v.reshape(n_micro, size, *v.shape[1:])
    return out
