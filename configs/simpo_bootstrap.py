"""SimPO weak-to-strong through an intermediate model (original-spec §5).

`paper`: gpt2-large -> opt-2.7b -> strong (the paper's strong model is Mistral-7B: `--config.strong.name=...`);
the intermediate learns from the weak labels of D_weak, labels D_gt, and the strong student learns from those.
Compared with the direct weak -> strong students in the same results.json. `demo`: tiny models pretrained on the
demo world.
"""
from w2s_jax.configs import model_spec, preference_config


def get_config(preset: str = "paper"):
    c = preference_config("simpo", preset, __file__)
    c.students = "no_conflict,implicit,bootstrap,bootstrap_implicit"
    if preset == "demo":
        from w2s_jax.data.demo_world import ladder_specs

        middle = ladder_specs()[len(ladder_specs()) // 2]  # between the demo weak and strong
        c.intermediate = model_spec(init=c.weak.init, tokenizer=c.weak.tokenizer, **middle)
    else:
        c.weak.name = "gpt2-large"
        c.intermediate = model_spec("facebook/opt-2.7b")
        c.strong.name = "mistralai/Mistral-7B-v0.1"
    return c
