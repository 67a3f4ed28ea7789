"""The PyTorch + `transformers` contenders of `run` and `real_rm`: the same work as ours, done the usual ways
(batched with dynamic padding, or one pair at a time; README "Benchmarks")."""
import numpy as np
import torch
import transformers
from safetensors.torch import save_file


def save_random_gpt2(directory) -> None:
    """Random GPT-2-small weights (seed 0) and a reward head, saved once for both frameworks."""
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)
    head = torch.nn.Linear(768, 1, bias=False)
    save_file({"weight": head.weight.detach().contiguous()}, str(directory / "reward_head.safetensors"))


def micro_batches(batch: dict, keys, micro: int, one_pair: bool):
    """(first pair, pairs, the forwards' inputs) per micro-batch: A and B in one forward, or with `one_pair` each
    side of one pair alone; rows cut to the longest of them."""
    step = 1 if one_pair else micro
    for lo in range(0, len(batch["valid"]), step):
        sl, forwards = slice(lo, lo + step), []
        for sides in ("a", "b") if one_pair else ("ab",):
            rows = {k: np.concatenate([batch[f"{k}_{s}"][sl] for s in sides]) for k in keys}
            longest = int(rows["mask"].sum(1).max())
            forwards.append([torch.from_numpy(rows[k][:, :longest].astype(np.int64)) for k in keys])
        yield lo, len(batch["valid"][sl]), forwards


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


def train_step(objective: str, fn, opt, batch, micro: int, one_pair: bool = False, scheduler=None, reference=None,
               beta: float = 0.0, gamma: float = 0.0) -> float:
    """One step of `objective` (rm: BCE of r(A) - r(B), `fn` the reward; dpo, simpo: `fn` the policy, rows [chosen;
    rejected]) accumulated over micro-batches; DPO reads the batch's cached reference log-probs (`ref_c`, `ref_r`)
    or runs `reference`. Returns the last micro-batch's loss."""
    n, keys = len(batch["valid"]), ("ids", "mask") if objective == "rm" else ("ids", "mask", "loss_mask")
    for lo, k, forwards in micro_batches(batch, keys, micro, one_pair):
        if objective == "rm":
            r = torch.cat([fn(*inputs) for inputs in forwards])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(r[:k] - r[k:],
                                                                        torch.from_numpy(batch["label"][lo:lo + k]))
        else:
            summed, mean = (torch.cat(x) for x in zip(*(logps(fn, *inputs) for inputs in forwards)))
            if objective == "simpo":
                margin = beta * (mean[:k] - mean[k:]) - gamma
            elif "ref_c" in batch:
                margin = beta * ((summed[:k] - summed[k:]) -
                                 torch.from_numpy(batch["ref_c"][lo:lo + k] - batch["ref_r"][lo:lo + k]))
            else:
                with torch.no_grad():
                    ref = torch.cat([logps(reference, *inputs)[0] for inputs in forwards])
                margin = beta * ((summed[:k] - summed[k:]) - (ref[:k] - ref[k:]))
            loss = -torch.nn.functional.logsigmoid(margin).mean()
        (loss * k / n).backward()
    opt.step()
    if scheduler is not None:
        scheduler.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


@torch.no_grad()
def scores(batches, n: int, micro: int, reward=None, policy=None) -> np.ndarray:
    """Per pair of the eval batches (n pairs in all), A and B in one forward per micro-batch: [1, n] z = r(A) - r(B)
    with `reward`; with `policy`, [4, n] summed log-probs of A, of B, then mean log-probs of A, of B."""
    out = np.zeros((1 if policy is None else 4, n), np.float32)
    for b in batches:
        rows = []
        for _, k, (inputs,) in micro_batches(b, ("ids", "mask") if policy is None else ("ids", "mask", "loss_mask"),
                                             micro, False):
            if policy is None:
                r = reward(*inputs)
                rows.append((r[:k] - r[k:])[None])
            else:
                summed, mean = logps(policy, *inputs)
                rows.append(torch.stack([summed[:k], summed[k:], mean[:k], mean[k:]]))
        out[:, b["index"][b["valid"]]] = torch.cat(rows, 1).numpy()[:, b["valid"]]
    return out
