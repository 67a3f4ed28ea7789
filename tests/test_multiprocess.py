"""Several processes, one run: 2 processes x 2 CPU devices give the results of the shared tiny run (one process,
one device; `tests/shared_runs.py`), the mesh being no part of what a model is.

The multi-process run goes through `launch/multiprocess_cpu.sh` (JAX's distributed runtime, gloo collectives),
so the launcher, the flags/environment plumbing, the sharded batches, the gathered scores, the orbax
checkpoints written by both processes and the primary-only files are all exercised."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runs
from shared_runs import shared_run, tiny_config
from w2s_jax import distributed

REPO = Path(__file__).resolve().parents[1]

# the shared tiny reward-model config (demo-world data, random-init models), its batches split over every device
TINY_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from shared_runs import tiny_config

def get_config():
    c = tiny_config()
    c.mesh.fsdp = -1
    c.students = "no_conflict"  # the implicit student adds no code path of its own here
    return c
'''


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("W2S_", "JAX_", "SLURM_"))}
    env.update(runs.cache_env(), JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHON=sys.executable, XLA_FLAGS=runs.xla_flags(None))
    return env


def _losses(workdir: Path) -> dict:
    out: dict = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["role"], []).append(row["loss"])
    return out


def test_two_processes_give_the_one_process_results(tmp_path, tmp_path_factory):
    one, _, ref = shared_run(tmp_path_factory, tiny_config())
    config = tmp_path / "tiny_rm.py"
    config.write_text(TINY_CONFIG.format(tests=str(REPO / "tests")))
    two, logs = tmp_path / "two", tmp_path / "logs"
    env = _env()
    env["W2S_LOG_DIR"] = str(logs)
    multi = subprocess.run(["bash", str(REPO / "launch" / "multiprocess_cpu.sh"), "2", "2", f"--config={config}",
                            f"--workdir={two}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
    if multi.returncode != 0:
        extra = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
        pytest.fail(f"2 processes x 2 devices exited {multi.returncode}\n{multi.stdout[-4000:]}{extra}")

    got = json.loads((two / "results.json").read_text())
    assert got["metadata"]["process_count"] == 2 and got["metadata"]["devices"]["count"] == 4
    assert [m["role"] for m in got["runs"][0]["models"]] == ["weak_ceiling", "strong_ceiling", "student_no_conflict"]
    assert got["test_labels"] == ref["test_labels"]
    for r, g in zip(ref["runs"][0]["models"], got["runs"][0]["models"]):  # the reference's first three
        assert len(g["test_correct"]) == 32
        assert g["test_correct"] == r["test_correct"], r["role"]
        np.testing.assert_allclose(g["test_logits"], r["test_logits"], atol=1e-4, err_msg=r["role"])
        if r["role"].endswith("ceiling"):  # students hash their labels, which may differ in the last bit
            assert g["fingerprint"] == r["fingerprint"]
    weak_ref = json.loads((one / "seed0" / "weak_labels.json").read_text())
    weak_got = json.loads((two / "seed0" / "weak_labels.json").read_text())
    np.testing.assert_allclose(weak_got["logits"], weak_ref["logits"], atol=1e-4)
    # one writer: the primary's metrics only (process 1 appending would double the lines), and only it reports
    losses_ref, losses_got = _losses(one), _losses(two)
    assert set(losses_ref) - set(losses_got) == {"student_implicit"}
    for role, curve in losses_got.items():
        assert len(curve) == len(losses_ref[role]), role
        np.testing.assert_allclose(losses_got[role], curve, atol=1e-4, err_msg=role)
    assert "results:" in multi.stdout
    assert "results:" not in (logs / "process-1.log").read_text()
    # both processes wrote their shards of the checkpoints, and the primary marked every model complete
    for m in got["runs"][0]["models"]:
        meta = json.loads((two / m["checkpoint"] / "model.json").read_text())
        assert meta["status"] == "complete"


# ------------------------------------------------------------------------------------------------ coordinates


def test_flags_win_over_the_environment():
    env = {"W2S_COORDINATOR": "a:1", "W2S_NUM_PROCESSES": "4", "W2S_PROCESS_ID": "3"}
    spec = distributed.resolve("b:2", 2, 1, environ=env)
    assert (spec.coordinator_address, spec.num_processes, spec.process_id) == ("b:2", 2, 1)
    assert spec.multi_process and not spec.auto


def test_w2s_variables_win_over_jax_variables():
    env = {"W2S_NUM_PROCESSES": "2", "W2S_PROCESS_ID": "1", "JAX_COORDINATOR_ADDRESS": "h:9",
           "JAX_NUM_PROCESSES": "8", "JAX_PROCESS_ID": "5", "W2S_LOCAL_DEVICE_IDS": "0,1"}
    spec = distributed.resolve(environ=env)
    assert (spec.coordinator_address, spec.num_processes, spec.process_id, spec.local_device_ids) == \
        ("h:9", 2, 1, (0, 1))


def test_single_process_without_coordinates_and_outside_srun():
    assert not distributed.resolve(environ={}).multi_process
    # a SLURM batch script (no job step) with several tasks is not yet a multi-process step
    assert not distributed.resolve(environ={"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}).multi_process


def test_slurm_step_is_detected_by_jax():
    env = {"SLURM_STEP_NODELIST": "node[01-02]", "SLURM_PROCID": "3", "SLURM_NTASKS": "8"}
    spec = distributed.resolve(environ=env)
    assert spec.auto and spec.multi_process and spec.num_processes is None
    assert not distributed.resolve(environ={**env, "SLURM_NTASKS": "1"}).multi_process


@pytest.mark.parametrize("kwargs, env, message", [
    ({"num_processes": 2}, {"W2S_COORDINATOR": "h:1"}, "process_id must lie in"),
    ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"}, {}, "process_id must lie in"),
    ({"num_processes": 2, "process_id": 0}, {}, "coordinator address"),
    ({}, {"W2S_NUM_PROCESSES": "two"}, "W2S_NUM_PROCESSES must be an integer"),
    ({"local_device_ids": "0,x"}, {}, "--local_device_ids must be comma-separated"),
])
def test_bad_coordinates_name_the_setting(kwargs, env, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.resolve(**kwargs, environ=env)


def test_single_process_helpers_are_plain():
    import jax.numpy as jnp

    assert distributed.is_primary() and distributed.agree(True) == 1 and distributed.agree(-1) == -1
    distributed.sync("nothing to wait for")
    distributed.check_same("x", "a value")
    np.testing.assert_array_equal(distributed.fetch_global(jnp.arange(3)), np.arange(3))


# ------------------------------------------------------------------------------------------------ sweeps


def _sweep_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_sweep", REPO / "launch" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_grid_names_and_slots(capsys):
    sweep = _sweep_module()
    axes = [sweep.parse_axis("conflict.alpha=0.1,0.5"),
            sweep.parse_axis("--config.students=no_conflict|implicit,explicit")]
    points = sweep.grid_points(axes)
    assert points == [{"conflict.alpha": "0.1", "students": "no_conflict"},
                      {"conflict.alpha": "0.1", "students": "implicit,explicit"},
                      {"conflict.alpha": "0.5", "students": "no_conflict"},
                      {"conflict.alpha": "0.5", "students": "implicit,explicit"}]
    assert sweep.run_name(1, points[1]) == "001-alpha=0.1_students=implicit-explicit"
    assert sweep.make_slots("0,1,2,3", 2) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert sweep.make_slots("cpu:3", 1) == [{"JAX_PLATFORMS": "cpu"}] * 3
    with pytest.raises(ValueError, match="does not divide"):
        sweep.make_slots("0,1,2", 2)
    with pytest.raises(ValueError, match="expected key=v1,v2"):
        sweep.parse_axis("alpha")
    assert sweep.main(["--config=c.py", "--root=/nonexistent/r", "--grid", "seeds=0,1", "--devices=0,1",
                       "--dry_run", "--", "--config.train.epochs=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and lines[1].startswith("CUDA_VISIBLE_DEVICES=1 ")
    assert "--config.seeds=1" in lines[1] and lines[1].endswith("--config.train.epochs=1")


def test_a_model_in_training_is_locked_against_a_second_run(tmp_path):
    import fcntl

    from w2s_jax.train.checkpoint import ModelStore

    store = ModelStore(tmp_path, "ceiling", {"x": 1})
    with store.exclusive():
        lock = store.directory.parent / f".{store.directory.name}.lock"
        with open(lock, "a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a") as other:  # released
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
