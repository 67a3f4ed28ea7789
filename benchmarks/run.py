"""The benchmark suite: our training and scoring against PyTorch + `transformers` doing the same work.

One invocation runs every workload in one process per framework (first ours, then torch, never both at once) on
the same real pairs of ../shared/data/hh-single-turn, the same random GPT-2-small-shaped fp32 weights (made by
torch, saved as safetensors, loaded by both) and the same host batches:

  rm_train     reward-model step (BCE on A/B), batch --batch-size pairs
  rm_fixed     the same step at a fixed full shape: --fixed-pairs pairs x 2 x --max-len tokens, no padding at all
  dpo_train    DPO step (beta 0.1); ours reads reference log-probs computed once (reported apart), torch runs the
               reference model every step
  simpo_train  SimPO step (beta 2, gamma 1)
  score_test   z = r(A) - r(B) on the first --test-pairs pairs of harmless_test.jsonl, batches of --eval-batch

Contenders: ours (packed rows of >= --pack-len tokens, one jitted step; every shape compiled before the timed
steps, compile time and count reported), torch-batched (A and B in one forward per micro-batch of --torch-micro
pairs, dynamic padding to the longest sequence, as TRL does) and torch-1pair (the original recipe: one pair per
micro-batch, unpadded). Each training contender runs one untimed warm-up step then --steps timed steps.
Writes benchmarks/results/<host>-<date>.json and prints a table of pairs/s and ratios.

    python -m benchmarks.run              # ~25 min on 2 idle cores
    python -m benchmarks.run --quick      # smoke run, a few minutes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from benchmarks.common import DATA, ROOT, TOKENIZER_DIR, cpu_seconds, gpt2_tokenizer, timed_block  # noqa: E402

TEST_DATA = DATA.with_name("harmless_test.jsonl")
RM_LR, PO_LR, DPO_BETA, SIMPO_BETA, SIMPO_GAMMA = 1e-5, 1e-6, 0.1, 2.0, 1.0
TRAIN_WORKLOADS = ("rm_train", "rm_fixed", "dpo_train", "simpo_train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=400, help="training pairs read (batches are cut from them)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per training contender")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step")
    p.add_argument("--torch-micro", type=int, default=8, help="torch-batched micro-batch size in pairs")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--pack-len", type=int, default=256)
    p.add_argument("--fixed-pairs", type=int, default=4)
    p.add_argument("--test-pairs", type=int, default=256)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--workloads", default="rm_train,rm_fixed,dpo_train,simpo_train,score_test")
    p.add_argument("--torch", default="batched,1pair", help="torch contenders of the training workloads")
    p.add_argument("--quick", action="store_true", help="batch 8, 1 step, 64 test pairs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    p.add_argument("--worker", choices=("prepare", "jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    if p.parse_args(argv).quick:
        p.set_defaults(batch_size=8, steps=1, test_pairs=64, pairs=64)
    a = p.parse_args(argv)
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    a.torch = [t.strip() for t in a.torch.split(",") if t.strip()]
    if a.batch_size % a.torch_micro and a.batch_size > a.torch_micro:
        p.error("--torch-micro must divide --batch-size")
    a.torch_micro = min(a.torch_micro, a.batch_size)
    return a


# ---------------------------------------------------------------------------------------- shared host data


def host_data(a) -> dict:
    """The same batches for every framework: numpy only (tokenizer, pairs, padding, length buckets)."""
    from w2s_jax.data.batches import PairDataset, bucket_lengths, eval_batches, train_batches
    from w2s_jax.data.pairs import ab_order, read_jsonl_pairs
    from w2s_jax.data.tokenize import tokenize_prompt_response, tokenize_texts

    tok = gpt2_tokenizer(TOKENIZER_DIR, None)
    buckets = bucket_lengths(a.max_len, 64, 8)
    pairs = read_jsonl_pairs(DATA)[0][: a.pairs]
    ab = ab_order(pairs, 0)
    labels = ab.labels.astype(np.float32)
    rm = PairDataset(tokenize_texts(ab.texts_a, tok, a.max_len), tokenize_texts(ab.texts_b, tok, a.max_len),
                     extras={"label": labels, "gt": labels})
    (ids_c, m_c), (ids_r, m_r) = (tokenize_prompt_response([getattr(x, side) for x in pairs], tok, a.max_len)
                                  for side in ("chosen", "rejected"))
    policy = PairDataset(ids_c, ids_r, m_c, m_r, {"acc": np.ones(len(pairs), bool)})
    take = lambda ds: list(train_batches(ds, a.batch_size, epochs=1, seed=0, buckets=buckets))[: a.steps]
    test_ab = ab_order(read_jsonl_pairs(TEST_DATA)[0][: a.test_pairs], 0)
    test = PairDataset(tokenize_texts(test_ab.texts_a, tok, a.max_len), tokenize_texts(test_ab.texts_b, tok,
                                                                                       a.max_len))
    rng = np.random.default_rng(0)
    fp, fl = a.fixed_pairs, a.max_len
    fixed = {f"ids_{s}": rng.integers(1, 50257, (fp, fl), dtype=np.int32) for s in "ab"}
    fixed |= {f"mask_{s}": np.ones((fp, fl), np.int32) for s in "ab"}
    fixed |= {"label": rng.integers(0, 2, fp).astype(np.float32), "gt": np.zeros(fp, np.float32),
              "valid": np.ones(fp, bool)}
    return {"buckets": buckets, "rm": take(rm), "policy": take(policy), "policy_dataset": policy,
            "fixed": [fixed] * a.steps, "test": test,
            "test_batches": list(eval_batches(test, a.eval_batch, buckets=buckets))}


def tokens(batches) -> dict:
    real = sum(int(b["mask_a"].sum() + b["mask_b"].sum()) for b in batches)
    return {"real_tokens": real, "pairs": sum(int(b["valid"].sum()) for b in batches)}


# -------------------------------------------------------------------------------------------------- workers


def worker_prepare(a) -> None:
    """Random GPT-2-small weights + reward head, saved once for both frameworks."""
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(a.weights)
    head = torch.nn.Linear(768, 1, bias=False)
    save_file({"weight": head.weight.detach().contiguous()}, str(a.weights / "reward_head.safetensors"))


def worker_jax(a) -> dict:
    import jax

    from w2s_jax.data.batches import PairDataset
    from w2s_jax.data.packing import Packing
    from w2s_jax.eval.inference import score_pairs, score_policy_pairs
    from w2s_jax.models.convert import from_pretrained
    from w2s_jax.models.sharding import make_mesh
    from w2s_jax.objectives import DPO, RewardModel, SimPO
    from w2s_jax.train import step as step_lib
    from w2s_jax.train.optim import make_optimizer
    from w2s_jax.train.trainer import Trainer

    data, out = host_data(a), {}
    mesh = make_mesh(devices=jax.devices()[:1])
    loaded = from_pretrained(str(a.weights), reward_head=True)
    buckets = data["buckets"]
    packed = Trainer(mesh, buckets, layout="packed", pack_len=a.pack_len)

    def run_training(name, objective, lr, batches, trainer=packed):
        optimizer = make_optimizer(lr, 100, "constant")
        state = step_lib.init_state(jax.tree.map(lambda x: x.copy(), loaded.params), optimizer)
        step_fn = trainer.step_fn(objective, loaded.model, optimizer, step_lib.state_shardings(state), 100)
        packing = Packing(a.pack_len, buckets, row_multiple=1) if trainer.layout == "packed" else None
        prepare = lambda b: objective.prepare(b, 1, trainer.layout, packing)  # noqa: E731
        compiled, started = {}, time.perf_counter()
        for batch in batches:  # every shape compiled once, before the timed steps
            micro = trainer.place(prepare(batch))
            key = tuple(micro["ids" if "ids" in micro else "ids_a"].shape)
            if key not in compiled:
                compiled[key] = step_fn.lower(state, micro).compile()
        compile_seconds = time.perf_counter() - started
        holder = {"state": state}

        def one(batch):
            micro = trainer.place(prepare(batch))
            holder["state"], metrics = compiled[tuple(micro["ids" if "ids" in micro else "ids_a"].shape)](
                holder["state"], micro)
            float(metrics["loss"])

        t = timed_block(f"ours {name}", one, batches)
        shapes = [(prepare(b)["ids"].shape, 1) if "segments" in prepare(b) else (prepare(b)["ids_a"].shape, 2)
                  for b in batches]
        computed = sum(int(np.prod(shape)) * sides for shape, sides in shapes)
        return {**t, **tokens(batches), "compile_seconds": compile_seconds, "compiles": len(compiled),
                "token_fill": tokens(batches)["real_tokens"] / computed}

    if "rm_train" in a.workloads:
        out["rm_train"] = run_training("rm_train", RewardModel("bce"), RM_LR, data["rm"])
    if "rm_fixed" in a.workloads:
        out["rm_fixed"] = run_training("rm_fixed", RewardModel("bce"), RM_LR, data["fixed"], Trainer(mesh, buckets))
    if "dpo_train" in a.workloads:
        # the reference log-probs of every pair the steps use, computed once (what the pipeline caches)
        used = np.unique(np.concatenate([b["index"] for b in data["policy"]]))
        ds = data["policy_dataset"]
        sub = PairDataset([ds.ids_a[i] for i in used], [ds.ids_b[i] for i in used],
                          [ds.loss_mask_a[i] for i in used], [ds.loss_mask_b[i] for i in used])
        score_policy_pairs(loaded.model, loaded.params, sub, batch_size=a.eval_batch, mesh=mesh, buckets=buckets,
                           chunk_size=128, pack_len=a.pack_len)  # compile
        started = time.perf_counter()
        refs = score_policy_pairs(loaded.model, loaded.params, sub, batch_size=a.eval_batch, mesh=mesh,
                                  buckets=buckets, chunk_size=128, pack_len=a.pack_len)[:2]
        ref_seconds = time.perf_counter() - started
        where = {int(i): k for k, i in enumerate(used)}
        batches = [{**b, "ref_c": refs[0][[where[int(i)] for i in b["index"]]],
                    "ref_r": refs[1][[where[int(i)] for i in b["index"]]]} for b in data["policy"]]
        out["dpo_train"] = {**run_training("dpo_train", DPO(beta=DPO_BETA, chunk_size=128), PO_LR, batches),
                            "reference_once_seconds": ref_seconds, "reference_pairs": len(used)}
    if "simpo_train" in a.workloads:
        objective = SimPO(beta=SIMPO_BETA, gamma=SIMPO_GAMMA, chunk_size=128)
        out["simpo_train"] = run_training("simpo_train", objective, PO_LR, data["policy"])
    if "score_test" in a.workloads:
        score = lambda: score_pairs(loaded.model, loaded.params, data["test"], batch_size=a.eval_batch, mesh=mesh,
                                    buckets=buckets, mode="pmap", pack_len=a.pack_len)
        started = time.perf_counter()
        score()  # compiles every shape
        first = time.perf_counter() - started
        started, cpu0 = time.perf_counter(), cpu_seconds()
        z = score()
        seconds = time.perf_counter() - started
        out["score_test"] = {"seconds": [seconds], "cores": (cpu_seconds() - cpu0) / seconds,
                             "pairs": len(data["test"]), "first_run_seconds": first, "z": z.tolist()}
        print(f"  ours score_test: {seconds:.2f}s for {len(data['test'])} pairs", flush=True)
    return out


def worker_torch(a) -> dict:
    import torch
    import transformers
    from safetensors.torch import load_file

    from benchmarks.torch_ref import (torch_batched_step, torch_one_pair_step, torch_policy_one_pair_step,
                                      torch_policy_step, torch_score_batched)

    torch.set_num_threads(os.cpu_count())
    data, out = host_data(a), {}
    lm = transformers.GPT2LMHeadModel.from_pretrained(a.weights).train()
    head_weight = load_file(str(a.weights / "reward_head.safetensors"))["weight"]

    def fresh_rm():
        trunk = transformers.GPT2Model.from_pretrained(a.weights).train()
        head = torch.nn.Linear(768, 1, bias=False)
        head.weight.data.copy_(head_weight)
        opt = torch.optim.Adam(list(trunk.parameters()) + list(head.parameters()), lr=RM_LR)
        return trunk, head, opt

    def fresh_policy():
        policy = transformers.GPT2LMHeadModel.from_pretrained(a.weights).train()
        return policy, torch.optim.Adam(policy.parameters(), lr=PO_LR)

    reference = lm.eval()
    for workload in ("rm_train", "rm_fixed"):
        if workload not in a.workloads:
            continue
        batches = data["rm"] if workload == "rm_train" else data["fixed"]
        out[workload] = {}
        for kind in a.torch if workload == "rm_train" else ["batched"]:
            trunk, head, opt = fresh_rm()
            step = (lambda b: torch_batched_step(trunk, head, opt, b, a.torch_micro)) if kind == "batched" else \
                (lambda b: torch_one_pair_step(trunk, head, opt, b))
            out[workload][kind] = {**timed_block(f"torch-{kind} {workload}", step, batches), **tokens(batches)}
    for workload, algorithm, beta, gamma in (("dpo_train", "dpo", DPO_BETA, 0.0),
                                             ("simpo_train", "simpo", SIMPO_BETA, SIMPO_GAMMA)):
        if workload not in a.workloads:
            continue
        out[workload] = {}
        for kind in a.torch:
            policy, opt = fresh_policy()
            if kind == "batched":
                step = lambda b: torch_policy_step(policy, reference, opt, b, a.torch_micro, algorithm, beta, gamma)
            else:
                step = lambda b: torch_policy_one_pair_step(policy, reference, opt, b, algorithm, beta, gamma)
            out[workload][kind] = {**timed_block(f"torch-{kind} {workload}", step, data["policy"]),
                                   **tokens(data["policy"])}
    if "score_test" in a.workloads:
        trunk, head, _ = fresh_rm()
        trunk.eval()
        z = np.zeros(len(data["test"]), np.float32)
        torch_score_batched(trunk, head, data["test_batches"][0])  # warm-up
        started, cpu0 = time.perf_counter(), cpu_seconds()
        for batch in data["test_batches"]:
            keep = batch["valid"]
            z[batch["index"][keep]] = torch_score_batched(trunk, head, batch)[keep]
        seconds = time.perf_counter() - started
        out["score_test"] = {"batched": {"seconds": [seconds], "cores": (cpu_seconds() - cpu0) / seconds,
                                         "pairs": len(data["test"]), "z": z.tolist()}}
        print(f"  torch-batched score_test: {seconds:.2f}s for {len(data['test'])} pairs", flush=True)
    return out


# ------------------------------------------------------------------------------------------- orchestration


def rate(entry: dict) -> float:
    return entry["pairs"] / sum(entry["seconds"])


def summarize(a, ours: dict, torch_: dict) -> list[dict]:
    rows = []
    for workload in a.workloads:
        if workload not in ours:
            continue
        for kind, entry in torch_.get(workload, {}).items():
            rows.append({"workload": workload, "contender": f"torch-{kind}", "ours_pairs_per_s": rate(ours[workload]),
                         "torch_pairs_per_s": rate(entry), "ratio": rate(ours[workload]) / rate(entry),
                         "ours_cores": ours[workload]["cores"], "torch_cores": entry["cores"]})
    return rows


def spawn(a, worker: str, weights: Path, result: Path) -> dict:
    argv = [sys.executable, "-m", "benchmarks.run", "--worker", worker, "--weights", str(weights), "--result",
            str(result), "--workloads", ",".join(a.workloads), "--torch", ",".join(a.torch),
            "--pairs", str(a.pairs), "--steps", str(a.steps), "--batch-size", str(a.batch_size),
            "--torch-micro", str(a.torch_micro), "--max-len", str(a.max_len), "--pack-len", str(a.pack_len),
            "--fixed-pairs", str(a.fixed_pairs), "--test-pairs", str(a.test_pairs), "--eval-batch",
            str(a.eval_batch)]
    print(f"\n== {worker} worker", flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)
    return json.loads(result.read_text()) if result.exists() else {}


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.worker:
        fn = {"prepare": worker_prepare, "jax": worker_jax, "torch": worker_torch}[a.worker]
        result = fn(a)
        if result is not None:
            a.result.write_text(json.dumps(result))
        return result or {}
    wall0, load0 = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spawn(a, "prepare", tmp / "weights", tmp / "prepare.json")
        ours = spawn(a, "jax", tmp / "weights", tmp / "jax.json")
        torch_ = spawn(a, "torch", tmp / "weights", tmp / "torch.json")
    rows = summarize(a, ours, torch_)
    agreement = None
    if "score_test" in ours and "score_test" in torch_:
        zo, zt = np.asarray(ours["score_test"].pop("z")), np.asarray(torch_["score_test"]["batched"].pop("z"))
        agreement = {"max_abs_dz": float(np.abs(zo - zt).max()), "same_sign": float(((zo >= 0) == (zt >= 0)).mean())}
    import jax
    import torch
    import transformers

    result = {
        "benchmark": "suite", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                      "processor": platform.processor(),
                                                      "loadavg_before": load0, "loadavg_after": os.getloadavg()},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                     if k not in ("worker", "weights", "result")},
        "table": rows, "ours": ours, "torch": torch_, "score_agreement": agreement,
        "wall_seconds": time.perf_counter() - wall0,
    }
    print(f"\nGPT-2-small shape, fp32, T<={a.max_len}, batch {a.batch_size}, {a.steps} timed steps, "
          f"{os.cpu_count()} CPUs (load before {load0[0]:.1f})")
    print(f"{'workload':<12} {'contender':<14} {'ours p/s':>9} {'torch p/s':>10} {'ratio':>7} {'cores o/t':>10}")
    for r in rows:
        print(f"{r['workload']:<12} {r['contender']:<14} {r['ours_pairs_per_s']:>9.3f} {r['torch_pairs_per_s']:>10.3f} "
              f"{r['ratio']:>6.2f}x {r['ours_cores']:>4.2f}/{r['torch_cores']:.2f}")
    for w in TRAIN_WORKLOADS:
        if w in ours:
            print(f"  ours {w}: {ours[w]['compiles']} compiled shape(s) in {ours[w]['compile_seconds']:.1f}s, "
                  f"token fill {ours[w]['token_fill']:.2f}")
    if "dpo_train" in ours:
        d = ours["dpo_train"]
        print(f"  ours dpo_train: reference log-probs once, {d['reference_once_seconds']:.1f}s for "
              f"{d['reference_pairs']} pairs")
    if agreement:
        print(f"  score_test agreement: max |dz| {agreement['max_abs_dz']:.2e}, same sign {agreement['same_sign']:.3f}")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = a.out / f"{socket.gethostname()}-{stamp}.json"
    from w2s_jax.atomic import write_json_atomic

    write_json_atomic(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
