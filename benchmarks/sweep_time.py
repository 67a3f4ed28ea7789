"""Wall time of a reward-model sweep at GPT-2 shapes, run the way a user runs it.

`python -m w2s_jax.main --config=configs/rm_sweep.py:shapes` (random-init models of the GPT-2 checkpoints' shapes,
the GPT-2 tokenizer from --tokenizer) on the paper's splits of --data (4000 pairs each of D_weak, D_gt and D_test),
limited to --pairs (default gpt2 -> gpt2-xl), in a subprocess so that start-up, tokenization and every compile
count. The conflict set: --conflict, or else a stand-in of the same size (the paper's 4000 helpful pairs are not
in every copy of the data): D_weak's pairs with chosen and rejected swapped, written to a temporary file.
Prints the wall time and each model's seconds, steps and compiles (run_log.json) and writes
<out>/sweep_time-<host>-<date>.json.

    python -m benchmarks.sweep_time --tokenizer ~/.cache/w2s_jax/gpt2-tokenizer
    python -m benchmarks.sweep_time --pairs "gpt2->gpt2-medium" -- --config.train.epochs=2
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import result_path, write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "hh-single-turn"
CONFIG = """from w2s_jax.configs import load_config_file


def get_config():
    c = load_config_file({sweep!r} + ":shapes")
    for spec in c.sweep.models.values():
        spec.tokenizer = {tokenizer!r}
    return c
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="gpt2->gpt2-xl")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--tokenizer", default=str(Path("~/.cache/w2s_jax/gpt2-tokenizer").expanduser()))
    p.add_argument("--conflict", default="", help="JSONL of conflict pairs (default: a same-size stand-in)")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (master weights stay float32)")
    p.add_argument("--workdir", type=Path, help="default: a fresh temporary directory")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("extra", nargs="*", help="more --config.* overrides for w2s_jax.main (after --)")
    return p.parse_args(argv)


def stand_in_conflict(data: Path, out: Path) -> Path:
    """D_weak's pairs with chosen and rejected swapped: same count and lengths as a real conflict set."""
    rows = [json.loads(line) for line in (data / "harmless_train_w2s.jsonl").read_text().splitlines() if line]
    path = out / "conflict_stand_in.jsonl"
    path.write_text("".join(json.dumps({"chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows))
    return path


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tmp = Path(tempfile.mkdtemp(prefix="sweep_time-"))
    workdir = args.workdir or tmp / "run"
    conflict = args.conflict or str(stand_in_conflict(args.data, tmp))
    config = tmp / "sweep_shapes.py"  # the preset with every model's tokenizer set (names with '-' take no flag)
    config.write_text(CONFIG.format(sweep=str(ROOT / "configs" / "rm_sweep.py"), tokenizer=args.tokenizer))
    cmd = [sys.executable, "-m", "w2s_jax.main", f"--config={config}", f"--workdir={workdir}",
           f"--config.sweep.pairs={args.pairs}", f"--config.data.dir={args.data}",
           f"--config.data.conflict_path={conflict}", f"--config.model.dtype={args.dtype}",
           "--config.train.save_every=0", "--config.train.final_checkpoint=params", *args.extra]
    print(" ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    report = {"benchmark": "sweep_time", "date": datetime.now().isoformat(timespec="seconds"),
              "hostname": socket.gethostname(), "command": cmd, "returncode": proc.returncode,
              "wall_s": round(wall, 1), "conflict": "given" if args.conflict else "stand-in (D_weak swapped)"}
    logs = sorted(Path(workdir).glob("pairs/*/run_log.json")) or sorted(Path(workdir).glob("run_log.json"))
    report["models"] = {}
    for log in logs:
        for role, m in json.loads(log.read_text())["runs"][0]["models"].items():
            report["models"][f"{log.parent.name}/{role}"] = m
    results = Path(workdir) / "results.json"
    if results.exists():
        data = json.loads(results.read_text())
        report["test_accuracy"] = {f"{p.get('weak', '')}->{p.get('strong', '')}/{m['role']}": m["test_accuracy"]
                                   for p in data.get("pairs", [data]) for m in p.get("models", [])}
    try:
        import jax

        report.update(device=jax.devices()[0].device_kind, backend=jax.default_backend(), jax=jax.__version__)
    except Exception as e:  # the timing stands without it
        report["device_error"] = str(e)[:200]
    print(f"\nsweep {args.pairs}: {wall:.1f} s wall (exit {proc.returncode})")
    for role, m in report["models"].items():
        print(f"  {role:<40} {m.get('seconds', 0):>8.1f} s  steps {m.get('steps_run')}  "
              f"compiles {m.get('train_step_compiles')}  reused {m.get('reused')}")
    path = result_path(args.out, "sweep_time")
    write_report(path, report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
