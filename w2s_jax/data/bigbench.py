"""BIG-bench preference tasks (HHH alignment, known_unknowns) as HH-format pairs.

A task file is `{"examples": [{"input": prompt, "target_scores": {reply: score, ...}}]}`; every reply scored
below the best becomes one pair (best vs it), written as "\\n\\nHuman: prompt\\n\\nAssistant: reply".
"""
from __future__ import annotations

import json
import os

from w2s_jax.data.pairs import DataError, Pair


def read_bigbench_pairs(path: str | os.PathLike) -> list[Pair]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            task = json.load(f)
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found", "missing_file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, getattr(e, "lineno", None), None, f"not valid JSON ({e})", "malformed_json") from None
    examples = task.get("examples") if isinstance(task, dict) else None
    if not isinstance(examples, list) or not examples:
        raise DataError(path, None, "examples", "missing or empty list of examples", "empty")
    pairs = []
    for n, ex in enumerate(examples):
        scores = ex.get("target_scores") if isinstance(ex, dict) else None
        prompt = ex.get("input") if isinstance(ex, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, None, f"examples[{n}].input", "missing or empty string", "missing_field")
        if not isinstance(scores, dict) or len(scores) < 2:
            raise DataError(path, None, f"examples[{n}].target_scores", "needs at least two replies",
                            "missing_field")
        best = max(scores, key=scores.get)
        for reply, score in scores.items():
            if score < scores[best]:
                pairs.append(Pair(f"\n\nHuman: {prompt.strip()}\n\nAssistant: {best.strip()}",
                                  f"\n\nHuman: {prompt.strip()}\n\nAssistant: {reply.strip()}", path, n + 1))
    return pairs
