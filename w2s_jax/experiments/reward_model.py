"""The reward-modelling weak-to-strong experiment (original-spec §2, §4) as one graph of trained models.

weak ceiling, strong ceiling  <- D_gt (ground truth)
weak labels                   <- weak ceiling on D_weak: soft sigma(z)
students (strong)             <- D_weak with weak labels: no conflict | implicit (+ GT conflict pairs) | explicit
bootstrapping (§5)            <- weak labels -> intermediate student -> its labels of D_gt -> strong student
every model                   -> D_test, per-example correctness in test order -> results.json

Per seed: the A/B order of every split (hence the labels), the init and the data order change; the splits, the
tokenizers and the token ids of every chosen and rejected text are made once.
"""
from __future__ import annotations

import time

import numpy as np

from w2s_jax.atomic import write_json_atomic
from w2s_jax.data import pairs as pairs_lib
from w2s_jax.data.batches import PairDataset
from w2s_jax.data.loading import hash_arrays
from w2s_jax.data.tokenize import tokenize_cached, tokenizer_fingerprint
from w2s_jax.eval import curves
from w2s_jax.eval.inference import score_pairs
from w2s_jax.experiments.base import Experiment
from w2s_jax.experiments.spec import spec_from_config
from w2s_jax.models.build import build_model
from w2s_jax.objectives import RewardModel

SPLITS = ("gt", "weak", "test", "conflict")


class RewardModelExperiment(Experiment):
    STUDENTS = {"no_conflict": "student_no_conflict", "implicit": "student_implicit",
                "explicit": "student_explicit", "bootstrap": "student_bootstrap",
                "bootstrap_implicit": "student_bootstrap_implicit"}

    # -- made once ----------------------------------------------------------------------------------------
    def setup(self) -> int:
        self.splits = self.load_data()
        self.test_pairs = self.splits.test
        sides = lambda pairs: ([p.chosen for p in pairs], [p.rejected for p in pairs])  # noqa: E731
        texts = {name: sides(getattr(self.splits, name) or []) for name in SPLITS}
        # the BPE vocabulary does not depend on the texts' order, so neither on the seed's A/B order
        self.tokenizers = self.load_tokenizers([t for name in ("gt", "weak") for side in texts[name] for t in side])
        cache, max_len, self.tokens, by_tokenizer = self.store_root / "cache", self.config.data.max_len, {}, {}
        for which in self.model_keys:
            tok = self.tokenizers[which]
            if id(tok) not in by_tokenizer:
                by_tokenizer[id(tok)] = {name: tuple(tokenize_cached(side, tok, max_len, cache_dir=cache,
                                                                     name=f"{which}-{name}-{label}").ids
                                                     for side, label in zip(texts[name], ("chosen", "rejected")))
                                         for name in SPLITS if texts[name][0]}
            self.tokens[which] = by_tokenizer[id(tok)]
        return len(self.splits.test)

    def _dataset(self, which: str, parts: list[tuple[str, np.ndarray]], labels, gt) -> PairDataset:
        """Pairs of the named splits in A/B order (`chosen_first` [n] per split), with labels and GT labels."""
        ids_a, ids_b = [], []
        for name, chosen_first in parts:
            chosen, rejected = self.tokens[which][name]
            ids_a += [c if h else r for c, r, h in zip(chosen, rejected, chosen_first)]
            ids_b += [r if h else c for c, r, h in zip(chosen, rejected, chosen_first)]
        return PairDataset(ids_a, ids_b, extras={"label": np.asarray(labels, np.float32),
                                                 "gt": np.asarray(gt, np.float32)})

    # -- one model ------------------------------------------------------------------------------------------
    def _spec(self, which: str, dataset: PairDataset, objective: RewardModel, labels_origin: str):
        """The trained model's spec (hence its fingerprint): the same for a run and a dry run."""
        c = self.config
        return spec_from_config(
            c, which, self.fingerprint_model(which), tokenizer=tokenizer_fingerprint(self.tokenizers[which]),
            data=hash_arrays(list(dataset.ids_a), list(dataset.ids_b), dataset.extras["label"],
                             dataset.extras["gt"]),
            n_train=len(dataset), labels=labels_origin, stage=objective.name, objective=objective.hparams(),
            lr=c.train.lr, epochs=c.train.epochs, schedule=c.train.schedule, seed=self.seed)

    def _train_and_score(self, role: str, which: str, dataset: PairDataset, objective: RewardModel,
                         labels_origin: str) -> dict:
        c, seed = self.config, self.seed
        spec = self._spec(which, dataset, objective, labels_origin)
        model = build_model(self.model_spec(which), what=which, mesh=self.mesh, seed=seed, max_len=c.data.max_len,
                            runtime=self.runtime, tokenizer=self.tokenizers[which],
                            trust_remote_code=c.model.trust_remote_code, cache_dir=self.cache_dir,
                            lora=c.model.get("lora"))
        started = time.time()
        test = self.test[which]
        evaluate = lambda params: curves.reward_model_point(  # noqa: E731
            self._score(model.model, params, test, f"{self.desc(role)}: eval"), test.extras["gt"])
        store, result = self.fit(role, spec, objective, model.model, model.params, dataset, evaluate=evaluate)
        z = self.score_test(role, store, test,
                            lambda: self._score(model.model, result.params, test, f"{self.desc(role)}: D_test"))
        self.record(role, store, result, started)
        correct = (z >= 0) == (test.extras["gt"] == 1)
        return {**self.model_entry(role, which, store, correct, z, result.params, model.provenance), "model": model,
                "params": result.params}

    def _score(self, model, params, dataset: PairDataset, desc: str) -> np.ndarray:
        c = self.config
        return score_pairs(model, params, dataset, batch_size=c.train.eval_batch_size, mesh=self.mesh,
                           buckets=self.buckets, mode=c.eval.mode, pack_len=self.eval_pack_len, desc=desc)

    # -- labels ---------------------------------------------------------------------------------------------
    def soft_labels(self, labeller: dict, which: str, name: str, ab_labels: np.ndarray, file_stem: str) -> np.ndarray:
        """The labeller's soft preference sigma(z) on split `name` (original-spec §2.6), written to
        `seed<k>/<file_stem>_labels.json`."""
        dataset = self._dataset(which, [(name, ab_labels)], ab_labels, ab_labels)
        z = self._score(labeller["model"].model, labeller["params"], dataset, f"{file_stem} labels")
        soft = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        write_json_atomic(self.seed_dir(self.seed) / f"{file_stem}_labels.json", {
            "labeller_fingerprint": labeller["fingerprint"], "soft_labels": soft.tolist(), "logits": z.tolist(),
            "gt_labels": ab_labels.tolist(), "accuracy": float(((soft >= 0.5) == (ab_labels == 1)).mean())})
        return soft

    def _student_dataset(self, which: str, name: str, labels: np.ndarray, with_conflict: bool) -> PairDataset:
        """Soft labels of split `name` (plus the conflict set's GT labels when asked)."""
        parts, gt = [(name, self.ab[name])], self.ab[name]
        if with_conflict:
            parts.append(("conflict", self.ab["conflict"]))
            labels, gt = np.concatenate([labels, self.ab["conflict"]]), np.concatenate([gt, self.ab["conflict"]])
        return self._dataset(which, parts, labels, gt)

    def _student(self, role: str, which: str, name: str, labels: np.ndarray, origin: str, objective: RewardModel,
                 with_conflict: bool) -> dict:
        return self._train_and_score(role, which, self._student_dataset(which, name, labels, with_conflict),
                                     objective, origin)

    def _order(self, seed: int) -> None:
        """The seed's A/B order of every split, and D_test in it per model key."""
        self.ab = {name: pairs_lib.ab_order(getattr(self.splits, name), seed).labels
                   for name in SPLITS if getattr(self.splits, name)}
        self.test = {which: self._dataset(which, [("test", self.ab["test"])], self.ab["test"], self.ab["test"])
                     for which in self.model_keys}

    # -- the graph of one seed --------------------------------------------------------------------------------
    def run_seed(self, seed: int) -> tuple[list[dict], list[int]]:
        c, students = self.config, self.students()
        self._order(seed)
        # the original's --loss trains every model, --w2s_loss (when set) the students instead
        ceiling_loss = RewardModel(c.train.loss)
        student_loss = RewardModel(c.train.get("w2s_loss", "") or c.train.loss)
        ceiling = lambda role, which: self._train_and_score(  # noqa: E731
            role, which, self._dataset(which, [("gt", self.ab["gt"])], self.ab["gt"], self.ab["gt"]), ceiling_loss,
            "gt")
        weak = ceiling("weak_ceiling", "weak")
        models = [weak, ceiling("strong_ceiling", "strong")]
        soft = self.soft_labels(weak, "weak", "weak", self.ab["weak"], "weak")
        origin = f"weak:{weak['fingerprint']}"
        for student in (s for s in students if not s.startswith("bootstrap")):
            objective = RewardModel("explicit", float(c.conflict.alpha)) if student == "explicit" else student_loss
            models.append(self._student(self.STUDENTS[student], "strong", "weak", soft, origin, objective,
                                        student == "implicit"))
        boot = [s for s in students if s.startswith("bootstrap")]
        if boot:
            # §5: the intermediate learns the weak labels of D_weak, then labels D_gt for the strong student
            models.append(ceiling("intermediate_ceiling", "intermediate"))
            intermediate = self._student("intermediate_student", "intermediate", "weak", soft, origin, student_loss,
                                         False)
            models.append(intermediate)
            mid_soft = self.soft_labels(intermediate, "intermediate", "gt", self.ab["gt"], "intermediate")
            for student in boot:
                models.append(self._student(self.STUDENTS[student], "strong", "gt", mid_soft,
                                            f"intermediate:{intermediate['fingerprint']}", student_loss,
                                            student == "bootstrap_implicit"))
        return models, self.ab["test"].tolist()

    # -- the dry run: the graph above, labels read from this work directory where they exist -----------------
    def plan_seed(self, seed: int) -> list[dict]:
        c, students, ready = self.config, self.students(), not self.pending_bases
        if ready:
            self._order(seed)
        ceiling_loss, out = RewardModel(c.train.loss), []
        student_loss = RewardModel(c.train.get("w2s_loss", "") or c.train.loss)

        def planned(role, which, name, labels, origin, objective, with_conflict=False, waits_for=None):
            known = ready and labels is not None
            spec = self._spec(which, self._student_dataset(which, name, labels, with_conflict), objective,
                              origin) if known else None
            out.append(self.planned(role, spec, [name, "conflict"] if with_conflict else [name],
                                    None if known or not ready else waits_for))
            return out[-1]

        ceiling = lambda role, which: planned(role, which, "gt", self.ab["gt"] if ready else None, "gt",  # noqa: E731
                                              ceiling_loss)
        weak = ceiling("weak_ceiling", "weak")
        ceiling("strong_ceiling", "strong")
        found = self.labels_on_file("weak", weak)
        soft = np.asarray(found["soft_labels"], np.float64) if found else None
        origin, waits = f"weak:{weak['fingerprint']}", f"weak_ceiling's labels (seed{seed}/weak_labels.json)"
        for student in (s for s in students if not s.startswith("bootstrap")):
            objective = RewardModel("explicit", float(c.conflict.alpha)) if student == "explicit" else student_loss
            planned(self.STUDENTS[student], "strong", "weak", soft, origin, objective, student == "implicit", waits)
        boot = [s for s in students if s.startswith("bootstrap")]
        if boot:
            ceiling("intermediate_ceiling", "intermediate")
            mid = planned("intermediate_student", "intermediate", "weak", soft, origin, student_loss, False, waits)
            found = self.labels_on_file("intermediate", mid)
            mid_soft = np.asarray(found["soft_labels"], np.float64) if found else None
            for student in boot:
                planned(self.STUDENTS[student], "strong", "gt", mid_soft, f"intermediate:{mid['fingerprint']}",
                        student_loss, student == "bootstrap_implicit",
                        f"intermediate_student's labels (seed{seed}/intermediate_labels.json)")
        return out
