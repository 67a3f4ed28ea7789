"""Every family and variant against `transformers` PyTorch: logits, reward head, export round trip."""
import numpy as np
import pytest
import torch
import transformers

import tiny_models
from w2s_jax.models.convert import from_pretrained, save_pretrained

VARIANTS = sorted(tiny_models.VARIANTS)


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    torch_model = tiny_models.build(request.param, directory)
    return request.param, directory, torch_model, from_pretrained(str(directory), reward_head=True)


def _real(x, mask):
    return x * mask[..., None]


def test_logits_match_transformers_on_right_padded_batch(loaded):
    variant, _, torch_model, ours = loaded
    ids, mask = tiny_models.right_padded_batch([16, 11, 3, 1], T=16)
    ref = tiny_models.torch_logits(torch_model, ids, mask)
    out = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    assert out.shape == ref.shape
    delta = np.abs(_real(out - ref, mask)).max()
    assert delta <= 1e-4, f"{variant}: max |delta logits| = {delta}"


def test_reward_independent_of_padding_length(loaded):
    _, _, _, ours = loaded
    ids, mask = tiny_models.right_padded_batch([9, 4, 12], T=12)
    apply = lambda i, m: np.asarray(ours.model.apply({"params": ours.params}, i, m, method=ours.model.reward))
    short = apply(ids, mask)
    long = apply(np.pad(ids, ((0, 0), (0, 20))), np.pad(mask, ((0, 0), (0, 20))))
    assert short.shape == (3,)
    np.testing.assert_allclose(short, long, atol=1e-5, rtol=0)
    # and it reads the last real token: changing a padding token never matters, the last real one does
    poked = ids.copy(); poked[1, 4] = 7
    np.testing.assert_allclose(apply(poked, mask), short, atol=1e-6)
    poked[1, 3] = (ids[1, 3] % 250) + 1
    assert abs(apply(poked, mask)[1] - short[1]) > 1e-6


def test_reward_head_equals_torch_linear_on_last_hidden(loaded):
    variant, _, torch_model, ours = loaded
    ids, mask = tiny_models.right_padded_batch([7, 5], T=8)
    with torch.no_grad():
        out = torch_model(input_ids=torch.tensor(ids, dtype=torch.long),
                          attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
    last = out.hidden_states[-1].numpy()[np.arange(2), mask.sum(-1) - 1]
    kernel = np.asarray(ours.params["reward_head"]["kernel"])
    expected = last @ kernel[:, 0]
    got = np.asarray(ours.model.apply({"params": ours.params}, ids, mask, method=ours.model.reward))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_round_trip_loads_in_transformers(loaded, tmp_path):
    variant, _, torch_model, ours = loaded
    save_pretrained(tmp_path, ours.config, ours.params)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids, mask = tiny_models.right_padded_batch([10, 6], T=10, seed=3)
    ref = tiny_models.torch_logits(torch_model, ids, mask)
    again = tiny_models.torch_logits(reloaded, ids, mask)
    assert np.abs(_real(again - ref, mask)).max() <= 1e-5
    # every original tensor came back identical
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], atol=0, rtol=0, msg=f"{variant}: {name}")
    # and the reward head travels beside the weights
    back = from_pretrained(str(tmp_path), reward_head=True)
    np.testing.assert_array_equal(np.asarray(back.params["reward_head"]["kernel"]),
                                  np.asarray(ours.params["reward_head"]["kernel"]))


def test_sharded_safetensors_with_index_load(loaded, tmp_path):
    variant, _, torch_model, ours = loaded
    save_pretrained(tmp_path, ours.config, ours.params, max_shard_bytes=20_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    again = from_pretrained(str(tmp_path))
    ids, mask = tiny_models.right_padded_batch([5, 8], T=8, seed=4)
    a = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    b = np.asarray(again.model.apply({"params": again.params}, ids, mask))
    np.testing.assert_array_equal(a, b)


def test_packed_rows_match_transformers_per_sequence(loaded):
    """Sequences packed into shared rows get the logits transformers gives each sequence alone."""
    from w2s_jax.data.packing import pack

    variant, _, torch_model, ours = loaded
    ids, mask = tiny_models.right_padded_batch([9, 4, 12, 2, 7], T=12, seed=5)
    seqs = [row[:n] for row, n in zip(ids, mask.sum(-1))]
    p_ids, segments, rows, last = pack(seqs, row_len=16, n_rows=3)
    hidden = ours.model.apply({"params": ours.params}, p_ids, segments, method=ours.model.packed_hidden)
    logits = np.asarray(ours.model.apply({"params": ours.params}, hidden, method=ours.model.logits))
    ref = tiny_models.torch_logits(torch_model, ids, mask)
    for n, seq in enumerate(seqs):
        got = logits[rows[n], last[n] - len(seq) + 1:last[n] + 1]
        delta = np.abs(got - ref[n, :len(seq)]).max()
        assert delta <= 1e-4, f"{variant}: sequence {n}: max |delta logits| = {delta}"
