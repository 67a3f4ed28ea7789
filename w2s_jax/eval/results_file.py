"""Reading results.json, schema 1 (one seed) and schema 2 (`runs`, one per seed), into one shape for the report.

Every weak/strong pair (a single run is one pair) becomes {"name", "weak", "strong", ..., "runs": [{"seed",
"correct": {role: bool[n]}, "margin": {role: float[n] | None}, "model_ids": {role: id}}]}. `margin` is the margin
for the ground-truth answer: the stored logit when the seed's label is 1 (side A is right), minus it otherwise.
A malformed file raises ReportError with one line naming the file and the field.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from w2s_jax.eval import deception as dm


class ReportError(ValueError):
    """results.json is missing or malformed; the message names the file and the field."""


def load_results(path: Path) -> dict:
    if not path.is_file():
        raise ReportError(f"{path}: results file not found")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(results, dict):
        raise ReportError(f"{path}: top level must be a JSON object, got {type(results).__name__}")
    return results


def _bool_list(values: Any, field: str, path: Path) -> np.ndarray:
    if not isinstance(values, list):
        raise ReportError(f"{path}: field '{field}' is missing or not a list")
    for k, v in enumerate(values):
        if not (isinstance(v, bool) or (type(v) is int and v in (0, 1))):
            raise ReportError(f"{path}: field '{field}[{k}]' is {v!r}, not a boolean")
    return np.asarray(values, bool).reshape(-1)


def _check_models(models: Any, field: str, path: Path, n_test: Any) -> list[dict]:
    if not isinstance(models, list) or not models:
        raise ReportError(f"{path}: field '{field}' is missing, empty or not a list")
    roles, length = set(), None
    for j, m in enumerate(models):
        f = f"{field}[{j}]"
        if not isinstance(m, dict):
            raise ReportError(f"{path}: field '{f}' must be an object")
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise ReportError(f"{path}: field '{f}.role' is missing or not a string")
        if m["role"] in roles:
            raise ReportError(f"{path}: field '{f}.role' repeats role {m['role']!r}")
        roles.add(m["role"])
        correct = _bool_list(m.get("test_correct"), f"{f}.test_correct", path)
        if not len(correct):
            raise ReportError(f"{path}: field '{f}.test_correct' is empty (no test example to score)")
        if isinstance(n_test, int) and len(correct) != n_test:
            raise ReportError(f"{path}: field '{f}.test_correct' has {len(correct)} entries but 'n_test' is {n_test}")
        if length is not None and len(correct) != length:
            raise ReportError(f"{path}: field '{f}.test_correct' has {len(correct)} entries, "
                              f"'{field}[0].test_correct' has {length}")
        length = len(correct)
        logits = m.get("test_logits")
        if logits is not None:
            if not isinstance(logits, list) or len(logits) != length:
                raise ReportError(f"{path}: field '{f}.test_logits' must be a list of {length} numbers")
            for k, v in enumerate(logits):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ReportError(f"{path}: field '{f}.test_logits[{k}]' is {v!r}, not a finite number")
    return models


def _run(models: list[dict], seed: Any, labels: Any, field: str, path: Path) -> dict:
    n = len(models[0]["test_correct"])
    label_arr = None
    if labels is not None:
        label_arr = _bool_list(labels, field + "test_labels", path)
        if len(label_arr) != n:
            raise ReportError(f"{path}: field '{field}test_labels' has {len(label_arr)} entries, the models {n}")
    correct, margin, ids = {}, {}, {}
    for m in models:
        correct[m["role"]] = np.asarray(m["test_correct"], bool)
        logits = m.get("test_logits")
        margin[m["role"]] = (None if logits is None or label_arr is None
                             else np.where(label_arr, 1.0, -1.0) * np.asarray(logits, float))
        ids[m["role"]] = m.get("model_id")
    return {"seed": seed, "correct": correct, "margin": margin, "model_ids": ids, "entries": models}


def _runs(holder: dict, field: str, results: dict, path: Path, schema: int) -> list[dict]:
    """The runs of one pair (`holder` is the top level or a pairs[] entry)."""
    n_test = results.get("n_test")
    if schema == 1:
        models = _check_models(holder.get("models"), f"{field}models", path, n_test)
        config = results.get("config") if isinstance(results.get("config"), dict) else {}
        return [_run(models, config.get("seed", 0), results.get("test_labels"), "", path)]
    runs = holder.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ReportError(f"{path}: field '{field}runs' is missing, empty or not a list")
    out, length = [], None
    for k, run in enumerate(runs):
        f = f"{field}runs[{k}]"
        if not isinstance(run, dict):
            raise ReportError(f"{path}: field '{f}' must be an object")
        if isinstance(run.get("seed"), bool) or not isinstance(run.get("seed"), int):
            raise ReportError(f"{path}: field '{f}.seed' is missing or not an integer")
        models = _check_models(run.get("models"), f"{f}.models", path, n_test)
        if length is not None and len(models[0]["test_correct"]) != length:
            raise ReportError(f"{path}: field '{f}.models[0].test_correct' has {len(models[0]['test_correct'])} "
                              f"entries, '{field}runs[0]' has {length}")
        length = len(models[0]["test_correct"])
        out.append(_run(models, run["seed"], run.get("test_labels", results.get("test_labels")), f + ".", path))
    return out


def read_pairs(results: dict, path: Path) -> tuple[list[dict], list[str], int]:
    """(pairs, notes on the layout, schema version) of a results file; see the module docstring."""
    schema = results.get("schema_version", 1)
    if schema not in (1, 2):
        raise ReportError(f"{path}: field 'schema_version' is {schema!r}; this report reads 1 and 2")
    pairs, notes = results.get("pairs"), []
    if pairs is not None and not isinstance(pairs, list):
        raise ReportError(f"{path}: field 'pairs' must be a list")
    if not pairs:
        runs = _runs(results, "", results, path, schema)
        ids = [runs[0]["model_ids"].get(r) for r in (dm.WEAK_ROLE, dm.STRONG_ROLE)]
        name = f"{ids[0]}->{ids[1]}" if all(ids) else str(results.get("experiment") or "run")
        return [{"name": name, "weak": ids[0], "strong": ids[1], "runs": runs}], notes, schema
    if results.get("models") or results.get("runs"):
        notes.append("results.json has both 'pairs' and top-level models; the report uses 'pairs' only")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise ReportError(f"{path}: field 'pairs[{i}]' must be an object")
        runs = _runs(pair, f"pairs[{i}].", results, path, schema)
        name = pair.get("name") or f"{pair.get('weak')}->{pair.get('strong')}"
        out.append({"name": str(name), "runs": runs,
                    **{k: pair[k] for k in ("weak", "strong", "weak_params", "strong_params") if k in pair}})
    return out, notes, schema
