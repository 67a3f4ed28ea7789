"""One unit per objective: hyper-parameters, batch keys, input preparation (layout explicit), loss terms."""
from w2s_jax.objectives.base import Objective, Packing, to_microbatches
from w2s_jax.objectives.policy import DPO, POLICY_OBJECTIVES, SFT, SimPO
from w2s_jax.objectives.reward import RM_KINDS, RewardModel

__all__ = ["DPO", "Objective", "POLICY_OBJECTIVES", "Packing", "RM_KINDS", "RewardModel", "SFT", "SimPO",
           "to_microbatches"]
