"""A trained model's spec: every result-changing field moves its fingerprint, no result-neutral setting does."""
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from w2s_jax.configs import load_config_file
from w2s_jax.experiments.spec import RESULT_NEUTRAL_FIELDS, TrainedModelSpec, spec_from_config
from w2s_jax.objectives import DPO, SFT, RewardModel, SimPO

ROOT = Path(__file__).resolve().parents[1]
H1, H2 = "a" * 64, "b" * 64


def base_fields(objective=RewardModel("bce")):
    return dict(tokenizer="tok-fp", data=H1, n_train=1000, labels="gt", stage=objective.name,
                objective=objective.hparams(), lr=1e-3, epochs=2, schedule="cosine_to_zero", seed=0)


def spec_of(config, which="strong", **over):
    return spec_from_config(config, which, **{**base_fields(), **over})


def config(name="rm_helpful.py:demo"):
    return load_config_file(str(ROOT / "configs" / name))


# a changed value for every field of the spec (a new field without one here fails the test below)
CHANGED = {"model": {"name": "other"}, "param_dtype": "bfloat16", "dtype": "bfloat16", "tokenizer": "tok-2",
           "max_len": 41, "data": H2, "n_train": 999, "labels": "weak:" + H2, "stage": "sft",
           "objective": {"kind": "logconf", "alpha": None}, "lr": 2e-3, "epochs": 3, "schedule": "constant",
           "batch_size": 17, "seed": 1, "parent": H2,
           "lora": {"rank": 8, "alpha": 16.0, "targets": "backbone/layers/attn/(q_proj|v_proj)/kernel"},
           "options": {"optim": "adafactor"}}


def test_the_fingerprint_is_sha256_of_the_spec_as_json():
    spec = spec_of(config())
    as_json = dataclasses.asdict(spec)
    assert as_json.pop("lora") is None  # LoRA off: the field is left out, so older fingerprints stay valid
    assert as_json.pop("options") == {}  # the switches at their defaults: left out, older fingerprints stand
    expected = hashlib.sha256(json.dumps(as_json, sort_keys=True).encode()).hexdigest()
    assert spec.fingerprint == expected
    switched = dataclasses.replace(spec, options={"head_only": True})
    as_json = {k: v for k, v in dataclasses.asdict(switched).items() if k != "lora"}
    expected = hashlib.sha256(json.dumps(as_json, sort_keys=True).encode()).hexdigest()
    assert switched.fingerprint == expected


def test_the_originals_switches_enter_the_spec_where_they_act():
    c = config()
    assert spec_of(c).options == {}
    c.train.optim, c.train.freeze_lm, c.model.reward_index = "adafactor", True, "nonzero_count"
    assert spec_of(c).options == {"optim": "adafactor", "head_only": True, "reward_index": "nonzero_count"}
    probe = config()
    probe.train.linear_probe = True  # the same head-only updates as freeze_lm
    assert spec_of(probe).options == {"head_only": True}
    policy = spec_of(c, objective=SFT().hparams(), stage="sft")  # no reward head in a policy's loss
    assert policy.options == {"optim": "adafactor"}
    with pytest.raises(ValueError, match="options must hold only non-default"):
        dataclasses.replace(spec_of(config()), options={"optim": "adam"})


def test_every_result_changing_field_changes_the_fingerprint():
    spec = spec_of(config())
    assert set(CHANGED) == {f.name for f in dataclasses.fields(TrainedModelSpec)}
    seen = {spec.fingerprint}
    for name, value in CHANGED.items():
        changed = dataclasses.replace(spec, **{name: value})
        assert changed.fingerprint not in seen, name
        seen.add(changed.fingerprint)


@pytest.mark.parametrize("name", ["rm_helpful.py:demo", "dpo_helpful.py:demo", "rm_mistral7b.py"])
def test_declared_result_neutral_settings_leave_every_spec_alone(name):
    """Each declared neutral field exists in some shipped config, and changing it changes no spec built from
    that config, for any model."""
    base = config(name)
    flat = {}

    def walk(node, prefix=""):
        for k in node.keys():
            v = node[k]
            path = f"{prefix}{k}"
            if hasattr(v, "keys"):
                walk(v, path + ".")
            flat[path] = v

    walk(base)
    present = [f for f in RESULT_NEUTRAL_FIELDS if f in flat]
    assert "mesh" in present and "train.eval_batch_size" in present
    for field in present:
        c = config(name)
        *parents, leaf = field.split(".")
        node = c
        for p in parents:
            node = node[p]
        value = node[leaf]
        if hasattr(value, "keys"):
            for k in value.keys():
                value[k] = value[k] * 2 + 1 if isinstance(value[k], int) else value[k]
        elif isinstance(value, bool):
            node[leaf] = not value
        elif isinstance(value, int):
            node[leaf] = value * 2 + 1
        else:
            node[leaf] = f"{value}-changed"
        assert (node[leaf] != flat[field]) or hasattr(value, "keys"), field
        for which in ("weak", "strong"):
            assert spec_of(c, which).fingerprint == spec_of(base, which).fingerprint, field


def test_config_fields_the_spec_reads_change_it():
    base = config()
    for mutate in (lambda c: c.strong.arch.update(hidden_size=c.strong.arch.hidden_size + 2), lambda c: setattr(c.model, "dtype", "bfloat16"),
                   lambda c: setattr(c.data, "max_len", 64), lambda c: setattr(c.train, "batch_size", 32),
                   lambda c: setattr(c.strong, "name", "x")):
        c = config()
        mutate(c)
        assert spec_of(c).fingerprint != spec_of(base).fingerprint


def test_objective_hyper_parameters_enter_the_spec_but_chunking_does_not():
    assert DPO(beta=0.1, chunk_size=8).hparams() == DPO(beta=0.1, chunk_size=None).hparams() == \
        {"beta": 0.1, "alpha": None}
    assert SimPO(beta=2.0, gamma=1.0).hparams() != SimPO(beta=2.0, gamma=0.5).hparams()
    assert SFT(chunk_size=4).hparams() == {}
    assert RewardModel("explicit", 0.5).hparams() != RewardModel("explicit", 0.25).hparams()
    with pytest.raises(ValueError, match="alpha belongs to the explicit conflict only"):
        RewardModel("bce", 0.5)


@pytest.mark.parametrize("field, value, message", [
    ("lr", 0.0, "lr must be a positive finite number"), ("lr", float("nan"), "lr must be"),
    ("epochs", 0, "epochs must be a positive integer"), ("schedule", "linear", "schedule 'linear' is not one of"),
    ("data", "xyz", "data must be a sha256"), ("stage", "ppo", "stage 'ppo'"), ("seed", 1.5, "seed must be"),
    ("parent", "p", "parent must be a fingerprint"), ("batch_size", True, "batch_size must be"),
])
def test_a_spec_is_validated_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(spec_of(config()), **{field: value})
