"""Forward throughput of a GPT-2-small-shaped model: our Flax module (jit) against `transformers` PyTorch, on the
same random weights, the LM-logits and the hidden-state forward per shape, calls interleaved (README "Benchmarks")."""
import os
import statistics
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the comparison is against torch on CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np
import torch
import transformers

from benchmarks import common
from w2s_jax.models.convert import from_pretrained
from w2s_jax.models.heads import Transformer


def main(argv=None) -> dict:
    args = common.parser(__doc__, shapes="8x128,4x256", repeats=10, warmup=2, quick=False, scan_layers="both",
                         precision="default", threads=os.cpu_count()).parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    report = common.header("forward", argv, ("jax", "jaxlib", "flax", "torch", "transformers", "numpy"))
    jax.config.update("jax_default_matmul_precision", args.precision)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch_model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        ours = from_pretrained(tmp, load_tokenizer=False)
    variants = {}
    for scan in {"true": [True], "false": [False], "both": [True, False]}[args.scan_layers]:
        model = Transformer(ours.config.replace(scan_layers=scan))
        variants[f"scan_layers={scan}"] = {
            "logits": jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, m)),
            "hidden": jax.jit(lambda p, i, m, model=model: model.apply({"params": p}, i, m, method=model.hidden))}
    torch_fns = {"logits": lambda i, m: torch_model(input_ids=i, attention_mask=m).logits,
                 "hidden": lambda i, m: torch_model.transformer(input_ids=i, attention_mask=m).last_hidden_state}
    rows, deltas, rng = [], [], np.random.RandomState(0)
    for batch, seq in (tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")):
        ids = rng.randint(0, ours.config.vocab_size, size=(batch, seq)).astype(np.int32)
        ids_j, mask_j = jax.device_put(ids), jax.device_put(np.ones_like(ids))
        ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.ones(ids.shape, dtype=torch.int64)
        for head in ("logits", "hidden"):
            calls = {name: lambda fn=fns[head], i=ids_j, m=mask_j: fn(ours.params, i, m).block_until_ready()
                     for name, fns in variants.items()}
            first_call_s = {name: common.call_times(call, 1, 0)[0] for name, call in calls.items()}  # compiles
            calls["torch"] = lambda fn=torch_fns[head], i=ids_t, m=mask_t: fn(i, m)
            times = {name: [] for name in calls}
            with torch.no_grad():  # one call of each in turn, so that background load hits all alike
                for _ in range(args.warmup + args.repeats):
                    for name, call in calls.items():
                        times[name].append(common.timed(call)[0])
            t = {name: (statistics.median(x[args.warmup:]), min(x[args.warmup:])) for name, x in times.items()}
            for name in variants:
                rows.append({"batch": batch, "seq": seq, "head": head, "variant": name,
                             "ours_tok_s": batch * seq / t[name][0], "torch_tok_s": batch * seq / t["torch"][0],
                             "ratio": t["torch"][0] / t[name][0], "ours_best_tok_s": batch * seq / t[name][1],
                             "torch_best_tok_s": batch * seq / t["torch"][1], "best_ratio": t["torch"][1] / t[name][1],
                             "ours_first_call_s": first_call_s[name]})
        if not deltas:  # sanity check at the first shape: same weights, same logits
            with torch.no_grad():
                ref = torch_fns["logits"](ids_t, mask_t).numpy()
            for name, fns in variants.items():
                d = float(np.abs(np.asarray(fns["logits"](ours.params, ids_j, mask_j)) - ref).max())
                deltas.append({"batch": batch, "seq": seq, "variant": name, "max_abs_delta_logits": d,
                               "max_abs_logits": float(np.abs(ref).max())})
                print(f"max |delta logits| at {batch}x{seq} ({name}): {d:.3g} (max |logits| {np.abs(ref).max():.3g})")
    common.table(rows, "batch>5 seq<5 head<7 variant<18 ours_tok_s>11.0f torch_tok_s>12.0f ratio>6.2f "
                       "ours_best_tok_s>10.0f torch_best_tok_s>11.0f best_ratio>6.2f")
    print("tok/s from the median call (best: the fastest call); ratio = ours / torch (>1: ours faster)")
    report |= {"model": "GPT-2 small shape (GPT2Config() defaults), random fp32 weights", "repeats": args.repeats,
               "warmup": args.warmup, "statistic": "median and min seconds per call, calls interleaved",
               "jax_default_matmul_precision": args.precision, "torch_threads": torch.get_num_threads(),
               "torch_attn_implementation": torch_model.config._attn_implementation,
               "jax_backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "results": rows, "sanity": deltas}
    print(f"wrote {common.write_result(common.result_path(args.out, 'forward'), report)}")
    return report


if __name__ == "__main__":
    main()
