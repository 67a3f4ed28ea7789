"""Where the time of the fixed-shape reward-model step goes on a CPU (GPT-2-small shape, 4 pairs x 256 tokens, fp32).

Each variant runs in its own process (XLA flags are read when the backend starts); the median of 3 steps after a
warm-up is reported:
  step       the real `make_train_step` (forward, backward, Adam), as in `benchmarks.run`'s rm_fixed, under
             each --flags variant, and with the layer stack unrolled, and in bf16
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
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import result_path, write_report

RESULTS = Path(__file__).resolve().parent / "results"
FLAGS = ("", "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
         "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY")
PAIRS, T = 4, 256


def median_time(fn, *args, repeat: int = 3) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch(leading=()):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (*leading, PAIRS, T)
    return {"ids_a": rng.integers(0, 50257, shape).astype(np.int32), "mask_a": np.ones(shape, np.int32),
            "ids_b": rng.integers(0, 50257, shape).astype(np.int32), "mask_b": np.ones(shape, np.int32),
            "label": np.full((*leading, PAIRS), 0.7, np.float32), "gt": np.ones((*leading, PAIRS), np.float32),
            "valid": np.ones((*leading, PAIRS), bool)}


def model(scan: bool = True, dtype: str = "float32", mesh=None):
    from w2s_jax.models.build import random_config
    from w2s_jax.models.convert import init_params
    from w2s_jax.models.heads import Transformer

    cfg = random_config(dict(family="gpt2", hidden_size=768, num_layers=12, num_heads=12), 50304, 1024,
                        scan_layers=scan, dtype=dtype)
    return Transformer(cfg), init_params(cfg, mesh, 0)


def run_step(scan: bool, dtype: str) -> dict:
    import jax

    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.objectives import RewardModel
    from w2s_jax.train import step as step_lib
    from w2s_jax.train.optim import make_optimizer
    from w2s_jax.train.trainer import Trainer

    mesh = make_mesh(1, -1, 1, devices=jax.devices()[:1])
    net, params = model(scan, dtype, mesh)
    optimizer = make_optimizer(1e-5, 1000, "cosine_to_zero")
    state = step_lib.init_state(params, optimizer)
    trainer = Trainer(mesh, (T,))
    fn = trainer.step_fn(RewardModel("bce"), net, optimizer, step_lib.state_shardings(state), 1000)
    micro = trainer.place(batch((1,)))
    compiled = fn.lower(state, micro).compile()
    times = []
    for k in range(4):
        t0 = time.perf_counter()
        state, _ = compiled(state, micro)
        jax.block_until_ready(state)
        if k:
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times)}


def run_parts(variant: str) -> dict:
    import jax
    import jax.numpy as jnp

    import w2s_jax.models.layers as layers

    if variant == "no_activation":
        layers.ACTIVATIONS["gelu_new"] = lambda x: x
    if variant == "no_attention":
        jax.nn.dot_product_attention = lambda q, k, v, **kw: v
    from w2s_jax.objectives import RewardModel

    net, params = model()
    loss = RewardModel("bce").loss_fn(net, "padded")
    b = jax.tree.map(jnp.asarray, batch())
    forward = jax.jit(lambda p: loss(p, b, 0.0).loss_sum)
    both = jax.jit(lambda p: jax.grad(lambda q: loss(q, b, 0.0).loss_sum)(p))
    return {"forward_s": median_time(forward, params), "forward_backward_s": median_time(both, params)}


def run_attention() -> dict:
    import jax
    import jax.numpy as jnp

    rows, heads, dim = 2 * PAIRS, 12, 64
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, g = (jax.random.normal(key, (rows, T, heads, dim)) for key in keys)
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


def worker(kind: str, arg: str) -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if kind == "step":
        scan, dtype = arg.split(",")
        out = run_step(scan == "scan", dtype)
    elif kind == "parts":
        out = run_parts(arg)
    else:
        out = run_attention()
    print("RESULT " + json.dumps(out))


def spawn(kind: str, arg: str = "", flags: str = "") -> dict:
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu_profile", "--worker", kind, "--arg", arg],
                          env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "no output"}
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=("step", "parts", "attention"), help=argparse.SUPPRESS)
    p.add_argument("--arg", default="", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker, a.arg)
        return {}
    report = {"benchmark": "cpu_profile", "date": datetime.now().isoformat(timespec="seconds"),
              "hostname": socket.gethostname(), "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
              "shape": f"GPT-2-small, {PAIRS} pairs x 2 x {T} tokens, fp32", "rows": []}
    plan = [("step", "scan,float32", f) for f in FLAGS]
    plan += [("step", "unrolled,float32", ""), ("step", "scan,bfloat16", "")]
    plan += [("parts", v, "") for v in ("as_built", "no_activation", "no_attention")] + [("attention", "", "")]
    for kind, arg, flags in plan:
        row = {"kind": kind, "variant": arg, "xla_flags": flags, **spawn(kind, arg, flags)}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    path = result_path(a.out, "cpu_profile")
    write_report(path, report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
