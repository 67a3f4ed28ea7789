"""DPO weak-to-strong with a Mistral-7B strong student trained through LoRA adapters, sized for one 80 GB GPU.

The `dpo_helpful` recipe (SFT 1 epoch, then DPO 3 epochs, lr 1e-6 warmup-then-constant, beta 0.1, batch 32,
max_len 512) with weak gpt2 -> strong mistralai/Mistral-7B-v0.1, run the way it fits one device: the base weights
frozen in bf16 (14.5 GB), rank-16 adapters (alpha 32) on q/k/v/o in fp32 with Adam, bf16 compute, full remat of
each decoder layer, 8 pairs per microbatch (same update: the step accumulates sums), scoring sharded.

    python -m w2s_jax.main --config=configs/po_mistral7b_lora.py --workdir=runs/m7b_lora
    python -m w2s_jax.main --config=configs/po_mistral7b_lora.py:demo --workdir=runs/lora_demo  # offline, CPU

Presets: `paper` (the default, above) and `demo` (the `dpo_helpful` demo world's tiny models with rank-4 adapters
on the same projections: the LoRA code path at CPU size).

`benchmarks/memory_7b.py --devices=1 --objectives=dpo_lora --micro=8` measures this step's peak (README,
"Models" / LoRA). With LoRA the learning rate that suits full fine-tuning (1e-6) is usually too small; the preset
keeps the paper's value so that only the parameterisation differs, raise `po.lr` deliberately.
"""
from w2s_jax.configs import check_preset, model_spec, preference_config

MISTRAL_7B = "mistralai/Mistral-7B-v0.1"


def get_config(preset: str = "paper"):
    check_preset(preset, ("paper", "demo"), __file__)
    c = preference_config("dpo", preset, __file__)
    if preset == "demo":
        c.model.lora.update(rank=4, alpha=8.0)
        return c
    c.weak = model_spec("gpt2")
    c.strong = model_spec(MISTRAL_7B)
    c.model.update(param_dtype="bfloat16", dtype="bfloat16", remat_policy="full", scan_layers=True,
                   attention_impl="auto")
    c.model.lora.update(rank=16, alpha=32.0, dropout=0.0, targets="")
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.train.micro_batch_size = 8
    c.train.eval_batch_size = 8
    c.eval.mode = "sharded"
    return c
