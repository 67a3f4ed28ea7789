"""The results guard: a work directory whose results.json holds another config's results is refused."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2s_jax.experiments.spec import is_result_neutral


def _flat(tree: Any, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_results_config(config, workdir: str | Path) -> None:
    """Refuse (before any compute) to overwrite `workdir/results.json` when it holds another config's results;
    the result-neutral settings (`spec.RESULT_NEUTRAL_FIELDS`) may differ."""
    path = Path(workdir) / "results.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: exists but its config cannot be read ({type(e).__name__}); use a fresh "
                         "--workdir, or --overwrite to replace it") from None
    new = json.loads(json.dumps(config.to_dict(), default=str))
    old_flat, new_flat = _flat(old), _flat(new)
    diffs = [k for k in sorted(set(old_flat) | set(new_flat))
             if not is_result_neutral(k) and old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")]
    if diffs:
        shown = "; ".join(f"{k}: {old_flat.get(k, '<absent>')!r} there, {new_flat.get(k, '<absent>')!r} here"
                          for k in diffs[:3])
        more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise ValueError(f"{path} holds the results of a different config ({shown}{more}); use a fresh --workdir, "
                         "or --overwrite to replace them")
