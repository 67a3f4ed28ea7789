"""The reward-modelling experiment end to end: the demo world with tiny pretrained bases, and real HH pairs with tiny
random models."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from w2s_jax import experiments
from w2s_jax.config_check import validate
from w2s_jax.configs import load_config_file
from w2s_jax.data.loading import load_splits
from w2s_jax.train import step as step_lib

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED / "hh-single-turn"
HELPFUL = SHARED / "bigbench" / "hhh_alignment" / "helpful" / "task.json"
pytestmark = pytest.mark.skipif(not (HH.is_dir() and HELPFUL.exists()),
                                reason=f"shared HH data not found at {HH} (it is never copied into the repo)")


# pretraining the tiny bases: one pass over the corpus (a few seconds each)
TINY_PRETRAIN = {"vocab_size": 320, "max_len": 64, "epochs": 1, "batch_size": 64}


def small_config(pretrained: bool = True, **mesh):
    """The demo preset, tiny: bases pretrained on the world (`pretrained`), or random-init models that read any
    data."""
    c = load_config_file(str(Path(__file__).parents[1] / "configs/rm_helpful.py:demo"))
    c.seeds = "0"
    c.data.n_gt = c.data.n_weak = c.data.n_test = 96
    c.data.n_conflict = 32
    c.data.max_len, c.data.bucket_multiple = 64, 32
    c.pretrain.update(TINY_PRETRAIN)
    if not pretrained:
        c.weak.init = c.strong.init = "random"
        c.weak.tokenizer = c.strong.tokenizer = "bpe:320"
    c.weak.arch.update(hidden_size=16, num_layers=1, num_heads=2)
    c.strong.arch.update(hidden_size=32, num_layers=2, num_heads=2)
    c.train.update(batch_size=16, epochs=1, eval_batch_size=32, save_every=3, lr=1e-3)
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh})
    return c


def run(config, workdir, n_devices, overwrite=False):
    mesh = validate(config, n_devices=n_devices)
    return experiments.run(config, workdir, mesh, overwrite=overwrite)


def ab_labels(config, split: str, seed: int) -> list[int]:
    """The original's A/B draw (spec §2.2), written out here: 1 where the chosen answer takes slot A."""
    import random

    rng = random.Random(seed)
    return [int(rng.random() < 0.5) for _ in getattr(load_splits(config.data), split)]


def loss_curves(workdir):
    curves = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        curves.setdefault(row["role"], []).append(row["loss"])
    return curves


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rm")
    return workdir, run(small_config(), workdir, n_devices=1)


def test_every_model_is_trained_and_scored(first_run):
    workdir, results = first_run
    assert results["schema_version"] == 2 and results["seeds"] == [0] and len(results["runs"]) == 1
    models = results["runs"][0]["models"]
    roles = [m["role"] for m in models]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_implicit", "student_explicit"]
    # the A/B order of D_test, drawn here as the original does (spec §2.2): random.Random(seed) per split
    assert results["runs"][0]["test_labels"] == results["test_labels"] == ab_labels(small_config(), "test", 0)
    assert results["n_test"] == 96 and results["config"]["data"]["source"] == "demo"  # the regenerated world
    for m in models:
        assert len(m["test_correct"]) == 96 and m["test_accuracy"] == pytest.approx(np.mean(m["test_correct"]))
    weak = json.loads((workdir / "seed0" / "weak_labels.json").read_text())
    assert weak["gt_labels"] == ab_labels(small_config(), "weak", 0)
    assert weak["labeller_fingerprint"] == models[0]["fingerprint"]
    curves = loss_curves(workdir)
    assert len(curves["weak_ceiling"]) == 96 // 16
    assert len(curves["student_implicit"]) == (96 + 32) // 16  # the conflict pairs are mixed in
    assert (workdir / "tensorboard" / "weak_ceiling").is_dir()


def test_bases_are_pretrained_once_and_every_model_records_its_base(first_run):
    workdir, results = first_run
    log = json.loads((workdir / "run_log.json").read_text())
    bases = log["bases"]
    assert set(bases) == {"weak", "strong"} and not any(b["reused"] for b in bases.values())
    for which, b in bases.items():
        directory = Path(b["directory"])
        assert directory.parent == workdir / "models" / "base" and (directory / "model.safetensors").is_file()
        assert json.loads((directory / "pretrain.json").read_text())["fingerprint"] == b["fingerprint"]
        assert b["steps"] == b["n_texts"] // TINY_PRETRAIN["batch_size"]  # one epoch of full batches
    for m in results["runs"][0]["models"]:
        which = "weak" if m["role"] == "weak_ceiling" else "strong"
        assert m["model_id"] == f"demo-world:{results['config'][which]['name']}"
        assert m["provenance"]["pretraining"]["fingerprint"] == bases[which]["fingerprint"]
        # the trained model's own spec holds its base's fingerprint (not only where the base lies)
        spec = json.loads((workdir / m["checkpoint"] / "model.json").read_text())["spec"]
        assert spec["model"]["base"] == bases[which]["fingerprint"]
    assert log["test_scoring_calls"] == 5  # five different models, each scored on D_test once


def test_second_run_reuses_every_checkpoint(first_run, monkeypatch):
    workdir, results = first_run
    before = json.loads((workdir / "results.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a train step was built although every model is finished")

    monkeypatch.setattr(step_lib, "make_train_step", no_training)
    again = run(small_config(), workdir, n_devices=1)
    after = json.loads((workdir / "results.json").read_text())
    assert after.pop("metadata")["date"] >= before.pop("metadata")["date"]  # when written: the rest is identical
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert again["runs"] == results["runs"]
    log = json.loads((workdir / "run_log.json").read_text())
    assert all(m["reused"] and m["steps_run"] == 0 for m in log["runs"][0]["models"].values())
    assert all(b["reused"] for b in log["bases"].values())
    assert log["test_scoring_calls"] == 0  # every D_test score is read back from <workdir>/scores


def test_a_new_base_retrains_and_a_repeated_model_is_scored_once(first_run, tmp_path):
    """Another pretraining gives another base, hence other fingerprints for everything trained on it; with the
    strong model equal to the weak one, the strong ceiling IS the weak ceiling: trained and scored once."""
    import shutil

    workdir, results = first_run
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    c = small_config()
    c.pretrain.epochs = 2
    c.strong = c.weak.copy_and_resolve_references()
    c.students = "no_conflict"
    again = run(c, copy, n_devices=1, overwrite=True)
    log = json.loads((copy / "run_log.json").read_text())
    assert log["bases"]["weak"] == log["bases"]["strong"] and not log["bases"]["weak"]["reused"]
    assert log["bases"]["weak"]["fingerprint"] != json.loads((workdir / "run_log.json").read_text())[
        "bases"]["weak"]["fingerprint"]
    models = {m["role"]: m for m in again["runs"][0]["models"]}
    old = {m["role"]: m for m in results["runs"][0]["models"]}
    assert models["weak_ceiling"]["fingerprint"] != old["weak_ceiling"]["fingerprint"]
    assert models["strong_ceiling"]["fingerprint"] == models["weak_ceiling"]["fingerprint"]
    assert models["strong_ceiling"]["test_logits"] == models["weak_ceiling"]["test_logits"]
    seed = log["runs"][0]["models"]
    assert seed["weak_ceiling"]["test_scored"] and not seed["strong_ceiling"]["test_scored"]
    assert seed["strong_ceiling"]["reused"] and log["test_scoring_calls"] == 2  # weak ceiling and the student


def test_changed_config_does_not_reuse_stale_models(first_run, tmp_path):
    workdir, results = first_run
    changed = small_config()
    changed.conflict.alpha = 0.25  # only the explicit student depends on alpha
    import shutil

    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    (copy / "results.json").unlink()  # another config's results are never overwritten; the store is reused
    run(changed, copy, n_devices=1)
    log = json.loads((copy / "run_log.json").read_text())["runs"][0]["models"]
    assert log["student_explicit"]["steps_run"] == 96 // 16
    assert all(log[r]["reused"] for r in ("weak_ceiling", "strong_ceiling", "student_no_conflict"))


def test_eight_device_mesh_gives_the_same_predictions(first_run, tmp_path):
    """Fine-tuning on a data=2 x fsdp=4 mesh, from the first run's pretrained bases (copied: the mesh is no part of
    a model, so the store would otherwise hand back the one-device models), with one student of each kind of
    loss (weak labels alone; weak labels and the explicit conflict term)."""
    import shutil

    assert len(jax.devices()) == 8
    workdir, results = first_run
    shutil.copytree(workdir / "models" / "base", tmp_path / "models" / "base")
    c = small_config(data=2, fsdp=4)
    c.students = "no_conflict,explicit"
    sharded = run(c, tmp_path, n_devices=8)
    assert all(b["reused"] for b in json.loads((tmp_path / "run_log.json").read_text())["bases"].values())
    one_device = {m["role"]: m for m in results["runs"][0]["models"]}
    assert [m["role"] for m in sharded["runs"][0]["models"]] == ["weak_ceiling", "strong_ceiling",
                                                                 "student_no_conflict", "student_explicit"]
    for eight in sharded["runs"][0]["models"]:
        one = one_device[eight["role"]]
        if one["role"].endswith("ceiling"):  # the mesh is not part of what a model is (students hash the labels,
            assert one["fingerprint"] == eight["fingerprint"]  # which may differ in the last float bit)
        np.testing.assert_array_equal(one["test_correct"], eight["test_correct"], err_msg=one["role"])
        np.testing.assert_allclose(one["test_logits"], eight["test_logits"], atol=1e-4)
    ref, got = loss_curves(workdir), loss_curves(tmp_path)
    for role, curve in got.items():
        np.testing.assert_allclose(curve, ref[role], atol=1e-4, err_msg=role)


def test_reward_model_bootstrapping(tmp_path):
    """weak -> intermediate -> strong (original-spec §5) for the reward model: the intermediate learns the weak
    soft labels of D_weak, labels D_gt, and the bootstrapped students learn those labels."""
    c = small_config(pretrained=False)
    c.data.source, c.data.conflict_path = "dir", str(HELPFUL)
    c.students = "no_conflict,bootstrap,bootstrap_implicit"
    c.intermediate = c.strong.copy_and_resolve_references()
    c.intermediate.name = "tiny-intermediate"
    c.intermediate.arch.update(hidden_size=24, num_layers=1, num_heads=2)
    results = run(c, tmp_path, n_devices=1)
    models = results["runs"][0]["models"]
    roles = [m["role"] for m in models]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "intermediate_ceiling",
                     "intermediate_student", "student_bootstrap", "student_bootstrap_implicit"]
    mid = json.loads((tmp_path / "seed0" / "intermediate_labels.json").read_text())
    by_role = {m["role"]: m for m in models}
    assert mid["labeller_fingerprint"] == by_role["intermediate_student"]["fingerprint"]
    soft = np.asarray(mid["soft_labels"])
    assert soft.shape == (96,) and ((soft > 0) & (soft < 1)).all()
    # the intermediate student learnt from the weak labels, so it is not the intermediate ceiling
    assert by_role["intermediate_student"]["fingerprint"] != by_role["intermediate_ceiling"]["fingerprint"]
    curves = loss_curves(tmp_path)
    assert len(curves["student_bootstrap"]) == 96 // 16  # D_gt with the intermediate's labels
    assert len(curves["student_bootstrap_implicit"]) == (96 + 32) // 16
    run_log = json.loads((tmp_path / "run_log.json").read_text())
    assert set(run_log["runs"][0]["models"]) == set(roles)


def test_seeds_reuse_seed_zero_and_draw_their_own_order(first_run, tmp_path):
    """`config.seeds="0,1"` over the single-seed run's store: seed 0's models are reused (the seed is in their
    spec), seed 1's are trained, and each seed scores D_test in its own A/B order."""
    import shutil

    workdir, results = first_run
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    c = small_config()
    c.seeds = "0,1"
    two = run(c, copy, n_devices=1, overwrite=True)
    assert two["seeds"] == [0, 1] and [r["seed"] for r in two["runs"]] == [0, 1]
    assert two["runs"][0] == results["runs"][0]
    assert two["runs"][1]["test_labels"] == ab_labels(c, "test", 1) != two["runs"][0]["test_labels"]
    assert all(b["reused"] for b in json.loads((copy / "run_log.json").read_text())["bases"].values())
    log = json.loads((copy / "run_log.json").read_text())["runs"]
    assert all(m["reused"] for m in log[0]["models"].values())
    assert not any(m["reused"] for m in log[1]["models"].values())
    fingerprints = [{m["fingerprint"] for m in r["models"]} for r in two["runs"]]
    assert not fingerprints[0] & fingerprints[1]
    assert (copy / "seed1" / "weak_labels.json").is_file()
