"""PyTorch + `transformers` contenders of the benchmarks: the same work as ours, done the usual ways.

"batched": chosen/A and rejected/B in one forward per micro-batch, right-padded to its longest sequence (dynamic
padding, as TRL does), gradient accumulation, `torch.optim.Adam`. "1pair" (`one_pair`): the original recipe, one
pair per micro-batch, each side in its own unpadded forward, `(loss / batch).backward()`, one optimizer step.
DPO runs the reference model every step (as TRL does without precomputed reference log-probs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file


def save_random_gpt2(directory: Path) -> None:
    """Random GPT-2-small weights (seed 0) and a reward head, saved once for both frameworks."""
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)
    head = torch.nn.Linear(768, 1, bias=False)
    save_file({"weight": head.weight.detach().contiguous()}, str(directory / "reward_head.safetensors"))


def _rows(batch: dict, keys, sl: slice, sides: str) -> list[torch.Tensor]:
    """`keys` of the rows `sl` of each side, side after side, cut to the longest of them."""
    longest = int(np.concatenate([batch[f"mask_{s}"][sl] for s in sides]).sum(1).max())
    return [torch.from_numpy(np.concatenate([batch[f"{k}_{s}"][sl] for s in sides])[:, :longest].astype(np.int64))
            for k in keys]


def _forwards(batch: dict, keys, micro: int, one_pair: bool):
    """(pairs in the micro-batch, the forwards' inputs) per micro-batch: A and B together or each alone."""
    step = 1 if one_pair else micro
    for lo in range(0, len(batch["valid"]), step):
        sl = slice(lo, lo + step)
        yield len(batch["valid"][sl]), [_rows(batch, keys, sl, s) for s in (("a", "b") if one_pair else ("ab",))]


def rewards(trunk, head, ids, mask) -> torch.Tensor:
    """The reward head on each row's last real token."""
    h = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
    return head(h[torch.arange(len(ids)), mask.sum(1) - 1]).squeeze(-1)


def rm_step(trunk, head, opt, batch, micro: int, one_pair: bool = False) -> None:
    """One reward-model step: BCE of r(A) - r(B) on the soft labels, accumulated over micro-batches."""
    n, lo = len(batch["label"]), 0
    for k, forwards in _forwards(batch, ("ids", "mask"), micro, one_pair):
        r = torch.cat([rewards(trunk, head, *inputs) for inputs in forwards])
        label = torch.from_numpy(batch["label"][lo:lo + k])
        (torch.nn.functional.binary_cross_entropy_with_logits(r[:k] - r[k:], label) * k / n).backward()
        lo += k
    opt.step()
    opt.zero_grad(set_to_none=True)


def logps(model, ids, mask, loss_mask):
    """(summed, mean) response log-probs per row: log_softmax at t predicts t+1, prompt tokens masked."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    weights = loss_mask[:, 1:].float()
    summed = (logp * weights).sum(-1)
    return summed, summed / weights.sum(-1).clamp(min=1)


def policy_step(policy, reference, opt, batch, micro: int, algorithm: str, beta: float, gamma: float,
                one_pair: bool = False) -> None:
    """One DPO or SimPO step; rows are [chosen k; rejected k] of each micro-batch."""
    n = len(batch["valid"])
    for k, forwards in _forwards(batch, ("ids", "mask", "loss_mask"), micro, one_pair):
        pol = [torch.cat(x) for x in zip(*(logps(policy, *inputs) for inputs in forwards))]
        if algorithm == "dpo":
            with torch.no_grad():
                ref = [torch.cat(x) for x in zip(*(logps(reference, *inputs) for inputs in forwards))]
            margin = beta * ((pol[0][:k] - pol[0][k:]) - (ref[0][:k] - ref[0][k:]))
        else:
            margin = beta * (pol[1][:k] - pol[1][k:]) - gamma
        (-torch.nn.functional.logsigmoid(margin).mean() * k / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@torch.no_grad()
def score_batched(trunk, head, batch) -> np.ndarray:
    """z = r(A) - r(B) of one eval batch, A and B in one forward, right-padded to the longest sequence."""
    r = rewards(trunk, head, *_rows(batch, ("ids", "mask"), slice(None), "ab"))
    return (r[: len(r) // 2] - r[len(r) // 2:]).numpy()
