"""The experiments' dry run (`--dry_run`, `experiments.dry_run`): what `run()` would train, by the same specs.

`DryRun.plan()` walks the seeds with `plan_seed`, which each experiment writes with the spec builders its `run_seed`
uses, so a listed fingerprint is the one the run records."""
from __future__ import annotations

import json
import os

from w2s_jax.data import pairs as pairs_lib
from w2s_jax.experiments.spec import TrainedModelSpec


class BasesPending(Exception):
    """A dry run reached a step that needs a demo-world base that is not pretrained yet."""


class DryRun:
    """The dry-run half of `Experiment` (which supplies setup, store, seeds, bases and the rest)."""

    def plan_seed(self, seed: int) -> list[dict]:
        """The models `run_seed(seed)` would train, as `planned` entries."""
        raise NotImplementedError

    def planned(self, role: str, spec: TrainedModelSpec | None, splits: list[str], waits_for: str | None = None,
                sft: TrainedModelSpec | None = None) -> dict:
        """One model of the dry run: its fingerprint and whether a finished model with it is in the store, or
        (`spec` None) what its fingerprint waits for."""
        entry = {"role": role, "seed": self.seed, "splits": splits}
        if spec is None:
            reason = waits_for or f"the demo-world base(s) of {sorted(self.pending_bases)} (pretrained first)"
            return {**entry, "fingerprint": None, "in_store": None, "waits_for": reason}
        store = self.store(role, spec)
        entry.update(fingerprint=store.fingerprint, in_store=store.complete, stage=spec.stage,
                     checkpoint=os.path.relpath(store.directory, self.workdir))
        if sft is not None:
            entry["sft"] = {"fingerprint": sft.fingerprint, "in_store": self.store(f"{role}-sft", sft).complete}
        return entry

    def labels_on_file(self, file_stem: str, labeller: dict) -> dict | None:
        """`seed<k>/<file_stem>_labels.json` when the labeller it names is the planned one (a dry run after that
        labeller trained), else None."""
        path = self.workdir / f"seed{self.seed}" / f"{file_stem}_labels.json"
        try:
            labels = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return labels if labeller["fingerprint"] and labels.get("labeller_fingerprint") == labeller["fingerprint"] \
            else None

    def plan(self) -> dict:
        """What `run()` would do, without training: the data, the bases, and per seed every model with its
        fingerprint (the one `run()` computes, by the same code) and whether it is already in the store."""
        self.dry_run = True
        try:
            self.setup()
        except BasesPending:
            pass
        runs = []
        for seed in self.seeds:
            self.seed = seed
            runs.append({"seed": seed, "models": self.plan_seed(seed)})
        bases = {which: {"fingerprint": b["fingerprint"], "directory": str(b["directory"]), "exists": which in
                         self.bases} for which, b in [*self.bases.items(), *self.pending_bases.items()]}
        return {"experiment": self.config.experiment, "workdir": str(self.workdir),
                "store_root": str(self.store_root), "data": data_summary(self.planned_splits), "bases": bases,
                "runs": runs}


def data_summary(splits: pairs_lib.PairSplits) -> dict:
    """Per split: its size and the files it reads (with their sizes in bytes), or the generator that made it."""
    out = {}
    for name in ("gt", "weak", "test", "conflict"):
        pairs = getattr(splits, name) or []
        sources = sorted({p.source for p in pairs})
        out[name] = {"n": len(pairs), "sources": [
            {"path": src, "bytes": os.path.getsize(src)} if os.path.isfile(src) else {"path": src}
            for src in sources[:20]]}
        if len(sources) > 20:
            out[name]["more_sources"] = len(sources) - 20
    return out
