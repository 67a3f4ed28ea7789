"""The experiment graphs: which models to train on what, in what order, what to reuse.

`EXPERIMENTS` maps `config.experiment` to its class; `run` is what `main` calls.
"""
from __future__ import annotations

from pathlib import Path

from jax.sharding import Mesh

from w2s_jax.experiments.guard import check_results_config, set_aside_replaced
from w2s_jax.experiments.preference import PreferenceExperiment
from w2s_jax.experiments.reward_model import RewardModelExperiment
from w2s_jax.experiments.sweep import run_sweep

EXPERIMENTS = {"reward_model": RewardModelExperiment, "dpo": PreferenceExperiment, "simpo": PreferenceExperiment}


def run(config, workdir: str | Path, mesh: Mesh, store_root: str | Path | None = None,
        overwrite: bool = False) -> dict:
    """One experiment (or, when `config.sweep.pairs` lists weak->strong pairs, a sweep of them). Refuses a
    `workdir` whose results.json holds another config's results unless `overwrite` (then that config's curves are
    moved aside first)."""
    if store_root is None:
        if overwrite:  # the replaced config's curves never mix with this one's
            set_aside_replaced(config, workdir)
        else:
            check_results_config(config, workdir)
    if config.get("sweep") and config.sweep.pairs and store_root is None:
        return run_sweep(config, workdir, mesh, run)
    if config.experiment not in EXPERIMENTS:
        raise ValueError(f"config.experiment={config.experiment!r}: expected one of {list(EXPERIMENTS)}")
    return EXPERIMENTS[config.experiment](config, workdir, mesh, store_root).run()


def dry_run(config, workdir: str | Path, mesh: Mesh) -> dict:
    """The dry run: what `run` would train or reuse, with fingerprints, without training (`experiments.plan`)."""
    from w2s_jax.experiments.plan import plan_run

    return plan_run(config, workdir, mesh, EXPERIMENTS)
