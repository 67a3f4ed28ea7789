"""Preference optimisation end to end (SFT -> DPO / SimPO, students, bootstrapping) with tiny models."""
import json
from pathlib import Path

import numpy as np
import pytest

from w2s_jax import experiments
from w2s_jax.config_check import validate
from w2s_jax.configs import load_config_file
from w2s_jax.data.loading import hash_arrays, load_splits, load_tokenizer
from w2s_jax.experiments.preference import PreferenceExperiment
from w2s_jax.train import step as step_lib

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "hh-single-turn").is_dir(), reason=f"shared HH data not at {SHARED}")


def small(config_name: str, students: str, pretrained: bool = False):
    """The demo preset, tiny, one seed: random-init models, or tiny bases pretrained on the world (`pretrained`)."""
    c = load_config_file(str(ROOT / f"configs/{config_name}.py:demo"))
    c.seeds = "0"
    c.data.n_gt = c.data.n_weak = c.data.n_test = 48
    c.data.n_conflict = 16
    c.data.max_len, c.data.bucket_multiple = 64, 64
    c.pretrain.update({"vocab_size": 300, "max_len": 64, "epochs": 1, "batch_size": 64})
    c.po.sft_epochs, c.po.epochs = 1, 1
    for which, width in (("weak", 16), ("strong", 32), ("intermediate", 24)):
        if not pretrained:
            c[which].init, c[which].tokenizer = "random", "bpe:300"
        c[which].arch.update(hidden_size=width, num_layers=1, num_heads=2)
    c.train.update(batch_size=16, eval_batch_size=48, save_every=0)
    c.students = students
    c.mesh.fsdp = 1
    return c


def run(c, workdir):
    return experiments.run(c, workdir, validate(c, n_devices=1))


def first_steps(workdir):
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["role"], row)
    return out


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo")
    return workdir, run(small("dpo_helpful", "no_conflict,explicit,hc_gt", pretrained=True), workdir)


def test_dpo_pipeline(dpo_run):
    workdir, results = dpo_run
    models = results["runs"][0]["models"]
    roles = [m["role"] for m in models]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_explicit", "student_hc_gt"]
    assert results["runs"][0]["test_labels"] == [1] * 48  # chosen is side A: the metric is chosen - rejected
    for m in models:
        assert len(m["test_correct"]) == 48 and m["test_accuracy"] == pytest.approx(np.mean(m["test_correct"]))
    first = first_steps(workdir)
    alpha = results["config"]["conflict"]["alpha"]
    for role in roles:
        assert role + "-sft" in first  # every model went through SFT first
        # at the first DPO step the policy is the SFT model, so the cached reference gives zero rewards and the
        # DPO loss of every pair is -log sigma(0) = log 2
        assert abs(first[role]["chosen_reward"]) < 1e-5 and abs(first[role]["rejected_reward"]) < 1e-5
        main = first[role].get("main_loss", first[role]["loss"])
        assert main == pytest.approx(np.log(2), abs=1e-5)
        checkpoint = {m["role"]: m["checkpoint"] for m in models}[role]
        assert (workdir / checkpoint / "reference_logps.npy").is_file()  # cached beside the DPO checkpoints
    # the explicit student: log 2 plus alpha times the conflict term, which at policy == reference is
    # -log sigma(0) = log 2 on each active row, so (per example) log 2 * (1 + alpha * active fraction)
    explicit = first["student_explicit"]
    assert explicit["loss"] == pytest.approx(np.log(2) * (1 + alpha * explicit["conflict_active"]), abs=1e-5)
    weak = json.loads((workdir / "seed0" / "weak_labels.json").read_text())
    kept = sum(1 for a, m in zip(weak["acc"], weak["metric"]) if a and 1 / (1 + np.exp(-m / 50)) >= 0.75)
    log = json.loads((workdir / "run_log.json").read_text())["runs"][0]["models"]
    epochs = results["config"]["po"]["epochs"]
    assert 0 < kept < 48
    assert log["student_hc_gt"]["steps_run"] == kept * epochs // 16  # trained on the kept pairs only


def test_dpo_rerun_reuses_everything(dpo_run, monkeypatch):
    workdir, results = dpo_run
    before = json.loads((workdir / "results.json").read_text())
    monkeypatch.setattr(step_lib, "make_train_step", lambda *a, **k: pytest.fail("a train step was built"))
    run(small("dpo_helpful", "no_conflict,explicit,hc_gt", pretrained=True), workdir)
    after = json.loads((workdir / "results.json").read_text())
    assert after.pop("metadata")["date"] >= before.pop("metadata")["date"]  # when written: the rest is identical
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
    log = json.loads((workdir / "run_log.json").read_text())
    assert all(b["reused"] for b in log["bases"].values()) and log["test_scoring_calls"] == 0


def test_simpo_with_implicit_conflict_and_confidence_filter(tmp_path):
    c = small("simpo_helpful", "implicit,hc_confidence")
    c.po.conf_threshold = 0.5001  # tiny random models are barely confident; keep the filter non-trivial
    results = run(c, tmp_path)
    roles = [m["role"] for m in results["runs"][0]["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_implicit", "student_hc_confidence"]
    first = first_steps(tmp_path)
    assert "ref" not in json.dumps(sorted(first["student_implicit"]))  # SimPO has no reference model
    log = json.loads((tmp_path / "run_log.json").read_text())["runs"][0]["models"]
    assert log["student_implicit"]["steps_run"] == (48 + 16) // 16
    weak = json.loads((tmp_path / "seed0" / "weak_labels.json").read_text())
    p = 1 / (1 + np.exp(-np.asarray(weak["metric"])))  # SimPO confidence: sigma(mean log-prob difference)
    kept = int((np.maximum(p, 1 - p) >= 0.5001).sum())
    assert log["student_hc_confidence"]["steps_run"] == kept // 16

def test_simpo_bootstrapping(tmp_path):
    results = run(small("simpo_bootstrap", "bootstrap"), tmp_path)
    models = {m["role"]: m for m in results["runs"][0]["models"]}
    assert list(models) == ["weak_ceiling", "strong_ceiling", "intermediate_ceiling", "intermediate_student",
                            "student_bootstrap"]
    labels = json.loads((tmp_path / "seed0" / "intermediate_labels.json").read_text())
    assert len(labels["acc"]) == 48  # the intermediate labels D_gt
    assert labels["labeller_fingerprint"] == models["intermediate_student"]["fingerprint"]
    # what the strong student learnt from, read from its checkpoint's own record: the intermediate's labels of
    # D_gt, with D_gt's chosen/rejected swapped where the intermediate's metric was negative
    spec = json.loads((tmp_path / models["student_bootstrap"]["checkpoint"] / "model.json").read_text())["spec"]
    assert spec["labels"] == f"intermediate:{models['intermediate_student']['fingerprint']}"
    assert spec["n_train"] == 48 and spec["model"]["name"] == results["config"]["strong"]["name"]
    c = small("simpo_bootstrap", "bootstrap")
    splits = load_splits(c.data)
    experiment = PreferenceExperiment.__new__(PreferenceExperiment)
    experiment.config, experiment.seeds, experiment.seed = c, [0], 0
    experiment.tokenizers = {"strong": load_tokenizer(c.strong, [t for p in splits.gt + splits.weak
                                                                 for t in (p.chosen, p.rejected)], False)}
    experiment.store_root = tmp_path
    swapped = [(p.chosen, p.rejected) if a else (p.rejected, p.chosen) for p, a in zip(splits.gt, labels["acc"])]
    assert not all(labels["acc"])  # the intermediate disagrees with GT somewhere, so the swap matters
    pairs = experiment._pairs([s[0] for s in swapped], [s[1] for s in swapped], "strong")
    assert spec["data"] == hash_arrays(list(pairs.ids_a), list(pairs.ids_b), list(pairs.loss_mask_a),
                                       list(pairs.loss_mask_b), np.asarray(labels["acc"], bool))


class _Stub(PreferenceExperiment):
    def __init__(self, algorithm, tau=0.75):
        from ml_collections import ConfigDict

        self.config = ConfigDict({"experiment": algorithm, "po": {"conf_threshold": tau}})


def test_metric_confidence_and_filters():
    scores = np.array([[-10.0, -12.0, -30.0], [-11.0, -10.0, -29.0], [-1.0, -1.2, -2.0], [-1.1, -1.0, -1.0]])
    dpo, simpo = _Stub("dpo"), _Stub("simpo")
    np.testing.assert_allclose(dpo.metric(scores), [1.0, -2.0, -1.0])  # summed difference
    np.testing.assert_allclose(simpo.metric(scores), [0.1, -0.2, -1.0])  # per-token mean difference
    np.testing.assert_allclose(dpo.confidence(np.array([50.0])), [1 / (1 + np.exp(-1))])  # sigma(log_ps / 50)
    labels = {"acc": np.array([True, False, True, False]), "confidence": np.array([0.9, 0.1, 0.6, 0.4])}
    np.testing.assert_array_equal(simpo.keep_mask(labels, "hc_gt"), [True, False, False, False])
    np.testing.assert_array_equal(simpo.keep_mask(labels, "hc_confidence"), [True, True, False, False])
    np.testing.assert_array_equal(simpo.keep_mask(labels, "no_conflict"), [True] * 4)
