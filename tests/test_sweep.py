"""A capability-ladder sweep: every pair runs, shared models train once, and the report matches the vectors."""
import json

import matplotlib.image
import numpy as np
import pytest

from test_pipeline_rm import HELPFUL, run, small_config
from test_pipeline_rm import pytestmark as needs_data  # skips without the shared data


def sweep_config():
    c = small_config(pretrained=False)
    c.data.source, c.data.conflict_path = "dir", str(HELPFUL)
    c.students = "no_conflict,implicit"
    sizes = {"xs": (8, 1), "s": (16, 1), "m": (32, 2)}
    for name, (hidden, layers) in sizes.items():
        spec = c.weak.copy_and_resolve_references()
        spec.name = f"ladder-{name}"
        spec.arch.update(hidden_size=hidden, num_layers=layers, num_heads=2)
        c.sweep.models[name] = spec
    c.sweep.pairs = "xs->s, xs->m"
    return c


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    return workdir, run(sweep_config(), workdir, n_devices=1)


@needs_data
def test_sweep_runs_every_pair_and_trains_shared_models_once(swept):
    workdir, results = swept
    assert [p["name"] for p in results["pairs"]] == ["xs->s", "xs->m"]
    first, second = results["pairs"]
    assert first["weak_params"] == second["weak_params"] < first["strong_params"] < second["strong_params"]
    assert results["schema_version"] == 2 and all([r["seed"] for r in p["runs"]] == [0] for p in results["pairs"])
    weak = [{m["role"]: m for m in p["runs"][0]["models"]}["weak_ceiling"] for p in results["pairs"]]
    assert weak[0]["fingerprint"] == weak[1]["fingerprint"]
    assert weak[0]["test_correct"] == weak[1]["test_correct"]
    run_log = json.loads((workdir / second["workdir"] / "run_log.json").read_text())["runs"][0]["models"]
    assert run_log["weak_ceiling"]["reused"] is True  # trained in the first pair, not again
    assert run_log["strong_ceiling"]["reused"] is False
    trained = [m for m in run_log.values() if not m["reused"]]
    assert trained and all(1 <= m["train_step_compiles"] <= 4 for m in trained)  # few shapes per stage
    for pair in results["pairs"]:
        assert (workdir / pair["workdir"] / "results.json").is_file()  # each pair keeps its own results
    from w2s_jax.main import summary_lines  # what `python -m w2s_jax.main` prints at the end of a sweep

    lines = summary_lines(results)
    assert len(lines) == sum(len(p["runs"][0]["models"]) for p in results["pairs"])
    assert lines[0].startswith("xs->s: ") and "weak_ceiling  test accuracy" in lines[0]


@needs_data
def test_sweep_report_files_and_numbers(swept):
    workdir, _ = swept
    results = json.loads((workdir / "results.json").read_text())
    assert (workdir / "report.md").is_file()
    for name in ("accuracy", "ds_vs_gap", "regions"):
        image = matplotlib.image.imread(workdir / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    metrics = {p["name"]: p for p in results["metrics"]["pairs"]}
    assert set(metrics) == {"xs->s", "xs->m"}
    report = (workdir / "report.md").read_text()
    for pair in results["pairs"]:
        v = {m["role"]: np.asarray(m["test_correct"], bool) for m in pair["runs"][0]["models"]}
        w, s, n, c = v["weak_ceiling"], v["strong_ceiling"], v["student_no_conflict"], v["student_implicit"]
        got = metrics[pair["name"]]
        assert got["capability_gap"]["mean"] == pytest.approx(s.mean() - w.mean())
        region = s & ~w  # S_k and W_uk
        setting = got["settings"]["implicit"]
        ds_a = (~c & region).sum() / region.sum() if region.any() else None
        if ds_a is None:
            assert setting["ds"]["ds_a"]["mean"] is None
        else:
            assert setting["ds"]["ds_a"]["mean"] == pytest.approx(ds_a)
            assert f"{ds_a:.4f}" in report
        flipped = c != s
        ds_c = (flipped & region).sum() / flipped.sum() if flipped.any() else None
        assert (setting["ds"]["ds_c"]["mean"] is None) if ds_c is None else setting["ds"]["ds_c"]["mean"] == pytest.approx(ds_c)
        assert sum(setting["tables"][0].values()) == len(w)


def test_shapes_preset_is_the_gpt2_ladder_as_random_init_models():
    from pathlib import Path

    from w2s_jax.configs import load_config_file

    c = load_config_file(str(Path(__file__).resolve().parents[1] / "configs" / "rm_sweep.py:shapes"))
    assert c.sweep.pairs == "gpt2->gpt2-medium,gpt2->gpt2-large,gpt2->gpt2-xl"
    xl = c.sweep.models["gpt2-xl"]
    assert (xl.init, xl.tokenizer, xl.arch.family) == ("random", "gpt2", "gpt2")
    assert (xl.arch.hidden_size, xl.arch.num_layers, xl.arch.num_heads) == (1600, 48, 25)
    assert (c.data.n_gt, c.data.n_weak, c.data.n_test) == (4000, 4000, 4000)
