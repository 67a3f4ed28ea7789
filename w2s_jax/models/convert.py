"""Hugging Face checkpoints in and out: `from_pretrained`, `save_pretrained`, `init_params`.

Loading never executes code shipped with a checkpoint: weights come from safetensors (PyTorch `.bin` files
only through `torch.load(weights_only=True)`), configs through `AutoConfig` with `trust_remote_code` off unless
the caller turns it on. Each parameter is placed straight onto its mesh sharding, one leaf at a time, so no
device ever holds a full copy of a sharded weight and the host holds at most one stacked weight at once.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers
from jax.sharding import Mesh

from w2s_jax.models import packaged, registry, seqcls, sharding
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.files import ModelFileError, TensorSource, _atomic_write, load_hf_config, one_line_cause, \
    write_safetensors  # noqa: F401  (re-exported: callers import the writers from here)
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
    # what was done to the weights on the way in (GGUF dequantisation, layer truncation), for results.json
    provenance: dict = dataclasses.field(default_factory=dict)


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


def _is_hf_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def resolve_source(name_or_dir: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None
                   ) -> Path:
    """A local Hugging Face directory as is; a GGUF spec (`gguf:<package>`, a `.gguf` path) as its dequantised
    safetensors directory under `cache_dir` (see `packaged.py`); otherwise a hub id, downloaded (weights as
    safetensors only)."""
    if packaged.is_gguf(name_or_dir):
        return packaged.dequantised(name_or_dir, cache_dir)[0]
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


def truncated_config(cfg: ModelConfig, num_layers: int | None, what: str) -> ModelConfig:
    """The first `num_layers` layers of `cfg` (None: all of them)."""
    if num_layers is None or num_layers == cfg.num_layers:
        return cfg
    if not isinstance(num_layers, int) or not 1 <= num_layers <= cfg.num_layers:
        raise ValueError(f"{what}: num_layers={num_layers!r} must be an integer in 1..{cfg.num_layers}, the "
                         f"checkpoint's layer count")
    return cfg.replace(num_layers=num_layers, layer_types=cfg.layer_types[:num_layers])


# ---------------------------------------------------------------------------------------------------------------
# from_pretrained


def _load_tokenizer(directory: Path, trust_remote_code: bool, **kwargs):
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not kwargs and not any((directory / n).exists() for n in names):
        log.info("%s has no tokenizer files; returning tokenizer=None", directory)
        return None
    return transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code, **kwargs)


def _dropped_layer_names(names, kept: int, full_layers: int | None) -> set[str]:
    """Tensors of layers kept..full_layers-1 (left out on purpose by a truncated load)."""
    if not full_layers or full_layers <= kept:
        return set()
    pattern = re.compile(r"(^|\.)(layers|h)\.(\d+)\.")
    return {k for k in names if (m := pattern.search(k)) and kept <= int(m.group(3)) < full_layers}


def _load_params(get_tensor: TensorSource, cfg: ModelConfig, mesh: Mesh | None, reward_head: bool, seed: int,
                 reward_head_file: Path | None, full_layers: int | None = None) -> dict:
    fam = registry.family(cfg.family)
    boxed = abstract_params(cfg, reward_head)
    mesh = mesh or sharding.make_mesh(devices=jax.devices()[:1])
    shardings = sharding.param_shardings(boxed, mesh)
    shapes = nn.unbox(boxed)
    dtype = cfg.jnp_param_dtype
    params: dict = {}
    try:
        leaves = iter_flax_leaves(get_tensor, fam.WEIGHT_RULES, cfg)
        for path, array in leaves:
            full = ("backbone", *path)
            want = get_leaf(shapes, full)
            if tuple(array.shape) != tuple(want.shape):
                raise ModelFileError(f"{get_tensor.directory}: weight for {'/'.join(path)} has shape {array.shape},"
                                     f" the config implies {want.shape}")
            set_leaf(params, full, sharding.place(np.asarray(array, dtype=dtype), get_leaf(shardings, full)))
    except (ModelFileError, FileNotFoundError):
        raise
    except Exception as e:  # a per-layer tensor whose shape does not fit the config cannot even be stacked
        raise ModelFileError(f"{get_tensor.directory}: weights do not fit config.json ({one_line_cause(e)})") from None
    used = {get_tensor.resolve(n, a) for n, a in expected_hf_names(fam.WEIGHT_RULES, cfg)}
    dropped = _dropped_layer_names(get_tensor.file_of, cfg.num_layers, full_layers)
    unused = [k for k in get_tensor.file_of if k not in used and not k.endswith(IGNORED_SUFFIXES)
              and not (cfg.tie_embeddings and k == "lm_head.weight") and k not in dropped
              and not (reward_head and k == seqcls.SCORE_KEY)]
    if unused:
        warnings.warn(f"{get_tensor.directory}: {len(unused)} checkpoint tensor(s) not used: {unused[:8]}")
    if reward_head:
        head_sharding = shardings["reward_head"]["kernel"]
        if reward_head_file is not None and reward_head_file.exists():
            from safetensors.numpy import load_file

            try:
                kernel = load_file(reward_head_file)[REWARD_HEAD_KEY].T  # [1, D] -> [D, 1]
            except Exception as e:
                raise ModelFileError(f"{reward_head_file}: not a reward head file ({one_line_cause(e)})") from None
            if kernel.shape != (cfg.output_dim, 1):
                raise ModelFileError(f"{reward_head_file}: reward head of shape {kernel.shape[::-1]}, expected "
                                 f"{(1, cfg.output_dim)}")
        elif seqcls.SCORE_KEY in get_tensor.file_of:  # a transformers / TRL sequence-classification checkpoint
            kernel = seqcls.score_kernel(get_tensor, cfg)
        else:
            kernel = np.asarray(torch_linear_init(jax.random.PRNGKey(seed), (cfg.output_dim, 1), jnp.float32))
        params["reward_head"] = {"kernel": sharding.place(np.asarray(kernel, dtype=dtype), head_sharding)}
    return params


def from_pretrained(name_or_dir: str, *, mesh: Mesh | None = None, reward_head: bool = False, seed: int = 0,
                    load_tokenizer: bool = True, revision: str | None = None, trust_remote_code: bool = False,
                    gguf_file: str | None = None, cache_dir: str | os.PathLike | None = None,
                    num_layers: int | None = None, **runtime) -> Pretrained:
    """Load a Hugging Face causal LM (local directory, hub id, or a GGUF model) into our Flax module.

    `runtime` takes the model knobs: param_dtype, dtype, remat_policy, scan_layers, attention_impl.
    With `reward_head=True` the scalar head is read from `reward_head.safetensors` beside the weights when
    present, else initialised as PyTorch's Linear default with `seed`.
    GGUF (`gguf:<package>`, a `.gguf` path, or `gguf_file=` inside `name_or_dir`) is dequantised once into
    `cache_dir` (see `packaged.dequantised`). `num_layers` keeps only the first layers of the checkpoint (only
    their weights are read). `.provenance` records both.
    """
    provenance: dict = {}
    if gguf_file is not None:
        name_or_dir = str(Path(name_or_dir) / gguf_file)
    if packaged.is_gguf(str(name_or_dir)):
        directory, provenance["dequantisation"] = packaged.dequantised(str(name_or_dir), cache_dir)
    else:
        directory = resolve_source(str(name_or_dir), revision)
    hf_config = load_hf_config(directory, trust_remote_code)
    full = registry.config_from_hf(hf_config, **runtime)
    cfg = truncated_config(full, num_layers, str(name_or_dir))
    if cfg.num_layers != full.num_layers:
        provenance["truncation"] = {"num_layers": cfg.num_layers, "of": full.num_layers,
                                    "kept": f"layers 0..{cfg.num_layers - 1}, embeddings, final norm and LM head"}
    source = TensorSource(directory, registry.family(cfg.family).HF_PREFIXES)
    if seqcls.is_sequence_classifier(hf_config):  # its LM head is absent: zeros (a reward model never reads it)
        source = seqcls.WithoutLMHead(source, cfg)
        provenance["lm_head"] = "absent (sequence-classification checkpoint): zeros"
    try:
        params = _load_params(source, cfg, mesh, reward_head, seed, directory / REWARD_HEAD_FILE, full.num_layers)
    finally:
        source.close()
    tokenizer = _load_tokenizer(directory, trust_remote_code) if load_tokenizer else None
    return Pretrained(Transformer(cfg), cfg, params, tokenizer, str(name_or_dir), provenance)


# ---------------------------------------------------------------------------------------------------------------
# save_pretrained


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


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
    write_safetensors(directory, dict(params_to_hf(backbone, fam.WEIGHT_RULES, cfg, prefix=fam.HF_PREFIXES[0])),
                      max_shard_bytes)
    if "reward_head" in params:
        weight = _host(params["reward_head"]["kernel"]).T.copy()
        _atomic_write(directory / REWARD_HEAD_FILE, lambda p: save_file({REWARD_HEAD_KEY: weight}, p))
    hf_config = registry.config_to_hf(cfg)
    hf_config.dtype = cfg.param_dtype
    _atomic_write(directory / "config.json", lambda p: Path(p).write_text(hf_config.to_json_string()))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
