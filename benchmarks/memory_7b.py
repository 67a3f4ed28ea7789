"""Per-device memory of a Mistral-7B reward-model and DPO train step on a mesh of fake CPU devices, without any
weights: the real step lowered on abstract shapes and compiled, XLA's memory analysis (README "Benchmarks")."""
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
DTYPE, LORA_RANK, LOGP_CHUNK, BUDGET_GIB = "bfloat16", 16, 128, 60.0  # compute dtype (master weights stay fp32)
COLUMNS = ("objective<9 layers>6 remat_policy<13 micro_pairs>5 argument_gib>6.2f output_gib>6.2f alias_gib>6.2f "
           "temp_gib>6.2f generated_code_gib>7.4f peak_gib>6.2f fits_budget>5 compile_seconds>9")


def measure(args, objective: str, layers: int, remat: str, micro: int) -> dict:
    """One setting's figures. The abstract state takes the shardings of the real run (`step.init_state`'s); with
    LoRA it holds adapters + head and `frozen` the base (as `Trainer.fit` splits them)."""
    import flax.linen as nn
    import jax
    import transformers

    from w2s_jax.models import registry
    from w2s_jax.models.convert import abstract_params
    from w2s_jax.models.heads import Transformer
    from w2s_jax.models.lora import LORA_KEY, LoraConfig, LoraModel, init_adapters
    from w2s_jax.models.sharding import make_mesh, param_shardings
    from w2s_jax.train.step import microbatch_sharding
    from w2s_jax.train.trainer import Trainer, TrainSpec

    mesh, lora = make_mesh(1, -1, 1), LoraConfig(rank=LORA_RANK, alpha=2.0 * LORA_RANK) if "lora" in objective else None
    cfg = registry.config_from_hf(transformers.MistralConfig(num_hidden_layers=layers, **MISTRAL_7B),
                                  param_dtype="bfloat16" if lora else "float32", dtype=DTYPE, remat_policy=remat,
                                  scan_layers=True, attention_impl="xla")
    model = Transformer(cfg) if lora is None else LoraModel(Transformer(cfg), lora)
    unit, lr, schedule = common.objective(objective.removesuffix("_lora"), LOGP_CHUNK)
    started, boxed = time.time(), abstract_params(cfg, reward_head=True)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed),
                          param_shardings(boxed, mesh))
    params, frozen = LoraModel.split({**params, LORA_KEY: init_adapters(params, lora, 0)}) if lora else (params, None)
    trainer = Trainer(mesh, (args.seq,))
    optimizer, state = trainer.init(params, TrainSpec(lr, args.pairs, 1, schedule, 0), 1000)
    lengths = np.full(2 * args.pairs, args.seq)  # only the shapes and dtypes of this batch are read
    host = unit.prepare(common.synthetic_batch(np.random.default_rng(0), lengths, 2), args.pairs // micro, "padded")
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=microbatch_sharding(mesh, v.ndim))
             for k, v in host.items()}
    compiled = trainer.lower(unit, model, optimizer, state, batch, nsteps=1000, abstract_frozen=frozen).compile()
    seconds, xla = time.time() - started, common.xla_figures(compiled)
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
    return {"objective": objective, "layers": layers, "params": count((params, frozen)), "remat_policy": remat,
            "micro_pairs": micro, "n_micro": args.pairs // micro, "pairs": args.pairs, "seq": args.seq,
            "mesh": dict(mesh.shape), "compute_dtype": DTYPE, "param_dtype": cfg.param_dtype,
            "lora_rank": lora.rank if lora else 0, "trainable_params": count(params),
            **{f"{k}_gib": xla[k] / 2**30 for k in ("argument", "output", "alias", "temp", "generated_code", "peak")},
            "total_with_code_gib": (xla["peak"] + xla["generated_code"]) / 2**30,
            "fits_budget": xla["peak"] / 2**30 <= BUDGET_GIB, "compile_seconds": round(seconds, 1)}


def per_layer_scaling(rows: list[dict]) -> list[dict]:
    """Least-squares peak = fixed + per_layer * layers, per (objective, remat, micro) measured at >= 2 depths."""
    groups, out = {}, []
    for r in rows:
        groups.setdefault((r["objective"], r["remat_policy"], r["micro_pairs"]), []).append(r)
    for (objective, remat, micro), rs in groups.items():
        if len(layers := sorted({r["layers"] for r in rs})) >= 2:
            slope, fixed = np.polyfit([r["layers"] for r in rs], [r["peak_gib"] for r in rs], 1)
            out.append({"objective": objective, "remat_policy": remat, "micro_pairs": micro, "layers": layers,
                        "per_layer_gib": float(slope), "fixed_gib": float(fixed),
                        "at_32_layers_gib": float(fixed + 32 * slope)})
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = common.parser(__doc__, devices=8, pairs=32, seq=512, micro="32", remat="full", layers="32",
                         objectives="rm,dpo").parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # before JAX loads
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    rows, ints = [], lambda text: [int(x) for x in text.split(",")]
    print(f"GiB per device on {args.devices} devices; fits: peak <= {BUDGET_GIB} GiB")
    common.table([], COLUMNS)
    for objective, layers, remat, micro in itertools.product(args.objectives.split(","), ints(args.layers),
                                                             args.remat.split(","), ints(args.micro)):
        rows.append(measure(args, objective.strip(), layers, remat.strip(), micro))
        common.table(rows[-1:], COLUMNS, header=False)
    if scaling := per_layer_scaling(rows):
        print("peak per device = fixed + per layer x layers, fitted on the depths measured:")
        common.table(scaling, "objective<9 remat_policy<13 micro_pairs>5 per_layer_gib>9.3f fixed_gib>6.2f "
                              "at_32_layers_gib>9.2f")
    report = common.header("memory_7b", argv) | {
        "jax": jax.__version__, "backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "model": "mistralai/Mistral-7B-v0.1 shape (random, abstract)", "budget_gib_per_device": BUDGET_GIB,
        "note": "XLA:CPU buffer assignment of the SPMD-partitioned per-device program on fake CPU devices; "
                "peak = argument + output - alias + temp", "results": rows, "per_layer_scaling": scaling}
    print(f"results: {common.write_result(common.result_path(args.out, 'memory_7b'), report)}")
    return report


if __name__ == "__main__":
    main()
