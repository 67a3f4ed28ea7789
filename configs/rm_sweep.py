"""Reward-modelling weak-to-strong over a capability ladder: one weak model, strong models of growing size.

`paper`: gpt2 -> gpt2-medium / gpt2-large / gpt2-xl on the paper's data. `shapes`: the same ladder as random-init
models of those shapes with the hub's GPT-2 tokenizer (`python -m benchmarks.demo_time --sweep --tokenizer DIR` runs
it with a local one): for timing a machine, not for findings. `demo`: the demo world's ladder of tiny models, each
pretrained on the world's corpus (demo-xs -> demo-s / demo-m / demo-l), offline. `real` and `real_paper`: the real
ladder, offline (`w2s_jax.configs.REAL_LADDER`): SmolLM2-135M cut to its first 4 layers (weak) -> its first 8 / 16
layers / the whole model / Gemma-3-270m, on the shared HH pairs at the sizes of `rm_helpful.py`'s presets of the
same names (`real`: about four times `rm_helpful.py:real`'s time on 2 cores). A base or a model several pairs
need (here the weak ceiling) is built once; results.json, report.md and plots/ compare the pairs (deception score vs
capability gap).

    python -m w2s_jax.main --config=configs/rm_sweep.py:demo --workdir=runs/sweep
"""
from ml_collections import ConfigDict

from w2s_jax.configs import REAL_LADDER, REAL_PRESETS, check_preset, model_spec, real_spec, reward_model_config

PAPER_LADDER = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# (hidden size, layers, heads) of the GPT-2 checkpoints
GPT2_SHAPES = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20),
               "gpt2-xl": (1600, 48, 25)}


def ladder(names_and_specs) -> ConfigDict:
    return ConfigDict({name: spec for name, spec in names_and_specs})


def get_config(preset: str = "paper") -> ConfigDict:
    check_preset(preset, ("paper", "shapes", "demo", *REAL_PRESETS), __file__)
    c = reward_model_config("paper" if preset == "shapes" else preset, __file__)
    if preset == "demo":
        from w2s_jax.data.demo_world import ladder_specs

        specs = [(s["name"], model_spec(init=c.weak.init, tokenizer=c.weak.tokenizer, **s))
                 for s in ladder_specs()]
    elif preset in REAL_PRESETS:
        specs = [(name, real_spec(name)) for name, _, _ in REAL_LADDER]
    elif preset == "shapes":
        specs = [(name, model_spec(name, init="random", tokenizer="gpt2", family="gpt2", hidden_size=h,
                                   num_layers=n, num_heads=a))
                 for name, (h, n, a) in GPT2_SHAPES.items()]
    else:
        specs = [(name, model_spec(name)) for name in PAPER_LADDER]
    c.sweep.models = ladder(specs)
    names = [name for name, _ in specs]
    c.sweep.pairs = ",".join(f"{names[0]}->{strong}" for strong in names[1:])
    c.weak, c.strong = c.sweep.models[names[0]], c.sweep.models[names[1]]  # what a single run would use
    return c
