"""PyTorch + `transformers` contenders of the benchmarks: the same work as ours, done the usual ways.

"batched": chosen/A and rejected/B in one forward per micro-batch, right-padded to its longest sequence (dynamic
padding, as TRL does), gradient accumulation, `torch.optim.Adam`. "1pair": the original recipe, one pair per
micro-batch, unpadded forwards, `(loss / batch).backward()`, one optimizer step per batch.
"""
from __future__ import annotations

import numpy as np
import torch

def torch_batched_step(trunk, head, opt, batch, micro: int) -> int:
    """A and B in one forward per micro-batch, right-padded to its longest sequence; returns padded tokens."""
    n, padded = len(batch["label"]), 0
    for lo in range(0, n, micro):
        mask = np.concatenate([batch["mask_a"][lo:lo + micro], batch["mask_b"][lo:lo + micro]])
        longest = int(mask.sum(1).max())
        ids = np.concatenate([batch["ids_a"][lo:lo + micro], batch["ids_b"][lo:lo + micro]])[:, :longest]
        ids, mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask[:, :longest].astype(np.int64))
        h = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        r = head(h[torch.arange(len(ids)), mask.sum(1) - 1]).squeeze(-1)
        z, k = r[: len(r) // 2] - r[len(r) // 2:], len(r) // 2
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(batch["label"][lo:lo + k]))
        (loss * k / n).backward()
        padded += ids.numel()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return padded


def torch_reward(trunk, head, ids, mask_row):
    """Reward of one unpadded sequence (its last token)."""
    ids = torch.from_numpy(ids[: int(mask_row.sum())].astype(np.int64))[None]
    return head(trunk(input_ids=ids).last_hidden_state[0, -1])


def torch_one_pair_step(trunk, head, opt, batch) -> None:
    """The original recipe: micro-batch of 1 pair, two unpadded forwards, (loss / batch).backward(), one step."""
    n = len(batch["label"])
    for i in range(n):
        z = torch_reward(trunk, head, batch["ids_a"][i], batch["mask_a"][i]) \
            - torch_reward(trunk, head, batch["ids_b"][i], batch["mask_b"][i])
        label = torch.tensor([float(batch["label"][i])])
        (torch.nn.functional.binary_cross_entropy_with_logits(z, label) / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------- preference (policy)


def torch_logps(model, ids, mask, loss_mask):
    """(summed, mean) response log-probs per row: log_softmax at t predicts t+1, prompt tokens masked."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    weights = loss_mask[:, 1:].float()
    summed = (logp * weights).sum(-1)
    return summed, summed / weights.sum(-1).clamp(min=1)


def _policy_loss(algorithm, pol, ref, k, beta, gamma):
    """pol/ref: (summed, mean) over [chosen k rows; rejected k rows]."""
    if algorithm == "dpo":
        margin = beta * ((pol[0][:k] - pol[0][k:]) - (ref[0][:k] - ref[0][k:]))
    else:
        margin = beta * (pol[1][:k] - pol[1][k:]) - gamma
    return -torch.nn.functional.logsigmoid(margin).mean()


def torch_policy_step(policy, reference, opt, batch, micro: int, algorithm: str, beta: float, gamma: float) -> None:
    """DPO (reference forward every step, as TRL does without precomputed reference log-probs) or SimPO; chosen
    and rejected in one forward per micro-batch, right-padded to its longest sequence."""
    n = len(batch["valid"])
    for lo in range(0, n, micro):
        sl = slice(lo, lo + micro)
        mask = np.concatenate([batch["mask_a"][sl], batch["mask_b"][sl]])
        longest = int(mask.sum(1).max())
        t = lambda key: torch.from_numpy(np.concatenate([batch[f"{key}_a"][sl], batch[f"{key}_b"][sl]])
                                         [:, :longest].astype(np.int64))
        ids, mask, loss_mask = t("ids"), t("mask"), t("loss_mask")
        pol = torch_logps(policy, ids, mask, loss_mask)
        ref = None
        if algorithm == "dpo":
            with torch.no_grad():
                ref = torch_logps(reference, ids, mask, loss_mask)
        k = len(ids) // 2
        (_policy_loss(algorithm, pol, ref, k, beta, gamma) * k / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def torch_policy_one_pair_step(policy, reference, opt, batch, algorithm: str, beta: float, gamma: float) -> None:
    """The original recipe: one pair per micro-batch, chosen and rejected each in its own unpadded forward."""
    n = len(batch["valid"])
    for i in range(n):
        sides = []
        for s in ("a", "b"):
            length = int(batch[f"mask_{s}"][i].sum())
            sides.append([torch.from_numpy(batch[f"{key}_{s}"][i, :length].astype(np.int64))[None]
                          for key in ("ids", "mask", "loss_mask")])
        pol = [torch_logps(policy, *side) for side in sides]
        pol = (torch.cat([pol[0][0], pol[1][0]]), torch.cat([pol[0][1], pol[1][1]]))
        ref = None
        if algorithm == "dpo":
            with torch.no_grad():
                r = [torch_logps(reference, *side) for side in sides]
            ref = (torch.cat([r[0][0], r[1][0]]), torch.cat([r[0][1], r[1][1]]))
        (_policy_loss(algorithm, pol, ref, 1, beta, gamma) / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def torch_score_batched(trunk, head, batch) -> np.ndarray:
    """z = r(A) - r(B) of one eval batch, A and B in one forward, right-padded to the longest sequence."""
    mask = np.concatenate([batch["mask_a"], batch["mask_b"]])
    longest = int(mask.sum(1).max())
    ids = np.concatenate([batch["ids_a"], batch["ids_b"]])[:, :longest]
    ids, mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask[:, :longest].astype(np.int64))
    h = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
    r = head(h[torch.arange(len(ids)), mask.sum(1) - 1]).squeeze(-1)
    return (r[: len(r) // 2] - r[len(r) // 2:]).numpy()
