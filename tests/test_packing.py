"""Packed rows give every sequence the hidden states, rewards, loss and gradients of the padded layout."""
import jax
import numpy as np
import pytest

import tiny_models
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.data.packing import pack, packed_pair_microbatches
from w2s_jax.models.convert import from_pretrained
from w2s_jax.pipeline import LOSS_KEYS, rm_loss
from w2s_jax.train.step import to_microbatches


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


@pytest.fixture(scope="module", params=["gpt2", "llama", "opt-350m", "mistral"])
def loaded(request, tmp_path_factory):
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


@pytest.mark.parametrize("kind", ["bce", "explicit"])
def test_packed_loss_and_grads_equal_padded(loaded, kind):
    batch = _pair_batch(8, T=24, seed=1)
    loss_fn = rm_loss(loaded.model, kind, alpha=0.5)
    padded = jax.tree.map(lambda x: x[0], to_microbatches(batch, 1, LOSS_KEYS))
    packed = jax.tree.map(lambda x: x[0], packed_pair_microbatches(batch, 1, min_row_len=32,
                                                                   buckets=bucket_lengths(64, 16), row_multiple=1))
    assert packed["ids"].shape[0] < 16  # fewer rows than sequences: the point of packing
    value = lambda mb: (lambda p: loss_fn(p, mb, 0.0).loss_sum)
    a, ga = jax.value_and_grad(value(padded))(loaded.params)
    b, gb = jax.value_and_grad(value(packed))(loaded.params)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-5, rtol=1e-4)
