"""Model FLOPs utilisation of the reward-model and DPO train steps at 1.5B shapes, on one accelerator: the
Trainer's real step on random weights per (model, objective, layout, remat, rows) setting (README "Benchmarks")."""
import gc
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from w2s_jax.data.packing import Packing
from w2s_jax.models.build import random_config
from w2s_jax.models.convert import init_params
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import make_mesh
from w2s_jax.train.trainer import Trainer, TrainSpec

# GPT-2-XL (1.56B, vocab 50257 padded to 50304); a Llama-family 1.64B (GQA 16/8, MLP 8192, untied)
SHAPES = {"gpt2-xl": ({"family": "gpt2", "hidden_size": 1600, "num_layers": 48, "num_heads": 25}, 50304),
          "llama-1.5b": ({"family": "llama", "hidden_size": 2048, "num_layers": 24, "num_heads": 16,
                          "num_kv_heads": 8, "intermediate_size": 8192}, 32000)}
# dense bf16 peak of the chip, FLOP/s (vendor datasheets, without sparsity)
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "GH200": 989.4e12, "A100": 312e12,
             "L40S": 362e12, "B200": 2250e12}
COLUMNS = ("model<11 objective<4 layout_attn<13 remat<13 rows>4 real_tokens>7 step_ms>8.1f tflops_per_s>7.1f "
           "mfu_pct>6.1f pairs_per_s>8.1f step_gib>6.1f compile_s>6.1f")


def model_flops(cfg, lengths, lm_head: bool) -> float:
    """Training FLOPs (3 x forward) of sequences of these real lengths: the decoder's matmuls and attention, the
    LM head with `lm_head` (the embeddings apart)."""
    d, h, kv, hd, m = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    weights = cfg.num_layers * (d * h * hd + 2 * d * kv * hd + h * hd * d + (3 if cfg.family == "llama" else 2) * d * m)
    lengths = np.asarray(lengths, np.float64)
    per_token = 2 * weights + (2 * cfg.output_dim * cfg.vocab_size if lm_head else 0)
    attention = cfg.num_layers * 2 * 2 * cfg.num_heads * cfg.head_dim * (lengths * (lengths + 1) / 2).sum()
    return 3 * (per_token * lengths.sum() + attention)


def host_batch(unit, layout: str, rows: int, args, vocab: int, rng) -> tuple[dict, np.ndarray]:
    """One step's host microbatches in `layout` and every sequence's length: padded, every sequence --seq tokens;
    packed, HH-like log-normal lengths (~100 tokens) packed into `rows` rows, ~90 % full."""
    lengths = np.full(2 * (rows // 2), args.seq)
    if layout == "packed":
        lengths = np.zeros(0, np.int64)
        while lengths.sum() <= 0.9 * rows * args.seq:
            more = rng.lognormal(np.log(100), 0.6, 2 * max(1, rows))
            lengths = np.concatenate([lengths, np.clip(more, 20, args.max_seq_len).astype(np.int64)])
        lengths = lengths[: 2 * (len(lengths) // 2)]
    packing = Packing(args.seq, (args.seq,), row_multiple=1) if layout == "packed" else None
    while True:  # packed: drop pairs until they fit in `rows` rows
        micro = unit.prepare(common.synthetic_batch(rng, lengths, vocab), 1, layout, packing)
        if layout == "padded" or micro["ids"].shape[1] <= rows:
            return micro, lengths
        lengths = lengths[:-2]


def measure(args, row: dict, peak: float) -> dict:
    """`row` (model, objective, layout, remat, rows, attention) with the step's figures: MFU = model FLOPs of the
    real tokens / the median of --steps steps after 2 warm-ups / the peak."""
    cfg = random_config(*SHAPES[row["model"]], max(args.seq, 1024), param_dtype="float32", dtype="bfloat16",
                        remat_policy=row["remat"], scan_layers=True, attention_impl=row["attention"])
    mesh = make_mesh(1, -1, 1, devices=jax.devices()[:1])
    unit, lr, schedule = common.objective(row["objective"], 256)
    params, packed = init_params(cfg, mesh, seed=0), row["layout"] == "packed"
    row |= {"seq": args.seq, "params": int(sum(x.size for x in jax.tree.leaves(params)))}
    trainer = Trainer(mesh, (args.seq,), layout=row["layout"], pack_len=args.seq if packed else None)
    step, compiled = trainer.stepper(unit, Transformer(cfg), params, TrainSpec(lr, 1, 1, schedule, 0))
    del params
    host, lengths = host_batch(unit, row["layout"], row["rows"], args, cfg.vocab_size, np.random.default_rng(0))
    micro, last = trainer.place(host), {}
    row |= {"pairs": len(lengths) // 2, "real_tokens": int(lengths.sum()),
            "row_tokens": int(sum(np.prod(host[k].shape) for k in ("ids", "ids_a", "ids_b") if k in host)),
            "compile_s": round(common.timed(step, micro, False)[0], 1)}
    xla = common.xla_figures(*compiled.values())  # its FLOPs count a scanned layer stack's body once
    times = common.call_times(lambda: last.update(step(micro)), args.steps, warmup=2)
    flops, seconds = model_flops(cfg, lengths, lm_head=row["objective"] == "dpo"), statistics.median(times)
    return row | {"xla_flops": xla["flops"], "loss": float(last["loss"]), "step_s": seconds,
                  "step_s_all": [round(t, 5) for t in times], "model_flops": flops,
                  "tflops_per_s": flops / seconds / 1e12, "mfu": flops / seconds / peak,
                  "pairs_per_s": row["pairs"] / seconds, "tokens_per_s": row["real_tokens"] / seconds,
                  "step_gib": xla["peak"] / 2**30}  # the step's own footprint: arguments + outputs - donated + temps


def matmul_rate(m: int = 8192, k: int = 8192, n: int = 8192) -> float:
    """FLOP/s of one bf16 [m, k] @ [k, n] product on random data, median of 10 after a warm-up."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a, b = jax.random.normal(k1, (m, k), jnp.bfloat16), jax.random.normal(k2, (k, n), jnp.bfloat16)
    f = jax.jit(jnp.matmul)
    return 2 * m * k * n / statistics.median(common.call_times(lambda: f(a, b).block_until_ready(), 10))


def layer_gemms(args, tokens: int) -> list[dict]:
    """The forward matmuls of one decoder layer of each model at `tokens` tokens, alone, in bf16 (llama: gate and
    up side by side; the backward pass runs the same shapes transposed)."""
    rows = []
    for name in args.models.split(","):
        c = random_config(*SHAPES[name], 1024)
        d, q, kv, m = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
        shapes = {"q": (d, q), "kv": (d, 2 * kv), "o": (q, d), "mlp_in": (d, 2 * m if c.family == "llama" else m),
                  "mlp_out": (m, d), "lm_head": (d, c.vocab_size)}
        rows += [{"model": name, "matmul": part, "m": tokens, "k": k, "n": n,
                  "tflops_per_s": matmul_rate(tokens, k, n) / 1e12} for part, (k, n) in shapes.items()]
    return rows


def main(argv=None) -> dict:
    args = common.parser(__doc__, models="gpt2-xl,llama-1.5b", objectives="rm,dpo", seq=1024, max_seq_len=512,
                         settings="padded:dots_no_batch:16,padded:full:32,packed:full:32", steps=5,
                         gemms=0).parse_args(argv)
    dev = jax.devices()[0]
    peak = next((PEAK_BF16[k] for k in sorted(PEAK_BF16, key=len, reverse=True) if k in dev.device_kind), float("nan"))
    report = common.header("mfu", argv, ("jax", "jaxlib", "flax", "optax")) | {
        "device": dev.device_kind, "backend": jax.default_backend(), "n_devices": jax.device_count(),
        "peak_flops": peak, "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": [],
        "matmul_bf16_flops": matmul_rate()}
    print(f"device {dev.device_kind}: peak {peak / 1e12:.1f} TFLOP/s, measured 8192^3 bf16 matmul "
          f"{report['matmul_bf16_flops'] / 1e12:.1f} TFLOP/s; jax {jax.__version__}", flush=True)
    if args.gemms:
        report["layer_gemms"] = layer_gemms(args, args.gemms)
        common.table(report["layer_gemms"], "model<11 matmul<8 m>6 k>6 n>6 tflops_per_s>8.0f")
    path = common.result_path(args.out, "mfu")
    common.table([], COLUMNS)
    for setting in args.settings.split(","):  # each model and objective gets a first setting early
        layout, remat, rows, *attention = setting.split(":")
        for name in args.models.split(","):
            for objective in args.objectives.split(","):
                row = {"model": name, "objective": objective, "layout": layout, "remat": remat, "rows": int(rows),
                       "attention": (attention or ["auto"])[0]}
                try:
                    row = measure(args, dict(row), peak)
                    common.table([row | {"layout_attn": f"{layout}/{row['attention']}", "step_ms": 1e3 * row["step_s"],
                                         "mfu_pct": 100 * row["mfu"]}], COLUMNS, header=False)
                except Exception as e:  # noqa: BLE001  an out-of-memory setting is a result, not the end of the run
                    row["error"] = common.error(e, 160)
                    print(f"  {row['error']}", flush=True)
                gc.collect()
                jax.clear_caches()
                report["rows"].append(row)
                common.write_result(path, report)
    report["best_mfu"] = {}
    for r in (r for r in report["rows"] if "mfu" in r):
        key = f"{r['model']}/{r['objective']}"
        report["best_mfu"][key] = max(report["best_mfu"].get(key, 0.0), r["mfu"])
    common.write_result(path, report)
    print("best MFU: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in report["best_mfu"].items()))
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
