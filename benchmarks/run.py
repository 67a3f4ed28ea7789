"""The suite: our training and scoring against PyTorch + `transformers` on the same real pairs, random GPT-2-small
weights and host batches, one process per framework (workloads and method: README "Benchmarks").
Writes benchmarks/results/<host>-<date>.json and prints a table of pairs/s."""
import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from benchmarks import common

TRAIN_WORKLOADS = {"rm_train": "rm", "rm_fixed": "fixed", "dpo_train": "policy", "simpo_train": "policy"}


def parse_args(argv):
    p = common.parser(__doc__, worker=True, pairs=400, steps=2, batch_size=16, torch_micro=8, max_len=256,
                      pack_len=256, fixed_pairs=4, test_pairs=256, eval_batch=32,
                      workloads="rm_train,rm_fixed,dpo_train,simpo_train,score_test", torch="batched,1pair",
                      quick=False)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    if p.parse_args(argv).quick:
        p.set_defaults(batch_size=8, steps=1, test_pairs=64, pairs=64)
    a = p.parse_args(argv)
    a.workloads, a.torch = ([w.strip() for w in s.split(",") if w.strip()] for s in (a.workloads, a.torch))
    a.torch_micro = min(a.torch_micro, a.batch_size)
    if a.batch_size % a.torch_micro:
        p.error(f"--torch-micro {a.torch_micro} must divide --batch-size {a.batch_size}")
    return a


def host_data(a) -> dict:
    """The same batches for every framework: numpy only (tokenizer, pairs, padding, length buckets)."""
    from w2s_jax.data.batches import bucket_lengths, eval_batches, train_batches
    from w2s_jax.data.pairs import read_jsonl_pairs

    tok, buckets = common.gpt2_tokenizer(), bucket_lengths(a.max_len, 64, 8)
    pairs = read_jsonl_pairs(common.DATA)[0][: a.pairs]
    rm, policy = (common.pair_dataset(pairs, tok, a.max_len, policy) for policy in (False, True))
    take = lambda ds: list(train_batches(ds, a.batch_size, epochs=1, seed=0, buckets=buckets))[: a.steps]
    test = common.pair_dataset(read_jsonl_pairs(common.DATA.with_name("harmless_test.jsonl"))[0][: a.test_pairs],
                               tok, a.max_len, False)
    fixed = common.synthetic_batch(np.random.default_rng(0), np.full(2 * a.fixed_pairs, a.max_len), len(tok))
    return {"buckets": buckets, "rm": take(rm), "rm_dataset": rm, "policy": take(policy), "policy_dataset": policy,
            "fixed": [fixed] * a.steps, "test": test,
            "test_batches": list(eval_batches(test, a.eval_batch, buckets=buckets))}


def timed_steps(name: str, step, batches) -> dict:
    """One untimed warm-up step on batches[0], then one timed step per batch, with the batches' pairs and real
    tokens. `cores` = CPU seconds of this process / wall seconds of the timed steps."""
    seconds, cpu = [], 0.0
    for k, batch in enumerate([batches[0], *batches]):
        wall, used = common.timed(step, batch)
        print(f"  {name}: {f'step {k}' if k else 'warm-up'} T={batch['ids_a'].shape[1]} {wall:.2f}s", flush=True)
        if k:
            seconds.append(wall)
            cpu += used
    return {"seconds": seconds, "cores": cpu / sum(seconds), "pairs": sum(int(b["valid"].sum()) for b in batches),
            "real_tokens": sum(int(b["mask_a"].sum() + b["mask_b"].sum()) for b in batches)}


def timed_once(name: str, fn, pairs: int) -> dict:
    wall, cpu = common.timed(fn)
    print(f"  {name}: {wall:.2f}s for {pairs} pairs", flush=True)
    return {"seconds": [wall], "cores": cpu / wall, "pairs": pairs}


def worker_prepare(a) -> dict:
    from benchmarks.torch_ref import save_random_gpt2

    save_random_gpt2(a.weights)
    return {}


def worker_jax(a) -> dict:
    import jax

    from w2s_jax.data.batches import PairDataset
    from w2s_jax.eval.inference import score_pairs, score_policy_pairs
    from w2s_jax.models.convert import from_pretrained
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.train.trainer import Trainer, TrainSpec

    data = host_data(a)
    mesh, buckets = make_mesh(devices=jax.devices()[:1]), data["buckets"]
    loaded = from_pretrained(str(a.weights), reward_head=True)
    scoring = {"batch_size": a.eval_batch, "mesh": mesh, "buckets": buckets, "pack_len": a.pack_len}
    if "dpo_train" in a.workloads:  # the reference log-probs of the pairs the steps use, once (as the pipeline does)
        policy, used = data["policy_dataset"], np.unique(np.concatenate([b["index"] for b in data["policy"]]))
        sub = PairDataset(*([getattr(policy, k)[i] for i in used] for k in ("ids_a", "ids_b", "loss_mask_a",
                                                                             "loss_mask_b")))
        reference = lambda: score_policy_pairs(loaded.model, loaded.params, sub, chunk_size=128, **scoring)[:2]
        reference()  # compiles
        started = time.perf_counter()
        refs, ref_seconds = reference(), time.perf_counter() - started
        row = {int(i): k for k, i in enumerate(used)}
        data["dpo"] = [b | {key: r[[row[int(i)] for i in b["index"]]] for key, r in zip(("ref_c", "ref_r"), refs)}
                       for b in data["policy"]]

    def train(workload: str) -> dict:
        name, packed = workload.split("_")[0], workload != "rm_fixed"  # rm_fixed: padded rows, nothing to pack
        batches = data["dpo" if name == "dpo" else TRAIN_WORKLOADS[workload]]
        trainer = Trainer(mesh, buckets, layout="packed" if packed else "padded",
                          pack_len=a.pack_len if packed else None)
        objective, lr, _ = common.objective(name)
        params = jax.tree.map(lambda x: x.copy(), loaded.params)
        step, compiled = trainer.stepper(objective, loaded.model, params, TrainSpec(lr, 1, 1, "constant", 0), 100)
        prepare = trainer.prepare(objective, data[f"{TRAIN_WORKLOADS[workload]}_dataset"] if packed else None)
        computed, started = 0, time.perf_counter()
        for micro in (trainer.place(prepare(b, 1)) for b in batches):  # every shape compiled before the timed steps
            step(micro, run=False)
            computed += micro["ids"].size if "ids" in micro else 2 * micro["ids_a"].size
        compile_seconds = time.perf_counter() - started
        entry = timed_steps(f"ours {workload}", lambda b: float(step(trainer.place(prepare(b, 1)))["loss"]), batches)
        entry |= {"compile_seconds": compile_seconds, "compiles": len(compiled),
                  "token_fill": entry["real_tokens"] / computed}
        return entry | ({"reference_once_seconds": ref_seconds, "reference_pairs": len(used)} if name == "dpo" else {})

    out = {w: train(w) for w in TRAIN_WORKLOADS if w in a.workloads}
    if "score_test" in a.workloads:
        z = {}
        score = lambda: z.update(z=score_pairs(loaded.model, loaded.params, data["test"], mode="pmap", **scoring))
        first = common.timed(score)[0]  # compiles every shape
        out["score_test"] = {**timed_once("ours score_test", score, len(data["test"])), "first_run_seconds": first,
                             "z": z["z"].tolist()}
    return out


def worker_torch(a) -> dict:
    import torch
    import transformers
    from safetensors.torch import load_file

    from benchmarks import torch_ref

    torch.set_num_threads(os.cpu_count())
    data, out = host_data(a), {}
    reference = transformers.GPT2LMHeadModel.from_pretrained(a.weights).eval()
    head_weight = load_file(str(a.weights / "reward_head.safetensors"))["weight"]

    def fresh(name: str):
        """(trunk or policy, the step's `fn`, Adam) from the saved weights."""
        if name != "rm":
            policy = transformers.GPT2LMHeadModel.from_pretrained(a.weights).train()
            return policy, policy, torch.optim.Adam(policy.parameters(), lr=common.RECIPE[name][1])
        trunk, head = transformers.GPT2Model.from_pretrained(a.weights).train(), torch.nn.Linear(768, 1, bias=False)
        head.weight.data.copy_(head_weight)
        opt = torch.optim.Adam(list(trunk.parameters()) + list(head.parameters()), lr=common.RECIPE["rm"][1])
        return trunk, torch_ref.head_reward(trunk, head), opt

    for workload in (w for w in TRAIN_WORKLOADS if w in a.workloads):
        name, out[workload] = workload.split("_")[0], {}
        for kind in ["batched"] if workload == "rm_fixed" else a.torch:
            _, fn, opt = fresh(name)
            step = functools.partial(torch_ref.train_step, name, fn, opt, micro=a.torch_micro,
                                     one_pair=kind == "1pair", reference=reference, **common.RECIPE[name][0])
            out[workload][kind] = timed_steps(f"torch-{kind} {workload}", step, data[TRAIN_WORKLOADS[workload]])
    if "score_test" in a.workloads:
        trunk, reward, _ = fresh("rm")
        trunk.eval()
        z, n = {}, len(data["test"])
        score = lambda batches: z.update(z=torch_ref.scores(batches, n, a.eval_batch, reward)[0])
        score(data["test_batches"][:1])  # warm-up
        timing = timed_once("torch-batched score_test", lambda: score(data["test_batches"]), n)
        out["score_test"] = {"batched": timing | {"z": z["z"].tolist()}}
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(argv)
    if (result := common.serve(a, {"prepare": worker_prepare, "jax": worker_jax, "torch": worker_torch})) is not None:
        return result
    report, wall0, results = common.header("suite", argv, ("jax", "torch", "transformers")), time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for worker in ("prepare", "jax", "torch"):
            print(f"\n== {worker} worker", flush=True)
            results[worker] = common.spawn("benchmarks.run", [*argv, "--weights", str(Path(tmp) / "weights")], worker)
    ours, torch_, agreement = results["jax"], results["torch"], None
    rate = lambda entry: entry["pairs"] / sum(entry["seconds"])
    rows = [{"workload": w, "contender": f"torch-{kind}", "ours_pairs_per_s": rate(ours[w]),
             "torch_pairs_per_s": rate(entry), "ratio": rate(ours[w]) / rate(entry), "ours_cores": ours[w]["cores"],
             "torch_cores": entry["cores"]}
            for w in a.workloads if w in ours for kind, entry in torch_.get(w, {}).items()]
    if "score_test" in ours and "score_test" in torch_:
        zo, zt = np.asarray(ours["score_test"].pop("z")), np.asarray(torch_["score_test"]["batched"].pop("z"))
        agreement = {"max_abs_dz": float(np.abs(zo - zt).max()), "same_sign": float(((zo >= 0) == (zt >= 0)).mean())}
    report |= {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                            if k not in ("worker", "worker_out", "weights")},
               "table": rows, "ours": ours, "torch": torch_, "score_agreement": agreement,
               "wall_seconds": time.perf_counter() - wall0}
    print(f"\nGPT-2-small shape, fp32, T<={a.max_len}, batch {a.batch_size}, {a.steps} timed steps, "
          f"{os.cpu_count()} CPUs (load before {report['machine']['loadavg_before'][0]:.1f})")
    common.table(rows, "workload<12 contender<14 ours_pairs_per_s>9.3f torch_pairs_per_s>10.3f ratio>6.2f "
                       "ours_cores>7.2f torch_cores>7.2f")
    for w in (w for w in TRAIN_WORKLOADS if w in ours):
        print(f"  ours {w}: {ours[w]['compiles']} compiled shape(s) in {ours[w]['compile_seconds']:.1f}s, "
              f"token fill {ours[w]['token_fill']:.2f}")
    if "dpo_train" in ours:
        print(f"  ours dpo_train: reference log-probs once, {ours['dpo_train']['reference_once_seconds']:.1f}s for "
              f"{ours['dpo_train']['reference_pairs']} pairs")
    if agreement:
        print(f"  score_test agreement: max |dz| {agreement['max_abs_dz']:.2e}, same sign {agreement['same_sign']:.3f}")
    print(f"wrote {common.write_result(common.result_path(a.out, ''), report)}")
    return report


if __name__ == "__main__":
    main()
