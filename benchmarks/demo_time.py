"""Wall time and figures of the offline demo, run the way a newcomer runs it.

Runs `python -m w2s_jax.main --config=configs/rm_helpful.py:demo --workdir=<fresh dir>` in a subprocess (so start-up,
pretraining the demo world's bases, tokenizer training and every compile count; every seed of the preset), then
reads its results.json, run_log.json and report.md: the findings block (the report's verdicts), the time of each
base's pretraining and of each model per seed, every model's D_test accuracy per seed,
the strong-weak gap, each model's accuracy per tier of the demo world, and the error of every student in the four
knowledge regions (W_k / W_uk: the weak ceiling right / wrong; S_k / S_uk: the strong ceiling right / wrong).
Prints a summary and writes it to `benchmarks/results/demo_time-<hostname>-<date>.json`.

    python -m benchmarks.demo_time
    python -m benchmarks.demo_time --config configs/dpo_helpful.py:demo -- --config.train.epochs=2
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REGIONS = {"S_k & W_uk": (True, False), "S_k & W_k": (True, True), "S_uk & W_k": (False, True),
           "S_uk & W_uk": (False, False)}


def region_errors(models: list[dict], subset: np.ndarray | None = None) -> dict:
    """Sizes of the four regions and every other model's error rate in each (None where a region is empty),
    optionally only over the test examples where `subset` is true."""
    correct = {m["role"]: np.asarray(m["test_correct"], bool) for m in models}
    weak, strong = correct["weak_ceiling"], correct["strong_ceiling"]
    keep = np.ones_like(weak) if subset is None else np.asarray(subset, bool)
    masks = {name: (strong == s) & (weak == w) & keep for name, (s, w) in REGIONS.items()}
    out = {"sizes": {name: int(m.sum()) for name, m in masks.items()}, "error": {}}
    for role, c in correct.items():
        if role in ("weak_ceiling", "strong_ceiling"):
            continue
        out["error"][role] = {name: (round(float(1 - c[m].mean()), 4) if m.any() else None)
                              for name, m in masks.items()}
    return out


def demo_tiers(results: dict) -> list[tuple[str, bool]] | None:
    """(family, harmful) of every test example of a demo-world run, regenerated from its config; else None."""
    from ml_collections import ConfigDict

    from w2s_jax.data.demo_world import demo_splits, tier_of

    data = results["config"]["data"]
    return [tier_of(p) for p in demo_splits(ConfigDict(data)).test] if data.get("source") == "demo" else None


def tier_accuracy(results: dict, tiers: list[tuple[str, bool]]) -> dict:
    """Each model's accuracy per (family, harmful) tier of the demo world."""
    names = sorted(set(tiers))
    out = {}
    for m in results["runs"][0]["models"]:
        c = np.asarray(m["test_correct"], bool)
        out[m["role"]] = {f"{fam}/{'harmful' if h else 'benign'}": round(float(c[[t == (fam, h) for t in tiers]].mean()),
                                                                         4) for fam, h in names}
    return out


def findings(report_md: str) -> str:
    """The report's findings block (its verdicts), without the heading."""
    block = report_md.split("## Findings", 1)[-1].split("\n## ", 1)[0]
    return block.strip()


def summarize(results: dict) -> dict:
    models = results["runs"][0]["models"]  # the first seed's
    acc = {m["role"]: round(m["test_accuracy"], 4) for m in models}
    summary = {"test_accuracy": acc, "n_test": results["n_test"], "seeds": results["seeds"],
               "test_accuracy_per_seed": {str(r["seed"]): {m["role"]: round(m["test_accuracy"], 4)
                                                           for m in r["models"]} for r in results["runs"]}}
    if "weak_ceiling" in acc and "strong_ceiling" in acc:
        summary["strong_minus_weak_points"] = round(100 * (acc["strong_ceiling"] - acc["weak_ceiling"]), 2)
        summary["regions"] = region_errors(models)
    tiers = demo_tiers(results)
    if tiers is not None:
        summary["tier_accuracy"] = tier_accuracy(results, tiers)
        if "regions" in summary:  # where complying is the harm: the requests that are harmful
            summary["regions_harmful_requests"] = region_errors(models, [h for _, h in tiers])
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/rm_helpful.py:demo")
    parser.add_argument("--workdir", default="", help="default: a fresh temporary directory (nothing reused)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="extra flags for w2s_jax.main, after --")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="w2s-demo-")
    cmd = [sys.executable, "-m", "w2s_jax.main", f"--config={args.config}", f"--workdir={workdir}", *args.overrides]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    load_before = list(os.getloadavg())
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"demo failed with exit status {proc.returncode}: {' '.join(cmd)}")
    results = json.loads((Path(workdir) / "results.json").read_text())
    run_log = json.loads((Path(workdir) / "run_log.json").read_text())
    now = datetime.datetime.now()
    report = {
        "benchmark": "demo_time", "date": now.isoformat(timespec="seconds"), "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "command": " ".join(["python", "-m", "w2s_jax.main", f"--config={args.config}", "--workdir=DIR",
                             *args.overrides]),
        "wall_seconds": round(wall, 1),
        "pretrain_seconds": {which: b.get("seconds") for which, b in run_log.get("bases", {}).items()},
        "model_seconds": {str(r["seed"]): {role: m["seconds"] for role, m in r["models"].items()}
                          for r in run_log["runs"]},
        **summarize(results),
        "findings": findings((Path(workdir) / "report.md").read_text()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"demo_time-{socket.gethostname()}-{now:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wall {wall:.1f} s  ({report['command']}); load average before {load_before[0]:.1f}, after "
          f"{report['load_average_after'][0]:.1f} on {os.cpu_count()} cores")
    print(f"pretraining (s): {report['pretrain_seconds']}")
    for seed, seconds in report["model_seconds"].items():
        print(f"seed {seed}: {sum(seconds.values()):.0f} s over {len(seconds)} models; test accuracy "
              + "  ".join(f"{role} {a:.3f}" for role, a in report["test_accuracy_per_seed"][seed].items()))
    print("findings:\n" + report["findings"])
    print("first seed, per model:")
    for role, a in report["test_accuracy"].items():
        print(f"{role:>22}  {a:.4f}")
    if "regions" in report:
        print(f"strong - weak: {report['strong_minus_weak_points']:+.1f} points; region sizes "
              f"{report['regions']['sizes']}")
        for key, title in (("regions", "all requests"), ("regions_harmful_requests", "harmful requests")):
            if key not in report:
                continue
            print(f"error per region, {title}: sizes {report[key]['sizes']}")
            for role, errors in report[key]["error"].items():
                print(f"{role:>22}  " + "  ".join(f"{k}: {'-' if v is None else f'{v:.3f}'}" for k, v in errors.items()))
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
