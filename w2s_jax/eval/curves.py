"""Loss and accuracy of a model on a scored split, for the curves `train.eval_every` writes during training.

Each takes the scores `eval.inference` gives (reward-model logits z, or a policy's summed and mean log-probs of
chosen and rejected) and returns ``{"eval_loss", "eval_accuracy"}``: the objective's own loss on the split where
it can be computed from those scores, and the accuracy rule of the final evaluation (original-spec §2.6, §3.6).
Computed in float64 NumPy on the host.
"""
from __future__ import annotations

import numpy as np


def _neg_log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -x)


def reward_model_point(z: np.ndarray, gt: np.ndarray) -> dict:
    """Mean BCE(σ(z), gt) and accuracy ``(z >= 0) == (gt == 1)`` (the GT labels, whatever the model learnt from)."""
    z, gt = np.asarray(z, np.float64), np.asarray(gt, np.float64)
    loss = gt * _neg_log_sigmoid(z) + (1 - gt) * _neg_log_sigmoid(-z)
    return {"eval_loss": float(loss.mean()), "eval_accuracy": float(((z >= 0) == (gt == 1)).mean())}


def policy_point(stage: str, scores: np.ndarray, beta: float = 0.0, gamma: float = 0.0,
                 reference: np.ndarray | None = None) -> dict:
    """`scores` = [summed_c, summed_r, mean_c, mean_r] over the split (chosen = the preferred answer).

    sft: the chosen response's per-token NLL, accuracy by the DPO rule (summed log-probs); dpo: the DPO loss
    against `reference` (the SFT model's summed log-probs of the same split), accuracy ``S(c) >= S(r)``; simpo:
    the SimPO loss, accuracy ``S̄(c) >= S̄(r)``."""
    sc, sr, mc, mr = (np.asarray(s, np.float64) for s in scores[:4])
    if stage == "sft":
        return {"eval_loss": float((-mc).mean()), "eval_accuracy": float((sc >= sr).mean())}
    if stage == "dpo":
        if reference is None:
            raise ValueError("the DPO eval loss needs the reference model's log-probs of the split")
        rc, rr = (np.asarray(s, np.float64) for s in reference[:2])
        loss = _neg_log_sigmoid(beta * ((sc - sr) - (rc - rr)))
        return {"eval_loss": float(loss.mean()), "eval_accuracy": float((sc >= sr).mean())}
    if stage == "simpo":
        loss = _neg_log_sigmoid(beta * (mc - mr) - gamma)
        return {"eval_loss": float(loss.mean()), "eval_accuracy": float((mc >= mr).mean())}
    raise ValueError(f"no eval curve for stage {stage!r}")
