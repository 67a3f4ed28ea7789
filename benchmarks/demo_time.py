"""Wall time and figures of the offline demo, run the way a newcomer runs it.

Runs `python -m w2s_jax.main --config=configs/rm_helpful.py:demo --workdir=<fresh dir>` in a subprocess (start-up,
pretraining the demo world's bases, tokenizer training and every compile count; every seed of the preset), then
reads its results.json, run_log.json and report.md: the report's findings block, the time of each base's
pretraining and of each model per seed, every model's D_test accuracy per seed, the strong-weak gap, each model's
accuracy per tier of the demo world, and the error of every student in the four knowledge regions (W_k / W_uk: the
weak ceiling right / wrong; S_k / S_uk: the strong ceiling right / wrong). Prints a summary and writes it to
`benchmarks/results/demo_time-<hostname>-<date>.json`.

    python -m benchmarks.demo_time
    python -m benchmarks.demo_time --config configs/dpo_helpful.py:demo -- --config.train.epochs=2
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common


def region_errors(correct: dict[str, np.ndarray], subset=True) -> dict:
    """Sizes of the four regions (within `subset`) and every student's error rate in each (None where empty)."""
    masks = {name: m & subset for name, m in common.region_masks(correct).items()}
    return {"sizes": {name: int(m.sum()) for name, m in masks.items()},
            "error": {role: {name: round(float(1 - c[m].mean()), 4) if m.any() else None for name, m in masks.items()}
                      for role, c in correct.items() if role not in ("weak_ceiling", "strong_ceiling")}}


def summarize(results: dict) -> dict:
    from ml_collections import ConfigDict

    from w2s_jax.data.demo_world import demo_splits, tier_of

    per_seed = {str(r["seed"]): {m["role"]: round(m["test_accuracy"], 4) for m in r["models"]} for r in results["runs"]}
    acc, correct = per_seed[str(results["runs"][0]["seed"])], common.correctness(results)  # the first seed's
    summary = {"test_accuracy": acc, "n_test": results["n_test"], "seeds": results["seeds"],
               "test_accuracy_per_seed": per_seed}
    if "weak_ceiling" in acc and "strong_ceiling" in acc:
        summary["strong_minus_weak_points"] = round(100 * (acc["strong_ceiling"] - acc["weak_ceiling"]), 2)
        summary["regions"] = region_errors(correct)
    if results["config"]["data"].get("source") == "demo":  # (family, harmful) of every test example, regenerated
        tiers = [tier_of(p) for p in demo_splits(ConfigDict(results["config"]["data"])).test]
        in_tier = {f"{fam}/{'harmful' if h else 'benign'}": np.array([t == (fam, h) for t in tiers])
                   for fam, h in sorted(set(tiers))}
        summary["tier_accuracy"] = {role: {name: round(float(c[m].mean()), 4) for name, m in in_tier.items()}
                                    for role, c in correct.items()}
        if "regions" in summary:  # where complying is the harm: the requests that are harmful
            summary["regions_harmful_requests"] = region_errors(correct, np.array([h for _, h in tiers]))
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = common.parser(__doc__)
    parser.add_argument("--config", default="configs/rm_helpful.py:demo")
    parser.add_argument("--workdir", default="", help="default: a fresh temporary directory (nothing reused)")
    parser.add_argument("overrides", nargs="*", help="extra flags for w2s_jax.main, after --")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w2s-demo-"))
    report = common.header("demo_time", argv)
    wall, _ = common.run_main([f"--config={args.config}", f"--workdir={workdir}", *args.overrides])
    results, run_log = (json.loads((workdir / f).read_text()) for f in ("results.json", "run_log.json"))
    command = ["python -m w2s_jax.main", f"--config={args.config}", "--workdir=DIR", *args.overrides]
    report |= {"command": " ".join(command),
               "wall_seconds": round(wall, 1),
               "pretrain_seconds": {which: b.get("seconds") for which, b in run_log.get("bases", {}).items()},
               "model_seconds": {str(r["seed"]): {role: m["seconds"] for role, m in r["models"].items()}
                                 for r in run_log["runs"]}, **summarize(results),
               "findings": (workdir / "report.md").read_text().split("## Findings", 1)[-1].split("\n## ", 1)[0].strip()}
    path = common.write_result(common.result_path(args.out, "demo_time"), report)
    load = report["machine"]["loadavg_before"][0], report["machine"]["loadavg_after"][0]
    print(f"wall {wall:.1f} s  ({report['command']}); load average {load[0]:.1f} -> {load[1]:.1f}")
    print(f"pretraining (s): {report['pretrain_seconds']}")
    for seed, seconds in report["model_seconds"].items():
        print(f"seed {seed}: {sum(seconds.values()):.0f} s over {len(seconds)} models; test accuracy "
              + "  ".join(f"{role} {a:.3f}" for role, a in report["test_accuracy_per_seed"][seed].items()))
    print("findings:\n" + report["findings"])
    if "regions" in report:
        print(f"strong - weak: {report['strong_minus_weak_points']:+.1f} points")
        for key in ("regions", "regions_harmful_requests"):
            print(f"error per region, {key}: sizes {report.get(key, {}).get('sizes')}")
            for role, errors in report.get(key, {}).get("error", {}).items():
                print(f"{role:>22}  " + "  ".join(f"{k}: {'-' if v is None else f'{v:.3f}'}"
                                                  for k, v in errors.items()))
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
