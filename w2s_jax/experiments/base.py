"""What every experiment shares: work directory, mesh, Trainer, tokenizers, model stores, seeds, results files.

An experiment is built once per run; what does not depend on the seed (the splits, the tokenizers, the token
cache) is made once in `setup`, then `run_seed(seed)` trains and scores every model of one seed. A seed
changes the init of new heads and layers, the training data order and the A/B order of reward-model pairs.
results.json is schema version 2 (one entry per seed in `runs`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh

from w2s_jax import distributed, faults
from w2s_jax.atomic import write_atomic, write_json_atomic
from w2s_jax.data import pairs as pairs_lib
from w2s_jax.data.batches import bucket_lengths
from w2s_jax.data.loading import hash_arrays, load_splits, load_tokenizer
from w2s_jax.experiments.dry_run import BasesPending, DryRun
from w2s_jax.experiments.metadata import run_metadata
from w2s_jax.experiments.pretrain import DEMO_WORLD, base_plan, demo_world_bases, read_record
from w2s_jax.experiments.spec import TrainedModelSpec
from w2s_jax.models.convert import resolve_source
from w2s_jax.train.checkpoint import ModelStore
from w2s_jax.train.metrics_log import MetricsLog
from w2s_jax.train.step import default_micro_batch
from w2s_jax.train.trainer import Trainer, TrainResult, TrainSpec

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2


def parse_seeds(config) -> list[int]:
    """`config.seeds`: a comma-separated string ("0,1,2"; `--config.seeds=0,1,2`), an int or a list of ints."""
    raw = config.seeds
    items = raw.split(",") if isinstance(raw, str) else ([raw] if isinstance(raw, int) else list(raw))
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise ValueError(f"config.seeds: expected comma-separated integers like '0,1,2', got {raw!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"config.seeds: expected distinct non-negative integers, got {raw!r}")
    return seeds


def parse_students(config) -> list[str]:
    return [s.strip() for s in config.students.split(",") if s.strip()]


class Experiment(DryRun):
    """Subclasses name themselves and declare their students once: `STUDENTS` maps a name of
    `config.students` to the role it has in results.json."""

    STUDENTS: ClassVar[dict[str, str]] = {}
    dry_run = False  # set by `plan()`: bases are looked up, never pretrained; nothing is trained or saved

    def __init__(self, config, workdir: str | Path, mesh: Mesh, store_root: str | Path | None = None):
        """`store_root` (default: `workdir`) holds the model checkpoints and the token cache; a sweep shares one
        between its runs, so a model that several weak/strong pairs need is trained once."""
        self.config, self.workdir, self.mesh = config, Path(workdir), mesh
        self.store_root = Path(store_root) if store_root is not None else self.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(self.workdir)
        self.seeds = parse_seeds(config)
        self.buckets = bucket_lengths(config.data.max_len, config.data.bucket_multiple, config.data.max_buckets)
        self.runtime = {k: config.model[k] for k in ("param_dtype", "dtype", "remat_policy", "scan_layers",
                                                     "attention_impl")}
        self.runtime["reward_index"] = config.model.get("reward_index", "last")
        packed = bool(config.train.packing)
        self.trainer = Trainer(mesh, self.buckets, layout="packed" if packed else "padded",
                               pack_len=config.train.pack_len if packed else None, log_fn=self.metrics.write)
        self.run_log: dict[str, Any] = {"runs": [], "test_scoring_calls": 0}
        self._test_scored: dict[str, bool] = {}
        self.bases: dict[str, dict] = {}  # model key -> its pretrained demo-world base (record + directory)
        self.seed_log: dict[str, Any] = {}
        self.seed = self.seeds[0]  # the seed being run
        self.pending_bases: dict[str, dict] = {}

    # -- what the config asks for ----------------------------------------------------------------------------
    @classmethod
    def check_students(cls, students: list[str]) -> None:
        unknown = [s for s in students if s not in cls.STUDENTS]
        if unknown:
            raise ValueError(f"config.students: unknown student(s) {unknown}; known: {list(cls.STUDENTS)}")

    @classmethod
    def conflict_students(cls, students: list[str]) -> list[str]:
        """The students of `students` that train on the conflict set (the implicit ones): only they make a run
        read it."""
        return [s for s in students if s in cls.STUDENTS and s.endswith("implicit")]

    def students(self) -> list[str]:
        return parse_students(self.config)

    @property
    def model_keys(self) -> tuple[str, ...]:
        """The models the students need: bootstrapping adds the intermediate (original-spec §5)."""
        boot = any(s.startswith("bootstrap") for s in self.students())
        return ("weak", "strong", "intermediate") if boot else ("weak", "strong")

    @property
    def eval_pack_len(self) -> int | None:
        """Scoring packs its batches like training does (`config.train.packing`)."""
        return self.config.train.pack_len if self.config.train.packing else None

    # -- made once per run -----------------------------------------------------------------------------------
    def load_data(self) -> pairs_lib.PairSplits:
        students = self.students()
        self.check_students(students)
        conflict_students = self.conflict_students(students)
        splits = load_splits(self.config.data, need_conflict=bool(conflict_students))
        skipped = {name: r.summary() for name, r in splits.skip_reports.items() if r.skipped}
        for line in skipped.values():
            log.warning("data: %s", line)
            if distributed.is_primary():
                print(f"data: {line}")
        self.run_log["skipped_rows"] = skipped
        if conflict_students and not splits.conflict:
            raise ValueError(f"config.students: {conflict_students} train on the conflict set but none was loaded "
                             "(set config.data.files.conflict and config.data.n_conflict)")
        self.bases = self.pretrained_bases(splits)
        self.run_log["bases"] = {which: {k: v for k, v in b.items() if k != "spec"} for which, b in self.bases.items()}
        return splits

    def pretrained_bases(self, splits) -> dict[str, dict]:
        """The demo-world bases the models start from: pretrained when missing, or in a dry run only looked up
        (a missing one goes to `pending_bases`)."""
        self.planned_splits = splits
        if not self.dry_run:
            return demo_world_bases(self.config, self.model_keys, splits, self.store_root, log_fn=self.metrics.write)
        found = {}
        for which, plan in base_plan(self.config, self.model_keys, splits, self.store_root).items():
            record = read_record(plan["directory"])
            if record is not None and record.get("fingerprint") == plan["fingerprint"]:
                found[which] = {**record, "directory": str(plan["directory"])}
            else:
                self.pending_bases[which] = plan
        return found

    def model_spec(self, which: str):
        """The spec a model is built from: `config[which]`, or for `init="demo-world"` its pretrained base
        (init "pretrained", name and tokenizer = the base's directory)."""
        spec = self.config[which]
        if which not in self.bases:
            return spec
        spec = spec.copy_and_resolve_references()
        with spec.unlocked():
            spec.init, spec.name = "pretrained", self.bases[which]["directory"]
            spec.tokenizer = spec.name
        return spec

    def fingerprint_model(self, which: str) -> dict:
        """What a trained model's fingerprint reads of its base: the config's spec, plus the base's own
        fingerprint (never its path) when it was pretrained here."""
        spec = self.config[which].to_dict()
        return {**spec, "base": self.bases[which]["fingerprint"]} if which in self.bases else spec

    @property
    def cache_dir(self) -> Path:
        """Where dequantised packaged models (GGUF) are kept: with the pretrained bases, shared by a sweep."""
        return self.store_root / "models" / "base"

    def load_tokenizers(self, corpus: list[str]) -> dict:
        """One tokenizer per model key; models that name the same tokenizer share one object."""
        if self.pending_bases:  # a dry run before the bases exist: their tokenizers are not known yet
            raise BasesPending(sorted(self.pending_bases))
        c, out, by_name = self.config, {}, {}
        for which in self.model_keys:
            spec = self.model_spec(which)
            key = spec.tokenizer or spec.name
            if key not in by_name:
                by_name[key] = load_tokenizer(spec, corpus, c.model.trust_remote_code)
                if which in self.bases:  # named by what made it, not where it lies: fingerprints move with a copy
                    by_name[key].name_or_path = f"{DEMO_WORLD}:{self.bases[which]['fingerprint']}"
            out[which] = by_name[key]
        self.check_models(out)
        # kept by fingerprint, so a trained model can be exported or scored later
        if distributed.is_primary() and not self.dry_run:
            from w2s_jax.data.tokenize import tokenizer_fingerprint
            from w2s_jax.models.tokenizer_store import save_tokenizer

            for tok in {id(t): t for t in out.values()}.values():
                save_tokenizer(self.store_root, tok, tokenizer_fingerprint(tok))
        return out

    def check_models(self, tokenizers: dict) -> None:
        """Every pretrained model's config against its tokenizer and data.max_len, before any model trains (a
        random-init model is built to fit both)."""
        from w2s_jax.models import registry
        from w2s_jax.models.build import check_compatible
        from w2s_jax.models.files import load_hf_config

        c = self.config
        for which in self.model_keys:
            spec = self.model_spec(which)
            if spec.init != "pretrained":
                continue
            hf_config = load_hf_config(resolve_source(spec.name, cache_dir=self.cache_dir),
                                       trust_remote_code=c.model.trust_remote_code)
            check_compatible(registry.config_from_hf(hf_config, **self.runtime), tokenizers[which],
                             c.data.max_len, f"config.{which} ({spec.name})")

    def desc(self, role: str) -> str:
        """A model's name in progress bars, logs and metrics.jsonl: its role, and its seed when there are several."""
        return role if len(self.seeds) == 1 else f"{role}@seed{self.seed}"

    # -- one trained model -----------------------------------------------------------------------------------
    def train_spec(self, spec: TrainedModelSpec) -> TrainSpec:
        rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        micro = self.config.train.micro_batch_size or default_micro_batch(
            spec.batch_size, self.config.data.max_len, rows, self.mesh.devices.flat[0].platform,
            remat=self.config.model.remat_policy)
        return TrainSpec(lr=spec.lr, batch_size=spec.batch_size, epochs=spec.epochs, schedule=spec.schedule,
                         seed=spec.seed, micro_batch_size=micro,
                         optim=spec.options.get("optim", "adam"), head_only=spec.options.get("head_only", False))

    def store(self, role: str, spec: TrainedModelSpec) -> ModelStore:
        """The checkpoint store of one trained model. Ceilings share one name whatever their place (a sweep's
        strong ceiling of one pair is the weak ceiling of the next: same fingerprint, same checkpoint)."""
        name = role.replace("weak_ceiling", "ceiling").replace("strong_ceiling", "ceiling").replace(
            "intermediate_ceiling", "ceiling")
        return ModelStore(self.store_root, name, spec.as_dict(), save_every=self.config.train.save_every,
                          final=self.config.train.get("final_checkpoint", "full"))

    def fit(self, role: str, spec: TrainedModelSpec, objective, model, params, dataset,
            store: ModelStore | None = None, evaluate: Callable | None = None) -> tuple[ModelStore, TrainResult]:
        """`evaluate(params) -> {"eval_loss", "eval_accuracy"}` on D_test (`eval.curves`): a curve point every
        `train.eval_every` steps (0: never), written to metrics.jsonl beside the step's metrics."""
        store = store if store is not None else self.store(role, spec)
        try:
            return store, self.trainer.fit(params, objective, model, dataset, self.train_spec(spec), store=store,
                                           desc=self.desc(role), evaluate=evaluate,
                                           eval_every=self.config.train.get("eval_every", 0))
        finally:
            store.close()

    def score_test(self, role: str, store: ModelStore, dataset, score: Callable[[], np.ndarray]) -> np.ndarray:
        """`score()` of a trained model on a test set, computed once per (model fingerprint, test set) and kept in
        `<store_root>/scores/`: a role whose model is another role's (the same fingerprint: a weak ceiling equal to
        the strong one, a sweep's shared ceilings, a rerun) reads it back instead of scoring again."""
        sides = [getattr(dataset, k) for k in ("ids_a", "ids_b", "loss_mask_a", "loss_mask_b")]
        key = hash_arrays(*[list(x) for x in sides if x is not None])[:16]
        path = self.store_root / "scores" / f"{store.fingerprint[:32]}-{key}.npy"
        if distributed.agree(path.is_file()):
            self._test_scored[role] = False
            return np.load(path, allow_pickle=False)
        scores = np.asarray(score())
        self.run_log["test_scoring_calls"] += 1
        self._test_scored[role] = True
        if distributed.is_primary():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: np.save(f, scores, allow_pickle=False), mode="wb")
        return scores

    def record(self, role: str, store: ModelStore, result: TrainResult, started: float) -> None:
        self.seed_log[role] = {"reused": result.reused, "steps_run": result.steps_run,
                               "test_scored": self._test_scored.pop(role, None),
                               "train_step_compiles": len(result.compiled_shapes),
                               "seconds": round(time.time() - started, 2), "checkpoint": str(store.directory)}
        faults.point("after_model", role)

    def model_entry(self, role: str, which: str, store: ModelStore, correct: np.ndarray, logits: np.ndarray,
                    params, provenance: dict | None = None) -> dict:
        spec = self.config[which]
        model_id = {"pretrained": spec.name, DEMO_WORLD: f"{DEMO_WORLD}:{spec.name}"}.get(spec.init,
                                                                                        f"random:{spec.name}")
        provenance = dict(provenance or {})
        if which in self.bases:
            base = self.bases[which]
            provenance["pretraining"] = {**{k: base[k] for k in ("fingerprint", "arch", "spec", "steps", "final_loss",
                                                                 "n_texts")},
                                         "directory": os.path.relpath(base["directory"], self.workdir)}
        return {"role": role, "model_id": model_id, "provenance": provenance,
                "n_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
                "fingerprint": store.fingerprint, "checkpoint": os.path.relpath(store.directory, self.workdir),
                "test_accuracy": float(correct.mean()), "test_correct": correct.tolist(),
                "test_logits": [round(float(v), 6) for v in logits]}

    def seed_dir(self, seed: int) -> Path:
        """Where a seed's own files (its weak / intermediate labels) go."""
        path = self.workdir / f"seed{seed}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- the run ---------------------------------------------------------------------------------------------
    def setup(self) -> int:
        """Everything the seeds share (splits, tokenizers, tokens); returns n_test."""
        raise NotImplementedError

    def run_seed(self, seed: int) -> tuple[list[dict], list[int]]:
        """(model entries, test labels in this seed's A/B order)."""
        raise NotImplementedError

    def run(self) -> dict:
        n_test = self.setup()
        runs = []
        for seed in self.seeds:
            self.seed, self.seed_log = seed, {}
            models, test_labels = self.run_seed(seed)
            runs.append({"seed": seed, "test_labels": list(test_labels),
                         "models": [{k: v for k, v in m.items() if k not in ("model", "params")} for m in models]})
            self.run_log["runs"].append({"seed": seed, "models": self.seed_log})
        results = {"schema_version": SCHEMA_VERSION, "metadata": run_metadata(), "experiment": self.config.experiment,
                   "config": json.loads(self.config.to_json_best_effort()), "n_test": n_test, "seeds": self.seeds,
                   "test_labels": runs[0]["test_labels"], "runs": runs}
        write_json_atomic(self.workdir / "results.json", results)
        write_json_atomic(self.workdir / "run_log.json", self.run_log)
        if distributed.is_primary():  # one line per test example and seed, linking results.json to the texts
            from w2s_jax.eval.predictions import write_predictions

            write_predictions(self.workdir, results, self.test_pairs)
        self.metrics.close()
        return with_report(self.workdir, results)


def with_report(workdir: Path, results: dict) -> dict:
    """Adds the deception metrics to results.json and writes report.md and plots/ (the primary process only)."""
    from w2s_jax.eval.report import build_report

    if distributed.is_primary():
        results["metrics"] = build_report(workdir)
    distributed.sync("report")
    return results
