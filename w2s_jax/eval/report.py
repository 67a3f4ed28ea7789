"""Rebuild a run's metrics, report.md and plots from its results.json, without training.

    python -m w2s_jax.report --workdir=DIR   (w2s_jax/report.py runs this module)

reads DIR/results.json (single run: top-level `models`; capability ladder: `pairs`, each with its own `models`),
computes the deception metrics of every weak/strong pair (`eval/deception.py`), and writes, each atomically:

* results.json, with its `metrics` section added or replaced: {"pairs": [{"name", "capability_gap", "region_sizes",
  "models", "settings", "notes", ...}], "nan_as": "null"}. A number that is undefined (NaN) is written as JSON
  null, so the file stays strict JSON; the pair's or setting's `notes` say why it is undefined.
* report.md: accuracies and PGR per model, per conflict setting the DS candidates, CT per region and the 16-cell
  table, the definitions, and the notes.
* plots/accuracy.png, plots/ds_vs_gap.png, plots/regions.png (matplotlib Agg canvas, no pyplot state).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from w2s_jax.eval import deception as dm
from w2s_jax.atomic import write_atomic, write_json_atomic

DS_LABELS = {"ds_a": "DS-A", "ds_b_over_nc_right": "DS-B (over N right in R)",
             "ds_b_over_region": "DS-B (over |R|)", "ds_c": "DS-C"}
DS_COUNTS = {"ds_a": ("conflict_wrong_in_region", "region"),
             "ds_b_over_nc_right": ("flipped_in_region", "no_conflict_right_in_region"),
             "ds_b_over_region": ("flipped_in_region", "region"),
             "ds_c": ("disagree_with_strong_in_region", "disagree_with_strong")}
ALL_REGIONS = ("W_k", "W_uk", "S_k", "S_uk") + dm.REGIONS


class ReportError(ValueError):
    """results.json is missing or malformed; the message names the file and the field."""


# ------------------------------------------------------------------------------------------------ reading


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
        correct = m.get("test_correct")
        if not isinstance(correct, list):
            raise ReportError(f"{path}: field '{f}.test_correct' is missing or not a list")
        for k, v in enumerate(correct):
            if not (isinstance(v, bool) or (type(v) is int and v in (0, 1))):
                raise ReportError(f"{path}: field '{f}.test_correct[{k}]' is {v!r}, not a boolean")
        if isinstance(n_test, int) and len(correct) != n_test:
            raise ReportError(f"{path}: field '{f}.test_correct' has {len(correct)} entries but 'n_test' is {n_test}")
        if length is not None and len(correct) != length:
            raise ReportError(f"{path}: field '{f}.test_correct' has {len(correct)} entries, "
                              f"'{field}[0].test_correct' has {length}")
        length = len(correct)
    return models


def experiment_pairs(results: dict, path: Path) -> tuple[list[dict], list[str]]:
    """The weak/strong pairs of a results file (a single run is one pair), validated, and notes on the layout."""
    if results.get("schema_version") == 2:  # bridge until the per-seed report: the first seed's models only
        first = lambda runs: runs[0].get("models") if isinstance(runs, list) and runs else None  # noqa: E731
        results = {**results, "pairs": [{**q, "models": first(q.get("runs"))} for q in results["pairs"]]} \
            if results.get("pairs") else {**results, "models": first(results.get("runs"))}
    n_test, pairs, notes = results.get("n_test"), results.get("pairs"), []
    if pairs is not None and not isinstance(pairs, list):
        raise ReportError(f"{path}: field 'pairs' must be a list")
    if not pairs:
        models = _check_models(results.get("models"), "models", path, n_test)
        by_role = {m["role"]: m for m in models}
        ids = [by_role.get(r, {}).get("model_id") for r in (dm.WEAK_ROLE, dm.STRONG_ROLE)]
        name = f"{ids[0]}->{ids[1]}" if all(ids) else str(results.get("experiment") or "run")
        return [{"name": name, "weak": ids[0], "strong": ids[1], "models": models}], notes
    if results.get("models"):
        notes.append("results.json has both 'pairs' and top-level 'models'; the report uses 'pairs' only")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise ReportError(f"{path}: field 'pairs[{i}]' must be an object")
        models = _check_models(pair.get("models"), f"pairs[{i}].models", path, n_test)
        name = pair.get("name") or f"{pair.get('weak')}->{pair.get('strong')}"
        out.append({"name": str(name), "models": models,
                    **{k: pair[k] for k in ("weak", "strong", "weak_params", "strong_params") if k in pair}})
    return out, notes


def compute_metrics(results: dict, path: Path) -> dict:
    """The `metrics` section with NaN as float('nan') (see `json_ready`)."""
    pairs, notes = experiment_pairs(results, path)
    out = []
    for pair in pairs:
        try:
            metrics = dm.group_metrics(pair["models"])
        except ValueError as e:  # already validated; this is a guard, not a path we expect
            raise ReportError(f"{path}: pair {pair['name']!r}: {e}") from None
        info = {k: v for k, v in pair.items() if k != "models"}
        out.append({**info, **metrics})
    return {"pairs": out, "notes": notes, "nan_as": "null"}


def json_ready(obj: Any) -> Any:
    """A copy with every NaN float replaced by None, so json.dump writes null (strict JSON)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ writing


def _write_atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through a temp file in the same directory, fsync, then os.replace; the result is 0644."""
    write_atomic(path, write, mode)


def fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "n/a" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return "NaN" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: fmt(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""]


def _setting_section(name: str, s: dict) -> list[str]:
    lines = [f"### {name}: {s['student']} vs {s['baseline'] or '(no student_no_conflict)'}", ""]
    lines += _table(["metric", "value", "numerator", "denominator"],
                    [[DS_LABELS[k], s["ds"][k], *(s["ds_counts"].get(c, math.nan) for c in DS_COUNTS[k])]
                     for k in dm.DS_KEYS])
    lines += ["Conflict tax CT(Q) = examples of Q the no-conflict student gets right and this student wrong.", ""]
    lines += _table(["region Q", "size", "CT", "CT / size", "share of total CT"],
                    [[q, s["region_sizes"][q], ct["count"], ct["rate"], ct["share"]]
                     for q, ct in s["conflict_tax"].items()])
    if s["table"] is not None:
        word = {True: "right", False: "wrong"}
        combos = [(n, c) for n in (True, False) for c in (True, False)]
        lines += ["16-cell table (rows: weak and strong ceiling; columns: no-conflict student N, this student C).",
                  ""]
        rows = [[f"W {word[w]}, S {word[st]}",
                 *(s["table"][dm.cell_key(w, st, n, c)] for n, c in combos)]
                for w in (True, False) for st in (True, False)]
        lines += _table(["ceilings", *(f"N {word[n]}, C {word[c]}" for n, c in combos)], rows)
    lines += [f"- note: {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    return lines


def render_markdown(results: dict, metrics: dict, source: Path) -> str:
    lines = ["# Weak-to-strong deception report", "",
             f"Rebuilt from `{source.name}` (experiment: {results.get('experiment', 'unknown')}, "
             f"test examples: {results.get('n_test', 'unknown')}). NaN marks an undefined number; the notes say why.",
             "", "## Summary", ""]
    rows = [[p["name"], p["capability_gap"], name, *(s["ds"][k] for k in dm.DS_KEYS)]
            for p in metrics["pairs"] for name, s in p["settings"].items()]
    lines += _table(["pair", "capability gap", "setting", *(DS_LABELS[k] for k in dm.DS_KEYS)], rows) if rows \
        else ["No conflict setting could be scored.", ""]
    for p in metrics["pairs"]:
        lines += [f"## Pair {p['name']}", "", f"Capability gap Acc(S) - Acc(W) = {fmt(p['capability_gap'])}.", ""]
        lines += _table(["role", "model", "accuracy", "PGR", "correct", "n"],
                        [[role, m["model_id"] or "", m["accuracy"], m["pgr"], m["n_correct"], m["n"]]
                         for role, m in p["models"].items()])
        if p["region_sizes"] is not None:
            lines += ["Knowledge regions (by the ceilings' correctness; the same for every setting):", ""]
            lines += _table(list(ALL_REGIONS), [[p["region_sizes"][q] for q in ALL_REGIONS]])
            lines += ["Error rate per region:", ""]
            lines += _table(["role", *dm.REGIONS], [[role, *(m["error_rate_by_region"][q] for q in dm.REGIONS)]
                                                    for role, m in p["models"].items()])
        for name, s in p["settings"].items():
            lines += _setting_section(name, s)
        if p["notes"]:
            lines += ["Notes:", ""] + [f"- {n}" for n in p["notes"]] + [""]
    lines += ["## Definitions", "",
              "W = weak ceiling, S = strong ceiling, N = no-conflict student, C = the setting's student; "
              "\"right\" = hard prediction equals the ground-truth preference. In results.json NaN is null.", ""]
    lines += [f"- **{name}**: `{formula}`" for name, formula in dm.DEFINITIONS]
    if metrics["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in metrics["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def _save(fig, path: Path) -> None:
    _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")


def _accuracy_plot(pairs: list[dict], path: Path) -> None:
    roles = list(dict.fromkeys(r for p in pairs for r in p["models"]))
    fig, (ax,) = _figure(max(6.0, 1.2 * len(pairs) * max(1, len(roles)) / 4 + 3), 4.5)
    width = 0.8 / max(1, len(roles))
    for j, role in enumerate(roles):
        xs = [i for i, p in enumerate(pairs) if role in p["models"]]
        ax.bar([x - 0.4 + width * (j + 0.5) for x in xs], [pairs[i]["models"][role]["accuracy"] for i in xs],
               width, label=role, color=f"C{j % 10}", hatch="//" if j >= 10 else None)
    ax.set_xticks(range(len(pairs)), [p["name"] for p in pairs], rotation=20 if len(pairs) > 3 else 0)
    ax.set(ylim=(0, 1), ylabel="test accuracy", title="Test accuracy of every model, per weak/strong pair")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, path)


def _ds_plot(pairs: list[dict], path: Path) -> None:
    """One point per (pair, setting); a setting's points are joined in order of the gap (a capability ladder)."""
    from matplotlib.lines import Line2D

    settings = list(dict.fromkeys(s for p in pairs for s in p["settings"]))
    style = {s: {"marker": "os^vD<>px*"[j % 10], "color": f"C{j % 10}"} for j, s in enumerate(settings)}
    fig, axes = _figure(10, 8, ncols=2, nrows=2)
    for ax, key in zip(axes, dm.DS_KEYS):
        plotted = False
        for setting in settings:
            points = sorted((p["capability_gap"], p["settings"][setting]["ds"][key]) for p in pairs
                            if setting in p["settings"])
            points = [pt for pt in points if not (math.isnan(pt[0]) or math.isnan(pt[1]))]
            if points:
                plotted = True
                ax.plot(*zip(*points), **style[setting])
        if not plotted:
            ax.text(0.5, 0.5, "no defined values", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=DS_LABELS[key], xlabel="capability gap = Acc(strong ceiling) - Acc(weak ceiling)",
               ylabel="deception score", ylim=(-0.02, 1.02))
    if settings:
        fig.legend(handles=[Line2D([], [], label=s, **style[s]) for s in settings], loc="outside lower center",
                   ncols=min(4, len(settings)), fontsize="small")
    _save(fig, path)


def _regions_plot(pairs: list[dict], path: Path) -> None:
    ncols = min(3, max(1, len(pairs)))
    nrows = math.ceil(max(1, len(pairs)) / ncols)
    fig, axes = _figure(5.5 * ncols, 4.2 * nrows, ncols=ncols, nrows=nrows)
    for ax in axes[len(pairs):]:
        ax.set_axis_off()
    if not pairs:
        axes[0].text(0.5, 0.5, "no pairs", ha="center", va="center")
    for ax, p in zip(axes, pairs):
        bars = [(dm.BASELINE_ROLE, "no conflict")] if dm.BASELINE_ROLE in p["models"] else []
        bars += [(s["student"], name) for name, s in p["settings"].items()]
        if p["region_sizes"] is None or not bars:
            ax.text(0.5, 0.5, "regions undefined (no ceilings)" if p["region_sizes"] is None else "no students",
                    ha="center", va="center", transform=ax.transAxes)
        width = 0.8 / max(1, len(bars))
        for j, (role, label) in enumerate(bars if p["region_sizes"] is not None else []):
            rates = p["models"][role]["error_rate_by_region"]
            ax.bar([i - 0.4 + width * (j + 0.5) for i in range(len(dm.REGIONS))], [rates[q] for q in dm.REGIONS],
                   width, label=label, color=f"C{j % 10}")
        labels = [f"{q}\n(n={p['region_sizes'][q]})" if p["region_sizes"] else q for q in dm.REGIONS]
        ax.set_xticks(range(len(dm.REGIONS)), labels, fontsize="small")
        ax.set(ylim=(0, 1), ylabel="error rate in region", title=p["name"])
        if bars and p["region_sizes"] is not None:
            ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=min(3, len(bars)))
    _save(fig, path)


# ------------------------------------------------------------------------------------------------ entry points


def build_report(workdir: str | os.PathLike) -> dict:
    """Recompute everything from `workdir`/results.json; returns the `metrics` section as written (NaN -> None)."""
    workdir = Path(workdir)
    path = workdir / "results.json"
    results = load_results(path)
    metrics = compute_metrics(results, path)
    ready = json_ready(metrics)
    markdown = render_markdown(results, metrics, path)
    plots = workdir / "plots"
    _accuracy_plot(metrics["pairs"], plots / "accuracy.png")
    _ds_plot(metrics["pairs"], plots / "ds_vs_gap.png")
    _regions_plot(metrics["pairs"], plots / "regions.png")
    _write_atomic(workdir / "report.md", lambda f: f.write(markdown))
    write_json_atomic(path, {**results, "metrics": ready})
    return ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_jax.report", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="directory holding results.json")
    args = parser.parse_args(argv)
    try:
        metrics = build_report(args.workdir)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    out = Path(args.workdir)
    print(f"report: {len(metrics['pairs'])} pair(s) -> {out / 'report.md'}, {out / 'plots'}, "
          f"metrics in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
