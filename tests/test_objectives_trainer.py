"""Objectives and the Trainer's step against independent references: accumulation through the step, the SFT
denominator at its caller, the hard weak-label swap and the helpful-set cut of the `hc_*_implicit` students."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

import tiny_models
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.objectives import SFT, RewardModel
from w2s_jax.train.trainer import Trainer, TrainSpec


def one_device_mesh():
    return Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))


def pair_batch(n, T=12, seed=0):
    rng = np.random.RandomState(seed)
    batch = {}
    for side in "ab":
        ids, mask = tiny_models.right_padded_batch(rng.randint(2, T + 1, size=n), T=T, seed=seed + ord(side))
        batch[f"ids_{side}"], batch[f"mask_{side}"] = ids, mask
    valid = np.ones(n, bool)
    valid[[2, 7]] = False  # filler rows, unevenly spread over the microbatches
    batch.update(label=rng.rand(n).astype(np.float32), gt=rng.randint(0, 2, n).astype(np.float32), valid=valid)
    return batch


def reference_update(model, params, batch, lr):
    """One SGD step on the mean BCE over the valid pairs, written out here with the model's reward method (SGD:
    the update is the gradient itself, so the comparison is tight; Adam's first step is ~lr * sign(g))."""
    def loss(p):
        r = lambda ids, mask: model.apply({"params": p}, ids, mask, method=model.reward)  # noqa: E731
        z = r(batch["ids_a"], batch["mask_a"]) - r(batch["ids_b"], batch["mask_b"])
        per = optax.sigmoid_binary_cross_entropy(z, batch["label"])
        return jnp.sum(per * batch["valid"]) / batch["valid"].sum()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), optax.global_norm(grads), jax.tree.map(lambda p, g: p - lr * g, params, grads)


@pytest.mark.parametrize("n_micro", [1, 4])
def test_accumulated_step_equals_one_big_batch(loaded, n_micro):
    """The Trainer's step over n_micro microbatches gives the update of one step on the whole batch's mean loss
    (padding rows excluded), computed here without the step."""
    batch = pair_batch(16)
    lr = 1.0
    trainer = Trainer(one_device_mesh(), bucket_lengths(12, 12))
    params = jax.tree.map(jnp.array, loaded.params)
    objective = RewardModel("bce")
    optimizer = optax.sgd(lr)
    from w2s_jax.train import step as step_lib

    state = step_lib.init_state(params, optimizer)
    step = trainer.step_fn(objective, loaded.model, optimizer, step_lib.state_shardings(state), nsteps=10)
    micro = trainer.place(objective.prepare(batch, n_micro, "padded"))
    new_state, metrics = step(state, micro)
    ref_loss, ref_norm, ref_params = reference_update(loaded.model, loaded.params, batch, lr)
    assert float(metrics["loss"]) == pytest.approx(ref_loss, rel=1e-5)
    assert float(metrics["count"]) == 14
    assert float(metrics["grad_norm"]) == pytest.approx(float(ref_norm), rel=1e-4)
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_stepper_compiles_once_per_shape_and_carries_the_state(loaded):
    """`Trainer.stepper` (the benchmarks' step): compiled once per input shape, `run=False` compiles without
    stepping, its first step's loss and gradient norm are the reference's, and the next call starts from the
    updated state (Adam's step lowers the loss on the same batch)."""
    batch, objective = pair_batch(16), RewardModel("bce")
    trainer = Trainer(one_device_mesh(), bucket_lengths(12, 12))
    step, compiled = trainer.stepper(objective, loaded.model, jax.tree.map(jnp.array, loaded.params),
                                     TrainSpec(1e-3, 16, 1, "constant", 0), nsteps=10)
    micro = trainer.place(objective.prepare(batch, 2, "padded"))
    assert step(micro, run=False) is None and len(compiled) == 1
    metrics, second = step(micro), step(micro)
    first, ref_loss, ref_norm = float(metrics["loss"]), *reference_update(loaded.model, loaded.params, batch, 1.0)[:2]
    assert first == pytest.approx(ref_loss, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(float(ref_norm), rel=1e-4)
    assert float(second["loss"]) < first - 1e-4
    assert len(compiled) == 1
    step(trainer.place(objective.prepare(batch, 4, "padded")))
    assert len(compiled) == 2


def test_sft_divides_by_the_full_loss_mask(loaded):
    """-S(y_c) / sum(loss_mask), the original's denominator: it counts position 0 although position 0 is never
    predicted. Reference: log-softmax of the model's logits in numpy."""
    rng = np.random.RandomState(3)
    n, T = 4, 10
    ids, mask = tiny_models.right_padded_batch([10, 7, 5, 9], T=T, seed=3)
    loss_mask = mask.copy()
    loss_mask[1, :3] = 0  # a prompt; the other rows are all response, position 0 included
    batch = {"ids": ids, "mask": mask, "loss_mask": loss_mask, "valid": np.array([True, True, True, False])}
    objective = SFT(chunk_size=3)
    mb = jax.tree.map(lambda x: x[0], objective.prepare(batch, 1, "padded"))
    terms = objective.loss_fn(loaded.model, "padded")(loaded.params, mb, 0.0)
    logits = np.asarray(loaded.model.apply({"params": loaded.params}, ids, mask), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    per_row = []
    for i in range(n):
        s = sum(logp[i, t - 1, ids[i, t]] for t in range(1, T) if loss_mask[i, t])
        per_row.append(-s / loss_mask[i].sum())
    expected = np.mean(per_row[:3])
    assert rng is not None and loss_mask[0].sum() != loss_mask[0, 1:].sum()  # the two denominators differ
    assert float(terms.loss_sum) / float(terms.count) == pytest.approx(expected, rel=1e-5)


class _Labeller:
    """A PreferenceExperiment with scoring replaced by fixed scores (the swap logic is what is tested)."""

    def __new__(cls, algorithm, scores, tmp_path):
        from ml_collections import ConfigDict

        from w2s_jax.experiments.preference import PreferenceExperiment

        e = PreferenceExperiment.__new__(PreferenceExperiment)
        e.config = ConfigDict({"experiment": algorithm, "po": {"conf_threshold": 0.75}})
        e.workdir, e.seed = tmp_path, 0
        e._pairs = lambda chosen, rejected, which: None
        e._score = lambda model, params, dataset, desc: np.asarray(scores, np.float32)
        return e


def test_hard_labels_swap_where_the_labeller_disagrees(tmp_path):
    import json

    # rows: summed chosen, summed rejected, mean chosen, mean rejected (DPO reads the sums); a column per pair
    scores = [[0.0, 0.0, 4.0, 0.0], [-1.0, 2.0, 0.0, 1.0], [3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    labeller = {"model": None, "params": None, "fingerprint": "f" * 64}
    out = _Labeller("dpo", scores, tmp_path).hard_labels(labeller, "weak", ["c0", "c1", "c2", "c3"],
                                                         ["r0", "r1", "r2", "r3"], "weak")
    # sums: c - r = 1, -2, 4, -1: pairs 1 and 3 are swapped
    assert out["chosen"] == ["c0", "r1", "c2", "r3"] and out["rejected"] == ["r0", "c1", "r2", "c3"]
    np.testing.assert_array_equal(out["acc"], [True, False, True, False])
    np.testing.assert_allclose(out["confidence"], 1 / (1 + np.exp(-np.array([1, -2, 4, -1]) / 50)))
    assert out["origin"] == "weak:" + "f" * 64
    written = json.loads((tmp_path / "seed0" / "weak_labels.json").read_text())
    assert written["acc"] == [True, False, True, False] and written["accuracy"] == 0.5
    simpo = _Labeller("simpo", scores, tmp_path).hard_labels(labeller, "weak", ["c0", "c1", "c2", "c3"],
                                                             ["r0", "r1", "r2", "r3"], "weak")
    # means: c - r = 3, 1, -1, 0 (a tie keeps the order)
    assert simpo["chosen"] == ["c0", "c1", "r2", "c3"]


def test_hc_implicit_students_cut_the_helpful_set_to_the_kept_indices():
    from w2s_jax.experiments.preference import student_pairs

    labels = {"chosen": ["h0", "h1", "h2", "h3", "h4"], "rejected": ["x0", "x1", "x2", "x3", "x4"],
              "acc": np.array([True, False, True, True, False])}
    conflict = (["H0", "H1", "H2", "H3"], ["X0", "X1", "X2", "X3"])  # shorter than the weak set
    keep = np.array([False, True, False, True, True])
    chosen, rejected, acc = student_pairs(labels, keep, conflict, implicit=True)
    # kept weak pairs 1, 3, 4, then the helpful pairs at those indices that exist (1, 3)
    assert chosen == ["h1", "h3", "h4", "H1", "H3"] and rejected == ["x1", "x3", "x4", "X1", "X3"]
    np.testing.assert_array_equal(acc, [False, True, False, True, True])
    chosen, _, acc = student_pairs(labels, keep, conflict, implicit=False)
    assert chosen == ["h1", "h3", "h4"] and len(acc) == 3


def test_init_of_abstract_params_mirrors_the_allocated_state():
    """`Trainer.init` of ShapeDtypeStructs (what `lower` reads for memory figures) gives the tree, shapes, dtypes and
    shardings that the allocated state of the same params has, here on an 8-device fsdp x tensor mesh."""
    from w2s_jax.models.build import random_config
    from w2s_jax.models.convert import init_params
    from w2s_jax.models.sharding import make_mesh

    mesh = make_mesh(1, 4, 2)
    cfg = random_config({"family": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                         "intermediate_size": 128}, 256, 64)
    params = init_params(cfg, mesh, seed=0)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
    trainer, spec = Trainer(mesh, (16,)), TrainSpec(1e-3, 8, 1, "cosine_to_zero", 0)
    (_, real), (_, fake) = trainer.init(params, spec, 10), trainer.init(abstract, spec, 10)
    assert jax.tree.structure(real) == jax.tree.structure(fake)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(fake))
    sharded = 0
    for r, f in zip(jax.tree.leaves(real), jax.tree.leaves(fake), strict=True):
        assert (r.shape, r.dtype) == (f.shape, f.dtype)
        assert r.sharding.is_equivalent_to(f.sharding, r.ndim)
        sharded += not r.sharding.is_fully_replicated
    assert sharded >= 3 * 10  # params, mu and nu of the sharded weights, not all replicated
