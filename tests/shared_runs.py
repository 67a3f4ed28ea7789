"""Tiny experiment runs that several test files read: each is run once per test session, by whichever xdist worker
asks first, while the others wait on a file lock and then read the same work directory. A test that changes a work
directory copies it first.

The configs are the demo presets cut down: demo-world data, random-init 1-layer models with trained BPE
tokenizers, 32 pairs per split, one seed, one device."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from filelock import FileLock

from w2s_jax.atomic import write_json_atomic
from w2s_jax.config_check import validate
from w2s_jax.configs import load_config_file
from w2s_jax.experiments import EXPERIMENTS, dry_run

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(name: str = "rm_helpful"):
    """The demo preset of `configs/<name>.py`, tiny; the reward-model run trains the no-conflict and implicit
    students, a preference run SFT and DPO / SimPO one epoch each, with the no-conflict and the confidence-filtered
    implicit students."""
    c = load_config_file(str(ROOT / f"configs/{name}.py:demo"))
    c.data.n_gt = c.data.n_weak = c.data.n_test = 32
    c.data.n_conflict = 16
    c.data.max_len, c.data.bucket_multiple = 64, 64
    for which, width in (("weak", 16), ("strong", 32)):
        c[which].init, c[which].tokenizer = "random", "bpe:300"
        c[which].arch.update(hidden_size=width, num_layers=1, num_heads=2)
    c.train.update(batch_size=16, eval_batch_size=32, save_every=0)
    c.students = "no_conflict,implicit"
    if "po" in c:  # a preference experiment
        c.po.update(sft_epochs=1, epochs=1)
        c.students = "no_conflict,hc_confidence_implicit"
    c.seeds = "0"
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1})
    return c


def _session_dir(tmp_path_factory) -> Path:
    """A folder every worker of this test session shares (under xdist, the parent of the workers' own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_run(tmp_path_factory, config) -> tuple[Path, dict, dict]:
    """(workdir, the dry run of `config` before its run, results.json) of one run of `config` on one device,
    made once per session. The dry run is checked to write nothing."""
    key = hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]
    root = _session_dir(tmp_path_factory) / f"shared-run-{key}"
    workdir, done = root / "wd", root / "before.json"
    with FileLock(f"{root}.lock"):
        if not done.exists():
            mesh = validate(config, n_devices=1)
            before = dry_run(config, workdir, mesh)
            assert not (workdir / "metrics.jsonl").exists() and not (workdir / "models").exists()  # nothing trained
            EXPERIMENTS[config.experiment](config, workdir, mesh).run()
            write_json_atomic(done, before)
    return workdir, json.loads(done.read_text()), json.loads((workdir / "results.json").read_text())


def margins(results: dict, role: str, seed: int = 0) -> np.ndarray:
    """The D_test margins a run wrote for `role`: its logits, signed so that > 0 prefers the chosen answer."""
    run_ = next(r for r in results["runs"] if r["seed"] == seed)
    logits = np.asarray(next(m for m in run_["models"] if m["role"] == role)["test_logits"])
    return np.where(np.asarray(run_["test_labels"]) == 1, 1.0, -1.0) * logits
