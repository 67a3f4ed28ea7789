#!/usr/bin/env python
"""Run the independent runs of a sweep in parallel: one per GPU (or group of GPUs, or CPU slot).

    python launch/sweep.py --config=configs/rm_helpful.py --root=runs/alpha \
        --grid conflict.alpha=0.1,0.5,1.0 --grid seeds=0,1 --devices=0,1,2,3 [-- more w2s_jax.main flags]

Every point of the grid (the cartesian product of the --grid axes; values split on ',' or, when a value holds
commas itself, on '|': `--grid 'students=no_conflict|implicit,explicit'`) is one `python -m w2s_jax.main` run
with `--config.<key>=<value>` for each axis, in `<root>/runs/<name>/`, its output in `<root>/runs/<name>/run.log`.
A slot (`--gpus_per_run` GPUs through CUDA_VISIBLE_DEVICES, or `--devices=cpu:N` for N CPU runs at once) takes
the next run as soon as it is free. By default the runs share `<root>/models` and `<root>/cache` (symlinked into
each run's directory): a model several runs need (the weak and strong ceilings of an alpha sweep) is trained once,
the other runs wait for it and reuse it (`ModelStore.exclusive`). `--separate_models` gives each run its own.
A run whose results.json exists is skipped unless --rerun. `<root>/sweep.json` lists every run, its overrides,
directory, exit status and seconds; the exit status is 1 when any run failed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path


def parse_axis(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    if not sep or not key or not values.strip():
        raise ValueError(f"--grid {text!r}: expected key=v1,v2,... (e.g. conflict.alpha=0.1,0.5)")
    items = [v.strip() for v in values.split("|" if "|" in values else ",")]
    if any(not v for v in items):
        raise ValueError(f"--grid {text!r}: an empty value")
    return key, items


def grid_points(axes: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--grid: a key is given twice in {keys}")
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in axes))]


def run_name(index: int, point: dict[str, str]) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()]
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", f"{index:03d}-" + "_".join(parts) if parts else f"{index:03d}")[:120]


def visible_gpus() -> list[str]:
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def make_slots(devices: str | None, gpus_per_run: int) -> list[dict[str, str]]:
    """Environment overrides per slot: CUDA_VISIBLE_DEVICES groups, or JAX_PLATFORMS=cpu."""
    if devices and devices.startswith("cpu"):
        n = int(devices.partition(":")[2] or 1)
        return [{"JAX_PLATFORMS": "cpu"} for _ in range(n)]
    ids = [d.strip() for d in devices.split(",") if d.strip()] if devices else visible_gpus()
    if not ids:
        print("sweep: no GPU found; running one CPU run at a time (--devices=cpu:N for more)", file=sys.stderr)
        return [{"JAX_PLATFORMS": "cpu"}]
    if len(ids) % gpus_per_run:
        raise ValueError(f"--gpus_per_run={gpus_per_run} does not divide the {len(ids)} devices {ids}")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[i:i + gpus_per_run])} for i in range(0, len(ids), gpus_per_run)]


def prepare_workdir(root: Path, name: str, shared: bool) -> Path:
    workdir = root / "runs" / name
    workdir.mkdir(parents=True, exist_ok=True)
    if shared:
        for sub in ("models", "cache"):
            (root / sub).mkdir(exist_ok=True)
            link = workdir / sub
            if not link.exists() and not link.is_symlink():
                link.symlink_to(Path("..") / ".." / sub)
    return workdir


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file[:preset], as for w2s_jax.main")
    parser.add_argument("--root", required=True, help="sweep directory: runs/<name>/, models/, cache/, sweep.json")
    parser.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable; product)")
    parser.add_argument("--devices", default=None,
                        help="GPU ids (default: all visible) or cpu:N for N concurrent CPU runs")
    parser.add_argument("--gpus_per_run", type=int, default=1)
    parser.add_argument("--separate_models", action="store_true", help="no shared models/ and cache/")
    parser.add_argument("--rerun", action="store_true", help="also run points whose results.json exists")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    try:
        points = grid_points([parse_axis(a) for a in args.grid])
        slots = make_slots(args.devices, args.gpus_per_run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = Path(args.root)
    runs = []
    for i, point in enumerate(points):
        name = run_name(i, point)
        workdir = root / "runs" / name
        cmd = [args.python, "-m", "w2s_jax.main", f"--config={args.config}", f"--workdir={workdir}",
               *(f"--config.{k}={v}" for k, v in point.items()), *extra]
        runs.append({"name": name, "overrides": point, "workdir": str(workdir), "command": cmd})
    if args.dry_run:
        for run, slot in zip(runs, itertools.cycle(slots)):
            env = " ".join(f"{k}={v}" for k, v in slot.items())
            print(f"{env} {shlex.join(run['command'])}")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    pending = list(runs)
    free = list(range(len(slots)))
    active: dict[int, tuple[subprocess.Popen, dict, float, object]] = {}
    try:
        _schedule(pending, free, active, slots, root, args)
    except KeyboardInterrupt:
        for proc, run, _, _ in active.values():
            proc.terminate()
            run.update(returncode=-15, skipped=False)
        print("sweep: interrupted; running runs stopped (rerun the same command to resume them)", file=sys.stderr)
    summary = {"config": args.config, "grid": [parse_axis(a) for a in args.grid], "extra_flags": extra,
               "shared_models": not args.separate_models, "runs": runs}
    (root / "sweep.json").write_text(json.dumps(summary, indent=1))
    failed = [r["name"] for r in runs if r.get("returncode")]
    print(f"sweep: {len(runs) - len(failed)} of {len(runs)} runs succeeded; summary {root / 'sweep.json'}")
    return 1 if failed else 0


def _schedule(pending: list, free: list, active: dict, slots: list, root: Path, args) -> None:
    while pending or active:
        while pending and free:
            run = pending.pop(0)
            workdir = prepare_workdir(root, run["name"], shared=not args.separate_models)
            if (workdir / "results.json").exists() and not args.rerun:
                run.update(returncode=0, seconds=0.0, skipped=True)
                continue
            slot = free.pop(0)
            log = open(workdir / "run.log", "w")
            env = {**os.environ, **slots[slot]}
            proc = subprocess.Popen(run["command"], stdout=log, stderr=subprocess.STDOUT, env=env)
            active[slot] = (proc, run, time.time(), log)
            print(f"sweep: started {run['name']} on {slots[slot]}", flush=True)
        time.sleep(1.0)
        for slot, (proc, run, started, log) in list(active.items()):
            if proc.poll() is None:
                continue
            log.close()
            run.update(returncode=proc.returncode, seconds=round(time.time() - started, 1), skipped=False)
            status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode}), see {run['workdir']}/run.log"
            print(f"sweep: {run['name']} {status} in {run['seconds']} s", flush=True)
            del active[slot]
            free.append(slot)


if __name__ == "__main__":
    sys.exit(main())
