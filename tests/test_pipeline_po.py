"""Preference optimisation end to end (SFT -> DPO / SimPO, students, bootstrapping) with tiny models."""
import json
from pathlib import Path

import numpy as np
import pytest

from w2s_jax import pipeline
from w2s_jax.config_check import validate
from w2s_jax.main import _load_config_file
from w2s_jax.preference import PreferenceExperiment
from w2s_jax.train import step as step_lib

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "hh-single-turn").is_dir(), reason=f"shared HH data not at {SHARED}")


def small(config_name: str, students: str):
    c = _load_config_file(str(ROOT / f"configs/{config_name}.py:demo"))
    c.data.n_gt = c.data.n_weak = c.data.n_test = 48
    c.data.n_conflict = 16
    c.data.max_len, c.data.bucket_multiple = 64, 64
    for which, width in (("weak", 16), ("strong", 32), ("intermediate", 24)):
        c[which].tokenizer = "bpe:300"
        c[which].arch.update(hidden_size=width, num_layers=1, num_heads=2)
    c.train.update(batch_size=16, eval_batch_size=48, save_every=0)
    c.students = students
    c.mesh.fsdp = 1
    return c


def run(c, workdir):
    return pipeline.run(c, workdir, validate(c, n_devices=1))


def first_steps(workdir):
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["role"], row)
    return out


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo")
    return workdir, run(small("dpo_helpful", "no_conflict,explicit,hc_gt"), workdir)


def test_dpo_pipeline(dpo_run):
    workdir, results = dpo_run
    roles = [m["role"] for m in results["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_explicit", "student_hc_gt"]
    for m in results["models"]:
        assert len(m["test_correct"]) == 48
        # DPO models are judged by the policy's summed log-prob difference alone, ties counting as correct
        np.testing.assert_array_equal(m["test_correct"], np.asarray(m["test_logits"]) >= 0)
    first = first_steps(workdir)
    for role in roles:
        assert role + "-sft" in first  # every model went through SFT first
        # at the first DPO step the policy is the SFT model, so the cached reference gives zero rewards
        assert abs(first[role]["chosen_reward"]) < 1e-5 and abs(first[role]["rejected_reward"]) < 1e-5
        checkpoint = {m["role"]: m["checkpoint"] for m in results["models"]}[role]
        assert (workdir / checkpoint / "reference_logps.npy").is_file()  # cached beside the DPO checkpoints
    assert first["student_explicit"]["conflict_active"] >= 0
    weak = json.loads((workdir / "weak_labels.json").read_text())
    kept = sum(1 for a, m in zip(weak["acc"], weak["metric"]) if a and 1 / (1 + np.exp(-m / 50)) >= 0.75)
    log = json.loads((workdir / "run_log.json").read_text())
    epochs = results["config"]["po"]["epochs"]
    assert 0 < kept < 48
    assert log["models"]["student_hc_gt"]["steps_run"] == kept * epochs // 16  # trained on the kept pairs only


def test_dpo_rerun_reuses_everything(dpo_run, monkeypatch):
    workdir, results = dpo_run
    before = (workdir / "results.json").read_bytes()
    monkeypatch.setattr(step_lib, "make_train_step", lambda *a, **k: pytest.fail("a train step was built"))
    run(small("dpo_helpful", "no_conflict,explicit,hc_gt"), workdir)
    assert (workdir / "results.json").read_bytes() == before


def test_simpo_with_implicit_conflict_and_confidence_filter(tmp_path):
    c = small("simpo_helpful", "implicit,hc_confidence")
    c.po.conf_threshold = 0.5001  # tiny random models are barely confident; keep the filter non-trivial
    results = run(c, tmp_path)
    roles = [m["role"] for m in results["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "student_implicit", "student_hc_confidence"]
    first = first_steps(tmp_path)
    assert "ref" not in json.dumps(sorted(first["student_implicit"]))  # SimPO has no reference model
    log = json.loads((tmp_path / "run_log.json").read_text())
    assert log["models"]["student_implicit"]["steps_run"] == (48 + 16) // 16
    weak = json.loads((tmp_path / "weak_labels.json").read_text())
    p = 1 / (1 + np.exp(-np.asarray(weak["metric"])))  # SimPO confidence: sigma(mean log-prob difference)
    kept = int((np.maximum(p, 1 - p) >= 0.5001).sum())
    assert log["models"]["student_hc_confidence"]["steps_run"] == kept // 16

def test_simpo_bootstrapping(tmp_path):
    results = run(small("simpo_bootstrap", "bootstrap"), tmp_path)
    roles = [m["role"] for m in results["models"]]
    assert roles == ["weak_ceiling", "strong_ceiling", "intermediate_ceiling", "intermediate_student",
                     "student_bootstrap"]
    labels = json.loads((tmp_path / "intermediate_labels.json").read_text())
    assert len(labels["acc"]) == 48  # the intermediate labels D_gt


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
