"""The command line and the outputs: --print_config, --dry_run (its fingerprints are the run's), short config
names, results.json metadata, --overwrite keeping curves apart, and the README's Python API snippet.

The tiny reward-model and DPO runs of `shared_runs.py` (demo world data, random-init 1-layer models, trained BPE
tokenizers) are shared with test_api.py; the references are what those runs wrote (results.json), hand-written
values and the files on disk."""
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runs
from w2s_jax.config_check import validate
from w2s_jax.configs import load_config_file
from shared_runs import shared_run, tiny_config
from w2s_jax.experiments import dry_run as plan, run
from w2s_jax.experiments.plan import plan_lines

ROOT = Path(__file__).resolve().parents[1]
HEX64 = re.compile(r"[0-9a-f]{64}")


def fingerprints(entries) -> dict:
    return {(m["seed"], m["role"]): m["fingerprint"] for m in entries}


def planned(p) -> list[dict]:
    return [m for r in p["runs"] for m in r["models"]]


def recorded(results) -> dict:
    return {(r["seed"], m["role"]): m["fingerprint"] for r in results["runs"] for m in r["models"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(workdir, config, the dry run before the run, results) of the shared tiny reward-model run."""
    c = tiny_config()
    workdir, before, results = shared_run(tmp_path_factory, c)
    return workdir, c, before, results


def test_dry_run_before_the_run_lists_the_fingerprints_the_run_records(tiny):
    workdir, c, before, results = tiny
    got, want = fingerprints(planned(before)), recorded(results)
    assert set(got) == set(want) == {(0, r) for r in ("weak_ceiling", "strong_ceiling", "student_no_conflict",
                                                      "student_implicit")}
    for key in [(0, "weak_ceiling"), (0, "strong_ceiling")]:  # trained on the ground truth: known beforehand
        assert HEX64.fullmatch(got[key]) and got[key] == want[key]
    by_role = {m["role"]: m for m in planned(before)}
    for role in ("student_no_conflict", "student_implicit"):  # trained on the weak ceiling's labels: not yet
        assert got[(0, role)] is None and "weak_labels.json" in by_role[role]["waits_for"]
    assert by_role["student_implicit"]["splits"] == ["weak", "conflict"]
    assert not any(m["in_store"] for m in planned(before))
    assert before["data"]["gt"]["n"] == 32 and before["data"]["conflict"]["n"] == 16


def test_dry_run_after_the_run_knows_every_model_and_finds_it_in_the_store(tiny):
    workdir, c, _, results = tiny
    after = plan(c, workdir, validate(c, n_devices=1))
    assert fingerprints(planned(after)) == recorded(results)
    assert all(m["in_store"] for m in planned(after))
    assert after["notes"] == []  # same config: the run would not be refused
    lines = plan_lines(after)
    assert any(recorded(results)[(0, "student_implicit")] in line and "in store" in line for line in lines)


def test_dpo_dry_run_fingerprints_are_the_run_s(tmp_path_factory):
    """The preference graph: SFT then DPO per model, hard weak labels, a confidence filter."""
    c = tiny_config("dpo_helpful")
    workdir, before, results = shared_run(tmp_path_factory, c)
    after = plan(c, workdir, validate(c, n_devices=1))
    want = recorded(results)
    assert len(want) == 4 and fingerprints(planned(after)) == want
    assert all(m["in_store"] and m["sft"]["in_store"] and m["stage"] == "dpo" for m in planned(after))
    got = fingerprints(planned(before))
    assert got[(0, "weak_ceiling")] == want[(0, "weak_ceiling")] and got[(0, "student_no_conflict")] is None


def test_results_metadata_keys_and_types(tiny):
    _, _, _, results = tiny
    on_disk = json.loads((tiny[0] / "results.json").read_text())
    meta = on_disk["metadata"]
    assert on_disk["schema_version"] == 2
    assert set(meta) == {"package_version", "git_commit", "date", "jax_version", "jaxlib_version", "flax_version",
                         "devices", "process_count"}
    import flax
    import jax

    import w2s_jax

    assert meta["package_version"] == w2s_jax.__version__
    assert meta["jax_version"] == jax.__version__ and meta["flax_version"] == flax.__version__
    assert meta["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", meta["git_commit"])
    if (ROOT / ".git").exists():  # this checkout: the commit is HEAD's
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert meta["git_commit"].split("+")[0] == head.strip()
    date = datetime.datetime.fromisoformat(meta["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 3600
    assert meta["devices"] == {"platform": "cpu", "kind": "cpu", "count": 8, "local_count": 8}  # conftest's 8
    assert meta["process_count"] == 1


def test_git_commit_is_none_outside_a_checkout(tmp_path):
    from w2s_jax.experiments.metadata import git_commit

    assert git_commit(tmp_path) is None


def test_readme_python_api_snippet_runs_on_one_device(tiny, tmp_path):
    """Every ```python block of the README's "Python API" paragraph, run as a script in a fresh process with one
    CPU device (not the tests' 8) against the tiny work directory."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Python API**"):]
    section = section[:section.index("\n**", 3)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks and all("runs/demo" in b for b in blocks)
    for i, block in enumerate(blocks):
        script = tmp_path / f"snippet{i}.py"
        script.write_text(block.replace("runs/demo", str(tiny[0]))
                          + "\nimport jax\nprint('devices', jax.device_count())\n")
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                              env=runs.env(PYTHONPATH=str(ROOT)), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        assert lines[0] == "reward_model" and lines[-1] == "devices 1"


# -- --overwrite: the replaced config's curves are moved aside ---------------------------------------------------

def test_overwrite_with_another_config_sets_the_old_curves_aside(tiny, tmp_path):
    import shutil

    workdir = tmp_path / "wd"
    shutil.copytree(tiny[0], workdir)
    old_lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert old_lines and (workdir / "tensorboard").is_dir()
    c = tiny_config()
    c.train.lr = c.train.lr * 2  # another config: every model trains again
    c.students = "no_conflict"
    mesh = validate(c, n_devices=1)
    with pytest.raises(ValueError, match="holds the results of a different config"):
        run(c, workdir, mesh)
    run(c, workdir, mesh, overwrite=True)
    aside = sorted(workdir.glob("metrics.jsonl.replaced-*"))
    assert len(aside) == 1 and aside[0].read_text().splitlines() == old_lines
    assert len(list(workdir.glob("tensorboard.replaced-*"))) == 1
    new_rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {r["role"] for r in new_rows} == {"weak_ceiling", "strong_ceiling", "student_no_conflict"}
    # each role's steps start at 1 once: no second config's curve appended to the first
    for role in {r["role"] for r in new_rows}:
        steps = [r["step"] for r in new_rows if r["role"] == role]
        assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert json.loads((workdir / "results.json").read_text())["config"]["train"]["lr"] == c.train.lr
    # the same config again (resume / extend) keeps appending to its own log
    run(c, workdir, mesh, overwrite=True)
    assert len(list(workdir.glob("metrics.jsonl.replaced-*"))) == 1


# -- the command line ------------------------------------------------------------------------------------------

def main(*args, cwd=ROOT, timeout=300):
    env = runs.env(W2S_PROGRESS="lines", PYTHONPATH=str(ROOT))  # this checkout, from any cwd
    return runs.main(*args, env_=env, cwd=cwd, timeout=timeout)


def test_print_config_prints_every_field_after_overrides(tmp_path):
    proc = main("--config=rm_helpful:demo", "--config.train.lr=0.25", "--config.seeds=3", "--print_config",
                f"--workdir={tmp_path / 'wd'}", cwd=tmp_path)  # a short name, from outside the checkout
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split(" = ", 1) for line in proc.stdout.splitlines())
    c = load_config_file(str(ROOT / "configs/rm_helpful.py:demo"))

    def leaves(node, prefix=""):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    assert set(values) == set(leaves(c.to_dict()))
    assert values["train.lr"] == "0.25" and values["seeds"] == "'3'"
    assert values["data.n_gt"] == repr(c.data.n_gt) and values["experiment"] == "'reward_model'"
    assert not (tmp_path / "wd").exists()  # no compute, nothing written


def test_missing_config_name_lists_the_installed_ones(tmp_path):
    proc = main("--config=rm_nope:demo", "--print_config", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--config=rm_nope:demo: file not found" in lines[0]
    assert "rm_helpful" in lines[0] and "dpo_helpful" in lines[0]


def test_dry_run_of_an_invalid_config_stops_like_a_real_run(tmp_path):
    args = ["--config=rm_helpful:demo", "--config.train.batch_size=0", f"--workdir={tmp_path / 'wd'}"]
    dry, real = main(*args, "--dry_run"), main(*args)
    assert dry.returncode == real.returncode == 2
    assert dry.stderr.strip() == real.stderr.strip() and len(dry.stderr.strip().splitlines()) == 1
    assert dry.stderr.startswith("error: config.train.batch_size")


def test_dry_run_on_the_command_line_lists_models_and_data(tmp_path):
    args = ["--config=rm_helpful:demo", "--config.data.n_gt=32", "--config.data.n_weak=32", "--config.data.n_test=32",
            "--config.data.n_conflict=16", "--config.weak.init=random", "--config.weak.tokenizer=bpe:300",
            "--config.strong.init=random", "--config.strong.tokenizer=bpe:300", "--config.seeds=0,1",
            "--config.students=no_conflict", f"--workdir={tmp_path / 'wd'}", "--dry_run"]
    proc = main(*args)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert any(line.strip().startswith("data gt: 32 pairs") for line in out)
    models = [line for line in out if line.strip().startswith("seed ")]
    assert len(models) == 6  # 2 seeds x (2 ceilings + 1 student)
    assert sum(bool(HEX64.search(line)) and "to train" in line for line in models) == 4
    assert sum("waits for weak_ceiling's labels" in line for line in models) == 2
    assert not (tmp_path / "wd" / "models").exists() and not (tmp_path / "wd" / "metrics.jsonl").exists()


def test_config_short_names_resolve_in_both_flag_forms():
    from w2s_jax.config_files import configs_dir, resolve_config_args

    path = str(configs_dir() / "rm_sweep.py")
    assert resolve_config_args(["prog", "--config=rm_sweep:shapes", "--config.seeds=1"]) == \
        ["prog", f"--config={path}:shapes", "--config.seeds=1"]
    assert resolve_config_args(["prog", "--config", "rm_sweep.py"]) == ["prog", f"--config={path}"]
    here = str(ROOT / "configs/rm_helpful.py") + ":demo"  # an existing path is kept as written
    assert resolve_config_args(["prog", f"--config={here}"]) == ["prog", f"--config={here}"]
    assert resolve_config_args(["prog", "--config=nope"]) == ["prog", "--config=nope"]
