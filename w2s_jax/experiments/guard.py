"""The results guard: a work directory whose results.json holds another config's results is refused, or, with
`--overwrite`, replaced: that config's training curves (`metrics.jsonl`, `tensorboard/`, a sweep's per-pair ones)
are first moved aside as `<name>.replaced-<UTC time>`, so they never mix with the new config's."""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from w2s_jax import distributed
from w2s_jax.experiments.spec import is_result_neutral

CURVES = ("metrics.jsonl", "tensorboard")


def _flat(tree: Any, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(config, workdir: str | Path) -> list[str] | None:
    """None when `workdir/results.json` is absent; else the result-relevant fields where its config differs from
    `config` ("field: old there, new here"; the result-neutral ones, `spec.RESULT_NEUTRAL_FIELDS`, never count).
    An unreadable results.json raises ValueError."""
    path = Path(workdir) / "results.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: exists but its config cannot be read ({type(e).__name__}); use a fresh "
                         "--workdir, or --overwrite to replace it") from None
    new = json.loads(json.dumps(config.to_dict(), default=str))
    old_flat, new_flat = _flat(old), _flat(new)
    return [f"{k}: {old_flat.get(k, '<absent>')!r} there, {new_flat.get(k, '<absent>')!r} here"
            for k in sorted(set(old_flat) | set(new_flat))
            if not is_result_neutral(k) and old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")]


def check_results_config(config, workdir: str | Path) -> None:
    """Refuse (before any compute) to overwrite `workdir/results.json` when it holds another config's results."""
    diffs = config_differences(config, workdir)
    if diffs:
        more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise ValueError(f"{Path(workdir) / 'results.json'} holds the results of a different config "
                         f"({'; '.join(diffs[:3])}{more}); use a fresh --workdir, or --overwrite to replace them")


def set_aside_replaced(config, workdir: str | Path) -> list[Path]:
    """With `--overwrite`: when results.json holds another config's results (or cannot be read), rename that run's
    curves (`CURVES` in `workdir` and in a sweep's `pairs/*/`) to `<name>.replaced-<UTC time>`; returns the new
    paths. The same config (a resumed or extended run) keeps appending to its own curves."""
    try:
        diffs = config_differences(config, workdir)
    except ValueError:
        diffs = ["unreadable"]
    if not diffs or not distributed.is_primary():
        return []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(workdir)
    moved = []
    for folder in [workdir, *sorted(p for p in (workdir / "pairs").glob("*") if p.is_dir())]:
        for name in CURVES:
            path = folder / name
            if path.exists():
                target = folder / f"{name}.replaced-{stamp}"
                path.rename(target)
                moved.append(target)
    return moved
