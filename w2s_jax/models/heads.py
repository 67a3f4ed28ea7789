"""A backbone with its two heads: causal-LM logits and a scalar reward read at the last real token."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from w2s_jax.models import registry
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.layers import logical

# PyTorch's nn.Linear default (kaiming-uniform, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the original
# reward head keeps that init, so ours does too.
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def last_token_index(mask_bt: jax.Array) -> jax.Array:
    """Index of the last real token of each right-padded row (0 for an all-padding filler row)."""
    return jnp.maximum(mask_bt.astype(jnp.int32).sum(-1) - 1, 0)


def reward_index(ids_bt: jax.Array, mask_bt: jax.Array, how: str = "last") -> jax.Array:
    """Where each right-padded row's reward is read. "last": its last real token. "nonzero_count": the original's
    ``(input_ids != 0).sum(-1) - 1`` (original-spec §2.4), a quirk inherited from openai: GPT-2's id 0 is a literal
    "!", so every "!" in a sequence moves the index one token to the left. A row of only id 0 gives torch index -1,
    the last token of the original's unpadded row."""
    last = last_token_index(mask_bt)
    if how == "last":
        return last
    if how != "nonzero_count":
        raise ValueError(f"unknown reward index {how!r}")
    n = ((ids_bt != 0) & (mask_bt > 0)).astype(jnp.int32).sum(-1) - 1
    return jnp.where(n < 0, last, n)


class Transformer(nn.Module):
    """`params = {"backbone": ..., "reward_head": {"kernel": [D, 1]}}`; the reward head exists only if initialised."""

    cfg: ModelConfig

    def setup(self):
        self.backbone = registry.family(self.cfg.family).Backbone(self.cfg)
        self.reward_head = nn.Dense(1, use_bias=False, dtype=jnp.float32, param_dtype=self.cfg.jnp_param_dtype,
                                    kernel_init=logical(torch_linear_init, "embed", None))

    def __call__(self, ids_bt, mask_bt):
        """Causal-LM logits [B, T, V]."""
        return self.backbone.logits(self.backbone(ids_bt, mask_bt))

    def hidden(self, ids_bt, mask_bt):
        """Final hidden states [B, T, D] (what both heads read)."""
        return self.backbone(ids_bt, mask_bt)

    def logits(self, hidden_btd):
        return self.backbone.logits(hidden_btd)

    def lm_head_kernel(self):
        """[D, V] kernel of the LM head, for log-probs computed chunk by chunk."""
        return self.backbone.lm_head_kernel()

    def reward_from_hidden(self, hidden_btd, mask_bt, ids_bt=None):
        if self.cfg.reward_index != "last" and ids_bt is None:
            raise ValueError(f"reward_index={self.cfg.reward_index!r} reads the token ids; pass them")
        idx = reward_index(ids_bt, mask_bt, self.cfg.reward_index) if ids_bt is not None else \
            last_token_index(mask_bt)
        last = jnp.take_along_axis(hidden_btd, idx[:, None, None], axis=1)[:, 0]
        return self.reward_head(last.astype(jnp.float32))[:, 0]

    def reward(self, ids_bt, mask_bt):
        """Scalar reward [B] from the hidden state of each row's last real token (right padding), or where
        `cfg.reward_index` says."""
        return self.reward_from_hidden(self.backbone(ids_bt, mask_bt), mask_bt, ids_bt)

    def packed_hidden(self, ids_rl, segments_rl):
        """Final hidden states [R, L, D] of sequences packed into rows (segment ids, 0 = padding)."""
        return self.backbone(ids_rl, segments_rl, packed=True)

    def packed_rewards(self, ids_rl, segments_rl, seq_rows, seq_last):
        """Rewards [N] of N sequences packed into rows: sequence n ends at (seq_rows[n], seq_last[n])."""
        if self.cfg.reward_index != "last":
            raise ValueError(f"reward_index={self.cfg.reward_index!r} needs the padded layout (train.packing=False)")
        hidden = self.backbone(ids_rl, segments_rl, packed=True)
        return self.reward_head(hidden[seq_rows, seq_last].astype(jnp.float32))[:, 0]

    def init_all(self, ids_bt, mask_bt):
        """Touches both heads so `init` creates every parameter."""
        hidden = self.backbone(ids_bt, mask_bt)
        return self.backbone.logits(hidden), self.reward_from_hidden(hidden, mask_bt, ids_bt)
