"""Policy objectives of the preference experiment (original-spec §3): SFT, then DPO or SimPO on response log-probs.

A microbatch is padded (`ids_a`, `mask_a`, `loss_mask_a`, ...) or packed (the chosen sides, then the rejected,
from `data.packing.packed_microbatches(..., token_level=True)`); `layout` says which. `chunk_size` (time steps per
chunk of the log-softmax) changes memory, not values: it stays out of the fingerprint.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from w2s_jax.models.forwards import packed_logps, pair_logps, response_logps
from w2s_jax.objectives.base import Objective, neutral
from w2s_jax.train import losses

PAIR_KEYS = ("ids_a", "mask_a", "loss_mask_a", "ids_b", "mask_b", "loss_mask_b", "valid")


@dataclasses.dataclass(frozen=True)
class SFT(Objective):
    """-S(y_c) / sum(mask) on the chosen side (§3.3)."""

    chunk_size: int | None = neutral()

    name: ClassVar[str] = "sft"
    batch_keys: ClassVar[tuple[str, ...]] = ("ids", "mask", "loss_mask", "valid")
    sides: ClassVar[tuple[str, ...]] = ("",)

    def loss_fn(self, model, layout: str):
        def loss(params, mb, progress):
            if layout == "packed":
                n = mb["valid"].shape[0]
                summed, _, _ = packed_logps(model, params, mb, n, self.chunk_size)
                # the original divides by the FULL mask sum (not mask[:, 1:]): count every loss token per owner
                full = jax.ops.segment_sum(mb["loss_mask"].reshape(-1), mb["owner"].reshape(-1),
                                           num_segments=n + 1)[1:]
                return losses.sft_loss(summed, full, mb["valid"])
            summed, _ = response_logps(model, params, mb["ids"], mb["mask"], mb["loss_mask"], self.chunk_size)
            return losses.sft_loss(summed, mb["loss_mask"].sum(-1), mb["valid"])

        return loss


@dataclasses.dataclass(frozen=True)
class _Preference(Objective):
    beta: float = 0.1
    alpha: float | None = None  # set: the reverse explicit-conflict term (reads `acc`) with this weight
    chunk_size: int | None = neutral()

    def _conflict(self, mb):
        return losses.ReverseConflict(mb["acc"], self.alpha) if self.alpha is not None else None


@dataclasses.dataclass(frozen=True)
class DPO(_Preference):
    """DPO against cached reference log-probs `ref_c`, `ref_r` (the SFT model's, §3.4)."""

    name: ClassVar[str] = "dpo"
    batch_keys: ClassVar[tuple[str, ...]] = PAIR_KEYS + ("acc", "ref_c", "ref_r")
    per_example_keys: ClassVar[tuple[str, ...]] = ("valid", "acc", "ref_c", "ref_r")

    def loss_fn(self, model, layout: str):
        def loss(params, mb, progress):
            sc, sr, _, _ = pair_logps(model, params, mb, self.chunk_size, layout)
            return losses.dpo_loss(sc, sr, mb["ref_c"], mb["ref_r"], self.beta, mb["valid"], self._conflict(mb))

        return loss


@dataclasses.dataclass(frozen=True)
class SimPO(_Preference):
    """SimPO on per-token mean log-probs with margin `gamma` (§3.5); no reference model."""

    beta: float = 2.0
    gamma: float = 1.0

    name: ClassVar[str] = "simpo"
    batch_keys: ClassVar[tuple[str, ...]] = PAIR_KEYS + ("acc",)
    per_example_keys: ClassVar[tuple[str, ...]] = ("valid", "acc")

    def loss_fn(self, model, layout: str):
        def loss(params, mb, progress):
            _, _, mc, mr = pair_logps(model, params, mb, self.chunk_size, layout)
            return losses.simpo_loss(mc, mr, self.beta, self.gamma, mb["valid"], self._conflict(mb))

        return loss


POLICY_OBJECTIVES = {"dpo": DPO, "simpo": SimPO}
