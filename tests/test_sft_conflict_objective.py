"""reward_type="sft" through the DPO and SimPO objectives on a tiny model, against the original's per-row loop
(original-spec §3.8) written in NumPy on the model's logits, one unpadded row at a time (its microbatch of 1)."""
import jax
import numpy as np
import pytest

import tiny_models
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.data.packing import Packing
from w2s_jax.models.convert import from_pretrained
from w2s_jax.objectives import DPO, SimPO


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    tiny_models.build("gpt2", directory)
    return from_pretrained(str(directory), reward_head=True)


def batch(n=6, T=16, seed=5):
    rng = np.random.RandomState(seed)
    out = {}
    for side in ("_a", "_b"):
        ids, mask = tiny_models.right_padded_batch(rng.randint(4, T - 3, size=n), T=T, seed=seed + len(side) * 3
                                                   + (side == "_b"))
        prompt = rng.randint(1, 3, size=n)
        out[f"ids{side}"], out[f"mask{side}"] = ids, mask
        out[f"loss_mask{side}"] = (mask * (np.arange(T)[None] >= prompt[:, None])).astype(np.int32)
    out.update(valid=np.ones(n, bool), acc=np.array([True, False, True, False, True, True]),
               ref_c=rng.randn(n).astype(np.float32) - 20, ref_r=rng.randn(n).astype(np.float32) - 20)
    return out


def log_softmax(logits):
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def original_row(logp, ids, loss_mask):
    """get_log_ps of one row cut to its own length (the original's microbatch of 1 has no padding; causal
    attention leaves the real tokens' logits alone): its sum, its mean and the sft term's mean over T-1 positions."""
    per_token = logp[np.arange(len(ids) - 1), ids[1:]] * loss_mask[1:]
    return per_token.sum(), per_token.sum() / loss_mask[1:].sum(), -per_token.mean()


def reference(model, params, b, algorithm, beta, gamma, alpha):
    logits = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, mask))
    logp = {s: log_softmax(np.asarray(logits(b[f"ids{s}"], b[f"mask{s}"]), np.float64)) for s in ("_a", "_b")}
    total = []
    for i in range(len(b["acc"])):
        def side(s):
            n = int(b[f"mask{s}"][i].sum())
            return original_row(logp[s][i, :n], b[f"ids{s}"][i, :n], b[f"loss_mask{s}"][i, :n])

        (sc, mc, nll_c), (sr, mr, nll_r) = side("_a"), side("_b")
        if algorithm == "dpo":
            main, active = np.logaddexp(0, -beta * ((sc - sr) - (b["ref_c"][i] - b["ref_r"][i]))), sc < sr
        else:
            main, active = np.logaddexp(0, -(beta * (mc - mr) - gamma)), mc < mr
        acc = bool(b["acc"][i])
        term = (nll_r if acc else nll_c) if active == acc else 0.0
        total.append(main + alpha * term)
    return np.mean(total)


@pytest.mark.parametrize("algorithm", ["dpo", "simpo"])
def test_sft_conflict_objective_equals_the_originals_loop(loaded, algorithm):
    b = batch()
    unit = DPO(beta=0.5, alpha=0.5, reward_type="sft", chunk_size=5) if algorithm == "dpo" else \
        SimPO(beta=2.0, gamma=1.0, alpha=0.5, reward_type="sft", chunk_size=5)
    want = reference(loaded.model, loaded.params, b, algorithm, unit.beta, getattr(unit, "gamma", 0.0), 0.5)
    padded = jax.tree.map(lambda x: x[0], unit.prepare(b, 1, "padded"))
    packing = Packing(min_row_len=32, buckets=bucket_lengths(64, 16), row_multiple=1)
    packed = jax.tree.map(lambda x: x[0], unit.prepare(b, 1, "packed", packing))
    for mb, layout in ((padded, "padded"), (packed, "packed")):
        terms = jax.jit(unit.loss_fn(loaded.model, layout))(loaded.params, mb, 0.0)
        assert float(terms.metrics["conflict_active"]) > 0, layout
        assert float(terms.loss_sum / terms.count) == pytest.approx(want, rel=2e-5), layout
    reverse = type(unit)(**{**unit.__dict__, "reward_type": "reverse"})
    assert float(jax.jit(reverse.loss_fn(loaded.model, "padded"))(loaded.params, padded, 0.0).loss_sum) != \
        pytest.approx(float(terms.loss_sum), rel=1e-3)
