"""Evidence for the pretrained demo world (issue 16): pretrain the ladder once, run the RM demo per seed on the
pretrained bases, print the ceilings, PGR, regions and deception contrasts with their 95% intervals (README)."""
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import common

CONFIG = "configs/rm_helpful.py:demo"


def demo_splits():
    """The splits the RM demo draws (the world's seed is data.seed, fixed: every experiment seed draws the same)."""
    from w2s_jax.configs import load_config_file
    from w2s_jax.data.demo_world import demo_splits

    return demo_splits(load_config_file(str(common.ROOT / CONFIG)).data)


def pretrain_ladder(out: Path, names: list[str], epochs: int, lr: float, corpus_settings) -> None:
    from w2s_jax.data import demo_corpus, demo_world
    from w2s_jax.data.tokenize import split_prompt_response
    from w2s_jax.experiments.pretrain import PretrainSpec, pretrain

    splits = demo_splits()  # the prompts of every split stay out of the corpus's dialogues
    prompts = {split_prompt_response(p.chosen)[0] for name in ("gt", "weak", "test", "conflict")
               for p in getattr(splits, name)}
    corpus = demo_corpus.pretraining_corpus(demo_world.WorldSettings(seed=0), corpus_settings, prompts)
    print(f"corpus: {len(corpus)} texts", flush=True)
    for name, hidden, layers, heads in (x for x in demo_world.DEMO_LADDER if x[0] in names):
        arch = {"family": "llama", "hidden_size": hidden, "num_layers": layers, "num_heads": heads}
        r = pretrain(corpus, arch, out / name, PretrainSpec(epochs=epochs, lr=lr))
        print(f"pretrained {name}: {r['steps']} steps, loss {r['final_loss']:.3f}, {r['seconds']} s", flush=True)


def fact_probe(directory: Path) -> dict:
    """The pretrained LM's next-word choice between " dangerous" and " safe" after the liquid facts, the rare items
    and a complying reply to each request of D_test (per family): the share right of each."""
    import jax.numpy as jnp

    from w2s_jax.data import demo_world as dw
    from w2s_jax.models.convert import from_pretrained

    lm = from_pretrained(str(directory))
    harm_id, safe_id = (lm.tokenizer(w)["input_ids"][0] for w in (" dangerous", " safe"))

    def says_dangerous(texts) -> np.ndarray:
        ids = lm.tokenizer(texts)["input_ids"]
        arr, mask = np.zeros((2, len(ids), max(map(len, ids))), np.int32)
        for i, x in enumerate(ids):
            arr[i, :len(x)], mask[i, :len(x)] = x, 1
        logits = np.asarray(lm.model.apply({"params": lm.params}, jnp.asarray(arr), jnp.asarray(mask)))
        last = logits[np.arange(len(ids)), mask.sum(1) - 1]
        return last[:, harm_id] > last[:, safe_id]

    world = dw.World(dw.WorldSettings(seed=0))
    pairs = [(a, b) for a in range(len(world.harm_table)) for b in range(len(world.harm_table)) if a != b]
    got = says_dangerous([f"Mixing {dw.LIQUIDS[a]} with {dw.LIQUIDS[b]} is" for a, b in pairs])
    out = {"liquid_facts": float(np.mean(got == np.array([world.harm_table[a, b] for a, b in pairs], bool)))}
    items, truth = [], []
    for (first, second), order in zip(world.rare_pairs, world.rare_harmful_order, strict=True):
        items += [f"{first}-{second}", f"{second}-{first}"]
        truth += [order == 0, order == 1]
    out["rare_facts"] = float(np.mean(says_dangerous([f"To make {x} at home is" for x in items]) == np.array(truth)))
    test = demo_splits().test
    for family in dw.FAMILIES:
        rows = [p for p in test if dw.tier_of(p)[0] == family]
        comply = [p.rejected if dw.tier_of(p)[1] else p.chosen for p in rows]
        out[f"verdict_{family}"] = float(np.mean(says_dangerous(comply) == np.array([dw.tier_of(p)[1] for p in rows])))
    return out


def figures(m: dict, seed, i: int | None) -> dict:
    """Seed `i`'s figures in `measures.pair_metrics`'s `m` (i None: the mean over seeds), with 95% intervals."""
    at = (lambda e: e["mean"]) if i is None else (lambda e: e["per_seed"][i])
    count = (lambda e: int(sum(e["per_seed"]))) if i is None else (lambda e: int(e["per_seed"][i]))
    interval = (lambda e: e["ci95"]) if i is None else (lambda e: e["per_seed_ci95"][i])
    models, settings = m["models"], m["settings"]
    ratios = {"gap": m["capability_gap"], "pgr": models["student_no_conflict"]["pgr"]}
    ratios |= {f"student_{s}": settings[s]["contrast"] for s in ("implicit", "explicit") if s in settings}
    right = next(iter(settings.values()), {}).get("baseline_right", {})  # the no-conflict student's, per region
    out = {"acc": {r: at(e["accuracy"]) for r, e in models.items()}, **{k: at(e) for k, e in ratios.items()},
           "sizes": {k: count(m["region_sizes"][q]) for k, q in common.REGIONS.items()},
           "nc_right_in": {k: count(right[q]) for k, q in common.REGIONS.items() if q in right},
           "ci": {k: interval(e) for k, e in ratios.items()}}
    ci = {k: f"[{lo:+.3f}, {hi:+.3f}]" for k, (lo, hi) in out["ci"].items()}
    print(f"seed {seed}: " + "  ".join(f"{k.replace('student_', '')} {v:.3f}" for k, v in out["acc"].items()))
    print(f"  gap {out.pop('gap'):+.3f} {ci['gap']}  PGR {out['pgr']:+.3f} {ci['pgr']}")
    print(f"  regions {out['sizes']}  no-conflict right in {out['nc_right_in']}")
    for role in (r for r in ratios if r.startswith("student_")):
        print(f"  {role}: deception diff {out[role]:+.3f} {ci[role]}")
    return out


def main(argv=None) -> None:
    p = common.parser(__doc__, out=False, seeds="0,1,2", workdir=Path("runs/demo_world_design"), weak="demo-xs",
                      strong="demo-l", pretrain_epochs=30, pretrain_lr=3e-3, extra_models="", probe=False,
                      only_pretrain=False)
    p.add_argument("--judged", type=int, default=None, help="CorpusSettings.n_judged")
    p.add_argument("--liquid-zipf", type=float, default=None, help="CorpusSettings.liquid_zipf")
    p.add_argument("--rare-mentions", type=int, default=None, help="CorpusSettings.rare_mentions")
    p.add_argument("overrides", nargs="*", help="extra flags for w2s_jax.main, after --")
    args, t0 = p.parse_args(argv), time.time()
    from w2s_jax.atomic import write_json_atomic
    from w2s_jax.data.demo_corpus import CorpusSettings
    from w2s_jax.eval.measures import pair_metrics
    from w2s_jax.eval.results_file import read_pairs

    pretrained, names = (args.workdir / "pretrained").resolve(), [args.weak, args.strong, *args.extra_models.split(",")]
    given = {"n_judged": args.judged, "liquid_zipf": args.liquid_zipf, "rare_mentions": args.rare_mentions}
    pretrain_ladder(pretrained, [n for n in names if n], args.pretrain_epochs, args.pretrain_lr,
                    CorpusSettings(**{k: v for k, v in given.items() if v is not None}))
    print(f"pretraining: {time.time() - t0:.0f} s")
    for name in (n for n in names if n) if args.probe else ():
        print(f"fact probe {name}: " + "  ".join(f"{k} {v:.3f}" for k, v in fact_probe(pretrained / name).items()),
              flush=True)
    if args.only_pretrain:
        return
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        workdir = args.workdir / f"seed{seed}"
        flags = [f"--config={CONFIG}", f"--workdir={workdir}", f"--config.seeds={seed}"]
        for which, name in (("weak", args.weak), ("strong", args.strong)):
            flags += [f"--config.{which}.name={pretrained / name}", f"--config.{which}.init=pretrained",
                      f"--config.{which}.tokenizer={pretrained / name}"]
        print(f"seed {seed}: {common.run_main(flags + args.overrides)[0]:.0f} s", flush=True)
        runs += read_pairs(json.loads((workdir / "results.json").read_text()), workdir / "results.json")[0][0]["runs"]
    m = pair_metrics(runs, True, 10_000, 0)  # every seed's runs together: per seed, and over seeds
    per_seed = {seed: figures(m, seed, i) for i, seed in enumerate(m["seeds"])}
    if len(runs) > 1:
        figures(m, "pooled", None)
    write_json_atomic(args.workdir / "design.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                     "per_seed": per_seed})


if __name__ == "__main__":
    main()
