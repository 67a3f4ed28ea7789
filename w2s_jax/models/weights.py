"""Declarative tables from Hugging Face weight names to Flax parameter paths.

A family file lists `WeightRule`s; this module applies them in both directions. A rule maps one Hugging Face
tensor to one or more Flax leaves (GPT-2's fused `c_attn` becomes q/k/v) with a transform and its inverse.
Names containing `{i}` are per-layer: their Flax leaves live under `layers` and are stacked on axis 0.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping

import numpy as np

from w2s_jax.models.config import ModelConfig

Path = tuple[str, ...]
# Keys that some checkpoints carry but that hold no weights (causal-mask buffers, cached rotary tables).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def _always(cfg: ModelConfig) -> bool:
    return True


def _identity(x, cfg):
    return x


@dataclasses.dataclass(frozen=True)
class WeightRule:
    hf: str  # relative to the family prefix unless `absolute`
    flax: tuple[Path, ...]  # one or more leaf paths inside params["backbone"]
    to_flax: Callable = _identity  # (hf_array, cfg) -> array, or tuple of arrays (one per flax path)
    to_hf: Callable = _identity  # (array or tuple of arrays, cfg) -> hf_array
    when: Callable[[ModelConfig], bool] = _always
    absolute: bool = False

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


def rule(hf: str, *flax: str, to_flax=_identity, to_hf=_identity, when=_always, absolute=False) -> WeightRule:
    """`flax` paths are written with slashes: "layers/attn/q_proj/kernel"."""
    return WeightRule(hf, tuple(tuple(p.split("/")) for p in flax), to_flax, to_hf, when, absolute)


# ---------------------------------------------------------------------------------------------------------------
# Transforms. torch Linear stores [out, in]; a Flax kernel is [in, out] (heads split out where they exist).


def linear(w, cfg):
    return np.ascontiguousarray(w.T)


def heads_in(attr: str):
    """torch Linear [n*d, E] -> kernel [E, n, d]; `attr` names the head count in the config."""

    def to_flax(w, cfg):
        return np.ascontiguousarray(w.T).reshape(w.shape[1], getattr(cfg, attr), cfg.head_dim)

    def to_hf(k, cfg):
        return np.ascontiguousarray(k.reshape(k.shape[0], -1).T)

    return to_flax, to_hf


def heads_bias(attr: str):
    def to_flax(b, cfg):
        return b.reshape(getattr(cfg, attr), cfg.head_dim)

    def to_hf(b, cfg):
        return b.reshape(-1)

    return to_flax, to_hf


def heads_out(w, cfg):
    """torch Linear [E, n*d] -> kernel [n, d, E]."""
    return np.ascontiguousarray(w.T).reshape(cfg.num_heads, cfg.head_dim, w.shape[0])


def heads_out_hf(k, cfg):
    return np.ascontiguousarray(k.reshape(-1, k.shape[-1]).T)


# ---------------------------------------------------------------------------------------------------------------
# Applying a table


def _set(tree: dict, path: Path, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def iter_flax_leaves(get_tensor: Callable[[str], np.ndarray], rules: list[WeightRule], cfg: ModelConfig
                     ) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (flax path, array) one leaf at a time, so a caller can place each and free host memory.

    `get_tensor(name, absolute)` returns the Hugging Face tensor (it resolves prefixes and raises a ValueError
    naming the file and the missing name).
    """
    for r in rules:
        if not r.when(cfg):
            continue
        layers = range(cfg.num_layers) if r.per_layer else [None]
        per_leaf: list[list[np.ndarray]] = [[] for _ in r.flax]
        for i in layers:
            name = r.hf.format(i=i) if r.per_layer else r.hf
            out = r.to_flax(get_tensor(name, r.absolute), cfg)
            out = out if isinstance(out, tuple) else (out,)
            if len(out) != len(r.flax):
                raise AssertionError(f"rule {r.hf} produced {len(out)} arrays for {len(r.flax)} paths")
            for acc, arr in zip(per_leaf, out):
                acc.append(arr)
        for path, arrays in zip(r.flax, per_leaf):
            yield path, (np.stack(arrays) if r.per_layer else arrays[0])
            arrays.clear()


def expected_hf_names(rules: list[WeightRule], cfg: ModelConfig) -> list[tuple[str, bool]]:
    names = []
    for r in rules:
        if r.when(cfg):
            for i in (range(cfg.num_layers) if r.per_layer else [None]):
                names.append((r.hf.format(i=i) if r.per_layer else r.hf, r.absolute))
    return names


def params_to_hf(backbone: Mapping, rules: list[WeightRule], cfg: ModelConfig, prefix: str
                 ) -> Iterator[tuple[str, np.ndarray]]:
    """Inverse of `iter_flax_leaves`: yield (Hugging Face name, array) from host numpy params."""
    for r in rules:
        if not r.when(cfg):
            continue
        leaves = [np.asarray(_get(backbone, p)) for p in r.flax]
        for i in (range(cfg.num_layers) if r.per_layer else [None]):
            parts = tuple(leaf[i] for leaf in leaves) if r.per_layer else tuple(leaves)
            name = r.hf.format(i=i) if r.per_layer else r.hf
            yield (name if r.absolute else prefix + name), r.to_hf(parts if len(parts) > 1 else parts[0], cfg)


def set_leaf(tree: dict, path: Path, value) -> None:
    _set(tree, path, value)


def get_leaf(tree: Mapping, path: Path):
    return _get(tree, path)
