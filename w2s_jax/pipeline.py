"""The reward-modelling weak-to-strong experiment (original-spec §2, §4) as one graph of trained models.

weak ceiling, strong ceiling  <- D_gt (ground truth)
weak labels                   <- weak ceiling on D_weak: soft sigma(z)
students (strong)             <- D_weak with weak labels: no conflict | implicit (+ GT conflict pairs) | explicit
every model                   -> D_test, per-example correctness in test order -> results.json

Each trained model is a `ModelStore` keyed by a fingerprint of what determines it, so a rerun reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from w2s_jax import distributed, faults
from w2s_jax.data import pairs as pairs_lib
from w2s_jax.data.batches import PairDataset, bucket_lengths, pack_row_len
from w2s_jax.data.bigbench import read_bigbench_pairs
from w2s_jax.data.packing import packed_pair_microbatches
from w2s_jax.data.tokenize import tokenize_cached, tokenizer_fingerprint
from w2s_jax.data.vocab import train_bpe_tokenizer
from w2s_jax.eval.inference import packed_pair_rewards, pair_rewards, score_pairs
from w2s_jax.models.build import build_model
from w2s_jax.models.convert import resolve_source
from w2s_jax.train import losses
from w2s_jax.atomic import write_json_atomic
from w2s_jax.train.checkpoint import ModelStore
from w2s_jax.train.loop import TrainSpec, train
from w2s_jax.train.step import to_microbatches
from w2s_jax.train.metrics_log import MetricsLog

log = logging.getLogger(__name__)
LOSS_KEYS = ("ids_a", "mask_a", "ids_b", "mask_b", "label", "gt", "valid")
STUDENTS = {"no_conflict": "student_no_conflict", "implicit": "student_implicit", "explicit": "student_explicit",
            "bootstrap": "student_bootstrap", "bootstrap_implicit": "student_bootstrap_implicit"}


# ------------------------------------------------------------------------------------------------ data


def load_splits(data) -> pairs_lib.PairSplits:
    """D_gt, D_weak, D_test and, when `data.n_conflict > 0`, the conflict set (GT pairs of the other objective)."""
    n_conflict = int(data.n_conflict)
    if data.source == "demo":  # the offline world: every split, the conflict set included, is generated
        from w2s_jax.data.demo_world import demo_splits

        return demo_splits(data)
    from_file = n_conflict > 0 and (data.conflict_path or data.source == "dir")
    if data.source == "dir":
        splits = pairs_lib.load_paper_dir(data.dir, n_gt=data.n_gt, n_weak=data.n_weak, n_test=data.n_test,
                                          allow_skips=data.allow_skips)
    elif data.source == "hub":
        splits = pairs_lib.load_hub_hh(data.hub_subset, sizes=(data.n_gt, data.n_weak, data.n_test), seed=data.seed,
                                       conflict_data_dir=None if from_file or not n_conflict else
                                       data.hub_conflict_subset, n_conflict=0 if from_file else n_conflict)
    else:
        raise ValueError(f"config.data.source must be 'dir', 'hub' or 'demo', got {data.source!r}")
    if from_file:
        path = data.conflict_path or str(Path(data.dir) / pairs_lib.CONFLICT_FILE)
        conflict, report = (read_bigbench_pairs(path), None) if path.endswith(".json") else \
            pairs_lib.read_jsonl_pairs(path, allow_skips=data.allow_skips)
        if report is not None:
            splits.skip_reports["conflict"] = report
        if len(conflict) < n_conflict:
            log.warning("conflict set %s has %d pairs; config.data.n_conflict=%d, using all", path, len(conflict),
                        n_conflict)
        splits.conflict = conflict[:n_conflict]
    return splits


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(spec, texts, trust_remote_code: bool):
    name = spec.tokenizer or spec.name
    if name.startswith("bpe:"):
        return train_bpe_tokenizer(texts, int(name.split(":", 1)[1]))
    import transformers

    # a directory holding a tokenizer alone (no model config) is as good as a model directory here
    source = name if any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES) else resolve_source(name)
    return transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def hash_arrays(*arrays) -> str:
    """sha256 over arrays; a list argument is hashed row by row (ragged token sequences)."""
    h = hashlib.sha256()
    for a in arrays:
        for row in (a if isinstance(a, list) else [a]):
            h.update(np.ascontiguousarray(row).tobytes())
            h.update(b"|")
    return h.hexdigest()


def rm_loss(model, kind: str, alpha: float):
    """The objective of one reward-model run: (params, microbatch, progress) -> LossTerms."""

    def loss_fn(params, mb, progress):
        # packed rows (A sides then B sides of the microbatch's pairs) or padded
        z = (packed_pair_rewards if "segments" in mb else pair_rewards)(model, params, mb)
        if kind == "bce":
            return losses.rm_bce(z, mb["label"], mb["valid"], mb["gt"])
        if kind == "logconf":
            return losses.rm_logconf(z, mb["label"], progress, valid=mb["valid"], gt_labels=mb["gt"])
        if kind == "explicit":
            return losses.rm_explicit_conflict(z, mb["label"], mb["gt"], alpha, mb["valid"])
        raise ValueError(f"unknown reward-model loss {kind!r}")

    return loss_fn


# ------------------------------------------------------------------------------------------------ pipeline


class Experiment:
    """What every experiment shares: work directory, mesh, metrics log, buckets, tokenizers, results files."""

    @property
    def model_keys(self) -> tuple[str, ...]:
        """The models the students need: bootstrapping adds the intermediate (original-spec §5)."""
        boot = any(s.startswith("bootstrap") for s in self.students())
        return ("weak", "strong", "intermediate") if boot else ("weak", "strong")

    def __init__(self, config, workdir: str | Path, mesh: Mesh, store_root: str | Path | None = None):
        """`store_root` (default: `workdir`) holds the model checkpoints and the token cache; a sweep shares one
        between its runs, so a model that several weak/strong pairs need is trained once."""
        self.config, self.workdir, self.mesh = config, Path(workdir), mesh
        self.store_root = Path(store_root) if store_root is not None else self.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(self.workdir)
        self.buckets = bucket_lengths(config.data.max_len, config.data.bucket_multiple, config.data.max_buckets)
        self.runtime = {k: config.model[k] for k in ("param_dtype", "dtype", "remat_policy", "scan_layers",
                                                     "attention_impl")}
        self.run_log: dict[str, Any] = {"models": {}}

    @property
    def eval_pack_len(self) -> int | None:
        """Scoring packs its batches like training does (`config.train.packing`)."""
        return self.config.train.pack_len if self.config.train.packing else None

    def load_data(self) -> pairs_lib.PairSplits:
        splits = load_splits(self.config.data)
        skipped = {name: r.summary() for name, r in splits.skip_reports.items() if r.skipped}
        for line in skipped.values():
            log.warning("data: %s", line)
            if distributed.is_primary():
                print(f"data: {line}")
        self.run_log["skipped_rows"] = skipped
        return splits

    def load_tokenizers(self, corpus: list[str]) -> dict:
        """One tokenizer per model key; models that name the same tokenizer share one object."""
        c, out, by_name = self.config, {}, {}
        for which in self.model_keys:
            key = c[which].tokenizer or c[which].name
            if key not in by_name:
                by_name[key] = load_tokenizer(c[which], corpus, c.model.trust_remote_code)
            out[which] = by_name[key]
        self.check_models(out)
        return out

    def check_models(self, tokenizers: dict) -> None:
        """Every pretrained model's config against its tokenizer and data.max_len, before any model trains (a
        random-init model is built to fit both)."""
        import transformers

        from w2s_jax.models import registry
        from w2s_jax.models.build import check_compatible

        c = self.config
        for which in self.model_keys:
            spec = c[which]
            if spec.init != "pretrained" or spec.name.endswith(".gguf"):
                continue
            hf_config = transformers.AutoConfig.from_pretrained(resolve_source(spec.name),
                                                                trust_remote_code=c.model.trust_remote_code)
            check_compatible(registry.config_from_hf(hf_config, **self.runtime), tokenizers[which],
                             c.data.max_len, f"config.{which} ({spec.name})")

    def students(self) -> list[str]:
        return [s.strip() for s in self.config.students.split(",") if s.strip()]

    def train_spec(self, lr: float, epochs: int, schedule: str) -> TrainSpec:
        c = self.config
        return TrainSpec(lr=lr, batch_size=c.train.batch_size, epochs=epochs, schedule=schedule, seed=c.seed,
                         micro_batch_size=c.train.micro_batch_size or None)

    def record(self, role: str, store: ModelStore, result, started: float) -> None:
        self.run_log["models"][role] = {"reused": result.reused, "steps_run": result.steps_run,
                                        "train_step_compiles": len(result.compiled_shapes),
                                        "seconds": round(time.time() - started, 2), "checkpoint": str(store.directory)}
        faults.point("after_model", role)

    def store(self, role: str, spec: dict) -> ModelStore:
        """The checkpoint store of one trained model. Ceilings share one name whatever their place (a sweep's
        strong ceiling of one pair is the weak ceiling of the next: same fingerprint, same checkpoint)."""
        name = role.replace("weak_ceiling", "ceiling").replace("strong_ceiling", "ceiling").replace(
            "intermediate_ceiling", "ceiling")
        return ModelStore(self.store_root, name, spec, save_every=self.config.train.save_every,
                          final=self.config.train.get("final_checkpoint", "full"))

    def model_entry(self, role: str, which: str, store: ModelStore, correct: np.ndarray, logits: np.ndarray,
                    params) -> dict:
        spec = self.config[which]
        return {"role": role, "model_id": spec.name if spec.init == "pretrained" else f"random:{spec.name}",
                "n_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
                "fingerprint": store.fingerprint, "checkpoint": os.path.relpath(store.directory, self.workdir),
                "test_accuracy": float(correct.mean()), "test_correct": correct.tolist(),
                "test_logits": [round(float(v), 6) for v in logits]}

    def finish(self, results: dict) -> dict:
        results["models"] = [{k: v for k, v in m.items() if k not in ("model", "params")}
                             for m in results["models"]]
        write_json_atomic(self.workdir / "results.json", results)
        write_json_atomic(self.workdir / "run_log.json", self.run_log)
        self.metrics.close()
        return with_report(self.workdir, results)


class RewardModelExperiment(Experiment):
    # -- data per tokenizer -----------------------------------------------------------------------------------
    def _pairs_dataset(self, ab: pairs_lib.ABPairs, tokenizer, name: str, labels, gt) -> PairDataset:
        max_len, cache = self.config.data.max_len, self.store_root / "cache"
        side_a = tokenize_cached(ab.texts_a, tokenizer, max_len, cache_dir=cache, name=f"{name}-a")
        side_b = tokenize_cached(ab.texts_b, tokenizer, max_len, cache_dir=cache, name=f"{name}-b")
        return PairDataset(side_a.ids, side_b.ids, extras={"label": np.asarray(labels, np.float32),
                                                           "gt": np.asarray(gt, np.float32)})

    def _prepare(self, dataset: PairDataset):
        """Host batch -> microbatches: packed rows (A sides, then B sides) or padded, by config."""
        if not self.config.train.packing:
            return lambda batch, n_micro: to_microbatches(batch, n_micro, LOSS_KEYS)
        rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        row_len = pack_row_len(self.config.train.pack_len, dataset)
        return lambda batch, n_micro: packed_pair_microbatches(batch, n_micro, min_row_len=row_len,
                                                               buckets=self.buckets, row_multiple=rows)

    # -- one model ---------------------------------------------------------------------------------------------
    def _train_and_score(self, role: str, which: str, dataset: PairDataset, loss_kind: str, labels_origin: str,
                         tokenizer, test: PairDataset) -> dict:
        c = self.config
        spec = c[which]
        seed = c.seed
        tspec = self.train_spec(c.train.lr, c.train.epochs, c.train.schedule)
        fp_spec = {
            "model": spec.to_dict(), "dtype": c.model.dtype, "param_dtype": c.model.param_dtype,
            "tokenizer": tokenizer_fingerprint(tokenizer), "max_len": c.data.max_len,
            "data": hash_arrays(list(dataset.ids_a), list(dataset.ids_b), dataset.extras["label"],
                                 dataset.extras["gt"]),
            "n_train": len(dataset), "labels": labels_origin, "loss": loss_kind,
            "alpha": c.conflict.alpha if loss_kind == "explicit" else None,
            "train": {k: getattr(tspec, k) for k in ("lr", "batch_size", "epochs", "schedule", "seed")},
        }
        store = self.store(role, fp_spec)
        model = build_model(spec, what=which, mesh=self.mesh, seed=seed, max_len=c.data.max_len,
                            runtime=self.runtime, tokenizer=tokenizer, trust_remote_code=c.model.trust_remote_code)
        started = time.time()
        try:
            result = train(model.params, rm_loss(model.model, loss_kind, c.conflict.alpha), dataset, tspec,
                           mesh=self.mesh, store=store, buckets=self.buckets, prepare=self._prepare(dataset),
                           log_fn=lambda m: self.metrics.write(role, m), desc=role)
        finally:
            store.close()
        z = score_pairs(model.model, result.params, test, batch_size=c.train.eval_batch_size, mesh=self.mesh,
                        mode=c.eval.mode, pack_len=self.eval_pack_len,
                        buckets=self.buckets, desc=f"{role}: D_test")
        self.record(role, store, result, started)
        correct = (z >= 0) == (test.extras["gt"] == 1)
        return {**self.model_entry(role, which, store, correct, z, result.params), "model": model,
                "params": result.params}

    # -- labels ---------------------------------------------------------------------------------------------
    def soft_labels(self, labeller: dict, which: str, ab: pairs_lib.ABPairs, name: str) -> np.ndarray:
        """The labeller's soft preference sigma(z) on `ab` (original-spec §2.6), written to `<name>_labels.json`."""
        dataset = self._pairs_dataset(ab, self.tokenizers[which], f"{which}-{name}-labels", ab.labels, ab.labels)
        z = score_pairs(labeller["model"].model, labeller["params"], dataset,
                        batch_size=self.config.train.eval_batch_size, mesh=self.mesh, buckets=self.buckets,
                        mode=self.config.eval.mode, pack_len=self.eval_pack_len, desc=f"{name} labels")
        soft = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        write_json_atomic(self.workdir / f"{name}_labels.json", {
            "labeller_fingerprint": labeller["fingerprint"], "soft_labels": soft.tolist(), "logits": z.tolist(),
            "gt_labels": ab.labels.tolist(), "accuracy": float(((soft >= 0.5) == (ab.labels == 1)).mean())})
        return soft

    def _student(self, role: str, which: str, texts: pairs_lib.ABPairs, labels: np.ndarray, origin: str,
                 loss_kind: str, conflict_ab: pairs_lib.ABPairs | None) -> dict:
        """A model trained on soft labels of `texts` (plus the conflict set's GT labels when given)."""
        gt = texts.labels
        if conflict_ab is not None:
            texts = pairs_lib.ABPairs(texts.texts_a + conflict_ab.texts_a, texts.texts_b + conflict_ab.texts_b,
                                      np.concatenate([texts.labels, conflict_ab.labels]))
            labels, gt = np.concatenate([labels, conflict_ab.labels]), texts.labels
        dataset = self._pairs_dataset(texts, self.tokenizers[which], f"{which}-{role}", labels, gt)
        return self._train_and_score(role, which, dataset, loss_kind, origin, self.tokenizers[which],
                                     self.test[which])

    # -- the graph ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        c = self.config
        splits = self.load_data()
        seed = c.seed
        ab = {name: pairs_lib.ab_order(getattr(splits, name), seed) for name in ("gt", "weak", "test")}
        students = self.students()
        unknown = [s for s in students if s not in STUDENTS]
        if unknown:
            raise ValueError(f"config.students: unknown student(s) {unknown}; known: {sorted(STUDENTS)}")
        if any(s.endswith("implicit") for s in students) and not splits.conflict:
            raise ValueError("config.students has an implicit-conflict student but no conflict set was loaded "
                             "(set config.data.conflict_path and config.data.n_conflict)")
        conflict_ab = pairs_lib.ab_order(splits.conflict, seed) if splits.conflict else None
        corpus = [t for name in ("gt", "weak") for t in ab[name].texts_a + ab[name].texts_b]
        self.tokenizers = self.load_tokenizers(corpus)
        gt_data, self.test = {}, {}
        for which in self.model_keys:
            tok = self.tokenizers[which]
            gt_data[which] = self._pairs_dataset(ab["gt"], tok, f"{which}-gt", ab["gt"].labels, ab["gt"].labels)
            self.test[which] = self._pairs_dataset(ab["test"], tok, f"{which}-test", ab["test"].labels,
                                                   ab["test"].labels)
        ceiling = lambda role, which: self._train_and_score(role, which, gt_data[which], "bce", "gt",
                                                            self.tokenizers[which], self.test[which])
        weak = ceiling("weak_ceiling", "weak")
        models = [weak, ceiling("strong_ceiling", "strong")]
        soft = self.soft_labels(weak, "weak", ab["weak"], "weak")
        origin = f"weak:{weak['fingerprint']}"
        for student in (s for s in students if not s.startswith("bootstrap")):
            loss_kind = "explicit" if student == "explicit" else c.train.loss
            models.append(self._student(STUDENTS[student], "strong", ab["weak"], soft, origin, loss_kind,
                                        conflict_ab if student == "implicit" else None))
        boot = [s for s in students if s.startswith("bootstrap")]
        if boot:
            # §5: the intermediate learns the weak labels of D_weak, then labels D_gt for the strong student
            models.append(ceiling("intermediate_ceiling", "intermediate"))
            intermediate = self._student("intermediate_student", "intermediate", ab["weak"], soft, origin,
                                         c.train.loss, None)
            models.append(intermediate)
            mid_soft = self.soft_labels(intermediate, "intermediate", ab["gt"], "intermediate")
            for student in boot:
                models.append(self._student(STUDENTS[student], "strong", ab["gt"], mid_soft,
                                            f"intermediate:{intermediate['fingerprint']}", c.train.loss,
                                            conflict_ab if student == "bootstrap_implicit" else None))
        results = {
            "experiment": "reward_model",
            "config": json.loads(c.to_json_best_effort()),
            "n_test": len(splits.test),
            "test_labels": ab["test"].labels.tolist(),
            "weak_labels_file": "weak_labels.json",
            "models": models,
        }
        return self.finish(results)


def with_report(workdir: Path, results: dict) -> dict:
    """Adds the deception metrics to results.json and writes report.md and plots/ (the primary process only)."""
    from w2s_jax.eval.report import build_report

    if distributed.is_primary():
        results["metrics"] = build_report(workdir)
    distributed.sync("report")
    return results


# config fields that change how results are computed, not what they are (as the mesh is not in a fingerprint)
RESULT_NEUTRAL_FIELDS = ("mesh", "train.micro_batch_size", "train.save_every", "train.final_checkpoint",
                         "train.eval_batch_size", "model.remat_policy", "model.scan_layers", "model.attention_impl",
                         "eval.mode")


def _flat(tree: Any, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_results_config(config, workdir: str | Path) -> None:
    """Refuse (before any compute) to overwrite `workdir/results.json` when it holds another config's results."""
    path = Path(workdir) / "results.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: exists but its config cannot be read ({type(e).__name__}); use a fresh "
                         "--workdir, or --overwrite to replace it") from None
    new = json.loads(json.dumps(config.to_dict(), default=str))
    neutral = lambda k: any(k == f or k.startswith(f + ".") for f in RESULT_NEUTRAL_FIELDS)  # noqa: E731
    old_flat, new_flat = _flat(old), _flat(new)
    diffs = [k for k in sorted(set(old_flat) | set(new_flat))
             if not neutral(k) and old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")]
    if diffs:
        shown = "; ".join(f"{k}: {old_flat.get(k, '<absent>')!r} there, {new_flat.get(k, '<absent>')!r} here"
                          for k in diffs[:3])
        more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise ValueError(f"{path} holds the results of a different config ({shown}{more}); use a fresh --workdir, "
                         "or --overwrite to replace them")


def run(config, workdir: str | Path, mesh: Mesh, store_root: str | Path | None = None,
        overwrite: bool = False) -> dict:
    """One experiment (or, when `config.sweep.pairs` lists weak->strong pairs, a sweep of them). Refuses a
    `workdir` whose results.json holds another config's results unless `overwrite`."""
    if store_root is None and not overwrite:
        check_results_config(config, workdir)
    if config.get("sweep") and config.sweep.pairs and store_root is None:
        from w2s_jax.sweep import run_sweep

        return run_sweep(config, workdir, mesh)
    if config.experiment == "reward_model":
        return RewardModelExperiment(config, workdir, mesh, store_root).run()
    if config.experiment in ("dpo", "simpo"):
        from w2s_jax.preference import PreferenceExperiment

        return PreferenceExperiment(config, workdir, mesh, store_root).run()
    raise ValueError(f"config.experiment={config.experiment!r}: expected reward_model, dpo or simpo")
