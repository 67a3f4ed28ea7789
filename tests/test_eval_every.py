"""`train.eval_every`: curve points on D_test that never change what is trained (bitwise), with the right values,
and the curves in metrics.jsonl of a whole (tiny) run (on `test_switch_pipeline`'s run)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import tiny_models
from w2s_jax.data.batches import PairDataset, bucket_lengths
from w2s_jax.eval import curves
from w2s_jax.eval.inference import score_pairs
from w2s_jax.objectives import RewardModel
from w2s_jax.train.trainer import Trainer, TrainSpec


def test_curve_points_on_hand_values():
    z, gt = np.array([2.0, -1.0, 0.0, -3.0]), np.array([1.0, 1.0, 0.0, 0.0])
    bce = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0)), np.log(2.0), np.log1p(np.exp(-3.0))]
    point = curves.reward_model_point(z, gt)
    assert point["eval_loss"] == pytest.approx(np.mean(bce), abs=1e-12)
    assert point["eval_accuracy"] == 0.5  # z >= 0 at 2.0 (right), -1.0 (wrong), 0.0 (wrong: gt 0), -3.0 (right)
    sc, sr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    mc, mr = np.array([-1.0, -0.5]), np.array([-0.8, -0.9])
    scores = np.stack([sc, sr, mc, mr])
    ref = np.stack([np.array([-3.5, -4.0]), np.array([-3.0, -2.5])])
    dpo = curves.policy_point("dpo", scores, beta=0.1, reference=ref)
    margin = 0.1 * np.array([(-3 + 4) - (-3.5 + 3.0), (-5 + 2) - (-4 + 2.5)])
    assert dpo["eval_loss"] == pytest.approx(np.mean(np.log1p(np.exp(-margin))), abs=1e-12)
    assert dpo["eval_accuracy"] == 0.5
    simpo = curves.policy_point("simpo", scores, beta=2.0, gamma=1.0)
    assert simpo["eval_loss"] == pytest.approx(np.mean(np.log1p(np.exp(-(2.0 * (mc - mr) - 1.0)))), abs=1e-12)
    assert simpo["eval_accuracy"] == 0.5
    assert curves.policy_point("sft", scores)["eval_loss"] == pytest.approx(0.75)


def dataset(n, seed):
    rng = np.random.RandomState(seed)
    lengths = lambda: rng.randint(3, 12, size=n)  # noqa: E731
    ids_a = [rng.randint(1, tiny_models.V, size=k).astype(np.int32) for k in lengths()]
    ids_b = [rng.randint(1, tiny_models.V, size=k).astype(np.int32) for k in lengths()]
    gt = rng.randint(0, 2, n).astype(np.float32)
    return PairDataset(ids_a, ids_b, extras={"label": np.clip(gt * 0.8 + 0.1, 0, 1), "gt": gt})


def test_eval_every_leaves_the_trained_parameters_bitwise_unchanged(loaded):
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    buckets = bucket_lengths(12, 12)
    train, test = dataset(40, 0), dataset(10, 1)
    spec = TrainSpec(lr=1e-2, batch_size=8, epochs=1, schedule="cosine_to_zero", seed=3, micro_batch_size=4)
    logged = []
    trainer = Trainer(mesh, buckets, log_fn=lambda desc, m: logged.append(m))
    score = lambda params: score_pairs(loaded.model, params, test, batch_size=4, mesh=mesh,  # noqa: E731
                                       buckets=buckets)
    evaluate = lambda params: curves.reward_model_point(score(params), test.extras["gt"])  # noqa: E731
    fresh = lambda: jax.tree.map(jnp.array, loaded.params)  # noqa: E731
    plain = trainer.fit(fresh(), RewardModel("bce"), loaded.model, train, spec)
    with_eval = trainer.fit(fresh(), RewardModel("bce"), loaded.model, train, spec, evaluate=evaluate,
                            eval_every=2)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(with_eval.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in with_eval.history]
    assert plain.evals == [] and [p["step"] for p in with_eval.evals] == [2, 4, 5]  # every 2nd step and the last
    assert [m for m in logged if "eval_loss" in m] == with_eval.evals
    # the last point against the final parameters' rewards, computed here with the model's reward method
    params = with_eval.params
    r = lambda ids: np.asarray(loaded.model.apply(  # noqa: E731
        {"params": params}, *tiny_models_pad(ids), method=loaded.model.reward), np.float64)
    z = r(test.ids_a) - r(test.ids_b)
    gt = test.extras["gt"]
    want = np.mean(gt * np.logaddexp(0, -z) + (1 - gt) * np.logaddexp(0, z))
    assert with_eval.evals[-1]["eval_loss"] == pytest.approx(want, rel=1e-4)
    assert with_eval.evals[-1]["eval_accuracy"] == np.mean((z >= 0) == (gt == 1))


def tiny_models_pad(seqs, T=12):
    ids = np.zeros((len(seqs), T), np.int32)
    mask = np.zeros((len(seqs), T), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return ids, mask
