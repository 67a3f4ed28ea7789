"""The dry run (`--dry_run`): every model a run would train or reuse, without training.

Each experiment's `plan()` walks the same graph as `run()` and builds each model's spec with the same code, so a
listed fingerprint is the one the run records in results.json. It loads the data and the tokenizers (tokenizing
fills the token cache) but no model weights, pretrains no base and trains nothing. A model whose training data is
another model's labels (a student) has a fingerprint only once those labels are on disk (`seed<k>/*_labels.json`
of a run that got that far); until then the listing says what it waits for.
"""
from __future__ import annotations

import os
from pathlib import Path

from w2s_jax.experiments.guard import config_differences
from w2s_jax.experiments.sweep import pair_dirname, sweep_configs


def plan_run(config, workdir: str | Path, mesh, experiments: dict) -> dict:
    """{"notes", and "pairs" (a sweep: one plan per weak->strong pair) or the one experiment's plan}."""
    workdir = Path(workdir)
    notes = []
    try:
        diffs = config_differences(config, workdir)
    except ValueError as e:
        diffs = [str(e)]
    if diffs:
        notes.append(f"{workdir / 'results.json'} holds another config's results ({diffs[0]}"
                     f"{'; ...' if len(diffs) > 1 else ''}): the run is refused unless --overwrite")
    if config.get("sweep") and config.sweep.pairs:
        pairs = [{"name": f"{weak}->{strong}",
                  **experiments[c.experiment](c, workdir / "pairs" / pair_dirname(weak, strong), mesh,
                                              store_root=workdir).plan()}
                 for weak, strong, c in sweep_configs(config)]
        return {"notes": notes, "pairs": pairs}
    if config.experiment not in experiments:
        raise ValueError(f"config.experiment={config.experiment!r}: expected one of {list(experiments)}")
    return {"notes": notes, **experiments[config.experiment](config, workdir, mesh).plan()}


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def plan_lines(plan: dict) -> list[str]:
    """The listing `--dry_run` prints."""
    lines = [f"note: {n}" for n in plan["notes"]]
    for part in plan.get("pairs") or [plan]:
        head = f"pair {part['name']}: " if "name" in part else ""
        lines.append(f"{head}{part['experiment']} in {part['workdir']} (models stored under {part['store_root']})")
        for name, split in part["data"].items():
            srcs = ", ".join(f"{s['path']} ({_size(s['bytes'])})" if "bytes" in s else s["path"]
                             for s in split["sources"][:3])
            more = len(split["sources"]) - 3 + split.get("more_sources", 0)
            lines.append(f"  data {name}: {split['n']} pairs" + (f" from {srcs}" if srcs else "")
                         + (f" and {more} more sources" if more > 0 else ""))
        for which, base in part["bases"].items():
            state = "exists" if base["exists"] else "not there: pretrained first"
            lines.append(f"  base of {which}: {os.path.relpath(base['directory'], part['workdir'])} ({state})")
        for run in part["runs"]:
            for m in run["models"]:
                what = (f"{m['fingerprint']}  {'in store (reused)' if m['in_store'] else 'to train'}"
                        if m["fingerprint"] else f"fingerprint pending: waits for {m['waits_for']}")
                lines.append(f"  seed {m['seed']}  {m['role']:<26} reads {'+'.join(m['splits']):<14} {what}")
    return lines
