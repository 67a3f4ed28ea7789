"""A tiny reward-model run with the original's switches on: Adafactor, head-only training, the "!" quirk and a
separate student loss. Every model loads back through the API, and head-only training leaves the strong ceiling's
and the student's backbones bitwise equal (both start from the same strong base). The run also writes D_test curve
points (`train.eval_every`) to metrics.jsonl."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from w2s_jax import experiments
from w2s_jax.api import load_trained
from w2s_jax.config_check import validate
from w2s_jax.configs import load_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_with_the_switches_trains_and_loads_back(tmp_path):
    c = load_config_file(str(ROOT / "tests" / "tiny_rm_config.py"))
    if not Path(c.data.dir).is_dir():
        pytest.skip(f"shared HH data not found at {c.data.dir}")
    c.train.update(optim="adafactor", freeze_lm=True, w2s_loss="product", save_every=0)
    c.model.reward_index = "nonzero_count"
    c.train.eval_every = 3
    wd = tmp_path / "wd"
    experiments.run(c, wd, validate(c, n_devices=1))
    points = {}
    for line in (wd / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval_loss" in row:
            points.setdefault(row["role"], []).append(row["step"])
    # 64 pairs / batch 8 = 8 steps: points at 3, 6 and the last, for each of the three models
    assert points == {role: [3, 6, 8] for role in ("weak_ceiling", "strong_ceiling", "student_no_conflict")}
    results = json.loads((wd / "results.json").read_text())
    loaded = {m["role"]: load_trained(wd, m["role"]) for m in results["runs"][0]["models"]}
    assert set(loaded) == {"weak_ceiling", "strong_ceiling", "student_no_conflict"}
    for role, model in loaded.items():
        assert model.spec["options"] == {"optim": "adafactor", "head_only": True, "reward_index": "nonzero_count"}
        assert model.spec["objective"]["kind"] == ("product" if role.startswith("student") else "bce")
        assert model.model.cfg.reward_index == "nonzero_count"
    ceiling, student = loaded["strong_ceiling"].params, loaded["student_no_conflict"].params
    for a, b in zip(jax.tree.leaves(ceiling["backbone"]), jax.tree.leaves(student["backbone"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(ceiling["reward_head"]["kernel"]),
                              np.asarray(student["reward_head"]["kernel"]))
