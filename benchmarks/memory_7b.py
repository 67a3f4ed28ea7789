"""Per-device memory of a Mistral-7B reward-model and DPO train step on an 8-device mesh, without any weights.

The train state and the batch are `jax.ShapeDtypeStruct`s with their mesh shardings (nothing is allocated); the
real step is lowered (`Trainer.lower`) and compiled, and XLA's `memory_analysis()` of the per-device (SPMD-
partitioned) program gives the argument, output, temporary and generated-code bytes; peak = arguments + outputs -
aliased (the donated state) + temporaries. Several `--layers` also fit the per-layer scaling; `dpo_lora` is a
frozen bf16 base with fp32 LoRA adapters on q/k/v/o.

The devices are fake CPU devices (`--xla_force_host_platform_device_count`, set here before JAX loads): XLA:CPU's
buffer assignment of the same program (a GPU build fuses differently; cuDNN attention keeps no score matrix).
XLA:CPU has no bf16 dot: loop-invariant code motion hoists an f32 copy of every layer out of the scan (+26 GiB for
a bf16 7B); prefix `XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_disable_hlo_passes=while-loop-
invariant-code-motion"` to measure without it.
"""
import itertools
import os
import sys
import time

import numpy as np

from benchmarks import common

# mistralai/Mistral-7B-v0.1 config.json
MISTRAL_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
              "num_key_value_heads": 8, "max_position_embeddings": 32768, "sliding_window": 4096,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
              "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
COLUMNS = [("objective", "objective", "<9"), ("layers", "layers", ">6"), ("remat", "remat_policy", "<13"),
           ("micro", "micro_pairs", ">5"), ("args", "argument_gib", ">6.2f"), ("out", "output_gib", ">6.2f"),
           ("alias", "alias_gib", ">6.2f"), ("temp", "temp_gib", ">6.2f"), ("code", "generated_code_gib", ">7.4f"),
           ("peak", "peak_gib", ">6.2f"), ("fits", "fits_budget", ">5"), ("compile s", "compile_seconds", ">9")]


def parse_args(argv):
    p = common.parser(__doc__)
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices (and mesh size)")
    p.add_argument("--fsdp", type=int, default=-1, help="mesh fsdp size (-1: what data and tensor leave)")
    p.add_argument("--tensor", type=int, default=1)
    p.add_argument("--data", type=int, default=1)
    p.add_argument("--pairs", type=int, default=32, help="pairs per optimizer step")
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence (every sequence full length)")
    p.add_argument("--micro", default="32", help="pairs per microbatch, comma-separated to try several")
    p.add_argument("--remat", default="full", help="remat policies to try: none, full, dots, dots_no_batch")
    p.add_argument("--layers", default="32", help="decoder layers, comma-separated (32 = the real model)")
    p.add_argument("--objectives", default="rm,dpo", help="rm (BCE on soft labels), dpo and/or dpo_lora (frozen "
                   "bf16 base, fp32 LoRA adapters on q/k/v/o, `configs/po_mistral7b_lora.py`)")
    p.add_argument("--lora_rank", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (master weights stay float32)")
    p.add_argument("--logp_chunk", type=int, default=128, help="DPO: time steps per log-softmax chunk")
    p.add_argument("--budget_gib", type=float, default=60.0)
    return p.parse_args(argv)


def measure(args, objective: str, layers: int, remat: str, micro: int) -> dict:
    """One setting's figures. The abstract state takes the shardings the real run uses (`step.init_state`'s); with
    LoRA it holds adapters + head and `frozen` the base (as `Trainer.fit` splits them)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import transformers

    from w2s_jax.models import registry
    from w2s_jax.models.convert import abstract_params
    from w2s_jax.models.heads import Transformer
    from w2s_jax.models.lora import LORA_KEY, LoraConfig, LoraModel, init_adapters
    from w2s_jax.models.sharding import make_mesh, param_shardings, replicated
    from w2s_jax.train.optim import make_optimizer
    from w2s_jax.train.step import TrainState, microbatch_sharding, opt_state_shardings
    from w2s_jax.train.trainer import Trainer

    if objective not in ("rm", "dpo", "dpo_lora") or args.pairs % micro:
        raise ValueError(f"objective {objective!r}: rm, dpo or dpo_lora; --micro={micro} must divide --pairs")
    mesh = make_mesh(args.data, args.fsdp, args.tensor)
    lora = LoraConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank) if objective == "dpo_lora" else None
    cfg = registry.config_from_hf(transformers.MistralConfig(num_hidden_layers=layers, **MISTRAL_7B),
                                  param_dtype="bfloat16" if lora else "float32", dtype=args.dtype,
                                  remat_policy=remat, scan_layers=True, attention_impl="xla")
    model = Transformer(cfg) if lora is None else LoraModel(Transformer(cfg), lora)
    unit, lr, schedule = common.objective(objective.removesuffix("_lora"), args.logp_chunk or None)
    optimizer, started = make_optimizer(lr, 1000, schedule), time.time()
    abstract = lambda tree, shardings: jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    boxed = abstract_params(cfg, reward_head=True)
    params, frozen = abstract(nn.unbox(boxed), param_shardings(boxed, mesh)), None
    if lora is not None:
        params, frozen = LoraModel.split({**params, LORA_KEY: init_adapters(params, lora, 0)})
    opt_state = abstract(jax.eval_shape(optimizer.init, params), opt_state_shardings(optimizer, params))
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated(mesh)), params, opt_state)
    lengths = np.full(2 * args.pairs, args.seq)  # only the shapes and dtypes of this batch are read
    host = unit.prepare(common.synthetic_batch(np.random.default_rng(0), lengths, 2), args.pairs // micro, "padded")
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=microbatch_sharding(mesh, v.ndim))
             for k, v in host.items()}
    compiled = Trainer(mesh, (args.seq,)).lower(unit, model, optimizer, state, batch, nsteps=1000,
                                                abstract_frozen=frozen).compile()
    seconds, xla = time.time() - started, common.xla_figures(compiled)
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
    return {"objective": objective, "layers": layers, "params": count((params, frozen)), "remat_policy": remat,
            "micro_pairs": micro, "n_micro": args.pairs // micro, "pairs": args.pairs, "seq": args.seq,
            "mesh": dict(mesh.shape), "compute_dtype": args.dtype, "param_dtype": cfg.param_dtype,
            "lora_rank": lora.rank if lora else 0, "trainable_params": count(params),
            **{f"{k}_gib": xla[k] / 2**30 for k in ("argument", "output", "alias", "temp", "generated_code", "peak")},
            "total_with_code_gib": (xla["peak"] + xla["generated_code"]) / 2**30,
            "fits_budget": xla["peak"] / 2**30 <= args.budget_gib, "compile_seconds": round(seconds, 1)}


def per_layer_scaling(rows: list[dict]) -> list[dict]:
    """Least-squares peak = fixed + per_layer * layers, per (objective, remat, micro) measured at >= 2 depths."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["objective"], r["remat_policy"], r["micro_pairs"]), []).append(r)
    out = []
    for (objective, remat, micro), rs in groups.items():
        if len(layers := sorted({r["layers"] for r in rs})) >= 2:
            slope, fixed = np.polyfit([r["layers"] for r in rs], [r["peak_gib"] for r in rs], 1)
            out.append({"objective": objective, "remat_policy": remat, "micro_pairs": micro, "layers": layers,
                        "per_layer_gib": float(slope), "fixed_gib": float(fixed),
                        "at_32_layers_gib": float(fixed + 32 * slope)})
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    rows, ints = [], lambda text: [int(x) for x in text.split(",")]
    print(f"GiB per device on {args.devices} devices (mesh data {args.data}, fsdp {args.fsdp}, tensor {args.tensor}); "
          f"fits: peak <= {args.budget_gib} GiB")
    common.print_table([], COLUMNS)
    for objective, layers, remat, micro in itertools.product(args.objectives.split(","), ints(args.layers),
                                                             args.remat.split(","), ints(args.micro)):
        rows.append(measure(args, objective.strip(), layers, remat.strip(), micro))
        common.print_table(rows[-1:], COLUMNS, header=False)
    if scaling := per_layer_scaling(rows):
        print("peak per device = fixed + per layer x layers, fitted on the depths measured:")
        common.print_table(scaling, COLUMNS[:1] + COLUMNS[2:4] + [
            ("per layer", "per_layer_gib", ">9.3f"), ("fixed", "fixed_gib", ">6.2f"),
            ("32 layers", "at_32_layers_gib", ">9.2f")])
    report = common.header("memory_7b", argv) | {
        "jax": jax.__version__, "backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "model": "mistralai/Mistral-7B-v0.1 shape (random, abstract)", "budget_gib_per_device": args.budget_gib,
        "note": "XLA:CPU buffer assignment of the SPMD-partitioned per-device program on fake CPU devices; "
                "peak = argument + output - alias + temp", "results": rows, "per_layer_scaling": scaling}
    print(f"results: {common.write_result(common.result_path(args.out, 'memory_7b'), report)}")
    return report


if __name__ == "__main__":
    main()
