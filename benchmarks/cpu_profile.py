"""Where the time of the fixed-shape reward-model step goes on a CPU (GPT-2-small shape, 4 pairs x 256 tokens, fp32).

Each variant runs in its own process (XLA flags are read when the backend starts); the median of 3 steps after a
warm-up is reported:
  step       the Trainer's real step (forward, backward, Adam), as in `benchmarks.run`'s rm_fixed, under each
             XLA flag variant, and with the layer stack unrolled, and in bf16
  parts      forward and forward+backward of the loss alone: as built, with the MLP activation replaced by the
             identity, and with attention replaced by passing V through (what each region costs)
  attention  `jax.nn.dot_product_attention` (XLA) against the same math with heads moved first, 12 layers' worth
Writes benchmarks/results/cpu_profile-<host>-<date>.json.

    python -m benchmarks.cpu_profile                 # ~6 min on 2 idle cores
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
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
from w2s_jax.train.trainer import Trainer

FLAGS = ("", "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
         "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY")
PAIRS, T = 4, 256


def median_time(fn, *args) -> float:
    return statistics.median(common.call_times(lambda: jax.block_until_ready(fn(*args)), repeat=3))


def batch(leading=()):
    rng, shape, pairs = np.random.default_rng(0), (*leading, PAIRS, T), (*leading, PAIRS)
    return {"ids_a": rng.integers(0, 50257, shape).astype(np.int32), "mask_a": np.ones(shape, np.int32),
            "ids_b": rng.integers(0, 50257, shape).astype(np.int32), "mask_b": np.ones(shape, np.int32),
            "label": np.full(pairs, 0.7, np.float32), "gt": np.ones(pairs, np.float32), "valid": np.ones(pairs, bool)}


def model(scan: bool = True, dtype: str = "float32", mesh=None):
    cfg = random_config(dict(family="gpt2", hidden_size=768, num_layers=12, num_heads=12), 50304, 1024,
                        scan_layers=scan, dtype=dtype)
    return Transformer(cfg), init_params(cfg, mesh, 0)


def run_step(scan: bool, dtype: str) -> dict:
    mesh = make_mesh(1, -1, 1, devices=jax.devices()[:1])
    net, params = model(scan, dtype, mesh)
    trainer = Trainer(mesh, (T,))
    state, compile_for = common.compiled_steps(trainer, RewardModel("bce"), net, params, 1e-5, "cosine_to_zero")
    micro = trainer.place(batch((1,)))
    compiled, holder = compile_for(micro), [state]

    def step():
        holder[0], _ = compiled(holder[0], micro)
        jax.block_until_ready(holder[0])

    return {"step_s": statistics.median(common.call_times(step, repeat=3))}


def run_parts(variant: str) -> dict:
    if variant == "no_activation":
        layers.ACTIVATIONS["gelu_new"] = lambda x: x
    if variant == "no_attention":
        jax.nn.dot_product_attention = lambda q, k, v, **kw: v
    net, params = model()
    loss, b = RewardModel("bce").loss_fn(net, "padded"), jax.tree.map(jnp.asarray, batch())
    forward = jax.jit(lambda p: loss(p, b, 0.0).loss_sum)
    return {"forward_s": median_time(forward, params), "forward_backward_s": median_time(jax.jit(jax.grad(forward)),
                                                                                        params)}


def run_attention() -> dict:
    rows, heads, dim = 2 * PAIRS, 12, 64
    q, k, v, g = (jax.random.normal(key, (rows, T, heads, dim)) for key in jax.random.split(jax.random.PRNGKey(0), 4))
    lengths = jnp.full((rows,), T, jnp.int32)

    def library(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, scale=1 / math.sqrt(dim), is_causal=True,
                                            key_value_seq_lengths=lengths, implementation="xla")

    def heads_first(q, k, v):
        qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
        scores = jnp.einsum("bnth,bnsh->bnts", qt, kt) / math.sqrt(dim)
        keep = (jnp.arange(T)[:, None] >= jnp.arange(T)[None, :]) & \
            (jnp.arange(T)[None, None, None, :] < lengths[:, None, None, None])
        probs = jax.nn.softmax(jnp.where(keep, scores, -1e30), axis=-1)
        return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", probs, vt), 1, 2)

    out = {"max_abs_diff": float(jnp.max(jnp.abs(library(q, k, v) - heads_first(q, k, v))))}
    for name, f in (("library", library), ("heads_first", heads_first)):
        out[f"{name}_forward_s_12_layers"] = 12 * median_time(jax.jit(f), q, k, v)
        vjp = jax.jit(lambda q, k, v, f=f: jax.vjp(f, q, k, v)[1](g))
        out[f"{name}_forward_backward_s_12_layers"] = 12 * median_time(vjp, q, k, v)
    return out


def spawn(kind: str, arg: str = "", flags: str = "") -> dict:
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu_profile", "--worker", kind, "--arg", arg],
                          env=env, capture_output=True, text=True, cwd=common.ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "no output"}
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--worker", choices=("step", "parts", "attention"), help=argparse.SUPPRESS)
    p.add_argument("--arg", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        out = {"step": lambda: run_step(a.arg.startswith("scan"), a.arg.split(",")[-1]),
               "parts": lambda: run_parts(a.arg), "attention": run_attention}[a.worker]()
        print("RESULT " + json.dumps(out))
        return out
    report = common.header("cpu_profile", argv) | {"shape": f"GPT-2-small, {PAIRS} pairs x 2 x {T} tokens, fp32",
                                                   "rows": []}
    plan = [("step", "scan,float32", f) for f in FLAGS] + [("step", "unrolled,float32", ""),
                                                           ("step", "scan,bfloat16", "")]
    plan += [("parts", v, "") for v in ("as_built", "no_activation", "no_attention")] + [("attention", "", "")]
    for kind, arg, flags in plan:
        report["rows"].append({"kind": kind, "variant": arg, "xla_flags": flags, **spawn(kind, arg, flags)})
        print(json.dumps(report["rows"][-1]), flush=True)
    print(f"results: {common.write_result(common.result_path(a.out, 'cpu_profile'), report)}")
    return report


if __name__ == "__main__":
    main()
