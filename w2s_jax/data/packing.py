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


def pack(sequences: Sequence[np.ndarray], row_len: int, n_rows: int | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First-fit-decreasing packing into rows of `row_len` -> (ids [R, L], segments [R, L], rows [N], last [N]).

    `rows[n], last[n]` locate sequence n's last token. `n_rows` pads to a fixed row count (must suffice)."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    free: list[int] = []  # remaining space per row
    placement = [(0, 0)] * len(sequences)
    for i in order:
        n = len(sequences[i])
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
    ids = np.zeros((total, row_len), np.int32)
    segments = np.zeros((total, row_len), np.int32)
    used = np.zeros(total, np.int32)
    rows = np.zeros(len(sequences), np.int32)
    last = np.zeros(len(sequences), np.int32)
    for i, (row, start) in enumerate(placement):
        seq = sequences[i]
        used[row] += 1
        ids[row, start:start + len(seq)] = seq
        segments[row, start:start + len(seq)] = used[row]
        rows[i], last[i] = row, start + len(seq) - 1
    return ids, segments, rows, last


def rows_needed(sequences: Sequence[np.ndarray], row_len: int) -> int:
    return pack(sequences, row_len)[0].shape[0]


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
