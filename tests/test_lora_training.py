"""LoRA through the Trainer: only adapters (and the head) train, the base stays bitwise, the checkpoint holds the
adapters alone, a resumed/reused model rebuilds from base + adapters; DPO's reference is the model it starts from
(zero adapters: the base); the LoRA settings enter the model's fingerprint."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from w2s_jax.data.batches import PairDataset, SequenceDataset, bucket_lengths
from w2s_jax.experiments.spec import TrainedModelSpec
from w2s_jax.models.convert import from_pretrained
from w2s_jax.models.forwards import pair_logps
from w2s_jax.models.lora import LORA_KEY, LoraConfig, merge, with_lora
from w2s_jax.objectives import SFT
from w2s_jax.objectives.policy import DPO
from w2s_jax.train.checkpoint import ModelStore
from w2s_jax.train.trainer import Trainer, TrainSpec

LORA = LoraConfig(rank=2, alpha=4.0)


def fresh(loaded, seed=0):
    """A LoRA model over `loaded`'s base, with its own copy of the reward head (the step donates the trainable
    part it is given, as for any model)."""
    params = {**loaded.params, "reward_head": jax.tree.map(jnp.array, loaded.params["reward_head"])}
    return with_lora(loaded.model, params, LORA, seed=seed)


def mesh():
    return Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))


def sequences(n=8, T=10, seed=0):
    rng = np.random.RandomState(seed)
    ids = [rng.randint(1, 250, size=rng.randint(4, T + 1)).astype(np.int32) for _ in range(n)]
    masks = [np.r_[np.zeros(2, np.int32), np.ones(len(x) - 2, np.int32)] for x in ids]
    return ids, masks


def test_sft_trains_only_the_adapters_and_checkpoints_them_alone(loaded, tmp_path):
    model, params = fresh(loaded)
    base_before = jax.tree.map(np.asarray, params["backbone"])
    ids, masks = sequences()
    trainer = Trainer(mesh(), bucket_lengths(10, 10))
    spec = TrainSpec(lr=1e-2, batch_size=4, epochs=1, schedule="constant", seed=0)
    store = ModelStore(tmp_path, "sft", {"test": "lora"}, save_every=1)
    result = trainer.fit(params, SFT(), model, SequenceDataset(ids, masks), spec, store=store)
    assert result.steps_run == 2
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, result.params["backbone"]), base_before)
    b = result.params[LORA_KEY]["backbone/layers/attn/q_proj/kernel"]["b"]
    assert np.abs(np.asarray(b)).max() > 0  # B left zero: the adapters learnt
    assert result.history[1]["loss"] < result.history[0]["loss"] + 1.0
    # the checkpoint restores into the trainable part only: a reuse rebuilds base + adapters
    again = trainer.fit(params, SFT(), model, SequenceDataset(ids, masks), spec, store=ModelStore(
        tmp_path, "sft", {"test": "lora"}, save_every=1))
    assert again.reused
    for path, ab in result.params[LORA_KEY].items():
        np.testing.assert_array_equal(np.asarray(again.params[LORA_KEY][path]["b"]), np.asarray(ab["b"]))
    assert again.params["backbone"] is params["backbone"]
    saved = sum(f.stat().st_size for f in store.directory.rglob("*") if f.is_file())
    base_bytes = sum(x.nbytes for x in jax.tree.leaves(base_before))
    assert saved < base_bytes  # adapters + head + Adam moments, never the base weights


def test_dpo_reference_is_the_starting_model_and_zero_adapters_are_the_base(loaded):
    """At its first step DPO's policy is its reference, so the loss is log 2 exactly. With fresh adapters (B = 0)
    the reference log-probs are the base model's, computed here from the base params without any adapter."""
    model, params = with_lora(loaded.model, loaded.params, LORA, seed=3)
    ids, masks = sequences(8, seed=1)
    ids_r, masks_r = sequences(8, seed=2)
    pairs = PairDataset(ids, ids_r, masks, masks_r, {"acc": np.ones(8, bool)})
    objective = DPO(beta=0.1)
    from w2s_jax.data.batches import train_batches

    batch = next(iter(train_batches(pairs, 8, epochs=1, seed=0, buckets=bucket_lengths(10, 10))))
    mb = objective.prepare({**batch, "ref_c": np.zeros(8, np.float32), "ref_r": np.zeros(8, np.float32)}, 1,
                           "padded")
    first = jax.tree.map(lambda x: x[0], mb)
    base_params = {k: v for k, v in loaded.params.items()}
    sc, sr, _, _ = pair_logps(model, params, first, None)
    bc, br, _, _ = pair_logps(loaded.model, base_params, first, None)
    np.testing.assert_array_equal(np.asarray(sc), np.asarray(bc))
    np.testing.assert_array_equal(np.asarray(sr), np.asarray(br))
    first.update(ref_c=bc, ref_r=br)
    terms = objective.loss_fn(model, "padded")(params, first, 0.0)
    valid = float(np.asarray(first["valid"]).sum())
    assert float(terms.loss_sum) / valid == pytest.approx(np.log(2.0), rel=1e-6)
    # the merged params are what peft/transformers would see: same log-probs as the LoRA model
    nonzero = {**params, LORA_KEY: {p: {"a": ab["a"], "b": ab["b"] + 0.1} for p, ab in params[LORA_KEY].items()}}
    lc, _, _, _ = pair_logps(model, nonzero, first, None)
    mc, _, _, _ = pair_logps(loaded.model, merge(nonzero, LORA), first, None)
    np.testing.assert_allclose(np.asarray(lc), np.asarray(mc), rtol=1e-6)
    assert np.abs(np.asarray(lc) - np.asarray(bc)).max() > 1e-3


def _spec(**changes):
    base = dict(model={"name": "m"}, param_dtype="float32", dtype="float32", tokenizer="t", max_len=8,
                data="0" * 64, n_train=4, labels="gt", stage="sft", objective={}, lr=1e-5, epochs=1,
                schedule="constant", batch_size=2, seed=0)
    return TrainedModelSpec(**{**base, **changes})


def test_lora_settings_change_the_fingerprint_and_off_keeps_the_old_one():
    plain = _spec()
    assert "lora" not in plain.as_dict()  # full fine-tuning: the fingerprints from before LoRA stay valid
    on = _spec(lora=LoraConfig(rank=8, alpha=16).spec())
    assert on.fingerprint != plain.fingerprint
    for change in (dict(rank=4), dict(alpha=32.0), dict(targets=r"backbone/layers/attn/(q_proj|v_proj)/kernel"),
                   dict(dropout=0.1)):
        mutated = _spec(lora=dataclasses.replace(LoraConfig(rank=8, alpha=16), **change).spec())
        assert mutated.fingerprint != on.fingerprint, change
    assert LoraConfig(rank=0, alpha=99).spec() is None


@pytest.mark.parametrize("bad, field", [({"rank": -1}, "rank"), ({"rank": 4, "alpha": 0}, "alpha"),
                                        ({"rank": 4, "dropout": 1.0}, "dropout"),
                                        ({"rank": 4, "targets": "("}, "targets"), ({"rnak": 4}, "rnak")])
def test_bad_lora_settings_are_named(bad, field):
    with pytest.raises(ValueError, match=field):
        LoraConfig.from_config(bad)


@pytest.mark.parametrize("field, value", [("rank", -2), ("dropout", 1.5), ("targets", "(")])
def test_config_check_names_the_lora_field(tmp_path, field, value):
    from pathlib import Path

    from w2s_jax.config_check import ConfigError, validate
    from w2s_jax.configs import load_config_file

    (tmp_path / "conflict.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')
    c = load_config_file(str(Path(__file__).resolve().parents[1] / "configs" / "dpo_helpful.py:demo"))
    c.data.dir, c.data.conflict_path = str(tmp_path), str(tmp_path / "conflict.jsonl")
    validate(c)  # the demo config itself is fine
    c.model.lora.rank = 4
    c.model.lora[field] = value
    with pytest.raises(ConfigError, match=f"config.model.lora.{field}"):
        validate(c)


def test_adapters_are_sharded_like_their_kernel_and_the_sharded_step_matches_one_device(loaded):
    """On a fsdp=4 x tensor=2 mesh: A takes W's input-axis sharding, B its output-axis one; a LoRA SFT step there
    gives the one-device step's adapters."""
    from w2s_jax.models import sharding

    directory = loaded.source
    mesh8 = sharding.make_mesh(fsdp=4, tensor=2)
    sharded = from_pretrained(directory, mesh=mesh8, reward_head=True)
    model, params = with_lora(sharded.model, sharded.params, LORA, seed=0)
    q = params[LORA_KEY]["backbone/layers/attn/q_proj/kernel"]
    w_spec = tuple(sharded.params["backbone"]["layers"]["attn"]["q_proj"]["kernel"].sharding.spec)
    assert w_spec[1] == "fsdp" and w_spec[2] == "tensor"  # [layers, embed, heads, head_dim]
    assert tuple(q["a"].sharding.spec)[:2] == (None, "fsdp") and tuple(q["b"].sharding.spec)[2] == "tensor"
    ids, masks = sequences(8, seed=5)
    spec = TrainSpec(lr=1e-2, batch_size=8, epochs=1, schedule="constant", seed=0)
    got = Trainer(mesh8, bucket_lengths(10, 10)).fit(params, SFT(), model, SequenceDataset(ids, masks), spec)
    one_model, one = fresh(loaded)
    want = Trainer(mesh(), bucket_lengths(10, 10)).fit(one, SFT(), one_model, SequenceDataset(ids, masks), spec)
    for path, ab in want.params[LORA_KEY].items():
        for k in ("a", "b"):
            np.testing.assert_allclose(np.asarray(got.params[LORA_KEY][path][k]), np.asarray(ab[k]), atol=1e-5,
                                       err_msg=f"{path} {k}")


@pytest.mark.parametrize("objective", ["reward_model", "simpo"])
def test_reward_model_and_simpo_train_adapters_and_head_over_a_frozen_base(loaded, objective):
    from w2s_jax.objectives import RewardModel
    from w2s_jax.objectives.policy import SimPO

    model, params = fresh(loaded)
    head_before = np.asarray(params["reward_head"]["kernel"])
    ids, masks = sequences(8, seed=7)
    ids_r, masks_r = sequences(8, seed=8)
    extras = {"acc": np.ones(8, bool)} if objective == "simpo" else {
        "label": np.linspace(0.1, 0.9, 8).astype(np.float32), "gt": np.ones(8, np.float32)}
    pairs = PairDataset(ids, ids_r, masks, masks_r, extras)
    unit = SimPO() if objective == "simpo" else RewardModel("bce")
    spec = TrainSpec(lr=1e-2, batch_size=8, epochs=1, schedule="constant", seed=0)
    result = Trainer(mesh(), bucket_lengths(10, 10)).fit(params, unit, model, pairs, spec)
    assert result.params["backbone"] is params["backbone"]
    b = result.params[LORA_KEY]["backbone/layers/attn/v_proj/kernel"]["b"]
    assert np.abs(np.asarray(b)).max() > 0
    head_moved = np.abs(np.asarray(result.params["reward_head"]["kernel"]) - head_before).max()
    assert (head_moved > 0) == (objective == "reward_model")  # the policy losses never read the head


def test_scoring_a_plain_then_a_lora_model_of_one_config_in_one_process(loaded):
    """Scoring keeps compiled functions per model config: a plain model scored first must not lend its compiled
    forward (which never adds the adapters' term) to a LoRA model of the same config. Reference: the merged
    kernels W + scale * A @ B in the plain model."""
    from w2s_jax.eval.inference import score_pairs

    model, params = fresh(loaded)
    params[LORA_KEY] = jax.tree.map(lambda x: x + 0.05, params[LORA_KEY])  # B != 0: the adapters act
    ids, _ = sequences(n=8, seed=3)
    other, _ = sequences(n=8, seed=4)
    data = PairDataset(ids, other)
    score = lambda m, p: score_pairs(m, p, data, batch_size=4, mesh=mesh(), buckets=bucket_lengths(10, 10),  # noqa
                                     mode="sharded")
    plain = score(loaded.model, loaded.params)
    with_adapters = score(model, params)
    np.testing.assert_allclose(with_adapters, score(loaded.model, merge(params, LORA)), atol=1e-4)
    assert np.abs(with_adapters - plain).max() > 1e-3
