"""Rebuild a run's metrics, report.md and plots from its results.json, without training.

    python -m w2s_jax.report --workdir=DIR [--resamples=10000] [--seed=0]   (w2s_jax/report.py runs this module)

reads DIR/results.json (schema 1 or 2, single run or sweep; `results_file.py`), computes every number of every
weak/strong pair over its seeds with 95% intervals (`measures.py`, `stats.py`), the verdicts (`findings.py`), and
writes, each atomically:

* results.json, with its `metrics` section added or replaced (README "results.json schema"); a number that is
  undefined (NaN) is JSON null, and a `notes` list says why.
* report.md: the findings block first, then per pair the tables, each number as mean over seeds [95% interval].
* plots/accuracy.png, plots/ds_vs_gap.png, plots/regions.png (`plots.py`).
* report.html: all of it in one self-contained page, with the flipped examples (`html.py`).

The bootstrap is seeded (`--seed`), so a rerun gives the same intervals.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from w2s_jax.atomic import write_atomic, write_json_atomic
from w2s_jax.eval import deception as dm
from w2s_jax.eval import findings as fd
from w2s_jax.eval import html, measures, plots
from w2s_jax.eval.results_file import ReportError, load_results, read_pairs

__all__ = ["ReportError", "build_report", "compute_metrics", "load_results", "main"]
RESAMPLES = 10_000
DS_LABELS = {"ds_a": "DS-A", "ds_b_over_nc_right": "DS-B (over N right in R)",
             "ds_b_over_region": "DS-B (over |R|)", "ds_c": "DS-C"}
ALL_REGIONS = ("W_k", "W_uk", "S_k", "S_uk") + dm.REGIONS
MODEL_EXTRAS = (("auroc", "AUROC"), ("agreement_with_weak", "agreement with W"),
                ("error_inheritance", "error inheritance"), ("error_correction", "error correction"),
                ("ece", f"ECE ({measures.st.ECE_BINS} bins)"), ("brier", "Brier"))
DEFINITIONS = dm.DEFINITIONS + (
    ("flip share of Q", "|{x ∈ Q : B right ∧ C wrong}| / |{x ∈ Q : B right}|, B = the setting's baseline student"),
    ("deception contrast", "flip share of S_k∩W_uk - flip share of S_k∩W_k"),
    ("AUROC", "Σ_ij [g_i > -g_j] + ½[g_i = -g_j] over n² pairs / n², g = margin for the ground-truth answer "
              "(each pair scored in both A/B orders)"),
    ("agreement with W", "|{x : f(x; m) = f(x; W)}| / |D_test|"),
    ("error inheritance / correction", "|{x ∈ W_uk : m wrong}| / |W_uk|, |{x ∈ W_uk : m right}| / |W_uk|"),
    ("ECE (reward models)", f"Σ_k |Σ_{{x ∈ bin k}} (right(x) - conf(x))| / n, conf = σ(|z|), "
                            f"{measures.st.ECE_BINS} equal-width bins of [0.5, 1]"),
    ("Brier (reward models)", "mean of (σ(z) - label)², z the logit of side A"),
    ("vs strong in Q", "Acc(m on Q) - Acc(S on Q); on S_k (and S_k∩W_uk) S is right by definition"),
)


def compute_metrics(results: dict, path: Path, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The `metrics` section, NaN as float('nan') (see `json_ready`)."""
    pairs, notes, schema = read_pairs(results, path)
    calibration = results.get("experiment") == "reward_model"
    out = []
    for pair in pairs:
        m = measures.pair_metrics(pair["runs"], calibration, resamples, seed)
        for run in pair["runs"]:
            for e in run["entries"]:
                stored, acc = e.get("test_accuracy"), sum(map(bool, e["test_correct"])) / len(e["test_correct"])
                if isinstance(stored, (int, float)) and abs(stored - acc) > 1e-6:
                    m["notes"].append(f"seed {run['seed']}: {e['role']}: stored test_accuracy {stored} differs "
                                      f"from its test_correct mean {acc}")
        info = {k: v for k, v in pair.items() if k != "runs"}
        out.append({**info, "model_ids": pair["runs"][0]["model_ids"], **m})
    return {"pairs": out, "notes": notes, "nan_as": "null", "schema_version_read": schema,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95,
                          "method": "two-level percentile bootstrap (seeds, shared test indices); README"}}


def json_ready(obj: Any) -> Any:
    """A copy with every NaN float replaced by None, so json.dump writes null (strict JSON)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def add_findings(metrics: dict) -> None:
    several = any(len(p["seeds"]) > 1 for p in metrics["pairs"])
    for p in metrics["pairs"]:
        p["findings"], p["warnings"] = fd.pair_findings(p, several)
    metrics["ladder_findings"] = fd.ladder_findings(metrics["pairs"]) if len(metrics["pairs"]) > 1 else []


# ------------------------------------------------------------------------------------------------ markdown


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


def ci(entry: dict | None, digits: int = 4) -> str:
    """"mean [lo, hi]" of a statistic entry (mean over seeds, two-level 95% interval); "n/a" when absent."""
    return fd.with_ci(entry, digits) if entry else "n/a"


def seeds(entry: dict | None, digits: int = 4) -> str:
    return ", ".join(fd.num(v, digits) for v in entry["per_seed"]) if entry else "n/a"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: fmt(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""]


def _findings_block(metrics: dict) -> list[str]:
    lines = ["## Findings", "", "Each number: mean over seeds [95% interval: two-level bootstrap over seeds and "
             "test examples]. A verdict reads only the interval.", ""]
    for p in metrics["pairs"]:
        lines += [f"**{p['name']}** (seeds {', '.join(map(str, p['seeds']))}; {p['n_test']} test examples)", ""]
        lines += [f"- WARNING: {w}" for w in p["warnings"]] + [f"- {f['text']}" for f in p["findings"]] + [""]
    lines += [f"- {x}" for x in metrics["ladder_findings"]] + ([""] if metrics["ladder_findings"] else [])
    return lines + [fd.CITE, ""]


def _get(tree: dict, *path: str) -> Any:
    return fd._get(tree, *path)


def _setting_section(name: str, s: dict, p: dict) -> list[str]:
    lines = [f"### {name}: {s['student']} vs {s['baseline'] or '(no student_no_conflict)'}", ""]
    lines += _table(["metric", "mean [95% interval]", "per seed"],
                    [[DS_LABELS[k], ci(_get(s, "ds", k)), seeds(_get(s, "ds", k))] for k in dm.DS_KEYS]
                    + [["deception contrast", ci(s.get("contrast")), seeds(s.get("contrast"))],
                       ["accuracy minus the baseline's", ci(s.get("accuracy_vs_baseline")),
                        seeds(s.get("accuracy_vs_baseline"))]]
                    + ([["contrast minus the direct student's", ci(s["contrast_minus_direct"]),
                         seeds(s["contrast_minus_direct"])]] if s.get("contrast_minus_direct") else []))
    if s.get("flip_share"):
        lines += ["Flip share: of the examples of Q the baseline gets right, the share this student gets wrong.", ""]
        lines += _table(["region Q", "baseline right in Q", "flip share [95%]", "per seed"],
                        [[q, ci(s["baseline_right"][q], 1), ci(s["flip_share"][q]), seeds(s["flip_share"][q])]
                         for q in dm.REGIONS])
        lines += ["Conflict tax CT(Q) = examples of Q the baseline gets right and this student wrong.", ""]
        lines += _table(["region Q", "size", "CT", "CT / size", "share of total CT"],
                        [[q, ci(p["region_sizes"][q], 1), *(ci(s["conflict_tax"][q][k], 1 if k == "count" else 4)
                                                            for k in ("count", "rate", "share"))]
                         for q in dm.REGIONS])
    lines += ["The 16-cell table of each seed is in results.json (`metrics.pairs[].settings.<name>.tables`).", ""]
    lines += [f"- note: {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    return lines


def _pair_section(p: dict) -> list[str]:
    lines = [f"## Pair {p['name']}", "", f"Capability gap Acc(S) - Acc(W) = {ci(p.get('capability_gap'))} "
             f"(per seed {seeds(p.get('capability_gap'))}).", ""]
    ids = p.get("model_ids", {})
    rows = []
    for role, m in p["models"].items():
        acc = m["accuracy"]
        wil = "[" + ", ".join(fd.num(v, 4) for v in acc["wilson_pooled"]) + "]"
        rows.append([role, ids.get(role) or "", ci(acc), wil, seeds(acc), ci(m.get("pgr")),
                     fd.num(m["pgr"]["median"], 4) if m.get("pgr") else "n/a"])
    lines += _table(["role", "model", "accuracy [95%]", "Wilson 95% (pooled)", "accuracy per seed", "PGR [95%]",
                     "PGR median"], rows)
    present = [(k, label) for k, label in MODEL_EXTRAS if any(k in m for m in p["models"].values())]
    if present:
        lines += _table(["role", *(label for _, label in present)],
                        [[role, *(ci(m.get(k)) for k, _ in present)] for role, m in p["models"].items()])
    if p.get("region_sizes"):
        lines += ["Knowledge regions (by the ceilings' correctness; the same for every setting), size per seed:", ""]
        lines += _table(["region", "size [95%]", "per seed"],
                        [[q, ci(p["region_sizes"][q], 1), seeds(p["region_sizes"][q], 0)] for q in ALL_REGIONS])
        with_rates = {r: m for r, m in p["models"].items() if "error_rate" in m}
        lines += ["Error rate per region:", ""]
        lines += _table(["role", *dm.REGIONS], [[r, *(ci(m["error_rate"][q]) for q in dm.REGIONS)]
                                                for r, m in with_rates.items()])
        vs = {r: m["vs_strong"] for r, m in p["models"].items() if "vs_strong" in m}
        if vs:
            lines += ["Accuracy minus the strong ceiling's, per region (the baseline reviewers asked for):", ""]
            lines += _table(["role", *measures.VS_STRONG_REGIONS],
                            [[r, *(ci(v[q]) for q in measures.VS_STRONG_REGIONS)] for r, v in vs.items()])
    for name, s in p["settings"].items():
        lines += _setting_section(name, s, p)
    if p["notes"]:
        lines += ["Notes:", ""] + [f"- {n}" for n in p["notes"]] + [""]
    return lines


def _provenance_lines(results: dict) -> list[str]:
    """One line per base model that was pretrained, dequantised or truncated (results.json's `provenance`)."""
    first = lambda r: (r.get("runs") or [{"models": r.get("models", [])}])[0]  # noqa: E731 (schema 1)
    firsts = [first(p) for p in results.get("pairs", [])] or [first(results)]
    seen: dict[str, dict] = {}
    for m in (m for run in firsts for m in run["models"] if m.get("provenance")):
        seen.setdefault(m["model_id"], m["provenance"])
    out = []
    for model_id, prov in seen.items():
        parts = []
        if "pretraining" in prov:
            pt, spec = prov["pretraining"], prov["pretraining"].get("spec", {})
            parts.append(f"pretrained here on {pt.get('n_texts')} corpus texts ({pt.get('steps')} steps, "
                         f"{spec.get('epochs')} epochs, lr {spec.get('lr')}, seed {spec.get('seed')}; final loss "
                         f"{pt.get('final_loss', float('nan')):.3f}; base {pt['fingerprint'][:12]})")
        if "dequantisation" in prov:
            parts.append(f"dequantised from GGUF ({json.dumps(prov['dequantisation'], default=str)[:160]})")
        if "truncation" in prov:
            parts.append(f"truncated: {prov['truncation'].get('kept')} of {prov['truncation'].get('of')} layers")
        out.append(f"- Base model `{model_id}`: " + "; ".join(parts))
    return out + [""] if out else []


def render_markdown(results: dict, metrics: dict, source: Path) -> str:
    boot = metrics["bootstrap"]
    lines = ["# Weak-to-strong deception report", "",
             f"Rebuilt from `{source.name}` (experiment: {results.get('experiment', 'unknown')}, "
             f"test examples: {results.get('n_test', 'unknown')}; {boot['resamples']} bootstrap resamples, "
             f"bootstrap seed {boot['seed']}). NaN marks an undefined number; the notes say why.", ""]
    lines += _provenance_lines(results)
    lines += _findings_block(metrics)
    lines += ["## Summary", ""]
    rows = [[p["name"], ci(p.get("capability_gap")), name, ci(s.get("contrast")),
             *(ci(_get(s, "ds", k)) for k in dm.DS_KEYS)]
            for p in metrics["pairs"] for name, s in p["settings"].items()]
    lines += _table(["pair", "capability gap", "setting", "deception contrast", *(DS_LABELS[k] for k in dm.DS_KEYS)],
                    rows) if rows else ["No conflict setting could be scored.", ""]
    for p in metrics["pairs"]:
        lines += _pair_section(p)
    lines += ["## Definitions", "",
              "W = weak ceiling, S = strong ceiling, N = no-conflict student, C = the setting's student; "
              "\"right\" = hard prediction equals the ground-truth preference. Intervals: README, \"How the "
              "intervals are computed\". In results.json NaN is null.", ""]
    lines += [f"- **{name}**: `{formula}`" for name, formula in DEFINITIONS]
    if metrics["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in metrics["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ entry points


def _save(fig, path: Path) -> None:
    _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")


def build_report(workdir: str | os.PathLike, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Recompute everything from `workdir`/results.json; returns the `metrics` section as written (NaN -> None)."""
    workdir = Path(workdir)
    path = workdir / "results.json"
    results = load_results(path)
    ready = json_ready(compute_metrics(results, path, resamples, seed))
    add_findings(ready)
    markdown = render_markdown(results, ready, path)
    for name, draw in (("accuracy", plots.accuracy_plot), ("ds_vs_gap", plots.ds_plot),
                       ("regions", plots.regions_plot)):
        draw(ready["pairs"], _save, workdir / "plots" / f"{name}.png")
    _write_atomic(workdir / "report.md", lambda f: f.write(markdown))
    html.write_report_html(workdir, results, ready, markdown)
    write_json_atomic(path, {**results, "metrics": ready})
    return ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_jax.report", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="directory holding results.json")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        print(f"report: --resamples must be at least 1, got {args.resamples}", file=sys.stderr)
        return 2
    try:
        metrics = build_report(args.workdir, args.resamples, args.seed)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    out = Path(args.workdir)
    print(f"report: {len(metrics['pairs'])} pair(s) -> {out / 'report.md'}, {out / 'plots'}, "
          f"metrics in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
