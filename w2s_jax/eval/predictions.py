"""predictions.jsonl: one line per test example and seed (and weak/strong pair), linking results.json to the texts.

Each line is a JSON object:

    {"id": i, "pair": "a->b", "seed": s, "source": "harmless_test.jsonl", "line": 17, "tier": "...",
     "region": "S_k&W_uk", "ground_truth": "chosen", "label_a": 1,
     "prompt": "...\\n\\nAssistant:", "chosen": " ...", "rejected": " ...",
     "margins": {"weak_ceiling": 0.41, ...}, "correct": {"weak_ceiling": true, ...}}

`id` is the example's index in D_test (file/generation order; the same example in every seed and model), `source`
and `line` where the pair came from (an input file and its 1-based line, or the demo world's
`demo-world/<split>/<family>/<harmful|benign>` with `tier` = `<family>/<harmful|benign>`), `region` the knowledge
region of the example in that seed (by the ceilings' correctness, `deception.py`), `ground_truth` is always the
`chosen` answer (`label_a`: 1 when the chosen answer was side A in that seed's A/B order), `margins[role]` each
model's margin for the ground-truth answer (`logit if label_a == 1 else -logit`; null where the model stored no
logits), `correct[role]` whether its hard prediction is right. `prompt` is the shared dialogue up to the last
"\\n\\nAssistant:" (the longest common prefix when there is none); `chosen`/`rejected` are the two answers after it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from w2s_jax.atomic import write_atomic
from w2s_jax.data.pairs import ASSISTANT_MARKER
from w2s_jax.eval import deception as dm
from w2s_jax.eval.results_file import read_pairs

FILE = "predictions.jsonl"


def split_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen answer, rejected answer) of two full dialogues that share their prompt."""
    cut = min(len(chosen), len(rejected))
    k = next((i for i in range(cut) if chosen[i] != rejected[i]), cut)
    marker = chosen.rfind(ASSISTANT_MARKER, 0, k)
    if marker >= 0:
        k = marker + len(ASSISTANT_MARKER)
    return chosen[:k], chosen[k:], rejected[k:]


def region_name(weak_right: bool, strong_right: bool) -> str:
    return f"{'S_k' if strong_right else 'S_uk'}&{'W_k' if weak_right else 'W_uk'}"


def _tier(source: str) -> str | None:
    parts = source.split("/")
    return "/".join(parts[2:4]) if source.startswith("demo-world/") and len(parts) >= 4 else None


def prediction_rows(results: dict, test_pairs: Sequence[Any] | None, path: Path = Path("results.json")
                    ) -> Iterable[dict]:
    """The lines of predictions.jsonl for `results` (schema 1 or 2, single run or sweep). `test_pairs`: D_test
    in test order (objects with `chosen`, `rejected`, `source`, `line`, like `data.pairs.Pair`), or None to
    leave out the texts."""
    pairs, _, _ = read_pairs(results, path)
    sweep = bool(results.get("pairs"))
    for j, pair in enumerate(pairs):
        for run, raw in zip(pair["runs"], _raw_runs(results, j)):
            correct, margin = run["correct"], run["margin"]
            n = len(next(iter(correct.values())))
            if test_pairs is not None and len(test_pairs) != n:
                raise ValueError(f"{path}: {n} test examples in the results but {len(test_pairs)} test pairs given")
            labels = raw.get("test_labels", results.get("test_labels"))
            for i in range(n):
                row: dict[str, Any] = {"id": i}
                if sweep:
                    row["pair"] = pair["name"]
                row["seed"] = run["seed"]
                if test_pairs is not None:
                    p = test_pairs[i]
                    row.update(source=str(getattr(p, "source", "")), line=int(getattr(p, "line", 0)))
                    row["tier"] = _tier(row["source"])
                if dm.WEAK_ROLE in correct and dm.STRONG_ROLE in correct:
                    row["region"] = region_name(bool(correct[dm.WEAK_ROLE][i]), bool(correct[dm.STRONG_ROLE][i]))
                row["ground_truth"] = "chosen"
                row["label_a"] = None if labels is None else int(labels[i])
                if test_pairs is not None:
                    row["prompt"], row["chosen"], row["rejected"] = split_pair(p.chosen, p.rejected)
                row["margins"] = {r: None if m is None else round(float(m[i]), 6) for r, m in margin.items()}
                row["correct"] = {r: bool(c[i]) for r, c in correct.items()}
                yield row


def _raw_runs(results: dict, j: int) -> list[dict]:
    """The stored runs of pair j, in the order `read_pairs` returns them (schema 1: the holder is the run)."""
    holder = results["pairs"][j] if results.get("pairs") else results
    return holder["runs"] if results.get("schema_version", 1) == 2 else [holder]


def write_predictions(workdir: str | os.PathLike, results: dict, test_pairs: Sequence[Any] | None) -> Path:
    """Write `workdir`/predictions.jsonl atomically (see the module docstring); returns its path."""
    path = Path(workdir) / FILE
    rows = list(prediction_rows(results, test_pairs, Path(workdir) / "results.json"))
    write_atomic(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """The rows of a predictions.jsonl; a malformed line is a ValueError naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{k}: not a JSON line ({e})") from None
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError(f"{path}:{k}:id: missing (each line is an object with an 'id')")
            out.append(row)
    return out
