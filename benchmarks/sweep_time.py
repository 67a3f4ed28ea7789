"""Wall time of a reward-model sweep at GPT-2 shapes, run the way a user runs it.

`python -m w2s_jax.main --config=configs/rm_sweep.py:shapes` (random-init models of the GPT-2 checkpoints' shapes,
the GPT-2 tokenizer from --tokenizer) on the paper's splits of --data (4000 pairs each of D_weak, D_gt and D_test),
limited to --pairs, in a subprocess. The conflict set: --conflict, or else a stand-in of the same size (the paper's
4000 helpful pairs are not in every copy of the data): D_weak's pairs with chosen and rejected swapped. Prints the
wall time and each model's seconds, steps and compiles (run_log.json); writes <out>/sweep_time-<host>-<date>.json.

    python -m benchmarks.sweep_time --tokenizer ~/.cache/w2s_jax/gpt2-tokenizer
    python -m benchmarks.sweep_time --pairs "gpt2->gpt2-medium" -- --config.train.epochs=2
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks import common

CONFIG = """from w2s_jax.configs import load_config_file


def get_config():
    c = load_config_file({sweep!r} + ":shapes")
    for spec in c.sweep.models.values():
        spec.tokenizer = {tokenizer!r}
    return c
"""


def main(argv=None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--pairs", default="gpt2->gpt2-xl")
    p.add_argument("--data", type=Path, default=common.DATA.parent)
    p.add_argument("--tokenizer", default=str(common.TOKENIZER_DIR))
    p.add_argument("--conflict", default="", help="JSONL of conflict pairs (default: a same-size stand-in)")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (master weights stay float32)")
    p.add_argument("--workdir", type=Path, help="default: a fresh temporary directory")
    p.add_argument("extra", nargs="*", help="more --config.* overrides for w2s_jax.main (after --)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sweep_time-"))
    workdir, conflict = args.workdir or tmp / "run", args.conflict or str(tmp / "conflict_stand_in.jsonl")
    if not args.conflict:  # D_weak swapped: the same count and lengths as a real conflict set
        rows = [json.loads(x) for x in (args.data / "harmless_train_w2s.jsonl").read_text().splitlines() if x]
        Path(conflict).write_text("".join(json.dumps({"chosen": r["rejected"], "rejected": r["chosen"]}) + "\n"
                                          for r in rows))
    config = tmp / "sweep_shapes.py"  # the preset with every model's tokenizer set (names with '-' take no flag)
    config.write_text(CONFIG.format(sweep=str(common.ROOT / "configs/rm_sweep.py"), tokenizer=args.tokenizer))
    flags = [f"--config={config}", f"--workdir={workdir}", f"--config.sweep.pairs={args.pairs}",
             f"--config.data.dir={args.data}", f"--config.data.conflict_path={conflict}",
             f"--config.model.dtype={args.dtype}", "--config.train.save_every=0",
             "--config.train.final_checkpoint=params", *args.extra]
    print(" ".join(["python -m w2s_jax.main", *flags]), flush=True)
    report = common.header("sweep_time", argv)
    wall, status = common.run_main(flags, check=False, quiet=False)
    report |= {"command": flags, "returncode": status, "wall_s": round(wall, 1),
               "conflict": "given" if args.conflict else "stand-in (D_weak swapped)", "models": {}}
    for log in sorted(workdir.glob("pairs/*/run_log.json")) or sorted(workdir.glob("run_log.json")):
        for role, m in json.loads(log.read_text())["runs"][0]["models"].items():
            report["models"][f"{log.parent.name}/{role}"] = m
    if (workdir / "results.json").exists():
        data = json.loads((workdir / "results.json").read_text())
        report["test_accuracy"] = {f"{p.get('weak', '')}->{p.get('strong', '')}/{m['role']}": m["test_accuracy"]
                                   for p in data.get("pairs", [data]) for m in p.get("models", [])}
    import jax

    report.update(device=jax.devices()[0].device_kind, backend=jax.default_backend())
    print(f"\nsweep {args.pairs}: {wall:.1f} s wall (exit {status})")
    for role, m in report["models"].items():
        print(f"  {role:<40} {m.get('seconds', 0):>8.1f} s  steps {m.get('steps_run')}  "
              f"compiles {m.get('train_step_compiles')}  reused {m.get('reused')}")
    print(f"results: {common.write_result(common.result_path(args.out, 'sweep_time'), report)}")
    return report


if __name__ == "__main__":
    main()
