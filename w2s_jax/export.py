"""Export a trained model of a run as a `transformers` model directory, with its tokenizer and a model card.

    python -m w2s_jax.export --workdir=DIR --role=ROLE [--seed=S] [--pair=NAME] --out=OUT [--merge | --adapter]

A reward model becomes an `AutoModelForSequenceClassification` with one label (the family's `score` head, the
layout TRL's reward trainer saves: `models/seqcls.py`); a policy (SFT, DPO, SimPO) an `AutoModelForCausalLM`.
The tokenizer the model was trained with goes beside it (a BPE vocabulary trained by the run included; a
tokenizer without a pad token gets its EOS as one, so batches pad the way the classifier reads them). README.md
is a model card: the experiment, role, seed, base model, data, labels, hyper-parameters, test accuracy, the
run's findings and the fingerprint. A model trained with LoRA (`model.lora`) is written merged (`--merge`, the
default: W + scale * A @ B, a plain `transformers` directory) or, for a policy, as a `peft` adapter directory
(`--adapter`: adapter_config.json + adapter_model.safetensors for `peft.PeftModel.from_pretrained` on the base
model the card names). Bad input (no such role, seed or work directory; an output directory that is
not empty) stops with one line and exit status 2; nothing is written then, and the output directory appears
only once complete.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from w2s_jax.atomic import write_atomic, write_json_atomic


def model_card(trained, out_kind: str) -> str:
    spec, entry, cfg = trained.spec, trained.entry, trained.run_config
    data = cfg.get("data", {})
    source = data.get("source", "files")
    where = data.get("dir") if source not in ("demo", "hub") else source
    as_what = ("`AutoModelForSequenceClassification` (num_labels=1, `score` head)" if out_kind == "reward_model"
               else "`AutoModelForCausalLM`")
    lines = [f"# {trained.role} (seed {trained.seed}) from a w2s_jax {trained.experiment} run", "",
             f"Exported by `python -m w2s_jax.export` from `{trained.workdir}` as {as_what}.",
             "", "| field | value |", "|---|---|"]
    model = spec["model"]
    rows = [("experiment", trained.experiment), ("role", trained.role), ("seed", trained.seed),
            ("base model", f"{model.get('name')} ({model.get('init', 'pretrained')})"),
            ("training stage", spec["stage"]), ("labels", spec["labels"]), ("training pairs", spec["n_train"]),
            ("data", f"{source}: {where}"), ("training data sha256", spec["data"]),
            ("lr / epochs / batch / schedule", f"{spec['lr']} / {spec['epochs']} / {spec['batch_size']} / "
                                               f"{spec['schedule']}"),
            ("objective", json.dumps(spec["objective"], sort_keys=True)), ("max_len", spec["max_len"]),
            ("test accuracy", entry.get("test_accuracy")), ("parameters", entry.get("n_params")),
            ("fingerprint", entry.get("fingerprint"))]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    findings = _findings(trained)
    if findings:
        lines += ["", "## The run's findings", ""] + [f"- {f}" for f in findings]
    lines += ["", "Scores: a reward model's score is its logit at the last token that is not `pad_token_id` "
              "(right padding); texts are HH-format dialogues (`\\n\\nHuman: ... \\n\\nAssistant: ...`), "
              f"left-truncated to {spec['max_len']} tokens in training.", ""]
    return "\n".join(lines)


def _findings(trained) -> list[str]:
    try:
        results = json.loads((trained.workdir / "results.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for p in (results.get("metrics") or {}).get("pairs", []):
        out += [f"{p.get('name')}: {f['text']}" for f in p.get("findings", []) if isinstance(f, dict)]
    return out


def export(workdir: str, role: str, out: str, seed: int | None = None, pair: str | None = None,
           adapter: bool = False) -> Path:
    from w2s_jax.api import load_trained

    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: output directory is not empty")
    trained = load_trained(workdir, role, seed=seed, pair=pair)
    if adapter and not trained.spec.get("lora"):
        raise ValueError(f"--adapter: {role} was trained without LoRA (model.lora.rank = 0); export it merged")
    if adapter and trained.kind != "policy":
        raise ValueError(f"--adapter: {role} is a reward model; only policies export as a peft adapter (use --merge)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    final, out_dir = out_dir, Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        _write(trained, out_dir, workdir, role, adapter)
        if final.exists():
            final.rmdir()  # empty, checked above
        os.replace(out_dir, final)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return final


def _write(trained, out_dir: Path, workdir: str, role: str, adapter: bool = False) -> None:
    from w2s_jax.models.convert import save_pretrained
    from w2s_jax.models.lora import LoraConfig, merge
    from w2s_jax.models.lora_export import save_peft_adapter
    from w2s_jax.models.seqcls import save_reward_model

    tok = trained.tokenizer
    if tok is not None and tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    lora = LoraConfig.from_config(trained.spec.get("lora"))
    if adapter:
        save_peft_adapter(out_dir, trained.config, trained.params, lora,
                          base_model=trained.spec["model"].get("name", ""))
        if tok is not None:
            tok.save_pretrained(out_dir)
    elif trained.kind == "reward_model":
        save_reward_model(out_dir, trained.config, merge(trained.params, lora), tok)
    else:
        params = {k: v for k, v in merge(trained.params, lora).items() if k != "reward_head"}
        save_pretrained(out_dir, trained.config, params, tok)
    write_atomic(out_dir / "README.md", lambda f: f.write(model_card(trained, trained.kind)))
    write_json_atomic(out_dir / "w2s_export.json", {"role": role, "seed": trained.seed, "kind": trained.kind,
                                                    "workdir": str(Path(workdir).resolve()),
                                                    "fingerprint": trained.entry.get("fingerprint"),
                                                    "spec": trained.spec})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_jax.export", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the run's work directory (holds results.json)")
    parser.add_argument("--role", required=True, help="e.g. strong_ceiling, student_implicit")
    parser.add_argument("--seed", type=int, default=None, help="which seed's model (default: the run's first)")
    parser.add_argument("--pair", default=None, help="a sweep's weak->strong pair name")
    parser.add_argument("--out", required=True, help="new (or empty) output directory")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--merge", dest="adapter", action="store_false", help="LoRA: merged weights (the default)")
    how.add_argument("--adapter", dest="adapter", action="store_true", help="LoRA: a peft adapter directory")
    parser.set_defaults(adapter=False)  # store_false would otherwise make True the default
    args = parser.parse_args(argv)
    try:
        out = export(args.workdir, args.role, args.out, args.seed, args.pair, args.adapter)
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(f"export: {args.role} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
