"""The preference-optimisation weak-to-strong experiment (original-spec §3, §5): SFT, then DPO or SimPO.

Every model: SFT on the chosen side (warmup-then-constant lr), then a fresh Adam for DPO (reference = the SFT
model, its log-probs computed once and stored with the model) or SimPO. Weak labels are hard: the weak ceiling's
(mean) log-prob difference on D_weak decides which answer is chosen. Students: no conflict, implicit conflict,
explicit conflict (reverse), high-confidence filters, and bootstrapping through an intermediate model.
Both stages read `config.po` (lr, sft_epochs, epochs); the schedule is the original's warmup-then-constant.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from w2s_jax import distributed
from w2s_jax.atomic import write_atomic, write_json_atomic
from w2s_jax.data.batches import PairDataset, SequenceDataset
from w2s_jax.data.loading import hash_arrays
from w2s_jax.data.tokenize import tokenize_cached, tokenizer_fingerprint
from w2s_jax.eval import curves
from w2s_jax.eval.inference import score_policy_pairs
from w2s_jax.experiments.base import Experiment
from w2s_jax.experiments.spec import spec_from_config
from w2s_jax.models.build import build_model
from w2s_jax.objectives import POLICY_OBJECTIVES, SFT
from w2s_jax.train.checkpoint import ModelStore

PO_SCHEDULE = "warmup_constant"
DPO_CONFIDENCE_SCALE = 50.0  # the original's sigma(log_ps / 50) for DPO confidences
log = logging.getLogger(__name__)


class PreferenceExperiment(Experiment):
    STUDENTS = {s: f"student_{s}" for s in ("no_conflict", "implicit", "explicit", "hc_gt", "hc_gt_implicit",
                                            "hc_confidence", "hc_confidence_implicit", "bootstrap",
                                            "bootstrap_implicit")}

    @property
    def algorithm(self) -> str:
        return self.config.experiment

    # -- data ---------------------------------------------------------------------------------------------
    def _pairs(self, chosen: list[str], rejected: list[str], which: str, **extras) -> PairDataset:
        tokenized = lambda texts: tokenize_cached(  # noqa: E731
            texts, self.tokenizers[which], self.config.data.max_len, mode="prompt_response",
            cache_dir=self.store_root / "cache", name=f"{which}-po")
        c, r = tokenized(chosen), tokenized(rejected)
        return PairDataset(c.ids, r.ids, c.loss_mask, r.loss_mask, extras)

    def metric(self, scores: np.ndarray) -> np.ndarray:
        """The preference a model expresses (§3.6): summed log-prob difference for DPO, per-token mean for SimPO."""
        return scores[0] - scores[1] if self.algorithm == "dpo" else scores[2] - scores[3]

    def confidence(self, metric: np.ndarray) -> np.ndarray:
        scaled = metric / DPO_CONFIDENCE_SCALE if self.algorithm == "dpo" else metric
        return 1.0 / (1.0 + np.exp(-scaled.astype(np.float64)))

    def _score(self, model, params, dataset: PairDataset, desc: str) -> np.ndarray:
        c = self.config
        return score_policy_pairs(model.model, params, dataset, batch_size=c.train.eval_batch_size, mesh=self.mesh,
                                  buckets=self.buckets, chunk_size=c.po.logp_chunk or None, mode=c.eval.mode,
                                  pack_len=self.eval_pack_len, desc=desc)

    # -- one model: SFT, then DPO / SimPO, then D_test --------------------------------------------------------
    def _policy_specs(self, which: str, chosen: list[str], rejected: list[str], acc: np.ndarray, origin: str,
                      explicit: bool = False):
        """(training pairs, SFT objective, its spec, the preference objective, its spec): the same for a run and
        a dry run."""
        c, po = self.config, self.config.po
        chunk = po.logp_chunk or None
        pairs = self._pairs(chosen, rejected, which, acc=np.asarray(acc, bool))
        common = dict(tokenizer=tokenizer_fingerprint(self.tokenizers[which]),
                      data=hash_arrays(list(pairs.ids_a), list(pairs.ids_b), list(pairs.loss_mask_a),
                                       list(pairs.loss_mask_b), pairs.extras["acc"]),
                      n_train=len(pairs), labels=origin, lr=po.lr, schedule=PO_SCHEDULE, seed=self.seed)
        sft = SFT(chunk_size=chunk)
        base = self.fingerprint_model(which)
        sft_spec = spec_from_config(c, which, base, stage=sft.name, objective=sft.hparams(), epochs=po.sft_epochs,
                                    **common)
        hparams = {"beta": po.beta, "alpha": float(c.conflict.alpha) if explicit else None, "chunk_size": chunk,
                   "reward_type": po.get("reward_type", "reverse")}
        if self.algorithm == "simpo":
            hparams["gamma"] = po.gamma
        objective = POLICY_OBJECTIVES[self.algorithm](**hparams)
        spec = spec_from_config(c, which, base, stage=objective.name, objective=objective.hparams(),
                                epochs=po.epochs, parent=sft_spec.fingerprint, **common)
        return pairs, sft, sft_spec, objective, spec

    def train_policy(self, role: str, which: str, chosen: list[str], rejected: list[str], acc: np.ndarray,
                     origin: str, explicit: bool = False) -> dict:
        c, po, seed = self.config, self.config.po, self.seed
        pairs, sft, sft_spec, objective, spec = self._policy_specs(which, chosen, rejected, acc, origin, explicit)
        started = time.time()
        model = build_model(self.model_spec(which), what=which, mesh=self.mesh, seed=seed, max_len=c.data.max_len,
                            runtime=self.runtime, tokenizer=self.tokenizers[which],
                            trust_remote_code=c.model.trust_remote_code, cache_dir=self.cache_dir,
                            lora=c.model.get("lora"))
        test = self.test[which]
        curve = lambda stage, **kw: lambda params: curves.policy_point(  # noqa: E731
            stage, self._score(model, params, test, f"{self.desc(role)}: eval"), **kw)
        _, sft_result = self.fit(f"{role}-sft", sft_spec, sft, model.model, model.params,
                                 SequenceDataset(pairs.ids_a, pairs.loss_mask_a), evaluate=curve("sft"))
        store = self.store(role, spec)
        if self.algorithm == "dpo":
            refs = self._reference_logps(store, model, sft_result.params, pairs)
            pairs = PairDataset(pairs.ids_a, pairs.ids_b, pairs.loss_mask_a, pairs.loss_mask_b,
                                {**pairs.extras, "ref_c": refs[0], "ref_r": refs[1]})
        evaluate = None
        if c.train.get("eval_every", 0):  # DPO's loss reads the reference (the SFT model) on D_test too
            reference = self._score(model, sft_result.params, test, "eval reference") \
                if self.algorithm == "dpo" else None
            evaluate = curve(self.algorithm, beta=po.beta, gamma=po.get("gamma", 0.0), reference=reference)
        store, result = self.fit(role, spec, objective, model.model, sft_result.params, pairs, store, evaluate)
        test_scores = self.score_test(role, store, self.test[which], lambda: self._score(
            model, result.params, self.test[which], f"{self.desc(role)}: D_test"))
        self.record(role, store, result, started)
        metric = self.metric(test_scores)
        return {**self.model_entry(role, which, store, metric >= 0, metric, result.params,
                                       model.provenance), "model": model,
                "params": result.params}

    def _reference_logps(self, store: ModelStore, model, sft_params, pairs: PairDataset) -> np.ndarray:
        """Summed log-probs of the SFT model on every training pair, computed once and kept beside the DPO
        checkpoints (a resumed run reads them back instead of recomputing)."""
        path = store.directory / "reference_logps.npy"
        try:
            refs = np.load(path) if path.exists() else None
        except (OSError, ValueError) as e:  # unreadable: computed again, never half-used
            log.warning("%s is unreadable (%s); computing the reference log-probs again", path, e)
            refs = None
        usable = refs is not None and refs.shape == (2, len(pairs)) and bool(np.isfinite(refs).all())
        if distributed.agree(usable):  # every process reads, or every process scores (a collective)
            if not usable:
                raise OSError(f"{path}: the primary process reads it but this process cannot")
            return refs
        refs = self._score(model, sft_params, pairs, "reference log-probs")[:2]
        if distributed.is_primary():
            write_atomic(path, lambda f: np.save(f, refs), mode="wb")
        return refs

    # -- labels ---------------------------------------------------------------------------------------------
    def hard_labels(self, labeller: dict, which: str, chosen: list[str], rejected: list[str], name: str) -> dict:
        """§3.7: keep (chosen, rejected) where the labeller's metric >= 0, else swap; `acc` = it agrees with GT.
        Written to `seed<k>/<name>_labels.json`."""
        scores = self._score(labeller["model"], labeller["params"], self._pairs(chosen, rejected, which),
                             f"{name} labels")
        metric = self.metric(scores)
        acc = metric >= 0
        labels = {"labeller_fingerprint": labeller["fingerprint"], "metric": metric.tolist(), "acc": acc.tolist(),
                  "accuracy": float(acc.mean())}
        write_json_atomic(self.seed_dir(self.seed) / f"{name}_labels.json", labels)
        return self.labels_from_metric(metric, chosen, rejected, labeller["fingerprint"], name)

    def labels_from_metric(self, metric: np.ndarray, chosen: list[str], rejected: list[str], labeller_fp: str,
                           name: str) -> dict:
        acc = metric >= 0
        return {"chosen": [c if a else r for c, r, a in zip(chosen, rejected, acc)],
                "rejected": [r if a else c for c, r, a in zip(chosen, rejected, acc)],
                "acc": acc, "confidence": self.confidence(metric), "origin": f"{name}:{labeller_fp}"}

    def keep_mask(self, labels: dict, student: str) -> np.ndarray:
        """High-confidence filters (§3.8). `hc_gt` is the original's: confident AND weak-correct, which reads the
        ground truth. `hc_confidence` uses the weak model alone: max(p, 1 - p) >= threshold."""
        tau, p = self.config.po.conf_threshold, labels["confidence"]
        if student.startswith("hc_gt"):
            return labels["acc"] & (p >= tau)
        if student.startswith("hc_confidence"):
            return np.maximum(p, 1 - p) >= tau
        return np.ones(len(p), bool)

    # -- the graph --------------------------------------------------------------------------------------------
    def setup(self) -> int:
        splits = self.load_data()
        text = lambda pairs: ([p.chosen for p in pairs], [p.rejected for p in pairs])  # noqa: E731
        self.gt, self.weak, test = text(splits.gt), text(splits.weak), text(splits.test)
        self.test_pairs = splits.test
        self.conflict = text(splits.conflict) if splits.conflict else ([], [])
        self.tokenizers = self.load_tokenizers(self.gt[0] + self.gt[1] + self.weak[0] + self.weak[1])
        self.test = {w: self._pairs(*test, w) for w in self.model_keys}
        return len(test[0])

    def run_seed(self, seed: int) -> tuple[list[dict], list[int]]:
        students, gt = self.students(), self.gt
        every_gt = np.ones(len(gt[0]), bool)
        weak_ceiling = self.train_policy("weak_ceiling", "weak", *gt, every_gt, "gt")
        models = [weak_ceiling, self.train_policy("strong_ceiling", "strong", *gt, every_gt, "gt")]
        labels = self.hard_labels(weak_ceiling, "weak", *self.weak, "weak")
        for student in students:
            if student.startswith("bootstrap"):
                continue
            chosen, rejected, acc = student_pairs(labels, self.keep_mask(labels, student), self.conflict,
                                                  student.endswith("implicit"))
            models.append(self.train_policy(self.STUDENTS[student], "strong", chosen, rejected, acc,
                                            labels["origin"] + (f"|filter:{student}" if student.startswith("hc")
                                                                else ""),
                                            explicit=student == "explicit"))
        if any(s.startswith("bootstrap") for s in students):
            models += self._bootstrap(labels, students)
        return models, [1] * len(next(iter(self.test.values())))

    def _bootstrap(self, weak_labels: dict, students) -> list[dict]:
        """§5: weak -> intermediate on D_weak; the intermediate labels D_gt; the strong student learns those."""
        gt, conflict = self.gt, self.conflict
        ceiling = self.train_policy("intermediate_ceiling", "intermediate", *gt, np.ones(len(gt[0]), bool), "gt")
        intermediate = self.train_policy("intermediate_student", "intermediate", weak_labels["chosen"],
                                         weak_labels["rejected"], weak_labels["acc"], weak_labels["origin"])
        labels = self.hard_labels(intermediate, "intermediate", *gt, "intermediate")
        out = [ceiling, intermediate]
        for student in (s for s in students if s.startswith("bootstrap")):
            chosen, rejected, acc = bootstrap_pairs(labels, conflict, student == "bootstrap_implicit")
            out.append(self.train_policy(self.STUDENTS[student], "strong", chosen, rejected, acc, labels["origin"]))
        return out


    # -- the dry run: the graph above, labels read from this work directory where they exist -----------------
    def plan_seed(self, seed: int) -> list[dict]:
        students, ready, out = self.students(), not self.pending_bases, []

        def planned(role, which, chosen, rejected, acc, origin, explicit=False, splits=("gt",), waits_for=None):
            known = ready and chosen is not None
            specs = self._policy_specs(which, chosen, rejected, acc, origin, explicit) if known else None
            out.append(self.planned(role, specs and specs[4], list(splits), None if known or not ready else waits_for,
                                    sft=specs and specs[2]))
            return out[-1]

        def labels(file_stem, labeller, texts):
            found = self.labels_on_file(file_stem, labeller)
            return None if found is None else self.labels_from_metric(
                np.asarray(found["metric"], np.float32), *texts, labeller["fingerprint"], file_stem)

        gt = self.gt if ready else (None, None)
        every_gt = np.ones(len(self.gt[0]), bool) if ready else None
        weak = planned("weak_ceiling", "weak", *gt, every_gt, "gt")
        planned("strong_ceiling", "strong", *gt, every_gt, "gt")
        weak_labels = labels("weak", weak, self.weak) if ready else None
        waits = f"weak_ceiling's labels (seed{seed}/weak_labels.json)"
        for student in (s for s in students if not s.startswith("bootstrap")):
            implicit = student.endswith("implicit")
            chosen = rejected = acc = None
            if weak_labels is not None:
                chosen, rejected, acc = student_pairs(weak_labels, self.keep_mask(weak_labels, student), self.conflict,
                                                      implicit)
            origin = (weak_labels or {}).get("origin", "") + (f"|filter:{student}" if student.startswith("hc") else "")
            planned(self.STUDENTS[student], "strong", chosen, rejected, acc, origin, student == "explicit",
                    ("weak", "conflict") if implicit else ("weak",), waits)
        if any(s.startswith("bootstrap") for s in students):
            planned("intermediate_ceiling", "intermediate", *gt, every_gt, "gt")
            wl = weak_labels or {}
            mid = planned("intermediate_student", "intermediate", wl.get("chosen"), wl.get("rejected"), wl.get("acc"),
                          wl.get("origin", ""), splits=("weak",), waits_for=waits)
            mid_labels = labels("intermediate", mid, self.gt) if ready else None
            for student in (s for s in students if s.startswith("bootstrap")):
                chosen = rejected = acc = None
                if mid_labels is not None:
                    chosen, rejected, acc = bootstrap_pairs(mid_labels, self.conflict, student == "bootstrap_implicit")
                planned(self.STUDENTS[student], "strong", chosen, rejected, acc, (mid_labels or {}).get("origin", ""),
                        splits=("gt", "conflict") if student == "bootstrap_implicit" else ("gt",),
                        waits_for=f"intermediate_student's labels (seed{seed}/intermediate_labels.json)")
        return out


def student_pairs(labels: dict, keep: np.ndarray, conflict: tuple[list[str], list[str]], implicit: bool):
    """(chosen, rejected, acc) a direct student learns: the kept weak-labelled pairs, plus for an implicit student
    the conflict pairs AT THE KEPT INDICES (the original cuts the helpful set to the same indices as the kept
    harmless pairs, so a filter shrinks both)."""
    chosen = [t for t, k in zip(labels["chosen"], keep) if k]
    rejected = [t for t, k in zip(labels["rejected"], keep) if k]
    acc = labels["acc"][keep]
    if implicit:
        idx = [i for i in np.flatnonzero(keep) if i < len(conflict[0])]
        chosen += [conflict[0][i] for i in idx]
        rejected += [conflict[1][i] for i in idx]
        acc = np.concatenate([acc, np.ones(len(idx), bool)])
    return chosen, rejected, acc


def bootstrap_pairs(labels: dict, conflict: tuple[list[str], list[str]], implicit: bool):
    """(chosen, rejected, acc) a bootstrapped student learns: the intermediate's labels of D_gt, plus for an
    implicit one every conflict pair."""
    chosen, rejected, acc = list(labels["chosen"]), list(labels["rejected"]), labels["acc"]
    if implicit:
        chosen, rejected = chosen + conflict[0], rejected + conflict[1]
        acc = np.concatenate([acc, np.ones(len(conflict[0]), bool)])
    return chosen, rejected, acc
