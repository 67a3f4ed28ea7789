"""Wall time and figures of `python -m w2s_jax.main`, run as a user runs it, in a subprocess and a fresh work
directory: the offline demo (demo_time-*.json), or with --sweep the reward-model sweep at GPT-2 shapes
(sweep_time-*.json); what each reports: README "Benchmarks"."""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common

SWEEP_CONFIG = """from w2s_jax.configs import load_config_file


def get_config():
    c = load_config_file({sweep!r} + ":shapes")
    for spec in c.sweep.models.values():
        spec.tokenizer = {tokenizer!r}
    return c
"""


def summarize(workdir: Path) -> dict:
    """Test accuracy per seed; of the first seed (its rows of predictions.jsonl): the strong-weak gap, the region
    sizes and every student's error rate in each (all requests, and the harmful ones), the accuracy per tier."""
    results = json.loads((workdir / "results.json").read_text())
    per_seed = {str(r["seed"]): {m["role"]: round(m["test_accuracy"], 4) for m in r["models"]} for r in results["runs"]}
    first = results["runs"][0]["seed"]
    rows = [r for r in map(json.loads, (workdir / "predictions.jsonl").read_text().splitlines()) if r["seed"] == first]
    acc, summary = per_seed[str(first)], {"n_test": results["n_test"], "seeds": results["seeds"]}

    def accuracy(key: str, keep=lambda r: True) -> tuple[dict, dict]:
        """({role: {group: accuracy}}, {group: size}) of the rows grouped by their `key`."""
        groups = {}
        for r in (r for r in rows if keep(r) and r.get(key)):
            groups.setdefault(r[key], []).append(r["correct"])
        return ({role: {g: round(float(np.mean([c[role] for c in cs])), 4) for g, cs in sorted(groups.items())}
                 for role in rows[0]["correct"]}, {g: len(cs) for g, cs in sorted(groups.items())})

    if "weak_ceiling" in acc and "strong_ceiling" in acc:
        summary["strong_minus_weak_points"] = round(100 * (acc["strong_ceiling"] - acc["weak_ceiling"]), 2)
        for name, keep in (("regions", lambda r: True),  # where complying is the harm: the harmful requests
                           ("regions_harmful_requests", lambda r: str(r.get("tier")).endswith("/harmful"))):
            right, sizes = accuracy("region", keep)
            summary[name] = {"sizes": sizes, "error": {role: {q: round(1 - a, 4) for q, a in by.items()}
                                                       for role, by in right.items() if "ceiling" not in role}}
    if rows and rows[0].get("tier"):
        summary["tier_accuracy"] = accuracy("tier")[0]
    return {"test_accuracy": acc, "test_accuracy_per_seed": per_seed} | summary


def time_demo(args, workdir: Path) -> dict:
    wall, _ = common.run_main([f"--config={args.config}", f"--workdir={workdir}", *args.overrides])
    run_log = json.loads((workdir / "run_log.json").read_text())
    return {"command": " ".join(["python -m w2s_jax.main", f"--config={args.config}", "--workdir=DIR",
                                 *args.overrides]), "wall_seconds": round(wall, 1),
            "pretrain_seconds": {which: b.get("seconds") for which, b in run_log.get("bases", {}).items()},
            "model_seconds": {str(r["seed"]): {role: m["seconds"] for role, m in r["models"].items()}
                              for r in run_log["runs"]}, **summarize(workdir),
            "findings": (workdir / "report.md").read_text().split("## Findings", 1)[-1].split("\n## ", 1)[0].strip()}


def time_sweep(args, tmp: Path, workdir: Path) -> dict:
    """`configs/rm_sweep.py:shapes` limited to --pairs, on the splits of --data; the conflict set --conflict, or
    else a stand-in of the same size and lengths (D_weak with chosen and rejected swapped)."""
    import jax

    conflict = args.conflict or str(tmp / "conflict_stand_in.jsonl")
    if not args.conflict:
        rows = [json.loads(x) for x in (args.data / "harmless_train_w2s.jsonl").read_text().splitlines() if x]
        Path(conflict).write_text("".join(json.dumps({"chosen": r["rejected"], "rejected": r["chosen"]}) + "\n"
                                          for r in rows))
    config = tmp / "sweep_shapes.py"  # the preset with every model's tokenizer set (names with '-' take no flag)
    config.write_text(SWEEP_CONFIG.format(sweep=str(common.ROOT / "configs/rm_sweep.py"), tokenizer=args.tokenizer))
    flags = [f"--config={config}", f"--workdir={workdir}", f"--config.sweep.pairs={args.pairs}",
             f"--config.data.dir={args.data}", f"--config.data.conflict_path={conflict}",
             f"--config.model.dtype={args.dtype}", "--config.train.save_every=0",
             "--config.train.final_checkpoint=params", *args.overrides]
    print(" ".join(["python -m w2s_jax.main", *flags]), flush=True)
    wall, status = common.run_main(flags, check=False, quiet=False)
    report = {"command": flags, "returncode": status, "wall_s": round(wall, 1),
              "conflict": "given" if args.conflict else "stand-in (D_weak swapped)", "models": {}}
    for log in sorted(workdir.glob("pairs/*/run_log.json")) or sorted(workdir.glob("run_log.json")):
        for role, m in json.loads(log.read_text())["runs"][0]["models"].items():
            report["models"][f"{log.parent.name}/{role}"] = m
    if (workdir / "results.json").exists():
        data = json.loads((workdir / "results.json").read_text())
        report["test_accuracy"] = {f"{p.get('weak', '')}->{p.get('strong', '')}/{m['role']}": m["test_accuracy"]
                                   for p in data.get("pairs", [data]) for m in p.get("models", [])}
    return report | {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def show(args, report: dict) -> None:
    if args.sweep:
        print(f"\nsweep {args.pairs}: {report['wall_s']:.1f} s wall (exit {report['returncode']})")
        rows = [{"model": role, **m, "reused": str(m.get("reused"))} for role, m in report["models"].items()]
        common.table(rows, "model<40 seconds>8.1f steps_run>6 train_step_compiles>8 reused>6")
        return
    load = report["machine"]["loadavg_before"][0], report["machine"]["loadavg_after"][0]
    print(f"wall {report['wall_seconds']:.1f} s  ({report['command']}); load average {load[0]:.1f} -> {load[1]:.1f}")
    keys = ("pretrain_seconds", "test_accuracy_per_seed", "strong_minus_weak_points", "regions",
            "regions_harmful_requests", "tier_accuracy")  # regions: sizes and each student's error rate
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=1))
    print("findings:\n" + report["findings"])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = common.parser(__doc__, sweep=False, config="configs/rm_helpful.py:demo", pairs="gpt2->gpt2-xl",
                      data=common.DATA.parent, tokenizer=str(common.TOKENIZER_DIR), conflict="", dtype="bfloat16")
    p.add_argument("--workdir", type=Path, help="default: a fresh temporary directory (nothing reused)")
    p.add_argument("overrides", nargs="*", help="more flags for w2s_jax.main, after --")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sweep_time-" if args.sweep else "w2s-demo-"))
    report = common.header("sweep_time" if args.sweep else "demo_time", argv)
    report |= time_sweep(args, tmp, args.workdir or tmp / "run") if args.sweep else time_demo(args, args.workdir or tmp)
    path = common.write_result(common.result_path(args.out, report["benchmark"]), report)
    show(args, report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
