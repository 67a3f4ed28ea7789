"""Reward modelling with a Mistral-7B strong student (the paper's largest student): weak gpt2 -> strong
mistralai/Mistral-7B-v0.1, the `rm_helpful` recipe (4000/4000/4000 pairs, lr 1e-5 cosine to 0, batch 32,
max_len 512, 1 epoch, helpfulness conflict) run the way a 7B model fits: bf16 compute over fp32 master weights,
full rematerialisation of each decoder layer, layers scanned, FSDP over every device, scoring sharded.

    launch/local.sh --config=configs/rm_mistral7b.py --workdir=runs/mistral7b              # one host, its GPUs
    sbatch launch/slurm.sbatch --config=configs/rm_mistral7b.py --workdir=/shared/runs/m7b  # several hosts

Preset `paper` (the default). `benchmarks/memory_7b.py` measures what this step needs per device at 32 pairs x 512
tokens: 18.6 GiB on 8 devices (95 GiB without remat), 36.6 GiB on 4 (the original's FSDP run). With full remat,
splitting the batch (`train.micro_batch_size`) does not lower it further; it does with `remat_policy=dots_no_batch`
(faster: 38 GiB on 8 devices whole, 24 GiB at 8 pairs per microbatch).
"""
from ml_collections import ConfigDict

from w2s_jax.configs import check_preset, model_spec, reward_model_config

MISTRAL_7B = "mistralai/Mistral-7B-v0.1"


def at_7b_scale(c: ConfigDict) -> ConfigDict:
    """Runtime knobs for a 7B model (none of them changes what is trained: not part of the fingerprint)."""
    c.model.update(param_dtype="float32", dtype="bfloat16", remat_policy="full", scan_layers=True,
                   attention_impl="auto")
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.eval.mode = "sharded"  # a replicated fp32 copy per device (pmap scoring) would not fit next to training
    c.train.eval_batch_size = 32
    return c


def get_config(preset: str = "paper") -> ConfigDict:
    check_preset(preset, ("paper",), __file__)
    c = reward_model_config("paper", __file__)
    c.weak = model_spec("gpt2")
    c.strong = model_spec(MISTRAL_7B)
    return at_7b_scale(c)
