"""What every objective shares: its batch keys, the layout of its microbatches, and the hyper-parameters that
enter a trained model's spec.

An objective is a small frozen dataclass of its hyper-parameters. `prepare(batch, n_micro, layout, packing)`
turns a host batch into the arrays `loss_fn` reads, with a leading microbatch axis; `loss_fn(model, layout)`
returns `(params, microbatch, progress) -> LossTerms` (a sum and a count, so accumulation stays exact).
A field with `metadata={"neutral": True}` changes how the loss is computed, not its value (it stays out of the
model's fingerprint).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from w2s_jax.data.packing import Packing, packed_microbatches
from w2s_jax.models.forwards import check_layout


def neutral(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"neutral": True})


def to_microbatches(batch, n_micro: int, keys) -> dict[str, np.ndarray]:
    """Host-side reshape [B, ...] -> [n_micro, B / n_micro, ...] of the fields the loss reads."""
    out = {}
    for k in keys:
        v = np.asarray(batch[k])
        if v.shape[0] % n_micro:
            raise ValueError(f"batch of {v.shape[0]} rows cannot be split into {n_micro} microbatches")
        out[k] = v.reshape(n_micro, v.shape[0] // n_micro, *v.shape[1:])
    return out


class Objective:
    """Base of the objective dataclasses (subclasses are `@dataclass(frozen=True)`)."""

    name: ClassVar[str]
    batch_keys: ClassVar[tuple[str, ...]]  # what a padded microbatch holds
    sides: ClassVar[tuple[str, ...]] = ("_a", "_b")  # the sequences of one example, packed in this order
    per_example_keys: ClassVar[tuple[str, ...]] = ("valid",)  # carried through packing as they are
    token_level: ClassVar[bool] = True  # packed rows carry owner and loss_mask (per-token log-probs)

    def hparams(self) -> dict:
        """The hyper-parameters that determine the trained model (what enters its spec)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("neutral")}

    def prepare(self, batch: dict, n_micro: int, layout: str, packing: Packing | None = None) -> dict:
        if check_layout(layout) == "padded":
            return to_microbatches(batch, n_micro, self.batch_keys)
        if packing is None:
            raise ValueError(f"{self.name}: a packed layout needs its Packing (row length, buckets, row multiple)")
        return packed_microbatches(batch, n_micro, sides=self.sides, min_row_len=packing.min_row_len,
                                   buckets=packing.buckets, row_multiple=packing.row_multiple,
                                   extra_keys=self.per_example_keys, token_level=self.token_level, balance=True)

    def loss_fn(self, model, layout: str):
        raise NotImplementedError
