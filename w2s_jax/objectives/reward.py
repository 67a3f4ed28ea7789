"""The reward-model objective (original-spec §2.5-2.7): BCE on soft labels, the original's other losses (xent,
product, logconf, logconf_bce), or the explicit conflict."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from w2s_jax.models.forwards import pair_rewards
from w2s_jax.objectives.base import Objective
from w2s_jax.train import losses, rm_losses

RM_LOSSES = ("bce", "logconf", "xent", "product", "logconf_bce")  # the original's --loss / --w2s_loss values
RM_KINDS = RM_LOSSES + ("explicit",)


@dataclasses.dataclass(frozen=True)
class RewardModel(Objective):
    """`kind`: one of `RM_LOSSES` (ceilings and students) or "explicit" (the conflict term weighted by `alpha`,
    which only that kind has)."""

    kind: str = "bce"
    alpha: float | None = None

    name: ClassVar[str] = "reward_model"
    batch_keys: ClassVar[tuple[str, ...]] = ("ids_a", "mask_a", "ids_b", "mask_b", "label", "gt", "valid")
    per_example_keys: ClassVar[tuple[str, ...]] = ("label", "gt", "valid")
    token_level: ClassVar[bool] = False  # rewards are read at each sequence's end

    def __post_init__(self):
        if self.kind not in RM_KINDS:
            raise ValueError(f"unknown reward-model loss {self.kind!r}; known: {RM_KINDS}")
        if (self.kind == "explicit") != (self.alpha is not None):
            raise ValueError(f"reward model {self.kind!r}: alpha belongs to the explicit conflict only, got "
                             f"{self.alpha!r}")

    def loss_fn(self, model, layout: str):
        def loss(params, mb, progress):
            z = pair_rewards(model, params, mb, layout)
            label, valid, gt = mb["label"], mb["valid"], mb["gt"]
            if self.kind == "bce":
                return losses.rm_bce(z, label, valid, gt)
            if self.kind == "logconf":
                return losses.rm_logconf(z, label, progress, valid=valid, gt_labels=gt)
            if self.kind == "xent":
                return rm_losses.rm_xent(z, label, valid, gt)
            if self.kind == "product":
                return rm_losses.rm_product(z, label, valid=valid, gt_labels=gt)
            if self.kind == "logconf_bce":
                return rm_losses.rm_logconf_bce(z, label, progress, valid=valid, gt_labels=gt)
            return losses.rm_explicit_conflict(z, label, gt, self.alpha, valid)

        return loss
