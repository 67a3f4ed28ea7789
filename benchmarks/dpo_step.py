"""DPO TRAINING throughput in pairs/s: our jitted step with cached reference log-probs against a PyTorch DPO step
that runs its reference model every step (as TRL does without precomputed reference log-probs).

GPT-2-small shape, random fp32 weights shared by both (saved by torch, loaded with `from_pretrained`), the first
--pairs GT pairs of harmless_train_gt.jsonl split into prompt/response (prompt masked), GPT-2 BPE, max_len T=256,
batch --batch-size pairs in micro-batches of --micro pairs, Adam 1e-6, beta 0.1. Ours: `make_train_step` +
`preference_objective("dpo")` on packed rows of >= --pack-len tokens (`--layout padded`: length-bucketed padded
batches), the reference log-probs computed once before training (its one-off cost is reported apart); each
compiled shape is compiled before the timed steps. Torch: chosen and rejected in one forward per micro-batch, right-padded to
its longest sequence, reference forward under no_grad, `-logsigmoid(beta * margin)`, Adam.

    python -m benchmarks.dpo_step            # ~10 min on 2 idle cores (batch 8, 2 steps)
    python -m benchmarks.dpo_step --quick    # smoke run
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import socket
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.common import DATA, TOKENIZER_DIR, gpt2_tokenizer, timed_block  # noqa: E402
from benchmarks.torch_ref import torch_policy_step  # noqa: E402
from w2s_jax.data.batches import PairDataset, bucket_lengths, train_batches  # noqa: E402
from w2s_jax.data.packing import packed_microbatches  # noqa: E402
from w2s_jax.data.pairs import read_jsonl_pairs  # noqa: E402
from w2s_jax.data.tokenize import tokenize_prompt_response  # noqa: E402
from w2s_jax.eval.inference import score_policy_pairs  # noqa: E402
from w2s_jax.models.convert import from_pretrained  # noqa: E402
from w2s_jax.models.sharding import make_mesh  # noqa: E402
from w2s_jax.train import step as step_lib  # noqa: E402
from w2s_jax.atomic import write_json_atomic  # noqa: E402
from w2s_jax.train.optim import make_optimizer  # noqa: E402
from w2s_jax.train.policy import PAIR_KEYS, preference_objective  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LR, BETA = 1e-6, 0.1


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step (32 in the paper; 8 keeps the run short)")
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--layout", choices=("packed", "padded"), default="packed")
    p.add_argument("--pack-len", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="1 step on 32 pairs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.pairs = 1, 32
    torch.set_num_threads(os.cpu_count())
    tok = gpt2_tokenizer(TOKENIZER_DIR, None)
    pairs = read_jsonl_pairs(DATA)[0][: a.pairs]
    (ids_c, m_c), (ids_r, m_r) = (tokenize_prompt_response([getattr(x, side) for x in pairs], tok, a.max_len)
                                  for side in ("chosen", "rejected"))
    dataset = PairDataset(ids_c, ids_r, m_c, m_r, {"acc": np.ones(len(pairs), bool)})
    buckets = bucket_lengths(a.max_len, 64)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        policy = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
        policy.save_pretrained(tmp)
        ours = from_pretrained(tmp)
    reference = copy.deepcopy(policy).eval()
    mesh = make_mesh(devices=jax.devices()[:1])
    started = time.perf_counter()
    refs = score_policy_pairs(ours.model, ours.params, dataset, batch_size=a.micro * 2, mesh=mesh, buckets=buckets,
                              chunk_size=128)[:2]
    ref_seconds = time.perf_counter() - started
    dataset = PairDataset(ids_c, ids_r, m_c, m_r, {"acc": dataset.extras["acc"], "ref_c": refs[0], "ref_r": refs[1]})
    batches = list(train_batches(dataset, a.batch_size, epochs=1, seed=0, buckets=buckets))[: a.steps]
    optimizer = make_optimizer(LR, 100, "warmup_constant")
    state = step_lib.init_state(ours.params, optimizer)
    objective = preference_objective(ours.model, "dpo", beta=BETA, gamma=0.0, alpha=0.0, explicit=False,
                                     chunk_size=128)
    step_fn = step_lib.make_train_step(objective, optimizer, step_lib.state_shardings(state), 100)
    keys = PAIR_KEYS + ("acc", "ref_c", "ref_r")
    holder = {"state": state}
    n_micro = a.batch_size // a.micro

    def prepare(batch):
        if a.layout == "padded":
            return step_lib.place_batch(step_lib.to_microbatches(batch, n_micro, keys), mesh)
        return step_lib.place_batch(packed_microbatches(batch, n_micro, sides=("_a", "_b"), min_row_len=a.pack_len,
                                                        buckets=buckets, row_multiple=1,
                                                        extra_keys=("valid", "acc", "ref_c", "ref_r"),
                                                        token_level=True), mesh)

    def ours_step(batch):
        holder["state"], metrics = step_fn(holder["state"], prepare(batch))
        jax.block_until_ready(metrics)

    compile_started, shapes = time.perf_counter(), {}
    for batch in batches:  # compile each shape once, untimed
        micro = prepare(batch)
        shape = tuple(micro["ids"].shape if a.layout == "packed" else micro["ids_a"].shape)
        if shape not in shapes:
            step_fn.lower(holder["state"], micro).compile()
            shapes[shape] = True
    compile_seconds = time.perf_counter() - compile_started
    real_tokens = sum(int(b["mask_a"].sum() + b["mask_b"].sum()) for b in batches)
    computed = sum(int(np.prod(prepare(b)["ids" if a.layout == "packed" else "ids_a"].shape)) *
                   (1 if a.layout == "packed" else 2) for b in batches)
    ours_t = timed_block("ours", ours_step, batches)
    opt = torch.optim.Adam(policy.parameters(), lr=LR)
    torch_t = timed_block("torch", lambda b: torch_policy_step(policy, reference, opt, b, a.micro, "dpo", BETA, 0.0), batches)
    rate = lambda t: a.batch_size * len(t["seconds"]) / sum(t["seconds"])
    result = {
        "benchmark": "dpo_step", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(), "settings": vars(a) | {"out": str(a.out)},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "ours_pairs_per_s": rate(ours_t), "torch_pairs_per_s": rate(torch_t), "ratio": rate(ours_t) / rate(torch_t),
        "ours_step_seconds": ours_t["seconds"], "torch_step_seconds": torch_t["seconds"],
        "ours_cores": ours_t["cores"], "torch_cores": torch_t["cores"], "buckets_T": [b["ids_a"].shape[1] for b in batches],
        "layout": a.layout, "compiled_shapes": [list(k) for k in shapes], "ours_token_fill": real_tokens / computed,
        "reference_once_seconds": ref_seconds, "reference_pairs": len(pairs), "compile_seconds": compile_seconds,
    }
    print(f"\nDPO step, GPT-2-small shape, T<={a.max_len}, batch {a.batch_size} (micro {a.micro}), {a.steps} steps")
    print(f"  ours (cached reference, {a.layout}, fill {real_tokens / computed:.2f}) "
          f"{result['ours_pairs_per_s']:.3f} pairs/s")
    print(f"  torch (reference per step) {result['torch_pairs_per_s']:.3f} pairs/s")
    print(f"  cores used: ours {ours_t['cores']:.2f}, torch {torch_t['cores']:.2f} (below {os.cpu_count()}: "
          f"other processes took the rest)")
    print(f"  ratio {result['ratio']:.2f}x; reference log-probs once: {ref_seconds:.1f}s for {len(pairs)} pairs")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json_atomic(a.out / f"dpo_step-{socket.gethostname()}-{stamp}.json", result)
    return result


if __name__ == "__main__":
    main()
