"""Load a model trained by a run from its work directory, and score texts or pairs with it.

    from w2s_jax.api import load_trained

    rm = load_trained("runs/demo", role="student_implicit", seed=0)   # reward model or policy
    rm.kind                                 # "reward_model" or "policy"
    rm.rewards(["\\n\\nHuman: ...\\n\\nAssistant: ..."])          # reward models: r(x) per text
    rm.score_pairs(chosen_texts, rejected_texts)               # the run's margin for `chosen` per pair
    rm.logps(texts)                         # policies: (summed, per-token mean) response log-probs per text

`score_pairs` is what results.json's `test_logits` hold when `chosen` is side A: r(chosen) - r(rejected) for
reward models; for policies the run's preference metric (DPO: summed log-prob difference; SimPO: per-token mean
difference). Texts are tokenized as the run did (left truncation to the model's `max_len`; policies split prompt
and response at the last "\\n\\nAssistant:").

The model is found through results.json (`runs[].models[].checkpoint`; a sweep's pair by `pair=`), rebuilt from
its `model.json` spec (the base model, or the random-init architecture) and restored from its final checkpoint,
whose checksum is checked; a pretrained base model must still be reachable (its directory or the hub cache), since
its config gives the architecture. The tokenizer is the one kept in `<store>/tokenizers/<fingerprint>/`
(`models/tokenizer_store.py`), else the model spec's own (a Hugging Face tokenizer by name or directory).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.data.batches import PairDataset, bucket_lengths, num_train_steps
from w2s_jax.data.tokenize import tokenize_prompt_response, tokenize_texts, tokenizer_fingerprint
from w2s_jax.eval.inference import score_pairs as _score_reward_pairs
from w2s_jax.eval.inference import score_policy_pairs
from w2s_jax.eval.results_file import load_results
from w2s_jax.models.build import build_model
from w2s_jax.models.lora import join_params, split_params
from w2s_jax.models.heads import Transformer
from w2s_jax.models.sharding import make_mesh
from w2s_jax.models.tokenizer_store import load_saved_tokenizer
from w2s_jax.train import step as step_lib
from w2s_jax.train.checkpoint import ModelStore, abstract_of
from w2s_jax.train.optim import head_only, make_optimizer

__all__ = ["LoadError", "TrainedModel", "load_trained", "find_entry"]
POLICY_STAGES = ("sft", "dpo", "simpo")


class LoadError(ValueError):
    """The work directory does not hold the asked-for model; the message says what is there."""


@dataclasses.dataclass
class TrainedModel:
    role: str
    seed: int
    workdir: Path
    experiment: str
    entry: dict  # the model's results.json entry (fingerprint, checkpoint, test_accuracy, ...)
    spec: dict  # its model.json spec (base model, data hash, labels origin, hyper-parameters)
    config: Any  # models.config.ModelConfig
    model: Transformer
    params: Any
    tokenizer: Any
    run_config: dict  # results.json's config
    mesh: Any

    @property
    def kind(self) -> str:
        return "policy" if self.spec["stage"] in POLICY_STAGES else "reward_model"

    @property
    def max_len(self) -> int:
        return int(self.spec["max_len"])

    def _buckets(self):
        data = self.run_config.get("data", {})
        return bucket_lengths(self.max_len, int(data.get("bucket_multiple", 64)), int(data.get("max_buckets", 8)))

    def _batch_size(self) -> int:
        return int(self.run_config.get("train", {}).get("eval_batch_size") or 32)

    def rewards(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """r(x) [N] of each full text (reward models)."""
        self._need("reward_model", "rewards")
        ids = tokenize_texts(list(texts), self.tokenizer, self.max_len)
        out, size = [], batch_size or self._batch_size()
        fn = jax.jit(lambda p, i, m: self.model.apply({"params": p}, i, m, method=self.model.reward))
        buckets = self._buckets()
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            width = next(b for b in buckets if b >= max(len(x) for x in chunk))
            arr, mask = np.zeros((size, width), np.int32), np.zeros((size, width), np.int32)
            for k, x in enumerate(chunk):
                arr[k, :len(x)], mask[k, :len(x)] = x, 1
            mask[len(chunk):, 0] = 1  # filler rows: one token, never read
            out.append(np.asarray(fn(self.params, jnp.asarray(arr), jnp.asarray(mask)))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def score_pairs(self, chosen: Sequence[str], rejected: Sequence[str], batch_size: int | None = None
                    ) -> np.ndarray:
        """The run's margin for `chosen` over `rejected` per pair (see the module docstring)."""
        if len(chosen) != len(rejected):
            raise ValueError(f"score_pairs: {len(chosen)} chosen texts but {len(rejected)} rejected")
        common = dict(batch_size=batch_size or self._batch_size(), mesh=self.mesh, buckets=self._buckets(),
                      desc=f"{self.role}: score")
        if self.kind == "reward_model":
            ids = tokenize_texts(list(chosen) + list(rejected), self.tokenizer, self.max_len)
            data = PairDataset(ids[:len(chosen)], ids[len(chosen):])
            return _score_reward_pairs(self.model, self.params, data, **common)
        s = self._policy_scores(chosen, rejected, common)
        return s[0] - s[1] if self.experiment == "dpo" else s[2] - s[3]

    def logps(self, texts: Sequence[str], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(summed, per-token mean) log-probs of each text's response (policies)."""
        self._need("policy", "logps")
        common = dict(batch_size=batch_size or self._batch_size(), mesh=self.mesh, buckets=self._buckets(),
                      desc=f"{self.role}: log-probs")
        s = self._policy_scores(texts, texts, common)
        return s[0], s[2]

    def _policy_scores(self, chosen, rejected, common) -> np.ndarray:
        c_ids, c_mask = tokenize_prompt_response(list(chosen), self.tokenizer, self.max_len)
        r_ids, r_mask = tokenize_prompt_response(list(rejected), self.tokenizer, self.max_len)
        chunk = self.run_config.get("po", {}).get("logp_chunk") or None
        return score_policy_pairs(self.model, self.params, PairDataset(c_ids, r_ids, c_mask, r_mask),
                                  chunk_size=chunk, **common)

    def _need(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"{what}: {self.role} is a {self.kind} (stage {self.spec['stage']}), not a {kind}")


def find_entry(results: dict, role: str, seed: int | None, pair: str | None, path: Path) -> tuple[dict, int, str]:
    """(results.json entry of `role`, its seed, the directory its `checkpoint` is relative to, relative to the
    work directory: a sweep pair's `workdir`); LoadError names what the file holds."""
    holders = results.get("pairs") or [results]
    if results.get("pairs"):
        names = [p.get("name") for p in holders]
        if pair is None and len(holders) > 1:
            raise LoadError(f"{path}: a sweep of {len(holders)} pairs {names}; name one with pair=/--pair")
        if pair is not None:
            if pair not in names:
                raise LoadError(f"{path}: no pair {pair!r}; pairs: {names}")
            holders = [holders[names.index(pair)]]
    holder = holders[0]
    runs = holder.get("runs") or [{"seed": results.get("config", {}).get("seed", 0), "models": holder.get("models")}]
    seeds = [r.get("seed") for r in runs]
    if seed is None:
        run = runs[0]
    elif seed in seeds:
        run = runs[seeds.index(seed)]
    else:
        raise LoadError(f"{path}: no seed {seed}; seeds: {seeds}")
    roles = [m.get("role") for m in run.get("models") or []]
    if role not in roles:
        raise LoadError(f"{path}: seed {run.get('seed')} has no role {role!r}; roles: {roles}")
    return run["models"][roles.index(role)], int(run.get("seed", 0)), str(holder.get("workdir") or ".")


def _tokenizer(spec: dict, root: Path, trust_remote_code: bool):
    saved = load_saved_tokenizer(root, spec["tokenizer"])
    if saved is not None:
        return saved
    model = spec["model"]
    name = model.get("tokenizer") or model.get("name")
    if str(name).startswith("bpe:"):
        raise LoadError(f"{root}: the tokenizer this model was trained with ({name}, fingerprint "
                        f"{spec['tokenizer'][:16]}) was not kept under {root / 'tokenizers'}; a run of this version "
                        "keeps it")
    from w2s_jax.data.loading import load_tokenizer

    tok = load_tokenizer(SimpleNamespace(tokenizer=model.get("tokenizer"), name=model.get("name")), [],
                         trust_remote_code)
    if tokenizer_fingerprint(tok) != spec["tokenizer"]:
        raise LoadError(f"{name}: its tokenizer today differs from the one the model was trained with "
                        f"(fingerprint {tokenizer_fingerprint(tok)[:16]} != {spec['tokenizer'][:16]})")
    return tok


def load_trained(workdir: str | os.PathLike, role: str, seed: int | None = None, pair: str | None = None,
                 mesh=None) -> TrainedModel:
    """The trained model of `role` (and `seed`, default the run's first; `pair` in a sweep) from `workdir`."""
    workdir = Path(workdir)
    path = workdir / "results.json"
    try:
        results = load_results(path)
    except ValueError as e:
        raise LoadError(str(e)) from None
    entry, seed, base = find_entry(results, role, seed, pair, path)
    directory = (workdir / base / entry["checkpoint"]).resolve()
    try:
        meta = json.loads((directory / "model.json").read_text())
    except (OSError, ValueError) as e:
        raise LoadError(f"{directory / 'model.json'}: not readable ({type(e).__name__}: {e})") from None
    if meta.get("status") != "complete":
        raise LoadError(f"{directory}: model.json says {meta.get('status')!r}, not complete")
    spec, config = meta["spec"], results.get("config", {})
    trust = bool(config.get("model", {}).get("trust_remote_code", False))
    mesh = mesh or make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
    tokenizer = _tokenizer(spec, directory.parent.parent, trust)
    runtime = {"param_dtype": spec["param_dtype"], "dtype": spec["dtype"],
               "reward_index": spec.get("options", {}).get("reward_index", "last")}
    base = build_model(spec["model"], what=role, mesh=mesh, seed=spec["seed"], max_len=spec["max_len"],
                       runtime=runtime, tokenizer=tokenizer, trust_remote_code=trust, lora=spec.get("lora"))
    trainable, frozen = split_params(base.model, base.params)  # LoRA: the checkpoint holds adapters + head only
    params = join_params(base.model, _restore(directory, meta, spec, trainable), frozen)
    return TrainedModel(role, seed, workdir, results.get("experiment", ""), entry, spec, base.config, base.model,
                        params, tokenizer, config, mesh)


def _restore(directory: Path, meta: dict, spec: dict, params):
    name = directory.name.rpartition("-")[0]
    store = ModelStore(directory.parent.parent, name, spec)
    if store.directory.resolve() != directory or store.fingerprint != meta.get("fingerprint"):
        raise LoadError(f"{directory}: its model.json spec does not give its own fingerprint")
    steps = meta.get("steps")
    try:  # restore, not restore_verified: loading never moves a run's checkpoints aside
        if store.final_kind == "params":
            return store.restore({"params": abstract_of(params)}, steps)[1]["params"]
        nsteps = num_train_steps(spec["n_train"], spec["epochs"], spec["batch_size"])
        options = spec.get("options", {})  # the optimizer's state has the shape the run's switches gave it
        optimizer = make_optimizer(spec["lr"], nsteps, spec["schedule"], optim=options.get("optim", "adam"))
        state = step_lib.init_state(params, head_only(optimizer) if options.get("head_only") else optimizer)
        return store.restore(abstract_of(state), steps)[1].params
    except Exception as e:  # orbax raises many types for a missing, truncated or changed checkpoint
        raise LoadError(f"{directory}: its final checkpoint (step {steps}) does not restore "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})") from None
    finally:
        store.close()
