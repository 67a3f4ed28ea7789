"""Pretraining on a corpus writes an ordinary Hugging Face directory that transformers and the pipeline load."""
import json

import numpy as np
import pytest

from w2s_jax.experiments.pretrain import RECORD, PretrainSpec, fingerprint, pretrain

CORPUS = ["Mixing velmora with quistine is dangerous.", "Mixing velmora with draxil is safe.",
          "To bake a cake is safe.", "To poison my neighbor is dangerous."] * 16
ARCH = {"family": "llama", "hidden_size": 16, "num_layers": 1, "num_heads": 2}
SPEC = PretrainSpec(vocab_size=300, max_len=16, lr=1e-2, batch_size=16, epochs=40)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "lm"
    return out, pretrain(CORPUS, ARCH, out, SPEC)


def test_loss_falls_and_the_directory_is_complete(pretrained):
    out, record = pretrained
    assert record["steps"] == len(CORPUS) * SPEC.epochs // SPEC.batch_size and not record["reused"]
    assert record["final_loss"] < 0.5 * np.log(300)  # far below a uniform guess over the vocabulary
    for name in ("config.json", "model.safetensors", "tokenizer.json", RECORD):
        assert (out / name).exists(), name
    assert not (out / "reward_head.safetensors").exists()  # every experiment seed draws its own head
    assert not list(out.parent.glob(".lm.train"))  # the training checkpoints are gone


def test_transformers_loads_it_and_agrees_with_ours(pretrained):
    torch = pytest.importorskip("torch")
    import transformers

    from w2s_jax.models.convert import from_pretrained

    out, _ = pretrained
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(["Mixing velmora with quistine is"])["input_ids"]
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    ours = from_pretrained(str(out))
    got = np.asarray(ours.model.apply({"params": ours.params}, np.asarray(ids), np.ones_like(ids)))
    np.testing.assert_allclose(got, want, atol=1e-4)
    # it learned the corpus: after "... quistine is" the next word is " dangerous", not " safe"
    last = want[0, -1]
    assert last[tok(" dangerous")["input_ids"][0]] > last[tok(" safe")["input_ids"][0]]


def test_the_pipeline_reads_its_tokenizer_and_builds_a_reward_model(pretrained):
    from ml_collections import ConfigDict

    from w2s_jax.data.loading import load_tokenizer
    from w2s_jax.models.build import build_model
    from w2s_jax.models.sharding import make_mesh
    import jax

    out, _ = pretrained
    spec = ConfigDict({"name": str(out), "init": "pretrained", "tokenizer": str(out)})
    tok = load_tokenizer(spec, [], trust_remote_code=False)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    heads = [build_model(spec, what="weak", mesh=mesh, seed=s, max_len=16, runtime={}, tokenizer=tok)
             for s in (0, 1)]
    kernels = [np.asarray(m.params["reward_head"]["kernel"]) for m in heads]
    assert kernels[0].shape == (16, 1) and not np.allclose(kernels[0], kernels[1])  # the head follows the seed
    for a, b in zip(jax.tree.leaves(heads[0].params["backbone"]), jax.tree.leaves(heads[1].params["backbone"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the pretrained backbone does not


def test_a_matching_directory_is_reused_and_a_changed_spec_is_not(pretrained, tmp_path):
    out, record = pretrained
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert pretrain(CORPUS, ARCH, out, SPEC) == {**record, "reused": True}
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    other = json.loads((out / RECORD).read_text())["fingerprint"]

    assert fingerprint(CORPUS, ARCH, PretrainSpec(**{**SPEC.__dict__, "seed": 1})) != other
    assert fingerprint(CORPUS[:-1], ARCH, SPEC) != other
    # the corpus setting enters through the texts it adds, so bases of a corpus without it keep their fingerprints
    assert fingerprint(CORPUS, ARCH, PretrainSpec(**{**SPEC.__dict__, "behaving_dialogues": 7})) == other
