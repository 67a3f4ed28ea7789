"""Trained models out of a work directory: the Python API (`w2s_jax.api`) and `python -m w2s_jax.export`.

The tiny reward-model and DPO runs of `shared_runs.py` (on the demo world, random-init models with trained BPE
tokenizers; shared with test_cli.py). The references are independent of the loader: the margins each run wrote
to results.json, and `transformers` (PyTorch) models loaded from the exported directories.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from shared_runs import margins, shared_run, tiny_config
from w2s_jax import export
from w2s_jax.api import LoadError, load_trained
from w2s_jax.data.loading import load_splits
from w2s_jax.data.tokenize import tokenize_prompt_response, tokenize_texts

def shared(tmp_path_factory, name: str):
    c = tiny_config(name)
    workdir, _, results = shared_run(tmp_path_factory, c)
    assert (workdir / "predictions.jsonl").is_file()
    return workdir, results, load_splits(c.data).test


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    return shared(tmp_path_factory, "rm_helpful")


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    return shared(tmp_path_factory, "dpo_helpful")


@pytest.mark.parametrize("role", ["strong_ceiling", "student_no_conflict"])
def test_loaded_reward_model_scores_what_the_run_wrote(rm_run, role):
    workdir, results, test = rm_run
    rm = load_trained(workdir, role, seed=0)
    assert rm.kind == "reward_model"
    chosen, rejected = [p.chosen for p in test], [p.rejected for p in test]
    expected = margins(results, role)
    np.testing.assert_allclose(rm.score_pairs(chosen, rejected), expected, atol=1e-4, rtol=0)
    # single texts through another path (plain jit, padded batches)
    np.testing.assert_allclose(rm.rewards(chosen) - rm.rewards(rejected), expected, atol=1e-4, rtol=0)
    assert np.std(expected) > 1e-3


def test_bad_requests_say_what_is_there(rm_run, tmp_path):
    workdir, _, _ = rm_run
    with pytest.raises(LoadError, match="roles: .*student_no_conflict"):
        load_trained(workdir, "student_explicit")
    with pytest.raises(LoadError, match=r"no seed 7; seeds: \[0\]"):
        load_trained(workdir, "strong_ceiling", seed=7)
    assert export.main(["--workdir", str(workdir), "--role", "nope", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_exported_reward_model_in_transformers_scores_like_the_run(rm_run, tmp_path):
    workdir, results, test = rm_run
    out = tmp_path / "rm"
    assert export.main(["--workdir", str(workdir), "--role", "student_no_conflict", "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    fingerprint = next(m for m in results["runs"][0]["models"] if m["role"] == "student_no_conflict")["fingerprint"]
    assert fingerprint in card and "reward_model" in card and "test accuracy" in card
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id == model.config.pad_token_id is not None

    def scores(texts):
        ids = tokenize_texts(texts, tok, 64)  # the run's left truncation
        width = max(map(len, ids))
        arr = np.full((len(ids), width), tok.pad_token_id)
        mask = np.zeros_like(arr)
        for k, x in enumerate(ids):
            arr[k, :len(x)], mask[k, :len(x)] = x, 1
        with torch.no_grad():
            return model(input_ids=torch.tensor(arr), attention_mask=torch.tensor(mask)).logits[:, 0].numpy()

    got = scores([p.chosen for p in test]) - scores([p.rejected for p in test])
    np.testing.assert_allclose(got, margins(results, "student_no_conflict"), atol=1e-4, rtol=0)


def test_dpo_policy_loads_scores_and_exports_as_a_causal_lm(dpo_run, tmp_path):
    workdir, results, test = dpo_run
    policy = load_trained(workdir, "student_no_conflict")
    assert policy.kind == "policy" and policy.spec["stage"] == "dpo"
    chosen, rejected = [p.chosen for p in test], [p.rejected for p in test]
    np.testing.assert_allclose(policy.score_pairs(chosen, rejected), margins(results, "student_no_conflict"),
                               atol=1e-3, rtol=1e-5)
    out = tmp_path / "policy"
    assert export.main(["--workdir", str(workdir), "--role", "student_no_conflict", "--out", str(out)]) == 0
    assert json.loads((out / "w2s_export.json").read_text())["kind"] == "policy"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids, masks = tokenize_prompt_response(chosen[:8], tok, 64)
    expected = []
    for x, m in zip(ids, masks):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor(x[None], dtype=torch.long)).logits[0].double()
        lp = torch.log_softmax(logits, -1)[:-1].gather(-1, torch.tensor(x[1:, None], dtype=torch.long))[:, 0]
        expected.append(float((lp.numpy() * m[1:]).sum()))
    np.testing.assert_allclose(policy.logps(chosen[:8])[0], expected, atol=2e-3, rtol=1e-5)


def test_find_entry_in_a_sweep_uses_the_pair_directory():
    from w2s_jax.api import find_entry

    entry = lambda role: {"role": role, "checkpoint": f"../../models/{role}-0123"}  # noqa: E731
    results = {"schema_version": 2, "pairs": [
        {"name": "a->b", "workdir": "pairs/a__b", "runs": [{"seed": 0, "models": [entry("weak_ceiling")]}]},
        {"name": "b->c", "workdir": "pairs/b__c", "runs": [{"seed": 0, "models": [entry("strong_ceiling")]},
                                                          {"seed": 4, "models": [entry("strong_ceiling")]}]}]}
    with pytest.raises(LoadError, match=r"a sweep of 2 pairs \['a->b', 'b->c'\]"):
        find_entry(results, "weak_ceiling", None, None, Path("r.json"))
    found, seed, base = find_entry(results, "strong_ceiling", 4, "b->c", Path("r.json"))
    assert (found["role"], seed, base) == ("strong_ceiling", 4, "pairs/b__c")
    assert Path("w", base, found["checkpoint"]).resolve() == Path("w/models/strong_ceiling-0123").resolve()
    with pytest.raises(LoadError, match=r"no pair 'x->y'"):
        find_entry(results, "strong_ceiling", None, "x->y", Path("r.json"))
