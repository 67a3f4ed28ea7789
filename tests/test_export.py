"""Reward models out as `transformers` sequence classifiers and back in (TRL layout), policies out as causal LMs.

References are PyTorch models loaded by `transformers`: `AutoModelForSequenceClassification` scores an exported
reward model like ours (1e-4), a sequence classifier saved by `transformers` loads as ours and scores the same,
and an exported policy's response log-probs match ours.
"""
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests import tiny_models
from w2s_jax.models.convert import from_pretrained, save_pretrained
from w2s_jax.models.logps import sequence_logps
from w2s_jax.models.seqcls import save_reward_model

FAMILIES = ["gpt2", "opt", "opt-350m", "llama", "mistral", "smollm2", "qwen3", "gemma3", "gemma3-untied-softcap"]
LENGTHS = [7, 12, 3, 12]
T = 12


def our_rewards(loaded, ids, mask):
    return np.asarray(loaded.model.apply({"params": loaded.params}, jnp.asarray(ids), jnp.asarray(mask),
                                         method=loaded.model.reward))


def hf_scores(directory, ids, mask):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits
    assert out.shape == (len(ids), 1)
    return out[:, 0].float().numpy(), model


@pytest.mark.parametrize("variant", FAMILIES)
def test_exported_reward_model_scores_like_ours_in_transformers(variant, tmp_path):
    tiny_models.build(variant, tmp_path / "hf")
    ours = from_pretrained(str(tmp_path / "hf"), reward_head=True, seed=3)
    ids, mask = tiny_models.right_padded_batch(LENGTHS, T, seed=1)  # ids >= 1, padding 0
    expected = our_rewards(ours, ids, mask)
    save_reward_model(tmp_path / "rm", ours.config, ours.params, pad_token_id=0)
    got, model = hf_scores(tmp_path / "rm", ids, mask)
    assert type(model).__name__.endswith("ForSequenceClassification") and model.config.num_labels == 1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.std(expected) > 1e-3  # the rows differ: a head read at the wrong token could not pass by chance
    # and it loads back as ours: the same scores, no tensor left unused
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = from_pretrained(str(tmp_path / "rm"), reward_head=True, seed=99)
    np.testing.assert_allclose(our_rewards(back, ids, mask), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["gpt2", "opt", "llama", "qwen3", "gemma3"])
def test_transformers_sequence_classifier_loads_as_ours(variant, tmp_path):
    """The layout TRL's reward trainer saves: AutoModelForSequenceClassification(num_labels=1).save_pretrained."""
    torch.manual_seed(5)
    config = tiny_models.VARIANTS[variant]()
    config.num_labels, config.pad_token_id = 1, 0
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "trl")
    ids, mask = tiny_models.right_padded_batch(LENGTHS, T, seed=2)
    expected, _ = hf_scores(tmp_path / "trl", ids, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = from_pretrained(str(tmp_path / "trl"), reward_head=True, seed=0)
    np.testing.assert_allclose(our_rewards(ours, ids, mask), expected, atol=1e-4, rtol=0)
    assert "lm_head" in ours.provenance or ours.config.tie_embeddings


@pytest.mark.parametrize("variant", ["gpt2", "llama", "gemma3"])
def test_exported_policy_log_probs_match_transformers(variant, tmp_path):
    tiny_models.build(variant, tmp_path / "hf", seed=4)
    ours = from_pretrained(str(tmp_path / "hf"), reward_head=False)
    save_pretrained(tmp_path / "policy", ours.config, ours.params)
    ids, mask = tiny_models.right_padded_batch(LENGTHS, T, seed=3)
    loss_mask = mask.copy()
    loss_mask[:, :2] = 0  # the "prompt": its tokens carry no log-prob
    logits = ours.model.apply({"params": ours.params}, jnp.asarray(ids), jnp.asarray(mask))
    ours_lp = np.asarray(sequence_logps(logits, jnp.asarray(ids), jnp.asarray(loss_mask))[0])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "policy").eval()
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits
    logp = torch.log_softmax(logits.double(), -1)[:, :-1].gather(-1, torch.tensor(ids[:, 1:, None]))[..., 0]
    expected = (logp.numpy() * loss_mask[:, 1:]).sum(-1)
    np.testing.assert_allclose(ours_lp, expected, atol=2e-4, rtol=1e-5)
