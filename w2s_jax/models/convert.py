"""Hugging Face checkpoints in and out: `from_pretrained`, `save_pretrained`, `init_params`.

Loading never executes code shipped with a checkpoint: weights come from safetensors (PyTorch `.bin` files
only through `torch.load(weights_only=True)`), configs through `AutoConfig` with `trust_remote_code` off unless
the caller turns it on. Each parameter is placed straight onto its mesh sharding, one leaf at a time, so no
device ever holds a full copy of a sharded weight and the host holds at most one stacked weight at once.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers
from jax.sharding import Mesh

from w2s_jax.models import registry, sharding
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.heads import Transformer, torch_linear_init
from w2s_jax.models.weights import IGNORED_SUFFIXES, expected_hf_names, get_leaf, iter_flax_leaves, params_to_hf, \
    set_leaf

log = logging.getLogger(__name__)

REWARD_HEAD_FILE = "reward_head.safetensors"
REWARD_HEAD_KEY = "weight"  # [1, D], the layout of torch.nn.Linear(D, 1, bias=False).weight
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


@dataclasses.dataclass
class Pretrained:
    """What `from_pretrained` returns: the Flax module, its config, its (sharded) params and the tokenizer."""

    model: Transformer
    config: ModelConfig
    params: dict
    tokenizer: Any
    source: str


# ---------------------------------------------------------------------------------------------------------------
# Abstract params and placement


def _dummy_inputs():
    return jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)


def abstract_params(cfg: ModelConfig, reward_head: bool = True):
    """Boxed ShapeDtypeStructs of every parameter (no memory, no compute)."""
    model = Transformer(cfg)
    ids, mask = _dummy_inputs()
    method = model.init_all if reward_head else model.__call__
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, mask, method=method))["params"]


def shardings_for(cfg: ModelConfig, mesh: Mesh | None, reward_head: bool = True):
    mesh = mesh or sharding.make_mesh(devices=jax.devices()[:1])
    return sharding.param_shardings(abstract_params(cfg, reward_head), mesh)


def init_params(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0, reward_head: bool = True) -> dict:
    """Random parameters, created directly in their shardings (jit with out_shardings)."""
    model = Transformer(cfg)
    ids, mask = _dummy_inputs()
    shardings = shardings_for(cfg, mesh, reward_head)
    method = model.init_all if reward_head else model.__call__

    def init(rng):
        return nn.unbox(model.init(rng, ids, mask, method=method)["params"])

    return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


# ---------------------------------------------------------------------------------------------------------------
# Reading Hugging Face tensors


class TensorSource:
    """Name -> numpy array over safetensors files (single, or sharded with an index), read lazily."""

    def __init__(self, directory: Path, prefixes: tuple[str, ...]):
        from safetensors import safe_open

        self.directory, self.prefixes, self._open = directory, prefixes, {}
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.exists():
            self.file_of = {k: directory / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        elif single.exists():
            with safe_open(single, "numpy") as f:
                self.file_of = {k: single for k in f.keys()}
        else:
            self.file_of = {}
        self._safe_open = safe_open
        self._torch_state = None
        if not self.file_of:
            self._load_torch_bin()

    def _load_torch_bin(self):
        bins = sorted(self.directory.glob("pytorch_model*.bin"))
        if not bins:
            raise FileNotFoundError(f"{self.directory}: no model.safetensors, model.safetensors.index.json or "
                                    f"pytorch_model*.bin")
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{self.directory} has only PyTorch .bin weights; install torch to read them "
                              f"(they are opened with weights_only=True) or convert them to safetensors") from e
        self._torch_state = {}
        for b in bins:
            state = torch.load(b, map_location="cpu", weights_only=True)
            self._torch_state.update({k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                                      for k, v in state.items()})
        self.file_of = {k: bins[0] for k in self._torch_state}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], prefixes: tuple[str, ...], origin: str):
        self = cls.__new__(cls)
        self.directory, self.prefixes, self._open = Path(origin), prefixes, {}
        self._torch_state, self.file_of = state, {k: Path(origin) for k in state}
        return self

    def resolve(self, name: str, absolute: bool) -> str:
        for prefix in ("",) if absolute else self.prefixes:
            if prefix + name in self.file_of:
                return prefix + name
        raise KeyError(f"{self.directory}: checkpoint has no tensor {name!r} "
                       f"(tried prefixes {list(self.prefixes) if not absolute else ['']})")

    def __call__(self, name: str, absolute: bool = False) -> np.ndarray:
        key = self.resolve(name, absolute)
        if self._torch_state is not None:
            return self._torch_state[key]
        path = self.file_of[key]
        if path not in self._open:
            self._open[path] = self._safe_open(path, "numpy")
        return self._open[path].get_tensor(key)

    def close(self):
        self._open.clear()


def _is_hf_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def resolve_source(name_or_dir: str, revision: str | None = None) -> Path:
    """A local Hugging Face directory as is; otherwise a hub id, downloaded (weights as safetensors only)."""
    if _is_hf_dir(name_or_dir):
        return Path(name_or_dir)
    if os.path.exists(name_or_dir):
        raise FileNotFoundError(f"{name_or_dir}: not a Hugging Face model directory (no config.json)")
    if name_or_dir.startswith((".", "/", "~")) or name_or_dir.count("/") > 1:
        raise FileNotFoundError(f"{name_or_dir}: no such model directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_dir, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated repo: one clear line
        raise FileNotFoundError(f"{name_or_dir}: not a local directory and the Hugging Face hub could not provide "
                                f"it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


# ---------------------------------------------------------------------------------------------------------------
# from_pretrained


def _load_tokenizer(directory: Path, trust_remote_code: bool, **kwargs):
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not kwargs and not any((directory / n).exists() for n in names):
        log.info("%s has no tokenizer files; returning tokenizer=None", directory)
        return None
    return transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code, **kwargs)


def _load_params(get_tensor: TensorSource, cfg: ModelConfig, mesh: Mesh | None, reward_head: bool, seed: int,
                 reward_head_file: Path | None) -> dict:
    fam = registry.family(cfg.family)
    boxed = abstract_params(cfg, reward_head)
    mesh = mesh or sharding.make_mesh(devices=jax.devices()[:1])
    shardings = sharding.param_shardings(boxed, mesh)
    shapes = nn.unbox(boxed)
    dtype = cfg.jnp_param_dtype
    params: dict = {}
    for path, array in iter_flax_leaves(get_tensor, fam.WEIGHT_RULES, cfg):
        full = ("backbone", *path)
        want = get_leaf(shapes, full)
        if tuple(array.shape) != tuple(want.shape):
            raise ValueError(f"{get_tensor.directory}: weight for {'/'.join(path)} has shape {array.shape}, the "
                             f"config implies {want.shape}")
        set_leaf(params, full, sharding.place(np.asarray(array, dtype=dtype), get_leaf(shardings, full)))
    used = {get_tensor.resolve(n, a) for n, a in expected_hf_names(fam.WEIGHT_RULES, cfg)}
    unused = [k for k in get_tensor.file_of if k not in used and not k.endswith(IGNORED_SUFFIXES)
              and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if unused:
        warnings.warn(f"{get_tensor.directory}: {len(unused)} checkpoint tensor(s) not used: {unused[:8]}")
    if reward_head:
        head_sharding = shardings["reward_head"]["kernel"]
        if reward_head_file is not None and reward_head_file.exists():
            from safetensors.numpy import load_file

            kernel = load_file(reward_head_file)[REWARD_HEAD_KEY].T  # [1, D] -> [D, 1]
            if kernel.shape != (cfg.output_dim, 1):
                raise ValueError(f"{reward_head_file}: reward head of shape {kernel.shape[::-1]}, expected "
                                 f"{(1, cfg.output_dim)}")
        else:
            kernel = np.asarray(torch_linear_init(jax.random.PRNGKey(seed), (cfg.output_dim, 1), jnp.float32))
        params["reward_head"] = {"kernel": sharding.place(np.asarray(kernel, dtype=dtype), head_sharding)}
    return params


def from_pretrained(name_or_dir: str, *, mesh: Mesh | None = None, reward_head: bool = False, seed: int = 0,
                    load_tokenizer: bool = True, revision: str | None = None, trust_remote_code: bool = False,
                    gguf_file: str | None = None, **runtime) -> Pretrained:
    """Load a Hugging Face causal LM (local directory, hub id, or a GGUF file) into our Flax module.

    `runtime` takes the model knobs: param_dtype, dtype, remat_policy, scan_layers, attention_impl.
    With `reward_head=True` the scalar head is read from `reward_head.safetensors` beside the weights when
    present, else initialised as PyTorch's Linear default with `seed`.
    """
    if gguf_file is not None or str(name_or_dir).endswith(".gguf"):
        return _from_gguf(name_or_dir, gguf_file, mesh=mesh, reward_head=reward_head, seed=seed,
                          load_tokenizer=load_tokenizer, **runtime)
    directory = resolve_source(str(name_or_dir), revision)
    hf_config = transformers.AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    cfg = registry.config_from_hf(hf_config, **runtime)
    source = TensorSource(directory, registry.family(cfg.family).HF_PREFIXES)
    try:
        params = _load_params(source, cfg, mesh, reward_head, seed, directory / REWARD_HEAD_FILE)
    finally:
        source.close()
    tokenizer = _load_tokenizer(directory, trust_remote_code) if load_tokenizer else None
    return Pretrained(Transformer(cfg), cfg, params, tokenizer, str(name_or_dir))


def _from_gguf(name_or_dir: str, gguf_file: str | None, *, load_tokenizer: bool, **kwargs) -> Pretrained:
    """GGUF through transformers' dequantiser (needs torch and the `gguf` package): an optional path."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("loading GGUF files needs torch and gguf: pip install -e .[gguf]") from e
    path = Path(name_or_dir)
    directory, gguf_file = (path.parent, path.name) if gguf_file is None else (path, gguf_file)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    cfg = registry.config_from_hf(hf_model.config, **{k: kwargs.pop(k) for k in list(kwargs)
                                                      if k not in ("mesh", "reward_head", "seed")})
    state = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
    del hf_model
    source = TensorSource.from_state_dict(state, registry.family(cfg.family).HF_PREFIXES, str(directory / gguf_file))
    params = _load_params(source, cfg, kwargs["mesh"], kwargs["reward_head"], kwargs["seed"], None)
    tokenizer = (transformers.AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
                 if load_tokenizer else None)
    return Pretrained(Transformer(cfg), cfg, params, tokenizer, str(directory / gguf_file))


# ---------------------------------------------------------------------------------------------------------------
# save_pretrained


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pretrained(directory: str | os.PathLike, cfg: ModelConfig, params: dict, tokenizer=None,
                    max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `config.json` + safetensors (sharded with an index above `max_shard_bytes`) that
    `transformers.AutoModelForCausalLM.from_pretrained` loads, and the reward head, if any, as
    `reward_head.safetensors` ({"weight": [1, D]}, a `torch.nn.Linear(D, 1, bias=False)` state)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fam = registry.family(cfg.family)
    backbone = jax.tree.map(_host, params["backbone"])
    tensors = dict(params_to_hf(backbone, fam.WEIGHT_RULES, cfg, prefix=fam.HF_PREFIXES[0]))
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors.items():
        if size and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = np.ascontiguousarray(array)
        size += array.nbytes
    if len(shards) == 1:
        _atomic_write(directory / "model.safetensors", lambda p: save_file(shards[0], p, metadata={"format": "pt"}))
    else:
        weight_map = {}
        for n, shard in enumerate(shards, 1):
            fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            _atomic_write(directory / fname, lambda p, s=shard: save_file(s, p, metadata={"format": "pt"}))
            weight_map.update({k: fname for k in shard})
        index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
        _atomic_write(directory / "model.safetensors.index.json",
                      lambda p: Path(p).write_text(json.dumps(index, indent=2)))
    if "reward_head" in params:
        weight = _host(params["reward_head"]["kernel"]).T.copy()
        _atomic_write(directory / REWARD_HEAD_FILE, lambda p: save_file({REWARD_HEAD_KEY: weight}, p))
    hf_config = registry.config_to_hf(cfg)
    hf_config.dtype = cfg.param_dtype
    _atomic_write(directory / "config.json", lambda p: Path(p).write_text(hf_config.to_json_string()))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
