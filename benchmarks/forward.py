"""Forward throughput of a GPT-2-small-shaped model: our Flax module (jit) against `transformers` PyTorch.

Both frameworks run the same random weights: a `GPT2LMHeadModel(GPT2Config())` is built in torch, saved to a
temporary folder and loaded with `w2s_jax.models.convert.from_pretrained`. For each shape we time the LM-logits
forward and the hidden-state forward (what a reward model needs), after warm-up, on the same machine, and write
the figures to `benchmarks/results/forward-<hostname>-<date>.json`.

    python -m benchmarks.forward                      # 8x128 and 4x256, scanned and unrolled layers
    python -m benchmarks.forward --quick              # fewer repeats
    python -m benchmarks.forward --shapes 1x1024 --scan-layers false --precision highest
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the comparison is against torch on CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flax  # noqa: E402
import jax  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/forward.py` from the root
from w2s_jax.models.convert import from_pretrained  # noqa: E402
from w2s_jax.models.heads import Transformer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="8x128,4x256", help="comma-separated BATCHxSEQ (default: 8x128,4x256)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median and min are reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation")
    p.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    p.add_argument("--scan-layers", choices=("true", "false", "both"), default="both")
    p.add_argument("--precision", choices=("default", "high", "highest"), default="default",
                   help="jax_default_matmul_precision")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    args.shapes = [tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")]
    return args


def interleaved_times(fns: dict, repeats: int, warmup: int) -> dict:
    """(median, min) seconds per call of each function, timed round-robin so background load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def cpu_info() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform()}


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: 1-minute load average {load_before[0]:.2f} before the run; figures may be noisy", flush=True)
    jax.config.update("jax_default_matmul_precision", args.precision)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch_model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        ours = from_pretrained(tmp, load_tokenizer=False)
    scans = {"true": [True], "false": [False], "both": [True, False]}[args.scan_layers]
    variants = {}
    for scan in scans:
        model = Transformer(ours.config.replace(scan_layers=scan))
        variants[f"scan_layers={scan}"] = {
            "logits": jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, m)),
            "hidden": jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, m, method=model.hidden)),
        }
    torch_fns = {"logits": lambda i, m: torch_model(input_ids=i, attention_mask=m).logits,
                 "hidden": lambda i, m: torch_model.transformer(input_ids=i, attention_mask=m).last_hidden_state}

    rows, deltas = [], []
    rng = np.random.RandomState(0)
    for batch, seq in args.shapes:
        ids = rng.randint(0, ours.config.vocab_size, size=(batch, seq)).astype(np.int32)
        mask = np.ones_like(ids)
        ids_j, mask_j = jax.device_put(ids), jax.device_put(mask)
        ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
        tokens = batch * seq
        for head in ("logits", "hidden"):
            calls, first_call_s = {}, {}
            for name, fns in variants.items():
                calls[name] = lambda fn=fns[head]: fn(ours.params, ids_j, mask_j).block_until_ready()
                start = time.perf_counter()
                calls[name]()  # compilation
                first_call_s[name] = time.perf_counter() - start
            calls["torch"] = lambda: torch_fns[head](ids_t, mask_t)
            with torch.no_grad():
                t = interleaved_times(calls, args.repeats, args.warmup)
            (t_torch, best_torch) = t["torch"]
            for name in variants:
                (t_ours, best_ours) = t[name]
                rows.append({"batch": batch, "seq": seq, "head": head, "variant": name,
                             "ours_tok_s": tokens / t_ours, "torch_tok_s": tokens / t_torch, "ratio": t_torch / t_ours,
                             "ours_best_tok_s": tokens / best_ours, "torch_best_tok_s": tokens / best_torch,
                             "best_ratio": best_torch / best_ours, "ours_first_call_s": first_call_s[name]})
                r = rows[-1]
                print(f"{batch:>3}x{seq:<5} {head:<7} {name:<18} ours {r['ours_tok_s']:7.0f} tok/s   "
                      f"torch {r['torch_tok_s']:7.0f} tok/s   ratio {r['ratio']:.2f} (best-of {r['best_ratio']:.2f})",
                      flush=True)
        if not deltas:  # sanity check at the first shape: same weights, same logits
            with torch.no_grad():
                ref = torch_fns["logits"](ids_t, mask_t).numpy()
            for name, fns in variants.items():
                d = float(np.abs(np.asarray(fns["logits"](ours.params, ids_j, mask_j)) - ref).max())
                deltas.append({"batch": batch, "seq": seq, "variant": name, "max_abs_delta_logits": d,
                               "max_abs_logits": float(np.abs(ref).max())})
                print(f"max |delta logits| at {batch}x{seq} ({name}): {d:.3g} "
                      f"(max |logits| {deltas[-1]['max_abs_logits']:.3g})", flush=True)

    print(f"\n{'shape':<9} {'forward':<7} {'variant':<18} {'ours tok/s':>11} {'torch tok/s':>12} {'ratio':>6}"
          f" {'best ours':>10} {'best torch':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['batch']}x{r['seq']:<7} {r['head']:<7} {r['variant']:<18} {r['ours_tok_s']:>11.0f} "
              f"{r['torch_tok_s']:>12.0f} {r['ratio']:>6.2f} {r['ours_best_tok_s']:>10.0f} "
              f"{r['torch_best_tok_s']:>11.0f} {r['best_ratio']:>6.2f}")
    print("tok/s from the median call (best: the fastest call); ratio = ours / torch (>1: ours faster)")

    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {
        "benchmark": "forward", "model": "GPT-2 small shape (GPT2Config() defaults), random fp32 weights",
        "date": now.isoformat(timespec="seconds"), "hostname": socket.gethostname(), "argv": sys.argv[1:],
        "repeats": args.repeats, "warmup": args.warmup,
        "statistic": "median and min seconds per call, calls interleaved",
        "jax_default_matmul_precision": args.precision, "torch_threads": torch.get_num_threads(),
        "torch_attn_implementation": torch_model.config._attn_implementation,
        "jax_backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "flax": flax.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "cpu": cpu_info(), "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
        "results": rows, "sanity": deltas,
    }
    path = args.out / f"forward-{socket.gethostname()}-{now:%Y%m%d-%H%M%S}.json"
    write_json_atomic(path, payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
