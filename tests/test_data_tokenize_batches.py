"""Tokenization (left truncation, prompt/response masks, cache) and batching (buckets, iterators)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from w2s_jax.data import batches as batches_lib
from w2s_jax.data import tokenize as tokenize_lib
from w2s_jax.data.batches import PairDataset, SequenceDataset

CORPUS = [
    "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, then knead.",
    "\n\nHuman: How can I hurt someone?\n\nAssistant: I can't help with that, but I can talk about it.",
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital of France.",
]


def tiny_tokenizer(vocab_size: int = 300, with_bos: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in memory (no hub); `with_bos` mimics OPT, which prepends a BOS to every encode."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS * 3, trainer)
    if with_bos:
        backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tokenizer():
    return tiny_tokenizer(with_bos=True)


# ------------------------------------------------------------------------------------------------ tokenize


def test_left_truncation_keeps_the_end_and_restores_the_tokenizer(tokenizer):
    full = tokenizer(CORPUS[0])["input_ids"]
    assert len(full) > 8
    (ids,) = tokenize_lib.tokenize_texts([CORPUS[0]], tokenizer, max_len=8)
    assert ids.dtype == np.int32 and ids.tolist() == full[-8:]
    assert tokenizer.truncation_side == "right"
    batched = tokenize_lib.tokenize_texts(CORPUS, tokenizer, max_len=12)
    assert [x.tolist() for x in batched] == [tokenizer(t)["input_ids"][-12:] for t in CORPUS]
    assert [x.tolist() for x in tokenize_lib.tokenize_texts(CORPUS, tokenizer, 10_000)] == \
        [tokenizer(t)["input_ids"] for t in CORPUS]


def test_left_truncation_matches_original_call_with_a_bos_tokenizer(bos_tokenizer):
    (ids,) = tokenize_lib.tokenize_texts([CORPUS[1]], bos_tokenizer, max_len=8)
    bos_tokenizer.truncation_side = "left"  # what the original does, permanently
    try:
        expected = bos_tokenizer(CORPUS[1], truncation=True, max_length=8)["input_ids"]
    finally:
        bos_tokenizer.truncation_side = "right"
    assert ids.tolist() == expected and expected[0] == 1 and len(expected) == 8


def test_split_prompt_response_uses_the_last_assistant_marker():
    text = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d"
    assert tokenize_lib.split_prompt_response(text) == ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", " d")
    with pytest.raises(ValueError, match="no '\\\\n\\\\nAssistant:'"):
        tokenize_lib.split_prompt_response("\n\nHuman: only a question")


@pytest.mark.parametrize(
    "prompt, response, max_len, expected_ids, expected_mask",
    [
        ([1, 2, 3], [4, 5], 10, [1, 2, 3, 4, 5], [0, 0, 0, 1, 1]),  # fits
        ([1, 2, 3], [4, 5], 5, [1, 2, 3, 4, 5], [0, 0, 0, 1, 1]),  # exactly max_len still fits
        ([1, 2, 3, 4], [5, 6], 4, [3, 4, 5, 6], [0, 0, 1, 1]),  # too long, response fits: cut the prompt's start
        ([1, 2], [3, 4, 5, 6], 3, [4, 5, 6], [1, 1, 1]),  # response alone too long: all ones
        ([1, 2], [3, 4, 5], 3, [3, 4, 5], [1, 1, 1]),  # response exactly max_len: the all-ones branch
    ],
)
def test_response_loss_mask_three_branches(prompt, response, max_len, expected_ids, expected_mask):
    ids, mask = tokenize_lib.response_loss_mask(prompt, response, max_len)
    assert ids.tolist() == expected_ids and mask.tolist() == expected_mask
    assert ids.dtype == mask.dtype == np.int32


def test_prompt_response_tokenization_encodes_sides_separately(tokenizer, bos_tokenizer):
    prompt, response = tokenize_lib.split_prompt_response(CORPUS[2])
    (ids,), (mask,) = tokenize_lib.tokenize_prompt_response([CORPUS[2]], tokenizer, max_len=512)
    p, q = tokenizer.encode(prompt), tokenizer.encode(response)
    assert ids.tolist() == p + q and mask.tolist() == [0] * len(p) + [1] * len(q)
    # OPT-like tokenizer: a BOS starts the response too and counts as a response token (the original's quirk)
    (ids,), (mask,) = tokenize_lib.tokenize_prompt_response([CORPUS[2]], bos_tokenizer, max_len=512)
    q_bos = bos_tokenizer.encode(response)
    assert q_bos[0] == 1 and ids.tolist()[-len(q_bos):] == q_bos and mask.sum() == len(q_bos)


def test_tokenizer_fingerprint_is_stable_and_distinguishes_tokenizers(tokenizer):
    before = tokenize_lib.tokenizer_fingerprint(tokenizer)
    tokenize_lib.tokenize_texts(CORPUS, tokenizer, max_len=7)  # leaves truncation state in the backend
    assert tokenize_lib.tokenizer_fingerprint(tokenizer) == before
    assert tokenize_lib.tokenizer_fingerprint(tiny_tokenizer()) == before  # same definition, other object
    assert tokenize_lib.tokenizer_fingerprint(tiny_tokenizer(vocab_size=290)) != before
    assert tokenize_lib.tokenizer_fingerprint(tiny_tokenizer(with_bos=True)) != before


def test_cache_hit_miss_and_invalidation(tmp_path, tokenizer, monkeypatch):
    first = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, cache_dir=tmp_path, name="test_a")
    (cache_file,) = os.listdir(tmp_path)  # no temp file left behind
    assert cache_file.startswith("test_a-full-") and cache_file.endswith(".npz")

    def must_not_tokenize(*args, **kwargs):
        raise AssertionError("cache hit expected")

    with monkeypatch.context() as patch:
        patch.setattr(tokenize_lib, "tokenize_texts", must_not_tokenize)
        hit = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, cache_dir=tmp_path, name="test_a")
    assert [x.tolist() for x in hit.ids] == [x.tolist() for x in first.ids] and hit.loss_mask is None

    tokenize_lib.tokenize_cached(CORPUS, tokenizer, 17, cache_dir=tmp_path, name="test_a")  # other max_len
    tokenize_lib.tokenize_cached(CORPUS[:2], tokenizer, 16, cache_dir=tmp_path, name="test_a")  # other data
    po = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, mode="prompt_response", cache_dir=tmp_path, name="test_a")
    assert len(os.listdir(tmp_path)) == 4
    po_hit = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, mode="prompt_response", cache_dir=tmp_path,
                                          name="test_a")
    assert [m.tolist() for m in po_hit.loss_mask] == [m.tolist() for m in po.loss_mask]


def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, tokenizer):
    expected = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, cache_dir=tmp_path)
    (cache_file,) = os.listdir(tmp_path)
    (tmp_path / cache_file).write_bytes(b"not an npz file")
    with pytest.warns(tokenize_lib.TokenCacheWarning, match="rebuilding"):
        rebuilt = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 16, cache_dir=tmp_path)
    assert [x.tolist() for x in rebuilt.ids] == [x.tolist() for x in expected.ids]
    key = tokenize_lib.cache_key(tokenizer, 16, "full", CORPUS)
    assert len(tokenize_lib.load_tokenized(str(tmp_path / cache_file), key, len(CORPUS))) == len(CORPUS)
    with pytest.raises(ValueError, match="key mismatch"):
        tokenize_lib.load_tokenized(str(tmp_path / cache_file), "other-key", len(CORPUS))


# ------------------------------------------------------------------------------------------------ batches


def ragged(lengths: list[int], start: int = 1) -> list[np.ndarray]:
    return [np.arange(start, start + n, dtype=np.int32) for n in lengths]


def test_bucket_lengths_are_a_small_fixed_set():
    assert batches_lib.bucket_lengths(512) == (64, 128, 192, 256, 320, 384, 448, 512)
    assert batches_lib.bucket_lengths(2048, 64, 8) == (64, 128, 192, 320, 512, 768, 1280, 2048)
    assert batches_lib.bucket_lengths(100) == (64, 100)
    assert batches_lib.bucket_lengths(30) == (30,)
    assert batches_lib.bucket_for(65, (64, 128)) == 128 and batches_lib.bucket_for(64, (64, 128)) == 64
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        batches_lib.bucket_for(129, (64, 128))


def test_pair_batch_pads_both_sides_to_one_bucket():
    dataset = PairDataset(ragged([3, 5, 2]), ragged([9, 1, 4], start=10),
                          extras={"labels": np.array([0.1, 0.9, 0.5], np.float32), "gt": np.array([0, 1, 1])})
    batch = batches_lib.make_batch(dataset, np.array([0, 1, 2]), np.ones(3, bool), buckets=(4, 8, 16))
    assert batch["ids_a"].shape == batch["ids_b"].shape == (3, 16)  # longest is B[0] = 9 -> 16
    assert batch["ids_a"].dtype == batch["mask_a"].dtype == np.int32
    assert batch["ids_a"][0].tolist() == [1, 2, 3] + [0] * 13
    assert batch["mask_b"].sum(axis=1).tolist() == [9, 1, 4] and batch["mask_a"][1].tolist()[:6] == [1] * 5 + [0]
    assert batch["labels"].dtype == np.float32 and batch["gt"].tolist() == [0, 1, 1]
    assert "loss_mask_a" not in batch and batch["index"].tolist() == [0, 1, 2]


def test_sequence_batch_with_loss_mask():
    ids = ragged([3, 6])
    masks = [np.array([0, 1, 1], np.int32), np.array([0, 0, 0, 1, 1, 1], np.int32)]
    batch = batches_lib.make_batch(SequenceDataset(ids, masks), np.array([1, 0]), np.ones(2, bool), buckets=(8,))
    assert set(batch) == {"ids", "mask", "loss_mask", "index", "valid"}
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]


def test_dataset_validation_errors():
    with pytest.raises(ValueError, match="ids_b has 1 sequences, expected 2"):
        PairDataset(ragged([1, 2]), ragged([1]))
    with pytest.raises(ValueError, match="extra array 'labels'"):
        PairDataset(ragged([1, 2]), ragged([1, 2]), extras={"labels": np.zeros(3)})
    with pytest.raises(ValueError, match="clashes"):
        SequenceDataset(ragged([1]), extras={"mask": np.zeros(1)})
    with pytest.raises(ValueError, match="both sides"):
        PairDataset(ragged([1]), ragged([1]), loss_mask_a=[np.ones(1)])


def test_eval_iterator_covers_every_example_exactly_once():
    n, batch_size = 10, 4
    dataset = PairDataset(ragged([(i % 7) + 1 for i in range(n)]), ragged([2] * n),
                          extras={"labels": np.arange(n, dtype=np.float32)})
    batches = list(batches_lib.eval_batches(dataset, batch_size, buckets=batches_lib.bucket_lengths(8, 4)))
    assert len(batches) == batches_lib.num_eval_batches(n, batch_size) == 3
    assert all(b["ids_a"].shape[0] == batch_size for b in batches)
    assert [int(b["valid"].sum()) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b["index"][b["valid"]] for b in batches])
    assert seen.tolist() == list(range(n))
    assert np.concatenate([b["labels"][b["valid"]] for b in batches]).tolist() == list(range(n))
    assert batches[-1]["index"].tolist() == [8, 9, -1, -1]


def test_train_iterator_drops_leftover_and_straddles_epochs():
    n, batch_size, seed = 10, 4, 3
    dataset = SequenceDataset(ragged([5] * n), extras={"example": np.arange(n)})
    one_epoch = list(batches_lib.train_batches(dataset, batch_size, epochs=1, seed=seed, buckets=(8,)))
    permutation = np.random.default_rng(seed).permutation(n)
    assert len(one_epoch) == batches_lib.num_train_steps(n, 1, batch_size) == 2
    assert np.concatenate([b["example"] for b in one_epoch]).tolist() == permutation[:8].tolist()

    three_epochs = list(batches_lib.train_batches(dataset, batch_size, epochs=3, seed=seed, buckets=(8,)))
    assert len(three_epochs) == 30 // 4 == 7
    assert three_epochs[2]["example"].tolist() == permutation[8:].tolist() + permutation[:2].tolist()
    chained = np.concatenate([b["example"] for b in three_epochs])
    assert chained.tolist() == np.tile(permutation, 3)[:28].tolist()
    assert all(b["valid"].all() and b["ids"].shape == (4, 8) for b in three_epochs)

    resumed = list(batches_lib.train_batches(dataset, batch_size, epochs=3, seed=seed, buckets=(8,), start_step=5))
    assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in three_epochs[5:]]


def test_train_order_matches_hf_shuffle_and_can_reshuffle():
    import datasets

    hf_order = datasets.Dataset.from_dict({"i": list(range(50))}).shuffle(seed=11)["i"]
    assert batches_lib.train_order(50, 1, seed=11).tolist() == list(hf_order)
    reshuffled = batches_lib.train_order(50, 2, seed=11, reshuffle_each_epoch=True)
    assert sorted(reshuffled[50:].tolist()) == list(range(50)) and reshuffled[50:].tolist() != list(hf_order)


def test_tokenized_pairs_to_batches_end_to_end(tokenizer):
    side_a = tokenize_lib.tokenize_cached(CORPUS, tokenizer, 64, mode="prompt_response")
    side_b = tokenize_lib.tokenize_cached(CORPUS[::-1], tokenizer, 64, mode="prompt_response")
    dataset = batches_lib.pair_dataset_from_tokenized(side_a, side_b, labels=np.ones(3, np.float32))
    (batch,) = batches_lib.eval_batches(dataset, 4, buckets=batches_lib.bucket_lengths(64, 16))
    assert batch["ids_a"].shape == batch["loss_mask_b"].shape and batch["ids_a"].shape[1] in (16, 32, 48, 64)
    assert ((batch["loss_mask_a"] == 1) <= (batch["mask_a"] == 1)).all()
