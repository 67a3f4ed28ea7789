"""The PyTorch + `transformers` contenders of `run` and `real_rm`: the same work as ours, done the usual ways.

"batched": chosen/A and rejected/B in one forward per micro-batch, right-padded to its longest sequence (dynamic
padding, as TRL does), gradient accumulation, `torch.optim.Adam`. "1pair" (`one_pair`): the original recipe, one
pair per micro-batch, each side in its own unpadded forward, `(loss / batch).backward()`, one optimizer step.
DPO reads the reference log-probs of the batch (`ref_c`, `ref_r`) where they were cached, and otherwise runs the
reference model every step (as TRL does without precomputed reference log-probs).
"""
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
    """(first pair, pairs in the micro-batch, the forwards' inputs) per micro-batch: A and B together or each
    alone."""
    step = 1 if one_pair else micro
    for lo in range(0, len(batch["valid"]), step):
        sl = slice(lo, lo + step)
        yield lo, len(batch["valid"][sl]), [_rows(batch, keys, sl, s) for s in (("a", "b") if one_pair else ("ab",))]


def head_reward(trunk, head):
    """The reward of a GPT-2 trunk and a linear head: the head on each row's last real token."""
    def reward(ids, mask):
        h = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        return head(h[torch.arange(len(ids)), mask.sum(1) - 1]).squeeze(-1)

    return reward


def logps(model, ids, mask, loss_mask):
    """(summed, mean) response log-probs per row: log_softmax at t predicts t+1, prompt tokens masked."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    weights = loss_mask[:, 1:].float()
    summed = (logp * weights).sum(-1)
    return summed, summed / weights.sum(-1).clamp(min=1)


def _update(opt, scheduler=None) -> None:
    opt.step()
    if scheduler is not None:
        scheduler.step()
    opt.zero_grad(set_to_none=True)


def rm_step(reward, opt, batch, micro: int, one_pair: bool = False, scheduler=None) -> float:
    """One reward-model step: BCE of r(A) - r(B) on the soft labels, accumulated over micro-batches; returns the
    last micro-batch's loss."""
    n = len(batch["label"])
    for lo, k, forwards in _forwards(batch, ("ids", "mask"), micro, one_pair):
        r = torch.cat([reward(*inputs) for inputs in forwards])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(r[:k] - r[k:],
                                                                    torch.from_numpy(batch["label"][lo:lo + k]))
        (loss * k / n).backward()
    _update(opt, scheduler)
    return loss.item()


def policy_step(policy, reference, opt, batch, micro: int, algorithm: str, beta: float, gamma: float = 0.0,
                one_pair: bool = False, scheduler=None) -> float:
    """One DPO or SimPO step (rows are [chosen k; rejected k] of each micro-batch); returns the last micro-batch's
    loss."""
    n = len(batch["valid"])
    for lo, k, forwards in _forwards(batch, ("ids", "mask", "loss_mask"), micro, one_pair):
        pol = [torch.cat(x) for x in zip(*(logps(policy, *inputs) for inputs in forwards))]
        if algorithm == "simpo":
            margin = beta * (pol[1][:k] - pol[1][k:]) - gamma
        elif "ref_c" in batch:
            margin = beta * ((pol[0][:k] - pol[0][k:]) -
                             torch.from_numpy(batch["ref_c"][lo:lo + k] - batch["ref_r"][lo:lo + k]))
        else:
            with torch.no_grad():
                ref = torch.cat([logps(reference, *inputs)[0] for inputs in forwards])
            margin = beta * ((pol[0][:k] - pol[0][k:]) - (ref[:k] - ref[k:]))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        (loss * k / n).backward()
    _update(opt, scheduler)
    return loss.item()


@torch.no_grad()
def pair_scores(batch, micro: int, reward=None, policy=None) -> np.ndarray:
    """Per pair of one eval batch, A and B in one forward per micro-batch: [1, pairs] z = r(A) - r(B) with
    `reward`; with `policy`, [4, pairs] summed log-probs of A, of B, then mean log-probs of A, of B."""
    out = []
    for _, k, (inputs,) in _forwards(batch, ("ids", "mask") if policy is None else ("ids", "mask", "loss_mask"),
                                     micro, False):
        if policy is None:
            r = reward(*inputs)
            out.append((r[:k] - r[k:])[None])
        else:
            summed, mean = logps(policy, *inputs)
            out.append(torch.stack([summed[:k], summed[k:], mean[:k], mean[k:]]))
    return torch.cat(out, 1).numpy()
