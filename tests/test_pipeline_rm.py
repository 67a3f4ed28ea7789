"""The reward-modelling experiment end to end on real HH pairs with tiny random models."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from w2s_jax import pipeline
from w2s_jax.config_check import validate
from w2s_jax.train import step as step_lib

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED / "hh-single-turn"
HELPFUL = SHARED / "bigbench" / "hhh_alignment" / "helpful" / "task.json"
pytestmark = pytest.mark.skipif(not (HH.is_dir() and HELPFUL.exists()),
                                reason=f"shared HH data not found at {HH} (it is never copied into the repo)")


def small_config(**mesh):
    import importlib.util

    spec = importlib.util.spec_from_file_location("rm_helpful", Path(__file__).parents[1] / "configs/rm_helpful.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("demo")
    c.data.n_gt = c.data.n_weak = c.data.n_test = 96
    c.data.n_conflict = 32
    c.data.max_len, c.data.bucket_multiple = 64, 32
    c.weak.tokenizer = c.strong.tokenizer = "bpe:320"
    c.weak.arch.update(hidden_size=16, num_layers=1, num_heads=2)
    c.strong.arch.update(hidden_size=32, num_layers=2, num_heads=2)
    c.train.update(batch_size=16, epochs=1, eval_batch_size=32, save_every=3, lr=1e-3)
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh})
    return c


def run(config, workdir, n_devices):
    mesh = validate(config, n_devices=n_devices)
    return pipeline.run(config, workdir, mesh)


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
    roles = [m["role"] for m in results["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_implicit", "student_explicit"]
    labels = np.asarray(results["test_labels"])
    for m in results["models"]:
        correct = np.asarray(m["test_correct"])
        assert correct.shape == (96,)
        assert m["test_accuracy"] == pytest.approx(correct.mean())
        # correctness is exactly "sign of z agrees with the ground-truth A/B label"
        np.testing.assert_array_equal(correct, (np.asarray(m["test_logits"]) >= 0) == (labels == 1))
    weak = json.loads((workdir / "weak_labels.json").read_text())
    soft = np.asarray(weak["soft_labels"])
    assert soft.shape == (96,) and ((soft > 0) & (soft < 1)).all()
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-np.asarray(weak["logits"]))), rtol=1e-6)  # sigma(z_weak)
    curves = loss_curves(workdir)
    assert len(curves["weak_ceiling"]) == 96 // 16
    assert len(curves["student_implicit"]) == (96 + 32) // 16  # the conflict pairs are mixed in
    assert (workdir / "tensorboard" / "weak_ceiling").is_dir()


def test_second_run_reuses_every_checkpoint(first_run, monkeypatch):
    workdir, results = first_run
    before = (workdir / "results.json").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("a train step was built although every model is finished")

    monkeypatch.setattr(step_lib, "make_train_step", no_training)
    again = run(small_config(), workdir, n_devices=1)
    assert (workdir / "results.json").read_bytes() == before
    assert again["models"] == results["models"]
    log = json.loads((workdir / "run_log.json").read_text())
    assert all(m["reused"] and m["steps_run"] == 0 for m in log["models"].values())


def test_changed_config_does_not_reuse_stale_models(first_run, tmp_path):
    workdir, results = first_run
    changed = small_config()
    changed.conflict.alpha = 0.25  # only the explicit student depends on alpha
    import shutil

    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    (copy / "results.json").unlink()  # another config's results are never overwritten; the store is reused
    run(changed, copy, n_devices=1)
    log = json.loads((copy / "run_log.json").read_text())
    assert log["models"]["student_explicit"]["steps_run"] == 96 // 16
    assert all(log["models"][r]["reused"] for r in ("weak_ceiling", "strong_ceiling", "student_no_conflict"))


def test_eight_device_mesh_gives_the_same_predictions(first_run, tmp_path):
    assert len(jax.devices()) == 8
    workdir, results = first_run
    sharded = run(small_config(data=2, fsdp=4), tmp_path, n_devices=8)
    for one, eight in zip(results["models"], sharded["models"]):
        if one["role"].endswith("ceiling"):  # the mesh is not part of what a model is (students hash the labels,
            assert one["fingerprint"] == eight["fingerprint"]  # which may differ in the last float bit)
        np.testing.assert_array_equal(one["test_correct"], eight["test_correct"], err_msg=one["role"])
        np.testing.assert_allclose(one["test_logits"], eight["test_logits"], atol=1e-4)
    ref, got = loss_curves(workdir), loss_curves(tmp_path)
    for role, curve in ref.items():
        np.testing.assert_allclose(got[role], curve, atol=1e-4, err_msg=role)


def test_reward_model_bootstrapping(tmp_path):
    """weak -> intermediate -> strong (original-spec §5) for the reward model: the intermediate learns the weak
    soft labels of D_weak, labels D_gt, and the bootstrapped students learn those labels."""
    c = small_config()
    c.data.source, c.data.conflict_path = "dir", str(HELPFUL)
    c.students = "no_conflict,bootstrap,bootstrap_implicit"
    c.intermediate = c.strong.copy_and_resolve_references()
    c.intermediate.name = "tiny-intermediate"
    c.intermediate.arch.update(hidden_size=24, num_layers=1, num_heads=2)
    results = run(c, tmp_path, n_devices=1)
    roles = [m["role"] for m in results["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "intermediate_ceiling",
                     "intermediate_student", "student_bootstrap", "student_bootstrap_implicit"]
    mid = json.loads((tmp_path / "intermediate_labels.json").read_text())
    by_role = {m["role"]: m for m in results["models"]}
    assert mid["labeller_fingerprint"] == by_role["intermediate_student"]["fingerprint"]
    soft = np.asarray(mid["soft_labels"])
    assert soft.shape == (96,) and ((soft > 0) & (soft < 1)).all()
    # the intermediate student learnt from the weak labels, so it is not the intermediate ceiling
    assert by_role["intermediate_student"]["fingerprint"] != by_role["intermediate_ceiling"]["fingerprint"]
    curves = loss_curves(tmp_path)
    assert len(curves["student_bootstrap"]) == 96 // 16  # D_gt with the intermediate's labels
    assert len(curves["student_bootstrap_implicit"]) == (96 + 32) // 16
    run_log = json.loads((tmp_path / "run_log.json").read_text())
    assert set(run_log["models"]) == set(roles)
