"""A LoRA DPO run end to end (tiny random-init models on the demo world): the run trains adapters only, its
checkpoints restore onto the base rebuilt from its source, and the exports (merged; a `peft` adapter on the
base) give in `transformers` the margins the run itself wrote to results.json."""
import json

import numpy as np
import pytest
import torch
import transformers

from shared_runs import margins, shared_run, tiny_config
from w2s_jax import export
from w2s_jax.api import load_trained
from w2s_jax.data.loading import load_splits
from w2s_jax.data.tokenize import tokenize_prompt_response
from w2s_jax.models.convert import save_pretrained
from w2s_jax.models.lora import LORA_KEY


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    c = tiny_config("dpo_helpful")
    c.students = "no_conflict"
    c.po.update(lr=1e-2)
    c.model.lora.update(rank=4, alpha=8.0)
    workdir, _, results = shared_run(tmp_path_factory, c)
    return workdir, results, load_splits(c.data).test


def hf_logps(model, tok, texts):
    ids, masks = tokenize_prompt_response(texts, tok, 64)
    out = []
    for x, m in zip(ids, masks):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(x[None], dtype=torch.long)).logits[0].double()
        lp = torch.log_softmax(logits, -1)[:-1].gather(-1, torch.tensor(x[1:, None], dtype=torch.long))[:, 0]
        out.append(float((lp.numpy() * m[1:]).sum()))
    return np.asarray(out)


def test_lora_dpo_run_restores_and_exports_merged_and_as_peft_adapter(lora_run, tmp_path):
    peft = pytest.importorskip("peft")
    workdir, results, test = lora_run
    policy = load_trained(workdir, "student_no_conflict")
    assert policy.spec["lora"] == {"rank": 4, "alpha": 8.0, "targets": policy.spec["lora"]["targets"]}
    b = np.asarray(next(iter(policy.params[LORA_KEY].values()))["b"])
    assert np.abs(b).max() > 0  # the adapters were trained and restored (fresh ones start at zero)
    chosen, rejected = [p.chosen for p in test], [p.rejected for p in test]
    np.testing.assert_allclose(policy.score_pairs(chosen, rejected), margins(results, "student_no_conflict"),
                               atol=1e-3, rtol=1e-5)
    ours = policy.logps(chosen[:6])[0]

    merged = tmp_path / "merged"
    assert export.main(["--workdir", str(workdir), "--role", "student_no_conflict", "--out", str(merged)]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(merged)
    hf = transformers.AutoModelForCausalLM.from_pretrained(merged).eval()
    np.testing.assert_allclose(hf_logps(hf, tok, chosen[:6]), ours, atol=2e-3, rtol=1e-5)

    adapter = tmp_path / "adapter"
    assert export.main(["--workdir", str(workdir), "--role", "student_no_conflict", "--out", str(adapter),
                        "--adapter"]) == 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    base_dir = save_pretrained(tmp_path / "base", policy.config,
                               {k: v for k, v in policy.params.items() if k == "backbone"})  # the frozen base
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with_adapter = peft.PeftModel.from_pretrained(base, adapter).eval()
    np.testing.assert_allclose(hf_logps(with_adapter, tok, chosen[:6]), ours, atol=2e-3, rtol=1e-5)
    # without the adapter the base scores differently: the adapter carries the training
    assert np.abs(hf_logps(transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval(), tok, chosen[:6])
                  - ours).max() > 1e-3


def test_adapter_export_of_a_full_fine_tune_is_refused(tmp_path):
    assert export.main(["--workdir", str(tmp_path / "nothing"), "--role", "x", "--out", str(tmp_path / "o"),
                        "--adapter"]) == 2
