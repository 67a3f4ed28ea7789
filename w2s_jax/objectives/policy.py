"""Policy objectives of the preference experiment (original-spec §3): SFT, then DPO or SimPO on response log-probs.

A microbatch is padded (`ids_a`, `mask_a`, `loss_mask_a`, ...) or packed (the chosen sides, then the rejected,
from `data.packing.packed_microbatches(..., token_level=True)`); `layout` says which. `chunk_size` (time steps per
chunk of the log-softmax) changes memory, not values: it stays out of the fingerprint.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

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


REWARD_TYPES = ("reverse", "sft")


def side_lengths(mb, layout: str, n: int):
    """Tokens of every chosen and rejected sequence of a microbatch (prompt and response): ([n], [n])."""
    if layout == "packed":
        owner = mb["owner"].reshape(-1)
        counts = jax.ops.segment_sum((owner > 0).astype(jnp.float32), owner, num_segments=2 * n + 1)[1:]
        return counts[:n], counts[n:]
    return mb["mask_a"].sum(-1).astype(jnp.float32), mb["mask_b"].sum(-1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Preference(Objective):
    beta: float = 0.1
    alpha: float | None = None  # set: the explicit-conflict term (reads `acc`) with this weight
    chunk_size: int | None = neutral()
    reward_type: str = "reverse"  # the conflict term: "reverse" (the scripts') or "sft" (spec §3.8)

    def __post_init__(self):
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {self.reward_type!r}; known: {REWARD_TYPES}")

    def hparams(self) -> dict:
        """reward_type enters only where it acts (a conflict that is not the default reverse one), so models
        trained before it existed keep their fingerprints."""
        out = super().hparams()
        if self.alpha is None or self.reward_type == "reverse":
            del out["reward_type"]
        return out

    def _conflict(self, mb, layout: str, summed_c, summed_r):
        if self.alpha is None:
            return None
        if self.reward_type == "reverse":
            return losses.ReverseConflict(mb["acc"], self.alpha)
        len_c, len_r = side_lengths(mb, layout, summed_c.shape[0])
        nll = lambda summed, length: -summed / jnp.maximum(length - 1, 1)  # noqa: E731
        return losses.SFTConflict(mb["acc"], self.alpha, nll(summed_c, len_c), nll(summed_r, len_r))


@dataclasses.dataclass(frozen=True)
class DPO(_Preference):
    """DPO against cached reference log-probs `ref_c`, `ref_r` (the SFT model's, §3.4)."""

    name: ClassVar[str] = "dpo"
    batch_keys: ClassVar[tuple[str, ...]] = PAIR_KEYS + ("acc", "ref_c", "ref_r")
    per_example_keys: ClassVar[tuple[str, ...]] = ("valid", "acc", "ref_c", "ref_r")

    def loss_fn(self, model, layout: str):
        def loss(params, mb, progress):
            sc, sr, _, _ = pair_logps(model, params, mb, self.chunk_size, layout)
            return losses.dpo_loss(sc, sr, mb["ref_c"], mb["ref_r"], self.beta, mb["valid"],
                                   self._conflict(mb, layout, sc, sr))

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
            sc, sr, mc, mr = pair_logps(model, params, mb, self.chunk_size, layout)
            return losses.simpo_loss(mc, mr, self.beta, self.gamma, mb["valid"], self._conflict(mb, layout, sc, sr))

        return loss


POLICY_OBJECTIVES = {"dpo": DPO, "simpo": SimPO}
