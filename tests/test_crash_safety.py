"""Crash safety through the real entry point: a run killed (SIGKILL, via the W2S_FAULT test hook) mid-training,
during a checkpoint write or between models, then run again, ends with the per-example results of an
uninterrupted run, bit for bit on CPU; corrupt checkpoints are set aside, never loaded; a diverging run stops with
its last good checkpoint loadable; result files are replaced atomically; another config's results are never
overwritten."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runs
from test_progress import DONE, LINE
from tiny_rm_config import HELPFUL, HH, get_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "tests/tiny_rm_config.py"
needs_data = pytest.mark.skipif(not (HH.is_dir() and HELPFUL.exists()),
                                reason=f"shared HH data not found at {HH} (it is never copied into the repo)")


def main(workdir, *args, fault=None, **env):
    env = runs.env(**({"W2S_FAULT": fault} if fault else {}), **env)
    return runs.main(f"--config={CONFIG}", f"--workdir={workdir}", *args, env_=env)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(workdir, the process, its wall seconds) of an uninterrupted run, its output to a pipe (progress lines every
    0.5 s, whatever mode this shell asks for)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    started = time.monotonic()
    proc = ok(main(workdir, W2S_PROGRESS_SECONDS="0.5", W2S_PROGRESS=""))
    return workdir, proc, time.monotonic() - started


@pytest.fixture(scope="module")
def reference(uninterrupted):
    return uninterrupted[0]


@needs_data
def test_a_run_logged_to_a_pipe_has_no_carriage_returns_and_few_lines(uninterrupted):
    _, proc, wall = uninterrupted
    log = proc.stdout + proc.stderr
    assert "\r" not in log
    progress = [x for x in log.splitlines() if LINE.match(x) or DONE.match(x)]
    done = [x for x in progress if DONE.match(x)]
    # one "done" line per stage: 3 trained models and their 3 D_test scorings (+ the weak labels)
    trained = {DONE.match(x)["desc"] for x in done if " step in " in x}
    assert trained == {"weak_ceiling", "strong_ceiling", "student_no_conflict"}
    assert len(progress) <= wall / 0.5 + 2 * len(done), progress  # at most one line per interval, plus the ends


def per_example(workdir: Path) -> dict:
    results = json.loads((workdir / "results.json").read_text())
    labels = json.loads((workdir / "seed0" / "weak_labels.json").read_text())
    return {"models": {m["role"]: (m["fingerprint"], m["test_logits"], m["test_correct"])
                       for m in results["runs"][0]["models"]},
            "weak_labels": (labels["logits"], labels["soft_labels"])}


def steps_run(workdir: Path) -> dict:
    run_log = json.loads((workdir / "run_log.json").read_text())
    return {role: m["steps_run"] for role, m in run_log["runs"][0]["models"].items()}


def model_dirs(workdir: Path) -> dict:
    """role -> its checkpoint directory, from results.json."""
    return {m["role"]: workdir / m["checkpoint"]
            for m in json.loads((workdir / "results.json").read_text())["runs"][0]["models"]}


def statuses(workdir: Path) -> list[str]:
    return [json.loads(p.read_text())["status"] for p in workdir.glob("models/*/model.json")]


# Each run is killed at the next point, and each rerun resumes what the last one left: (fault, the model in
# training when it fires, models finished before it).
KILLS = [
    ("kill:after_step:weak_ceiling:5", "weak_ceiling", []),  # mid-training, step 4's checkpoint still being written
    ("kill:during_save:strong_ceiling:8", "strong_ceiling", ["weak_ceiling"]),  # the final checkpoint's write
    ("kill:after_model:strong_ceiling", None, ["weak_ceiling", "strong_ceiling"]),  # between pipeline stages
]


def logged_steps(workdir: Path) -> dict:
    steps = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():  # every line is whole JSON
        row = json.loads(line)
        steps.setdefault(row["role"], []).append(row["step"])
    return steps


@needs_data
def test_killed_runs_resume_to_identical_results(reference, tmp_path):
    for fault, training, finished in KILLS:
        killed = main(tmp_path, fault=fault)
        assert killed.returncode == -9, (fault, killed.stderr[-3000:])
        assert not (tmp_path / "results.json").exists()
        assert statuses(tmp_path).count("complete") == len(finished), fault  # never "complete" too early
        if training is not None:
            assert training in logged_steps(tmp_path), fault
    ok(main(tmp_path))
    assert per_example(tmp_path) == per_example(reference)
    assert steps_run(tmp_path)["weak_ceiling"] == steps_run(tmp_path)["strong_ceiling"] == 0  # reused at the end
    steps = logged_steps(tmp_path)
    for role in ("weak_ceiling", "strong_ceiling"):  # resumed from a checkpoint each time, never from step 1
        assert steps[role].count(1) == 1 and steps[role][-1] == 8, steps
    assert steps["student_no_conflict"] == list(range(1, 9))
    assert set(statuses(tmp_path)) == {"complete"}


def _data_files(checkpoint: Path) -> list[Path]:
    files = [p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size)


@needs_data
def test_corrupt_checkpoints_are_set_aside_never_loaded(reference, tmp_path):
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    dirs = model_dirs(workdir)
    # the student's final checkpoint: one flipped bit (orbax alone would load it without complaint)
    biggest = _data_files(dirs["student_no_conflict"] / "ckpt" / "8")[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0x01
    biggest.write_bytes(bytes(data))
    # the weak ceiling, marked complete: both of its checkpoints truncated
    for step in ("6", "8"):
        for f in _data_files(dirs["weak_ceiling"] / "ckpt" / step):
            os.truncate(f, f.stat().st_size // 2)
    proc = ok(main(workdir))
    assert "checkpoint at step 8 is unusable" in proc.stderr
    assert "is marked complete but its final checkpoint is unusable; training it again" in proc.stderr
    assert "resuming from step 6" in proc.stderr
    assert steps_run(workdir) == {"weak_ceiling": 8, "strong_ceiling": 0, "student_no_conflict": 2}
    assert per_example(workdir) == per_example(reference)
    assert (dirs["student_no_conflict"] / "unusable" / "8").is_dir()  # kept for inspection, out of the way
    assert set(statuses(workdir)) == {"complete"}


@needs_data
def test_params_only_final_checkpoints_are_reused_and_retrained_when_bad(reference, tmp_path):
    """train.final_checkpoint=params: a finished model keeps one checkpoint, its parameters alone (smaller than
    the full train state), a rerun reuses it to the same per-example results, and a corrupt one is set aside and
    the model trained again."""
    args = ("--config.train.final_checkpoint=params",)
    ok(main(tmp_path, *args))
    assert per_example(tmp_path) == per_example(reference)
    dirs, full_dirs = model_dirs(tmp_path), model_dirs(reference)
    for role, directory in dirs.items():
        assert sorted(p.name for p in (directory / "ckpt").iterdir() if p.name.isdigit()) == ["8"], role
        meta = json.loads((directory / "model.json").read_text())
        assert meta["status"] == "complete" and meta["final"] == "params", role
        size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())  # noqa: E731
        # a third of the array bytes; on these tiny models orbax's metadata files are a good part of the rest
        assert size(directory / "ckpt" / "8") < 0.75 * size(full_dirs[role] / "ckpt" / "8"), role
    for f in _data_files(dirs["weak_ceiling"] / "ckpt" / "8"):
        os.truncate(f, f.stat().st_size // 2)
    proc = ok(main(tmp_path, *args))
    assert "is marked complete but its final checkpoint is unusable; training it again" in proc.stderr
    # the other two finished models are reused from their parameters alone, to the same per-example results
    assert steps_run(tmp_path) == {"weak_ceiling": 8, "strong_ceiling": 0, "student_no_conflict": 0}
    assert per_example(tmp_path) == per_example(reference)
    assert (dirs["weak_ceiling"] / "unusable" / "8").is_dir()


@needs_data
def test_nan_loss_stops_cleanly_and_the_last_checkpoint_loads(tmp_path):
    import jax
    import orbax.checkpoint as ocp

    proc = main(tmp_path, "--config.train.lr=1e30", "--config.train.save_every=1")
    last = proc.stderr.splitlines()[-1]
    assert proc.returncode == 2, proc.stderr[-3000:]
    found = re.match(r"error: weak_ceiling: (loss|grad_norm) is (nan|inf|-inf) at step (\d+); stopping \(the last "
                     r"good checkpoint \(step (\d+)\)", last)
    assert found, last
    assert int(found[4]) == int(found[3]) - 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists() and statuses(tmp_path) == ["training"]
    (ckpt,) = tmp_path.glob("models/*/ckpt")
    manager = ocp.CheckpointManager(ckpt)
    assert manager.latest_step() == int(found[4])
    leaves = jax.tree.leaves(manager.restore(manager.latest_step()))
    assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)


# -- atomic writers ------------------------------------------------------------------------------------------------


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text('{"old": true}\n')
    code = ("import os, signal\nfrom w2s_jax.atomic import write_atomic\n"
            "def write(f):\n    f.write('{\"new\": ')\n    f.flush()\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"write_atomic({str(target)!r}, write)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=runs.env())
    assert proc.returncode == -9, proc.stderr
    assert target.read_text() == '{"old": true}\n'


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _writers():
    from w2s_jax.eval import report
    from w2s_jax.train import checkpoint

    def json_writer(path, monkeypatch):  # results.json, *_labels.json, run_log.json, model.json, checksums.json
        def half_then_full(obj, f, **kwargs):
            f.write('{"half": ')
            _full_disk()

        monkeypatch.setattr(json, "dump", half_then_full)
        checkpoint.write_json_atomic(path, {"new": 1})

    def report_writer(path, monkeypatch):  # report.md and plots/*.png
        report._write_atomic(path, lambda f: (f.write("# half a report"), _full_disk()))

    def npy_writer(path, monkeypatch):  # preference.py's reference_logps.npy
        checkpoint.write_atomic(path, lambda f: (np.save(f, np.zeros((2, 3))), _full_disk()), mode="wb")

    return {"json": json_writer, "report": report_writer, "npy": npy_writer}


@pytest.mark.parametrize("writer", ["json", "report", "npy"])
def test_a_failed_write_leaves_the_old_file_and_no_temp(writer, tmp_path, monkeypatch):
    target = tmp_path / "out.file"
    target.write_bytes(b"old contents")
    with pytest.raises(OSError, match="No space left"):
        _writers()[writer](target, monkeypatch)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.file"]


def test_metrics_log_drops_a_line_cut_off_by_a_crash(tmp_path):
    from w2s_jax.train.metrics_log import MetricsLog

    (tmp_path / "metrics.jsonl").write_text('{"role": "weak_ceiling", "step": 1}\n{"role": "weak_ceil')
    log = MetricsLog(tmp_path)
    log.write("weak_ceiling", {"step": 2, "loss": 0.5})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


# -- another config's results --------------------------------------------------------------------------------------


def _results_of(config, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "results.json"
    path.write_text(json.dumps({"config": json.loads(config.to_json_best_effort()), "models": []}))
    return path


@needs_data
def test_results_of_another_config_are_refused_before_compute(tmp_path):
    path = _results_of(get_config(), tmp_path)
    before = path.read_bytes()
    proc = main(tmp_path, "--config.train.lr=0.002")
    last = proc.stderr.splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert last.startswith(f"error: {path} holds the results of a different config (train.lr: 0.001 there, "
                           "0.002 here); use a fresh --workdir, or --overwrite"), last
    assert path.read_bytes() == before and not (tmp_path / "models").exists()
    # --overwrite lets it through (here to a data error, which stops it before compute)
    proc = main(tmp_path, "--overwrite", "--config.train.lr=0.002", "--config.data.n_gt=100000")
    assert proc.returncode == 2 and "asked for 100000 pairs" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]


def test_only_result_changing_fields_count(tmp_path):
    from w2s_jax.experiments.guard import check_results_config

    _results_of(get_config(), tmp_path)
    same_results = get_config()
    same_results.mesh.fsdp = -1
    same_results.train.update(eval_batch_size=64, save_every=5, micro_batch_size=4)
    same_results.model.update(remat_policy="full", scan_layers=False)
    same_results.eval.mode = "sharded"
    check_results_config(same_results, tmp_path)
    for field, value in (("seeds", "1"), ("students", "no_conflict,explicit")):
        other = get_config()
        other[field] = value
        with pytest.raises(ValueError, match=f"{field}: .* there, .* here"):
            check_results_config(other, tmp_path)
    other = get_config()
    other.strong.arch.hidden_size = 48
    with pytest.raises(ValueError, match="strong.arch.hidden_size: 32 there, 48 here"):
        check_results_config(other, tmp_path)


def test_a_field_added_since_counts_only_off_its_default(tmp_path):
    """An older package's results.json lacks fields added later (model.lora, data.files, ...): reusing its work
    directory is fine while they hold their defaults, refused once one is set."""
    from w2s_jax.experiments.guard import check_results_config

    old = json.loads(get_config().to_json_best_effort())
    del old["model"]["lora"], old["data"]["files"]
    (tmp_path / "results.json").write_text(json.dumps({"config": old, "models": []}))
    check_results_config(get_config(), tmp_path)
    other = get_config()
    other.model.lora.rank = 4
    with pytest.raises(ValueError, match=r"model.lora.rank: '<absent>' there, 4 here"):
        check_results_config(other, tmp_path)
