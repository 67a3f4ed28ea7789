"""Model FLOPs utilisation of the reward-model and DPO train steps at 1.5B shapes, on one accelerator.

The Trainer's real step (`Trainer.step_fn`: forward + backward + Adam, fp32 master weights, bf16 compute) of
`RewardModel("bce")` and of `DPO` (reference log-probs cached, as the experiment does) on random weights of a shape:

  gpt2-xl      GPT-2-XL: 48 layers, d 1600, 25 heads, vocab 50257 (padded to 50304), 1024 positions (1.56B)
  llama-1.5b   Llama family: 24 layers, d 2048, 16 heads / 8 KV heads, MLP 8192, vocab 32000, untied (1.64B)

Each row is one (model, objective, layout, remat policy, rows per step) setting at --seq tokens per row:
  padded  every sequence is --seq real tokens (causal attention by length: cuDNN flash attention on GPU)
  packed  sequences of HH-like random lengths (20..--max-seq-len, mean ~120) packed into rows of --seq tokens,
          the layout the pipeline trains with (segment-masked attention)

MFU = model FLOPs of the step / step time / the chip's dense bf16 peak. Model FLOPs count real tokens only:
3 x (2 x matmul weights + causal attention 2 x 2 x heads x head_dim x (n + 1) / 2 per token of an n-token
sequence + the LM head for DPO); remat recomputation is not counted. (XLA's own count of the compiled program is
kept as `xla_flops`, but it counts a scanned layer stack's body once, so it is no measure of the work.) The median of --steps timed steps after 2 warm-ups.
Writes <out>/mfu-<host>-<date>.json and prints a table.

    python -m benchmarks.mfu                                   # every model x objective x the default settings
    python -m benchmarks.mfu --models gpt2-xl --objectives rm --settings padded:none:8,packed:full:32
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import socket
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.common import result_path, write_report

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {
    "gpt2-xl": (dict(family="gpt2", hidden_size=1600, num_layers=48, num_heads=25), 50304),
    "llama-1.5b": (dict(family="llama", hidden_size=2048, num_layers=24, num_heads=16, num_kv_heads=8,
                        intermediate_size=8192), 32000),
}
# dense bf16 peak of the chip, FLOP/s (vendor datasheets, without sparsity)
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "GH200": 989.4e12, "A100": 312e12,
             "L40S": 362e12, "B200": 2250e12}
DEFAULT_SETTINGS = "padded:dots_no_batch:16,padded:full:32,packed:full:32"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gpt2-xl,llama-1.5b")
    p.add_argument("--objectives", default="rm,dpo")
    p.add_argument("--settings", default=DEFAULT_SETTINGS,
                   help="layout:remat:rows[:attention], comma-separated (rows of --seq tokens; a pair is 2 rows "
                        "when padded; attention auto, xla or cudnn)")
    p.add_argument("--seq", type=int, default=1024, help="tokens per row")
    p.add_argument("--max-seq-len", type=int, default=512, help="packed: longest random sequence")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--logp-chunk", type=int, default=256, help="DPO: time steps per log-softmax chunk")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s (default: from the device kind)")
    p.add_argument("--gemms", type=int, default=0, help="also time each layer matmul alone at this many tokens")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ FLOPs


def matmul_weights(cfg) -> int:
    """Weights every token multiplies through in the decoder stack (embeddings and LM head excluded)."""
    d, h, kv, hd, m = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    mlp = (3 if cfg.family == "llama" else 2) * d * m
    return cfg.num_layers * (attn + mlp)


def model_flops(cfg, lengths, lm_head: bool) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of sequences of the given real lengths."""
    lengths = np.asarray(lengths, np.float64)
    tokens = lengths.sum()
    per_token = 2 * matmul_weights(cfg) + (2 * cfg.output_dim * cfg.vocab_size if lm_head else 0)
    attention = cfg.num_layers * 2 * 2 * cfg.num_heads * cfg.head_dim * (lengths * (lengths + 1) / 2).sum()
    return 3 * (per_token * tokens + attention)


# ------------------------------------------------------------------------------------------------ batches


def random_lengths(rng, n: int, longest: int) -> np.ndarray:
    """HH-like lengths: log-normal around ~100 tokens, clipped to [20, longest]."""
    return np.clip(rng.lognormal(np.log(100), 0.6, n), 20, longest).astype(np.int64)


def padded_side(rng, n: int, seq: int, vocab: int, dpo: bool) -> dict:
    side = {"ids": rng.integers(0, vocab, (n, seq), dtype=np.int32), "mask": np.ones((n, seq), np.int32)}
    if dpo:
        side["loss_mask"] = (np.arange(seq)[None, :] >= seq // 2).astype(np.int32).repeat(n, 0)
    return side


def make_batch(objective: str, layout: str, rows: int, args, vocab: int, rng):
    """Host microbatches (one microbatch per step) and the real lengths of every sequence in them."""
    from w2s_jax.data.packing import packed_microbatches

    dpo = objective == "dpo"
    extra = ("valid", "acc", "ref_c", "ref_r") if dpo else ("label", "gt", "valid")
    if layout == "padded":
        pairs = rows // 2
        a, b = (padded_side(rng, pairs, args.seq, vocab, dpo) for _ in range(2))
        lengths = np.full(2 * pairs, args.seq)
    else:
        # enough pairs to fill `rows` rows: first-fit packs HH-like lengths to ~97 %
        pairs, lengths = 0, np.zeros(0, np.int64)
        while True:
            more = random_lengths(rng, 2 * max(1, rows), args.max_seq_len)
            lengths = np.concatenate([lengths, more])
            if lengths.sum() > 0.9 * rows * args.seq:
                break
        lengths = lengths[: 2 * (len(lengths) // 2)]
        while True:  # drop pairs until they pack into `rows` rows
            pairs = len(lengths) // 2
            batch = _padded_from_lengths(rng, lengths, vocab, dpo)
            batch.update(_extras(pairs, extra))
            packed = packed_microbatches(batch, 1, sides=("_a", "_b"), min_row_len=args.seq, buckets=(args.seq,),
                                         row_multiple=1, extra_keys=extra, token_level=dpo)
            if packed["ids"].shape[1] <= rows:
                break
            lengths = lengths[:-2]
        return packed, lengths
    batch = {}
    for name, side in (("_a", a), ("_b", b)):
        batch.update({f"{k}{name}": v[None] for k, v in side.items()})
    batch.update({k: v[None] for k, v in _extras(pairs, extra).items()})
    return batch, lengths


def _padded_from_lengths(rng, lengths, vocab: int, dpo: bool) -> dict:
    pairs, longest = len(lengths) // 2, int(lengths.max())
    out = {}
    for name, part in (("_a", lengths[:pairs]), ("_b", lengths[pairs:])):
        mask = (np.arange(longest)[None, :] < part[:, None]).astype(np.int32)
        out[f"ids{name}"] = rng.integers(0, vocab, (pairs, longest), dtype=np.int32) * mask
        out[f"mask{name}"] = mask
        if dpo:
            out[f"loss_mask{name}"] = mask * (np.arange(longest)[None, :] >= part[:, None] // 2)
    return out


def _extras(pairs: int, keys) -> dict:
    values = {"valid": np.ones(pairs, bool), "acc": np.ones(pairs, bool), "label": np.full(pairs, 0.7, np.float32),
              "gt": np.ones(pairs, np.float32), "ref_c": np.full(pairs, -50.0, np.float32),
              "ref_r": np.full(pairs, -60.0, np.float32)}
    return {k: values[k] for k in keys}


# ------------------------------------------------------------------------------------------------ one row


def measure(args, name: str, objective: str, layout: str, remat: str, rows: int, peak: float,
            attention: str = "auto") -> dict:
    import jax

    from w2s_jax.models.build import random_config
    from w2s_jax.models.convert import init_params
    from w2s_jax.models.heads import Transformer
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.objectives import DPO, RewardModel
    from w2s_jax.train import step as step_lib
    from w2s_jax.train.optim import make_optimizer
    from w2s_jax.train.trainer import Trainer

    arch, vocab = SHAPES[name]
    cfg = random_config(arch, vocab, max(args.seq, 1024), param_dtype="float32", dtype=args.dtype,
                        remat_policy=remat, scan_layers=True, attention_impl=attention)
    row = {"model": name, "objective": objective, "layout": layout, "remat": remat, "rows": rows, "seq": args.seq,
           "attention": attention}
    mesh = make_mesh(1, -1, 1, devices=jax.devices()[:1])
    model = Transformer(cfg)
    if objective == "rm":
        unit, lr, schedule = RewardModel("bce"), 1e-5, "cosine_to_zero"
    else:
        unit, lr, schedule = DPO(beta=0.1, chunk_size=args.logp_chunk), 1e-6, "warmup_constant"
    optimizer = make_optimizer(lr, 1000, schedule)
    params = init_params(cfg, mesh, seed=0)
    row["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    state = step_lib.init_state(params, optimizer)
    del params
    packed = layout != "padded"
    trainer = Trainer(mesh, (args.seq,), layout="packed" if packed else "padded",
                      pack_len=args.seq if packed else None)
    step_fn = trainer.step_fn(unit, model, optimizer, step_lib.state_shardings(state), 1000)
    rng = np.random.default_rng(0)
    host, lengths = make_batch(objective, layout, rows, args, cfg.vocab_size, rng)
    micro = trainer.place(host)
    row["pairs"] = int(len(lengths) // 2)
    row["real_tokens"] = int(lengths.sum())
    row["row_tokens"] = int(np.prod(host["ids"].shape) if "ids" in host else
                            np.prod(host["ids_a"].shape) + np.prod(host["ids_b"].shape))
    started = time.perf_counter()
    compiled = step_fn.lower(state, micro).compile()
    row["compile_s"] = round(time.perf_counter() - started, 1)
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        row["xla_flops"] = float(cost.get("flops", float("nan")))
    except Exception as e:  # cost analysis is best-effort on some backends
        row["xla_flops"] = None
        row["cost_analysis_error"] = str(e)[:200]
    times = []
    for k in range(2 + args.steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, micro)
        jax.block_until_ready((state, metrics))
        if k >= 2:
            times.append(time.perf_counter() - t0)
    row["loss"] = float(metrics["loss"])
    row["step_s"] = statistics.median(times)
    row["step_s_all"] = [round(t, 5) for t in times]
    flops = model_flops(cfg, lengths, lm_head=objective == "dpo")
    row["model_flops"] = flops
    row["tflops_per_s"] = flops / row["step_s"] / 1e12
    row["mfu"] = flops / row["step_s"] / peak
    row["pairs_per_s"] = row["pairs"] / row["step_s"]
    row["tokens_per_s"] = row["real_tokens"] / row["step_s"]
    try:  # the step's own footprint: arguments + outputs - donated + temporaries
        mem = compiled.memory_analysis()
        row["step_gib"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                           + mem.temp_size_in_bytes) / 2 ** 30
    except Exception:
        row["step_gib"] = float("nan")
    del state, micro, compiled, step_fn
    return row


def attention_check() -> dict:
    """Relative error of cuDNN attention against XLA's on a small bf16 Llama (padded rows, and packed rows where
    cuDNN reads the segment mask as a bias): max |a - b| / max |b| of the final hidden states, per family."""
    import jax.numpy as jnp

    from w2s_jax.models.build import random_config
    from w2s_jax.models.convert import init_params
    from w2s_jax.models.heads import Transformer

    out = {}
    rng = np.random.default_rng(1)
    for family in ("llama", "gpt2"):
        arch = dict(family=family, hidden_size=256, num_layers=2, num_heads=4)
        cfgs = {impl: random_config(arch, 512, 256, dtype="bfloat16", attention_impl=impl) for impl in ("xla", "cudnn")}
        params = init_params(cfgs["xla"], None, seed=0)
        ids = jnp.asarray(rng.integers(0, 512, (4, 256)), jnp.int32)
        lengths = np.array([256, 200, 77, 3])
        mask = jnp.asarray(np.arange(256)[None, :] < lengths[:, None], jnp.int32)
        segments = jnp.asarray(np.repeat(np.arange(1, 9), 32)[None, :].repeat(4, 0) * (np.arange(256) < 250), jnp.int32)
        for layout, method, second in (("padded", "hidden", mask), ("packed", "packed_hidden", segments)):
            h = {impl: Transformer(cfg).apply({"params": params}, ids, second, method=method).astype(jnp.float32)
                 for impl, cfg in cfgs.items()}
            keep = (second > 0)[..., None]
            diff = float(jnp.max(jnp.abs(jnp.where(keep, h["cudnn"] - h["xla"], 0.0))))
            out[f"{family}/{layout}"] = diff / float(jnp.max(jnp.abs(jnp.where(keep, h["xla"], 0.0))))
    return out


def layer_gemms(args, tokens: int) -> list[dict]:
    """The forward matmuls of one decoder layer of each model at `tokens` tokens, alone, in bf16: what the chip
    gives each shape (the backward pass runs the same shapes transposed)."""
    from w2s_jax.models.build import random_config

    rows = []
    for name in args.models.split(","):
        arch, vocab = SHAPES[name]
        cfg = random_config(arch, vocab, 1024)
        d, q, kv, m = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, \
            cfg.intermediate_size
        mlp_in = 2 * m if cfg.family == "llama" else m  # gate and up projections side by side
        shapes = {"q": (d, q), "kv": (d, 2 * kv), "o": (q, d), "mlp_in": (d, mlp_in), "mlp_out": (m, d),
                  "lm_head": (d, vocab)}
        for part, (k, n) in shapes.items():
            rows.append({"model": name, "matmul": part, "m": tokens, "k": k, "n": n,
                         "tflops_per_s": matmul_rate(tokens, k, n) / 1e12})
    return rows


def matmul_rate(m: int = 8192, k: int = 8192, n: int = 8192) -> float:
    """FLOP/s of one bf16 [m, k] @ [k, n] product on random data, median of 10 after a warm-up (8192^3: the
    device's practical ceiling)."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (m, k), jnp.bfloat16)
    b = jax.random.normal(k2, (k, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times)


def device_peak(kind: str) -> float:
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key in kind:
            return PEAK_BF16[key]
    return float("nan")


def fmt(r: dict) -> str:
    layout = f"{r['layout']}/{r['attention']}"
    if "error" in r:
        return f"{r['model']:<11} {r['objective']:<4} {layout:<13} {r['remat']:<13} {r['rows']:>4}  {r['error']}"
    return (f"{r['model']:<11} {r['objective']:<4} {layout:<13} {r['remat']:<13} {r['rows']:>4} "
            f"{r['real_tokens']:>7} {r['step_s'] * 1e3:>8.1f} {r['tflops_per_s']:>7.1f} {100 * r['mfu']:>6.1f}% "
            f"{r['pairs_per_s']:>8.1f} {r['step_gib']:>6.1f} "
            f"{r['compile_s']:>6.1f}")


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import jax

    dev = jax.devices()[0]
    peak = args.peak or device_peak(dev.device_kind)
    report = {"benchmark": "mfu", "date": datetime.now().isoformat(timespec="seconds"),
              "hostname": socket.gethostname(), "argv": sys.argv[1:] if argv is None else list(argv),
              "device": dev.device_kind, "backend": jax.default_backend(), "n_devices": jax.device_count(),
              "jax": jax.__version__, "python": platform.python_version(), "peak_flops": peak,
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": []}
    for mod in ("jaxlib", "flax", "optax"):
        try:
            report[mod] = __import__(mod).__version__
        except Exception:
            pass
    report["matmul_bf16_flops"] = matmul_rate()
    if jax.default_backend() == "gpu":
        try:
            report["attention_check"] = attention_check()
        except Exception as e:  # a result too: cuDNN could not run these shapes
            report["attention_check"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        print(f"cuDNN vs XLA attention, max relative difference of the hidden states: {report['attention_check']}",
              flush=True)
    print(f"device {dev.device_kind}: peak {peak / 1e12:.1f} TFLOP/s, measured 8192^3 bf16 matmul "
          f"{report['matmul_bf16_flops'] / 1e12:.1f} TFLOP/s; jax {jax.__version__}", flush=True)
    if args.gemms:
        report["layer_gemms"] = layer_gemms(args, args.gemms)
        for g in report["layer_gemms"]:
            print(f"{g['model']:<11} {g['matmul']:<8} [{g['m']} x {g['k']}] @ [{g['k']} x {g['n']}]: "
                  f"{g['tflops_per_s']:.0f} TFLOP/s", flush=True)
    path = result_path(args.out, "mfu")
    header = (f"{'model':<11} {'obj':<4} {'layout/attn':<13} {'remat':<13} {'rows':>4} {'tokens':>7} {'step ms':>8} "
              f"{'TFLOP/s':>7} {'MFU':>7} {'pairs/s':>8} {'GiB':>6} {'comp s':>6}")
    print(header, flush=True)
    plan = [(setting, name, objective) for setting in args.settings.split(",") for name in args.models.split(",")
            for objective in args.objectives.split(",")]  # each model and objective gets a first setting early
    for setting, name, objective in plan:
        layout, remat, rows, *attention = setting.split(":")
        try:
            row = measure(args, name, objective, layout, remat, int(rows), peak, *attention)
        except Exception as e:  # an out-of-memory setting is a result, not the end of the run
            row = {"model": name, "objective": objective, "layout": layout, "remat": remat, "rows": int(rows),
                   "attention": (attention or ["auto"])[0],
                   "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
        gc.collect()
        jax.clear_caches()
        report["rows"].append(row)
        print(fmt(row), flush=True)
        write_report(path, report)
    best = {}
    for r in report["rows"]:
        if "mfu" in r:
            key = f"{r['model']}/{r['objective']}"
            best[key] = max(best.get(key, 0.0), r["mfu"])
    report["best_mfu"] = best
    write_report(path, report)
    print("best MFU: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in best.items()))
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
