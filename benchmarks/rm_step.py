"""Reward-model TRAINING throughput (forward + backward + Adam) in pairs/s: our jitted sharded step against PyTorch.

Same random GPT-2-small-shaped weights everywhere (torch `GPT2LMHeadModel(GPT2Config())` + `Linear(768, 1,
bias=False)` head, saved and loaded with `from_pretrained(dir, reward_head=True)`), fp32, Adam 1e-5. Contenders,
one process, each timed in its own block of steps after one untimed warm-up step (interleaving step by step
was tried: on this VM the first step after the other framework ran is up to 50 % slower, for either side):
  ours          `make_train_step` + `rm_loss("bce")` on `train_batches` length buckets, mesh of 1 CPU device;
  torch-batched A and B in one forward, right-padded to the longest sequence of each micro-batch (as TRL),
                BCE-with-logits, gradient accumulation over micro-batches, `torch.optim.Adam`;
  torch-1pair   the original recipe: per pair two unpadded forwards (A, B), (loss / batch).backward(), one step.
Real pairs: the first --pairs of harmless_train_gt.jsonl, `ab_order(pairs, 0)`, GPT-2 BPE left-truncated to 512,
batch 32. Fixed shape: --fixed-pairs pairs, every sequence --fixed-len random ids, whole batch in one forward.
"steady" pairs/s excludes compilation (shapes are compiled ahead of time, timed); "incl. compile" adds it back.
A micro-batch size whose compiled step needs more memory than the machine has is reported and skipped.

    python -m benchmarks.rm_step                  # ~15 min on 2 idle cores: 2 real steps, 2 fixed steps
    python -m benchmarks.rm_step --quick          # smoke run: batch 8, 1 step, fixed 1 pair x 128
    python -m benchmarks.rm_step --steps 4 --first-step 0 --micro-batch-sizes 32,8
The GPT-2 tokenizer is read from --tokenizer-dir, built there once from the openai-whisper sdist asset:
    pip download --no-deps openai-whisper==20250625 -d /tmp/whisper
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flax  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from benchmarks.common import (DATA, TOKENIZER_DIR, cpu_seconds, gpt2_tokenizer, mem_available,  # noqa: E402
                               timed_block)
from benchmarks.torch_ref import torch_batched_step, torch_one_pair_step, torch_reward  # noqa: E402
from w2s_jax.data.packing import packed_pair_microbatches  # noqa: E402
from w2s_jax.data.batches import PairDataset, bucket_lengths, num_train_steps, train_batches  # noqa: E402
from w2s_jax.data.pairs import ab_order, read_jsonl_pairs  # noqa: E402
from w2s_jax.data.tokenize import tokenize_texts  # noqa: E402
from w2s_jax.models.convert import REWARD_HEAD_FILE, REWARD_HEAD_KEY, from_pretrained  # noqa: E402
from w2s_jax.models.sharding import make_mesh  # noqa: E402
from w2s_jax.pipeline import LOSS_KEYS, rm_loss  # noqa: E402
from w2s_jax.train import step as step_lib  # noqa: E402
from w2s_jax.atomic import write_json_atomic  # noqa: E402
from w2s_jax.train.optim import make_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LR, MAX_LEN = 1e-5, 512


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1000, help="first N pairs of the data file")
    p.add_argument("--steps", type=int, default=2, help="timed train steps per contender on real pairs")
    p.add_argument("--first-step", type=int, default=1, help="first timed batch (batch 0 has bucket 448)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
    p.add_argument("--micro-batch-sizes", default="32,8", help="ours: comma list of micro-batch sizes in pairs")
    p.add_argument("--torch-micro", type=int, default=8, help="torch-batched micro-batch size in pairs")
    p.add_argument("--fixed-pairs", type=int, default=4)
    p.add_argument("--fixed-len", type=int, default=256)
    p.add_argument("--fixed-steps", type=int, default=2, help="timed steps at the fixed shape (0: skip it)")
    p.add_argument("--torch", default="batched,1pair", help="torch contenders to run (ours always runs)")
    p.add_argument("--pack-len", type=int, default=256, help="ours packed: rows of at least this many tokens")
    p.add_argument("--quick", action="store_true", help="batch 8, 1 step, fixed shape 1 pair x 128, 1 step")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--tokenizer-dir", type=Path, default=TOKENIZER_DIR)
    p.add_argument("--tokenizer-asset", help="whisper sdist .tar.gz or gpt2.tiktoken (default: /tmp/whisper/...)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    if p.parse_args(argv).quick:  # quick defaults; flags given explicitly still win
        p.set_defaults(batch_size=8, steps=1, fixed_pairs=1, fixed_len=128, fixed_steps=1, micro_batch_sizes="8",
                       torch_micro=8)
    a = p.parse_args(argv)
    a.micro_batch_sizes = [int(m) for m in a.micro_batch_sizes.split(",")]
    a.torch = [f"torch-{t.strip()}" for t in a.torch.split(",") if t.strip()]
    if not set(a.torch) <= {"torch-batched", "torch-1pair"}:
        p.error("--torch takes a comma list of batched, 1pair")
    if any(a.batch_size % m for m in a.micro_batch_sizes + [a.torch_micro]):
        p.error("micro-batch sizes must divide --batch-size")
    return a



def fill(batch, torch_micro: int) -> dict:
    """Real tokens over padded tokens: ours (bucket of the whole batch) and torch (longest per micro-batch)."""
    n, T = len(batch["label"]), batch["ids_a"].shape[1]
    lens = np.concatenate([batch["mask_a"].sum(1), batch["mask_b"].sum(1)])
    longest = [max(lens[lo:lo + torch_micro].max(), lens[n + lo:n + lo + torch_micro].max())
               for lo in range(0, n, torch_micro)]
    return {"T_bucket": T, "real_tokens": int(lens.sum()), "ours_padded": 2 * n * T,
            "torch_padded": int(sum(2 * torch_micro * m for m in longest))}


def main(argv=None) -> dict:
    a = parse_args(argv)
    load_before, wall0 = os.getloadavg(), time.perf_counter()
    if not a.data.exists():
        sys.exit(f"data file {a.data} not found (the hh-single-turn split beside the repo); pass --data PATH")
    tok = gpt2_tokenizer(a.tokenizer_dir, a.tokenizer_asset)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()  # eval(): dropout off, as the original
    trunk, head = lm.transformer, torch.nn.Linear(lm.config.n_embd, 1, bias=False)
    mesh = make_mesh(devices=jax.devices()[:1])
    with tempfile.TemporaryDirectory() as tmp:
        lm.save_pretrained(tmp)
        save_file({REWARD_HEAD_KEY: head.weight.detach().numpy().copy()}, os.path.join(tmp, REWARD_HEAD_FILE))
        ours = from_pretrained(tmp, reward_head=True, load_tokenizer=False, mesh=mesh)
    opt = torch.optim.Adam(list(trunk.parameters()) + list(head.parameters()), lr=LR)

    ab = ab_order(read_jsonl_pairs(a.data)[0][: a.pairs], 0)
    labels = ab.labels.astype(np.float32)
    dataset = PairDataset(tokenize_texts(ab.texts_a, tok, MAX_LEN), tokenize_texts(ab.texts_b, tok, MAX_LEN),
                          extras={"label": labels, "gt": labels})
    buckets = bucket_lengths(MAX_LEN, 64, 8)
    all_batches = list(train_batches(dataset, a.batch_size, epochs=1, seed=0, buckets=buckets))
    batches = all_batches[a.first_step: a.first_step + a.steps]
    if len(batches) < a.steps:
        sys.exit(f"only {len(all_batches)} batches of {a.batch_size} pairs in {len(dataset)} pairs")

    nsteps = num_train_steps(len(dataset), 1, a.batch_size)
    optimizer = make_optimizer(LR, nsteps, "cosine_anneal")
    state = step_lib.init_state(ours.params, optimizer)
    step_fn = step_lib.make_train_step(rm_loss(ours.model, "bce", 0.0), optimizer, step_lib.state_shardings(state),
                                       nsteps)
    compiled, compiles, skipped = {}, [], {}

    def ours_inputs(batch, micro_size, packed=False):
        """Place the batch as [n_micro, micro_size, ...] (or packed rows [n_micro, rows, row_len]); compile each
        shape once, timed, outside the steps."""
        n_micro = len(batch["label"]) // micro_size
        if packed:
            host = packed_pair_microbatches(batch, n_micro, min_row_len=a.pack_len, buckets=buckets, row_multiple=1)
        else:
            host = step_lib.to_microbatches(batch, n_micro, LOSS_KEYS)
        micro = step_lib.place_batch(host, mesh)
        key = ("packed",) * packed + tuple(micro["ids" if packed else "ids_a"].shape)
        if key not in compiled:
            start = time.perf_counter()
            compiled[key] = step_fn.lower(state, micro).compile()
            temp = int(getattr(compiled[key].memory_analysis(), "temp_size_in_bytes", 0))
            compiles.append({"shape_n_micro_pairs_T": list(key), "seconds": time.perf_counter() - start,
                             "xla_temp_gib": temp / 2**30, "packed": packed})
            print(f"  compiled ours [n_micro, pairs, T]={list(key)}: {compiles[-1]['seconds']:.1f}s, "
                  f"XLA temp {temp / 2**30:.2f} GiB", flush=True)
            if temp > 0.9 * mem_available():
                skipped[micro_size] = f"{list(key)} needs {temp / 2**30:.1f} GiB XLA temp, " \
                                      f"{mem_available() / 2**30:.1f} GiB available"
        return compiled[key], micro

    def run_ours(batch, micro_size, packed=False) -> None:
        nonlocal state
        fn, micro = ours_inputs(batch, micro_size, packed)
        state, metrics = fn(state, micro)
        float(metrics["loss"])  # waits for the step

    b0 = all_batches[0]  # same weights on both sides: the reward of pair 0's side A
    with torch.no_grad():
        r_torch = float(torch_reward(trunk, head, b0["ids_a"][0], b0["mask_a"][0]))
    r_ours = float(ours.model.apply({"params": state.params}, b0["ids_a"][:1], b0["mask_a"][:1],
                                    method=ours.model.reward)[0])
    print(f"same weights: reward of pair 0 side A: ours {r_ours:.6f}, torch {r_torch:.6f}", flush=True)

    # ---- fixed shape
    rng, fp, fl = np.random.default_rng(0), a.fixed_pairs, a.fixed_len
    fixed = {f"ids_{s}": rng.integers(1, 50257, (fp, fl), dtype=np.int32) for s in "ab"}
    fixed |= {f"mask_{s}": np.ones((fp, fl), np.int32) for s in "ab"}
    fixed |= {"label": rng.integers(0, 2, fp).astype(np.float32), "gt": np.zeros(fp, np.float32),
              "valid": np.ones(fp, bool)}
    print(f"fixed shape: {fp} pairs x 2 x {fl} tokens, whole batch in one forward", flush=True)
    ours_inputs(fixed, fp)
    runners = {"torch-batched": lambda b: torch_batched_step(trunk, head, opt, b, len(b["label"])),
               "torch-1pair": lambda b: torch_one_pair_step(trunk, head, opt, b)}
    blocks = {}
    if a.fixed_steps:
        blocks[f"fixed {fp}x{fl}"] = {"ours": timed_block("ours", lambda b: run_ours(b, fp), [fixed] * a.fixed_steps)}
        if "torch-batched" in a.torch:
            blocks[f"fixed {fp}x{fl}"]["torch-batched"] = timed_block("torch-batched", runners["torch-batched"],
                                                                      [fixed] * a.fixed_steps)

    # ---- real pairs
    print(f"real pairs: batches {a.first_step}..{a.first_step + a.steps - 1} of {len(all_batches)}, "
          f"{a.batch_size} pairs each", flush=True)
    n_fixed_compiles = len(compiles)
    for m in a.micro_batch_sizes:
        for batch in batches:
            ours_inputs(batch, m)
    for batch in batches:
        ours_inputs(batch, a.batch_size, packed=True)
    for m, why in skipped.items():
        print(f"  ours mb={m} skipped: {why}", flush=True)
    names = [f"ours mb={m}" for m in a.micro_batch_sizes if m not in skipped]
    if not names:
        sys.exit("every ours micro-batch size was skipped for memory; pass smaller --micro-batch-sizes")
    runners["torch-batched"] = lambda b: torch_batched_step(trunk, head, opt, b, a.torch_micro)
    blocks["real"] = {"ours packed": timed_block("ours packed", lambda b: run_ours(b, a.batch_size, True), batches)}
    blocks["real"] |= {n: timed_block(n, lambda b, m=int(n.split("=")[1]): run_ours(b, m), batches) for n in names}
    blocks["real"] |= {n: timed_block(n, runners[n], batches) for n in a.torch}
    def packed_size(b):
        return int(np.prod(packed_pair_microbatches(b, 1, min_row_len=a.pack_len, buckets=buckets,
                                                    row_multiple=1)["ids"].shape))

    steps = [fill(b, a.torch_micro) | {"packed_tokens": packed_size(b)} | {f"{n} s": v["seconds"][k] for n, v in blocks["real"].items()}
             for k, b in enumerate(batches)]

    # ---- report
    rows = []
    for setting, block in sorted(blocks.items(), key=lambda kv: kv[0] != "real"):
        n_pairs = a.batch_size if setting == "real" else fp
        ref = None
        for n, v in block.items():
            ts = v["seconds"]
            r = {"setting": setting, "contender": n, "pairs_per_s": n_pairs * len(ts) / sum(ts), "step_seconds": ts,
                 "cores_used": v["cores"]}
            if setting == "real" and n.startswith("ours"):
                packed = n == "ours packed"
                c = sum(c["seconds"] for c in compiles[n_fixed_compiles:] if c["packed"] == packed and
                        (packed or c["shape_n_micro_pairs_T"][1] == int(n.split("=")[1])))
                r["pairs_per_s_incl_compile"] = n_pairs * len(ts) / (sum(ts) + c)
            ref = ref or r["pairs_per_s"]
            r["ours_speedup"] = ref / r["pairs_per_s"]
            rows.append(r)
    speedup = {(r["setting"] == "real", r["contender"]): r["ours_speedup"] for r in rows}
    goals = {"real: ours >= 2x torch-batched": ((True, "torch-batched"), 2.0),
             "real: ours >= 1.2x torch-1pair": ((True, "torch-1pair"), 1.2),
             "fixed: ours >= 1.0x torch-batched": ((False, "torch-batched"), 1.0)}
    targets = {t: speedup[k] >= x for t, (k, x) in goals.items() if k in speedup}
    fills = [fill(b, a.torch_micro) | {"packed_tokens": packed_size(b)} for b in all_batches]
    real = sum(f["real_tokens"] for f in fills)
    fill_all = {"ours": real / sum(f["ours_padded"] for f in fills),
                "ours_packed": real / sum(f["packed_tokens"] for f in fills),
                "torch_batched": real / sum(f["torch_padded"] for f in fills), "torch_1pair": 1.0}
    computed = {"torch-batched": "torch_padded", "torch-1pair": "real_tokens", "ours packed": "packed_tokens"}
    tok_s = {n: sum(s[computed.get(n, "ours_padded")] for s in steps) / sum(v["seconds"])
             for n, v in blocks["real"].items()}

    print(f"\n{'setting':<14} {'contender':<14} {'pairs/s':>8} {'incl.compile':>13} {'ours speedup':>13} "
          f"{'cores used':>11}")
    for r in rows:
        inc = r.get("pairs_per_s_incl_compile")
        print(f"{r['setting']:<14} {r['contender']:<14} {r['pairs_per_s']:>8.3f} "
              f"{'' if inc is None else f'{inc:.3f}':>13} {r['ours_speedup']:>12.2f}x {r['cores_used']:>11.2f}")
    print("ours speedup = first ours row of the setting, pairs/s / the contender's pairs/s; cores used = this "
          f"process's CPU seconds / wall seconds in the block (of {os.cpu_count()}; less: other processes ran)")
    print("compiles: " + ", ".join(f"{c['shape_n_micro_pairs_T']} {c['seconds']:.0f}s" for c in compiles))
    print(f"token fill (real/padded), all {len(all_batches)} batches: "
          + ", ".join(f"{k} {v:.3f}" for k, v in fill_all.items()))
    print("computed tokens/s (padded, timed batches): " + ", ".join(f"{n} {v:.0f}" for n, v in tok_s.items()))
    for t, ok in targets.items():
        print(f"target {t}: {'met' if ok else 'MISSED'}")
    cores_used = cpu_seconds() / (time.perf_counter() - wall0)
    print(f"CPU cores this process got on average: {cores_used:.2f} of {os.cpu_count()} (load average before "
          f"{load_before[0]:.1f}, now {os.getloadavg()[0]:.1f}; other processes share the machine when < cores)")

    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {
        "benchmark": "rm_step", "date": now.isoformat(timespec="seconds"), "hostname": socket.gethostname(),
        "argv": sys.argv[1:], "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "model": "GPT-2 small shape (GPT2Config()), random fp32 weights shared by all contenders",
        "ours_runtime": {k: getattr(ours.config, k) for k in ("param_dtype", "dtype", "remat_policy", "scan_layers",
                                                              "attention_impl")},
        "buckets": list(buckets), "n_batches_in_data": len(all_batches), "results": rows, "targets": targets,
        "skipped": skipped, "compiles": compiles, "steps": steps, "token_fill_all_batches": fill_all,
        "computed_tokens_per_s": tok_s, "sanity_reward_pair0": {"ours": r_ours, "torch": r_torch},
        "timing": "per contender: 1 untimed warm-up step, then the timed steps, in one block",
        "torch_threads": torch.get_num_threads(), "torch_attn_implementation": lm.config._attn_implementation,
        "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]], "avg_cores_used": cores_used,
        "wall_seconds": time.perf_counter() - wall0,
        "cpu": {"machine": platform.machine(), "count": os.cpu_count()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                     "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
    }
    path = a.out / f"rm_step-{socket.gethostname()}-{now:%Y%m%d-%H%M%S}.json"
    write_json_atomic(path, payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
