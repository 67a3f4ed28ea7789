"""Sweeps over a capability ladder: one experiment per weak->strong pair, sharing one model store.

`config.sweep.models` names model specs (the same fields as `config.weak`) and `config.sweep.pairs` lists
`"weak->strong"` pairs, e.g. `"gpt2->gpt2-medium,gpt2->gpt2-large,gpt2->gpt2-xl"`. Each pair runs the whole
experiment (every seed) in `workdir/pairs/<weak>__<strong>/` (its own results.json, labels and report); the
checkpoints and the token cache live in `workdir/` so a model that several pairs need (the weak ceiling above, or a
strong ceiling that is the next pair's weak ceiling) is trained once. `workdir/results.json` gathers every pair's
per-seed results (`pairs[].runs`) and `report.md` / `plots/` compare them (DS against the capability gap).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from ml_collections import ConfigDict

from w2s_jax import distributed
from w2s_jax.atomic import write_json_atomic
from w2s_jax.experiments.base import SCHEMA_VERSION, parse_seeds, with_report
from w2s_jax.experiments.metadata import run_metadata
from w2s_jax.progress import progress


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """`"a->b, a->c"` -> [("a", "b"), ("a", "c")]; a malformed item names itself."""
    pairs = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        weak, sep, strong = (x.strip() for x in item.partition("->"))
        if not sep or not weak or not strong:
            raise ValueError(f"config.sweep.pairs: {item!r} is not 'weak->strong'")
        pairs.append((weak, strong))
    if not pairs:
        raise ValueError("config.sweep.pairs: no weak->strong pair given")
    return pairs


def pair_dirname(weak: str, strong: str) -> str:
    return f"{weak}__{strong}".replace("/", "_")


def sweep_configs(config) -> list[tuple[str, str, ConfigDict]]:
    """(weak, strong, config of that pair's experiment) for every pair, in order."""
    models = config.sweep.models
    out = []
    for weak, strong in parse_pairs(config.sweep.pairs):
        for name in (weak, strong):
            if name not in models:
                raise ValueError(f"config.sweep.pairs: model {name!r} is not in config.sweep.models "
                                 f"(known: {sorted(models)})")
        c = config.copy_and_resolve_references()
        c.weak, c.strong = models[weak].copy_and_resolve_references(), models[strong].copy_and_resolve_references()
        c.sweep.pairs = ""
        out.append((weak, strong, c))
    return out


def run_sweep(config, workdir: str | Path, mesh, run_pair: Callable[..., dict]) -> dict:
    """`run_pair(config, workdir, mesh, store_root)` runs one pair's experiment (`experiments.run`)."""
    workdir = Path(workdir)
    entries, last = [], None
    for weak, strong, c in progress(sweep_configs(config), desc="sweep", unit="pair",
                                    disable=not distributed.is_primary()):
        pair_dir = workdir / "pairs" / pair_dirname(weak, strong)
        last = run_pair(c, pair_dir, mesh, store_root=workdir)
        params = {m["role"]: m.get("n_params") for m in last["runs"][0]["models"]}
        entries.append({"name": f"{weak}->{strong}", "weak": weak, "strong": strong,
                        "weak_params": params.get("weak_ceiling"), "strong_params": params.get("strong_ceiling"),
                        "workdir": os.path.relpath(pair_dir, workdir), "runs": last["runs"]})
    results = {"schema_version": SCHEMA_VERSION, "metadata": run_metadata(), "experiment": config.experiment,
               "config": json.loads(config.to_json_best_effort()), "n_test": last["n_test"],
               "seeds": parse_seeds(config), "test_labels": last["test_labels"], "pairs": entries}
    write_json_atomic(workdir / "results.json", results)
    if distributed.is_primary():
        from w2s_jax.data.loading import load_splits
        from w2s_jax.eval.predictions import write_predictions

        write_predictions(workdir, results, load_splits(config.data, need_conflict=False).test)
    return with_report(workdir, results)
