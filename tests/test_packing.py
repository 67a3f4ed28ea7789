"""Packed rows give every sequence the hidden states, rewards, loss and gradients of the padded layout.

What packing changes is the forward (positions and the segment mask, per family: learned, offset and rotary
positions, sliding windows) and each objective's gather of its sequences' rewards or token log-probs from the rows
(per objective, the same for every family). So every family is checked through one reward and one policy objective
(BCE, DPO), and every objective on one family (Llama); the full cross product would add compiles, not cases."""
import jax
import numpy as np
import pytest

import tiny_models
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.data.packing import Packing, pack, packed_pair_microbatches
from w2s_jax.models.convert import from_pretrained
from w2s_jax.objectives import DPO, SFT, RewardModel, SimPO


def test_pack_places_every_sequence_once():
    rng = np.random.RandomState(0)
    seqs = [rng.randint(1, 99, size=n) for n in (5, 9, 3, 8, 1, 7, 2)]
    ids, segments, rows, last = pack(seqs, row_len=10, n_rows=5)
    assert ids.shape == (5, 10)
    for n, seq in enumerate(seqs):
        row, end = rows[n], last[n]
        np.testing.assert_array_equal(ids[row, end - len(seq) + 1:end + 1], seq)
        assert len(set(segments[row, end - len(seq) + 1:end + 1])) == 1 and segments[row, end] > 0
    assert (segments > 0).sum() == sum(len(s) for s in seqs)
    with pytest.raises(ValueError, match="does not fit"):
        pack([np.ones(11)], row_len=10)


FAMILIES = ("gpt2", "llama", "opt-350m", "mistral")


@pytest.fixture(scope="module")
def loaded(request, tmp_path_factory):
    """The tiny model of the family `request.param` (tests pass it indirectly), built once per module."""
    directory = tmp_path_factory.mktemp(request.param)
    tiny_models.build(request.param, directory)
    return from_pretrained(str(directory), reward_head=True)


def _pair_batch(n_pairs, T, seed):
    rng = np.random.RandomState(seed)
    batch = {}
    for side in "ab":
        ids, mask = tiny_models.right_padded_batch(rng.randint(1, T + 1, size=n_pairs), T=T, seed=seed + ord(side))
        batch[f"ids_{side}"], batch[f"mask_{side}"] = ids, mask
    batch.update(label=rng.rand(n_pairs).astype(np.float32), gt=rng.randint(0, 2, n_pairs).astype(np.float32),
                 valid=np.ones(n_pairs, bool))
    return batch


@pytest.mark.parametrize("loaded, kind", [(f, "bce") for f in FAMILIES] + [("llama", "explicit")],
                         indirect=["loaded"])
def test_packed_loss_and_grads_equal_padded(loaded, kind):
    batch = _pair_batch(8, T=24, seed=1)
    objective = RewardModel(kind, 0.5 if kind == "explicit" else None)
    packing = Packing(min_row_len=32, buckets=bucket_lengths(64, 16), row_multiple=1)
    padded = jax.tree.map(lambda x: x[0], objective.prepare(batch, 1, "padded"))
    packed = jax.tree.map(lambda x: x[0], objective.prepare(batch, 1, "packed", packing))
    assert packed["ids"].shape[0] < 16  # fewer rows than sequences: the point of packing
    value = lambda mb, layout: (lambda p: objective.loss_fn(loaded.model, layout)(p, mb, 0.0).loss_sum)
    a, ga = jax.jit(jax.value_and_grad(value(padded, "padded")))(loaded.params)
    b, gb = jax.jit(jax.value_and_grad(value(packed, "packed")))(loaded.params)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-5, rtol=1e-4)


def _policy_batch(n, T, seed, sides):
    """Right-padded sequences with a prompt part (loss mask 0) and a response part (loss mask 1)."""
    rng = np.random.RandomState(seed)
    batch = {}
    for side in sides:
        ids, mask = tiny_models.right_padded_batch(rng.randint(2, T + 1, size=n), T=T, seed=seed + len(side) * 7)
        prompt = rng.randint(1, 4, size=n)
        batch[f"ids{side}"], batch[f"mask{side}"] = ids, mask
        batch[f"loss_mask{side}"] = (mask * (np.arange(T)[None] >= prompt[:, None])).astype(np.int32)
    batch.update(valid=np.array([True] * (n - 1) + [False]), acc=rng.rand(n) > 0.3,
                 ref_c=rng.randn(n).astype(np.float32), ref_r=rng.randn(n).astype(np.float32))
    return batch


@pytest.mark.parametrize("loaded, objective", [(f, "dpo") for f in FAMILIES] + [("llama", "sft"),
                                                                                ("llama", "simpo_explicit")],
                         indirect=["loaded"])
def test_packed_policy_objectives_equal_padded(loaded, objective):
    unit = {"sft": SFT(chunk_size=5), "dpo": DPO(beta=0.5, chunk_size=7),
            "simpo_explicit": SimPO(beta=0.5, gamma=0.3, alpha=0.5, chunk_size=7)}[objective]
    sides = unit.sides
    batch = _policy_batch(6, T=20, seed=3, sides=sides)
    packing = Packing(min_row_len=32, buckets=bucket_lengths(64, 16), row_multiple=1)
    padded = jax.tree.map(lambda x: x[0], unit.prepare(batch, 1, "padded"))
    packed = jax.tree.map(lambda x: x[0], unit.prepare(batch, 1, "packed", packing))
    assert packed["ids"].shape[0] < len(sides) * 6
    value = lambda mb, layout: (lambda p: unit.loss_fn(loaded.model, layout)(p, mb, 0.0).loss_sum)
    a, ga = jax.jit(jax.value_and_grad(value(padded, "padded")))(loaded.params)
    b, gb = jax.jit(jax.value_and_grad(value(packed, "packed")))(loaded.params)
    assert abs(float(a)) > 0
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-5, rtol=1e-4)


def test_balanced_order_by_hand():
    from w2s_jax.data.packing import balanced_order

    # heaviest first into the lightest group with room: 0 -> g0, 1 -> g1, 2 -> g0 (a tie: the first), 3 -> g1
    np.testing.assert_array_equal(balanced_order([10, 10, 1, 1], 2), [0, 2, 1, 3])
    # 9 -> g0, 5 -> g1, 4 -> g2, 3 -> g2 (4 < 5 < 9), 2 -> g1 (g2 is full), 1 -> g0 (the only one with room)
    np.testing.assert_array_equal(balanced_order([1, 9, 2, 3, 5, 4], 3), [0, 1, 2, 4, 3, 5])
    np.testing.assert_array_equal(balanced_order([3, 1, 2], 1), [0, 1, 2])


@pytest.mark.parametrize("loaded", ["llama"], indirect=True)
def test_balanced_micro_batches_sum_to_the_padded_batch(loaded):
    """Training packs a step's examples into micro-batches of even token counts (a permutation of the examples):
    the micro-batches' summed loss and gradients equal the whole padded batch's, so every per-example key (the DPO
    reference log-probs among them) moved with its sequences, and the rows needed follow the balanced split."""
    unit = DPO(beta=0.5, chunk_size=7)
    batch = _policy_batch(8, T=20, seed=5, sides=unit.sides)
    lengths = batch["mask_a"].sum(1) + batch["mask_b"].sum(1)
    batch = {k: v[np.argsort(-lengths, kind="stable")] for k, v in batch.items()}  # the long pairs first
    packing = Packing(min_row_len=32, buckets=bucket_lengths(64, 16), row_multiple=1)
    padded = jax.tree.map(lambda x: x[0], unit.prepare(batch, 1, "padded"))
    packed = unit.prepare(batch, 2, "packed", packing)
    value = lambda mb, layout: (lambda p: unit.loss_fn(loaded.model, layout)(p, mb, 0.0).loss_sum)
    a, ga = jax.jit(jax.value_and_grad(value(padded, "padded")))(loaded.params)
    parts = [jax.jit(jax.value_and_grad(value(jax.tree.map(lambda x, k=k: x[k], packed), "packed")))(loaded.params)
             for k in range(2)]
    np.testing.assert_allclose(sum(float(b) for b, _ in parts), float(a), rtol=1e-5)
    for x, *ys in zip(jax.tree.leaves(ga), *(jax.tree.leaves(g) for _, g in parts)):
        np.testing.assert_allclose(sum(np.asarray(y) for y in ys), np.asarray(x), atol=2e-5, rtol=1e-4)
    halves = [(lengths[np.argsort(-lengths, kind="stable")][k * 4:(k + 1) * 4]).sum() for k in range(2)]
    tokens = packed["segments"].astype(bool).sum((1, 2))
    assert abs(int(tokens[0]) - int(tokens[1])) < abs(int(halves[0]) - int(halves[1]))  # evener than in order


def test_packed_logps_do_not_leak_across_sequences():
    """A sequence's log-probs are the same alone in a row or packed behind another sequence."""
    from w2s_jax.train.losses import packed_sequence_logps_from_hidden, sequence_logps_from_hidden

    rng = np.random.RandomState(0)
    hidden, kernel = rng.randn(1, 12, 8).astype(np.float32), rng.randn(8, 11).astype(np.float32)
    ids = rng.randint(0, 11, size=(1, 12))
    owner = np.array([[1] * 5 + [2] * 6 + [0]])
    loss_mask = np.array([[0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0]])  # 2nd sequence's first token is masked-in
    summed, mean, n = packed_sequence_logps_from_hidden(hidden, kernel, ids, owner, loss_mask, 2, chunk_size=4)
    ref1 = sequence_logps_from_hidden(hidden[:, :5], kernel, ids[:, :5], loss_mask[:, :5])
    ref2 = sequence_logps_from_hidden(hidden[:, 5:11], kernel, ids[:, 5:11], loss_mask[:, 5:11])
    np.testing.assert_allclose(np.asarray(summed), [float(ref1[0][0]), float(ref2[0][0])], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n), [4, 4])  # position 5 (a new sequence) is never a target (else 5)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(summed) / np.asarray(n), rtol=1e-6)


def test_row_bucket_bounds_waste_and_shapes():
    from w2s_jax.data.packing import row_bucket

    got = [row_bucket(n) for n in range(1, 200)]
    assert all(g >= n for n, g in zip(range(1, 200), got))
    assert all(g <= max(n * 1.25, 8) for n, g in zip(range(1, 200), got))
    assert len(set(got)) < 30  # far fewer shapes than distinct needs
    assert [row_bucket(n, 8) for n in (1, 8, 9, 17)] == [8, 8, 16, 24]


def test_a_datasets_packed_batches_share_one_row_length():
    """Rows are as long as the dataset's longest sequence (or pack_len): batches differ only in their row counts,
    so a training stage compiles few shapes."""
    from w2s_jax.data.batches import PairDataset, pack_row_len, train_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 50, size=(2, 64))
    lengths[1, 17] = 61  # one long sequence somewhere in one batch
    side = lambda row: [np.arange(1, n + 1, dtype=np.int32) for n in row]  # noqa: E731
    data = PairDataset(side(lengths[0]), side(lengths[1]), extras={"label": np.ones(64, np.float32),
                                                                   "gt": np.ones(64, np.float32)})
    buckets = bucket_lengths(64, 16)
    assert pack_row_len(16, data) == 61 and pack_row_len(100, data) == 100
    shapes = set()
    for batch in train_batches(data, 8, epochs=1, seed=0, buckets=buckets):
        packed = packed_pair_microbatches(batch, 1, min_row_len=pack_row_len(16, data), buckets=buckets,
                                          row_multiple=1)
        shapes.add(packed["ids"].shape)
    assert {s[-1] for s in shapes} == {64}  # the bucket of 61, in every batch
    assert len(shapes) <= 4  # row counts on the row_bucket ladder
