"""Low-rank adapters (LoRA) on every backbone, applied as a transform of the parameters before the forward.

`model.lora = {rank, alpha, dropout, targets}`: rank 0 turns LoRA off. `targets` is a Python regular expression
`re.fullmatch`ed against each kernel's slash-joined path in the params tree, e.g.
`backbone/layers/attn/q_proj/kernel` (every family names its attention kernels `attn/{q,k,v,o}_proj` and its MLP
kernels `gate_proj`/`up_proj`/`down_proj` (Llama, Gemma 3) or `mlp/fc_in`/`mlp/fc_out` (GPT-2, OPT)); the empty
string takes the default, peft's usual attention projections (`DEFAULT_TARGETS`).

An adapted kernel W (Flax layout [layers?, in..., out...]) gets A [layers?, in..., r] and B [layers?, r, out...];
the forward sees W + (alpha / r) * A @ B, contracted over r. B starts at zero (the adapted model starts equal to
the base) and A like torch's Linear (peft's init). A is sharded like W's input axes, B like its output axes, so
the adapters follow the mesh of the weight they adapt.

How it is applied: the adapters ride in the params tree beside the kernel they adapt (`inject`), so the scanned
layer stack slices them per layer like the kernel, and a Flax method interceptor adds scale * (x . A) . B to that
Dense's output (peft's unmerged form). Every family is covered without touching a backbone, and no merged
[layers, ...] kernel (nor its gradient) is ever materialised: what a 7B model on one device needs. The base stays a
separate, frozen pytree (`LoraModel.split`): only adapters and the reward head are differentiated and carry
optimizer state, and a train checkpoint holds only them. `merge` (W + scale * A @ B) is the export's form.

`dropout` p (peft's `lora_dropout`, off by default): in training only, the adapter branch reads
dropout(x) = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element, while the base kernel reads x itself. The train
step sets a key for each (step, microbatch) with `dropout_key`; each adapted Dense draws its own mask from it through
the Flax RNG stream `lora_dropout`, which the scanned stack splits per layer. Without a key (scoring, export,
`eval_every`) there is no dropout, nor on an adapter merged into a kernel outside the stack (an LM head). The
draws depend on how a step is cut (micro-batching, packing): the same distribution, not the same numbers, so with
p > 0 those settings stay result-neutral only in distribution.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

DEFAULT_TARGETS = r"backbone/layers/attn/(q_proj|k_proj|v_proj|o_proj)/kernel"
LORA_KEY = "lora"  # where a LoRA model's params hold the adapters: {"backbone", "reward_head", "lora": {path: {a, b}}}
TRAINABLE = (LORA_KEY, "reward_head")
_WRITES_FROM_HEADS = ("o_proj",)  # kernels [heads, head_dim, out]: every dimension but the last is an input
RNG_STREAM = "lora_dropout"
_DROPOUT_KEY: contextvars.ContextVar = contextvars.ContextVar("lora_dropout_key", default=None)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = ""

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"model.lora.rank must be a non-negative integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha) \
                or self.alpha <= 0:
            raise ValueError(f"model.lora.alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.lora.dropout must be a probability in [0, 1), got {self.dropout!r}")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"model.lora.targets is not a regular expression ({e}): {self.targets!r}") from None

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def pattern(self) -> str:
        return self.targets or DEFAULT_TARGETS

    def spec(self) -> dict | None:
        """What enters a trained model's spec (None when off, so specs without LoRA keep their fingerprints)."""
        if not self.enabled:
            return None
        out = {"rank": self.rank, "alpha": float(self.alpha), "targets": self.pattern}
        return {**out, "dropout": float(self.dropout)} if self.dropout else out  # p = 0 keeps older fingerprints

    @classmethod
    def from_config(cls, lora: Mapping | None) -> "LoraConfig":
        if hasattr(lora, "to_dict"):
            lora = lora.to_dict()
        if not lora:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(lora) - known)
        if unknown:
            raise ValueError(f"model.lora has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**{k: lora[k] for k in known if k in lora})


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def target_paths(params: Mapping, lora: LoraConfig) -> list[str]:
    """Kernel paths (slash-joined) the pattern selects; never the adapters or the reward head themselves."""
    rx = re.compile(lora.pattern)
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        {k: v for k, v in params.items() if k not in TRAINABLE})[0]]
    return [p for p in paths if p.endswith("/kernel") and rx.fullmatch(p)]


def _lead(path: str) -> int:
    """Stacked-layer kernels (`.../layers/...`) carry one leading layer axis."""
    return 1 if "/layers/" in f"/{path}/" else 0


def _layout(path: str, ndim: int) -> tuple[int, int]:
    """(leading stacked-layer axes, input axes) of a kernel."""
    lead = _lead(path)
    body = ndim - lead
    return lead, (body - 1 if path.split("/")[-2] in _WRITES_FROM_HEADS else 1)


def _get(tree: Mapping, path: str):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def _factor_shardings(w, path: str):
    """(A, B) shardings from W's: A keeps W's leading and input axes, B its leading and output axes."""
    sharding = getattr(w, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return None, None
    spec = tuple(sharding.spec) + (None,) * (w.ndim - len(sharding.spec))
    lead, n_in = _layout(path, w.ndim)
    a = P(*spec[:lead + n_in], None)
    b = P(*spec[:lead], None, *spec[lead + n_in:])
    return NamedSharding(sharding.mesh, a), NamedSharding(sharding.mesh, b)


def adapter_shapes(w_shape, path: str, rank: int) -> tuple[tuple, tuple]:
    lead, n_in = _layout(path, len(w_shape))
    return (*w_shape[:lead + n_in], rank), (*w_shape[:lead], rank, *w_shape[lead + n_in:])


def init_adapters(params: Mapping, lora: LoraConfig, seed: int, dtype=jnp.float32) -> dict:
    """{path: {"a", "b"}} for every target kernel: A ~ U(+-1/sqrt(fan_in)), B = 0; placed like W's axes.
    Works on abstract params (ShapeDtypeStructs with shardings) too, returning abstract adapters."""
    paths = target_paths(params, lora)
    if not paths:
        raise ValueError(f"model.lora.targets {lora.pattern!r} matches no kernel of this model")
    out, key = {}, jax.random.fold_in(jax.random.PRNGKey(seed), 0x10A)  # apart from the reward head's stream
    for i, path in enumerate(paths):
        w = _get(params, path)
        a_shape, b_shape = adapter_shapes(w.shape, path, lora.rank)
        a_sh, b_sh = _factor_shardings(w, path)
        lead, n_in = _layout(path, w.ndim)
        bound = 1.0 / math.sqrt(math.prod(w.shape[lead:lead + n_in]))
        if isinstance(w, jax.ShapeDtypeStruct):
            out[path] = {"a": jax.ShapeDtypeStruct(a_shape, dtype, sharding=a_sh),
                         "b": jax.ShapeDtypeStruct(b_shape, dtype, sharding=b_sh)}
            continue
        make_a = lambda k, s=a_shape, b=bound: jax.random.uniform(k, s, dtype, -b, b)  # noqa: E731
        make_b = lambda s=b_shape: jnp.zeros(s, dtype)  # noqa: E731
        out[path] = {"a": jax.jit(make_a, out_shardings=a_sh)(jax.random.fold_in(key, i)),
                     "b": jax.jit(make_b, out_shardings=b_sh)()}
    return out


def delta(path: str, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """scale * A @ B in W's layout (fp32), contracting the rank axis; batched over stacked layers."""
    lead = _lead(path)
    batch = tuple(range(lead))
    d = jax.lax.dot_general(a.astype(jnp.float32), b.astype(jnp.float32),
                            (((a.ndim - 1,), (lead,)), (batch, batch)))
    return scale * d


def merge(params: Mapping, lora: LoraConfig) -> dict:
    """The plain params the backbone reads: each adapted kernel replaced by W + scale * A @ B; the adapters
    dropped. Zero B gives W back exactly."""
    adapters = params.get(LORA_KEY)
    out = {k: v for k, v in params.items() if k != LORA_KEY}
    if not adapters:
        return out
    out = jax.tree.map(lambda x: x, out)  # fresh containers: the caller's tree is not mutated
    for path, ab in adapters.items():
        keys = path.split("/")
        node = out
        for k in keys[:-1]:
            node[k] = dict(node[k])
            node = node[k]
        w = node[keys[-1]]
        node[keys[-1]] = (w.astype(jnp.float32) + delta(path, ab["a"], ab["b"], lora.scale)).astype(w.dtype)
    return out


@contextlib.contextmanager
def dropout_key(key):
    """While tracing a train step's loss: LoRA forwards inside draw their adapter-input dropout from `key`."""
    token = _DROPOUT_KEY.set(key)
    try:
        yield
    finally:
        _DROPOUT_KEY.reset(token)


def _adapter_interceptor(scale: float, dropout: float = 0.0):
    """Adds scale * (x . A) . B to the output of every Dense that carries `lora_a`/`lora_b` beside its kernel
    (inside a scanned stack these are the layer's own slices, like its kernel); with `dropout` and a key in the
    `lora_dropout` stream, x is dropped out on the adapter branch only."""

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.DenseGeneral)) \
                or not module.has_variable("params", "lora_a"):
            return out
        a, b = module.get_variable("params", "lora_a"), module.get_variable("params", "lora_b")
        dtype = module.dtype or args[0].dtype
        x = args[0].astype(dtype)
        if dropout and module.has_rng(RNG_STREAM):
            keep = jax.random.bernoulli(module.make_rng(RNG_STREAM), 1.0 - dropout, x.shape)
            x = jnp.where(keep, x / jnp.asarray(1.0 - dropout, dtype), jnp.zeros((), dtype))
        n_in = a.ndim - 1
        xa = jnp.tensordot(x, a.astype(dtype), axes=(tuple(range(-n_in, 0)), tuple(range(n_in))))
        return out + (scale * jnp.tensordot(xa, b.astype(dtype), axes=1)).astype(out.dtype)

    return intercept


def inject(params: Mapping, lora: LoraConfig) -> dict:
    """The params a LoRA forward reads: each stacked-layer adapter placed beside its kernel as `lora_a`/`lora_b`
    (so a scanned stack slices it per layer and no merged [layers, ...] kernel is ever formed); an adapter on a
    kernel outside the stack (an LM head) is merged into it."""
    adapters = params.get(LORA_KEY) or {}
    outside = {p: ab for p, ab in adapters.items() if not _lead(p)}
    out = merge({**params, LORA_KEY: outside}, lora)
    for path, ab in adapters.items():
        if path in outside:
            continue
        keys = path.split("/")
        node = out
        for k in keys[:-1]:
            node[k] = dict(node[k])
            node = node[k]
        node["lora_a"], node["lora_b"] = ab["a"], ab["b"]
    return out


class LoraModel:
    """A Flax `Transformer` whose `apply` adds the adapters' low-rank term to the adapted Dense layers; every other
    attribute is the wrapped model's (so `model.apply({"params": p}, ..., method=model.hidden)` works as for the
    plain model). The base kernel is used as it is; the update x . A . B runs in the layer's compute dtype."""

    def __init__(self, model, lora: LoraConfig):
        self.model, self.lora = model, lora

    def __getattr__(self, name):
        return getattr(self.model, name)

    def apply(self, variables, *args, **kwargs):
        key = _DROPOUT_KEY.get()
        if self.lora.dropout and key is not None:
            kwargs["rngs"] = {**kwargs.get("rngs", {}), RNG_STREAM: key}
        with nn.intercept_methods(_adapter_interceptor(self.lora.scale, self.lora.dropout)):
            return self.model.apply({**variables, "params": inject(variables["params"], self.lora)}, *args,
                                    **kwargs)

    @staticmethod
    def split(params: Mapping) -> tuple[dict, dict]:
        """(trainable: adapters + reward head, frozen: the base backbone)."""
        return ({k: v for k, v in params.items() if k in TRAINABLE},
                {k: v for k, v in params.items() if k not in TRAINABLE})

    @staticmethod
    def join(trainable: Mapping, frozen: Mapping) -> dict:
        return {**frozen, **trainable}


def with_lora(model, params: Mapping, lora: LoraConfig, seed: int) -> tuple[Any, dict]:
    """(LoraModel, params + fresh adapters), or the inputs unchanged when LoRA is off."""
    if not lora.enabled:
        return model, dict(params)
    return LoraModel(model, lora), {**params, LORA_KEY: init_adapters(params, lora, seed)}


def split_params(model, params):
    """(trainable, frozen or None) of any model's params: a LoRA model trains only its adapters and head."""
    return model.split(params) if isinstance(model, LoraModel) else (params, None)


def join_params(model, trainable, frozen):
    return trainable if frozen is None else model.join(trainable, frozen)
