"""The device mesh and the one table from logical axis names to mesh axes.

Mesh axes: `data` (pure data parallelism), `fsdp` (batch and weights sharded, weights all-gathered per
layer), `tensor` (heads / MLP / vocab split across devices). Every weight in `w2s_jax/models` names its
dimensions with the logical names below.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("proj", None),
    ("length", None),
)


class MeshError(ValueError):
    pass


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh; one size may be -1 to take the devices the others leave."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, size in sizes.items():
        if not isinstance(size, int) or size == 0 or size < -1:
            raise MeshError(f"mesh.{name} must be a positive integer or -1, got {size!r}")
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise MeshError(f"only one mesh axis may be -1, got {free}")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if len(devices) % fixed:
            raise MeshError(f"{len(devices)} devices cannot be split into mesh {sizes} (fixed axes need a multiple "
                            f"of {fixed})")
        sizes[free[0]] = len(devices) // fixed
    total = math.prod(sizes.values())
    if total != len(devices):
        raise MeshError(f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = {total} "
                        f"devices, but {len(devices)} are available ({jax.default_backend()})")
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _mesh_axes_for(logical_name, rules) -> tuple[str, ...]:
    for name, target in rules:
        if name == logical_name:
            if target is None:
                return ()
            return (target,) if isinstance(target, str) else tuple(target)
    raise KeyError(f"logical axis {logical_name!r} has no rule in LOGICAL_RULES")


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_RULES) -> P:
    """PartitionSpec for one array. A dimension the mesh axes do not divide stays replicated (e.g. GPT-2's
    vocabulary of 50257 on a tensor axis of 2), and no mesh axis is used twice."""
    used: set[str] = set()
    spec = []
    for name, dim in zip(logical_axes, shape):
        axes = () if name is None else tuple(a for a in _mesh_axes_for(name, rules) if a not in used)
        axes = tuple(a for a in axes if mesh.shape[a] > 1)
        if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
            used.update(axes)
            spec.append(axes[0] if len(axes) == 1 else axes)
        else:
            spec.append(None)
    return P(*spec)


def param_shardings(boxed_abstract_params, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedShardings for a tree of logically partitioned (boxed) abstract params, as from `jax.eval_shape(init)`."""
    specs = nn.get_partition_spec(boxed_abstract_params)
    shapes = nn.unbox(boxed_abstract_params)
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, logical_to_spec(tuple(spec), x.shape, mesh, rules)),
                        specs, shapes, is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp; the rest replicated."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Host array -> sharded device array; each device receives only its own shard."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


# ---------------------------------------------------------------------------------------------------------------
# Activations

_ACTIVATION_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("activation_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None):
    """While tracing inside this context, `constrain` pins activations onto `mesh` (outside it, a no-op).

    Without such anchors GSPMD may meet FSDP-sharded weights (`embed -> fsdp`) and a batch-sharded input by
    all-gathering the activations instead of the weights: every device then holds the whole batch's activations,
    which for a 7B model is ~10x the memory (see benchmarks/memory_7b.py)."""
    token = _ACTIVATION_MESH.set(mesh)
    try:
        yield
    finally:
        _ACTIVATION_MESH.reset(token)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical axis names on the mesh of `activation_sharding` (else unchanged)."""
    mesh = _ACTIVATION_MESH.get()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes, x.shape, mesh)))
