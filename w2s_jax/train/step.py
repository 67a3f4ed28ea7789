"""The one sharded train step every objective plugs into.

An objective is `loss_fn(params, microbatch, progress) -> LossTerms(loss_sum, count, metrics)`, where
`progress = step / nsteps` (for schedules inside a loss, e.g. logconf's warmup). The step splits the
optimizer batch into microbatches, accumulates the *sums* with `lax.scan` and divides once, so the update is
the exact per-example mean whatever the microbatching. It is `jax.jit` with explicit in/out shardings over the
mesh and donates the old state's buffers.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s_jax.models.sharding import activation_sharding
from w2s_jax.train.losses import LossTerms

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], LossTerms]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """Adam moments are created directly in the params' shardings, every other optimizer leaf replicated."""
    opt_state = jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params))(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), _replicated_like(params))
    return TrainState(step=step, params=params, opt_state=opt_state)


def abstract_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """`init_state`'s TrainState as ShapeDtypeStructs with its shardings, of params given the same way: the input
    of an ahead-of-time lowering, nothing allocated."""
    struct = lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)  # noqa: E731
    opt_state = jax.tree.map(struct, jax.eval_shape(optimizer.init, params), opt_state_shardings(optimizer, params))
    return TrainState(struct(jax.ShapeDtypeStruct((), jnp.int32), _replicated_like(params)), params, opt_state)


def opt_state_shardings(optimizer: optax.GradientTransformation, params):
    """Each copy of the parameter tree inside the optimizer state (Adam's mu and nu) takes the params' shardings;
    the rest (step counts) is replicated. Said explicitly because a zeros init does not read the params' values,
    so GSPMD would leave the moments on one device: a full fp32 copy of both moments per device, which defeats
    FSDP (58 GB for a 7B model). Works on abstract params (ShapeDtypeStructs with shardings) too."""
    replicated = _replicated_like(params)
    abstract = jax.eval_shape(optimizer.init, params)
    # a param-shaped leaf takes the param's sharding; one of another shape (Adafactor's factored row / column
    # moments) is replicated
    return optax.tree_map_params(optimizer,
                                 lambda leaf, param, sharding: sharding if leaf.shape == param.shape else replicated,
                                 abstract, params, jax.tree.map(lambda x: x.sharding, params),
                                 transform_non_params=lambda _: replicated)


def _replicated_like(params):
    leaf = jax.tree.leaves(params)[0]
    return NamedSharding(leaf.sharding.mesh, P()) if isinstance(leaf.sharding, NamedSharding) else leaf.sharding


def state_shardings(state: TrainState):
    return jax.tree.map(lambda x: x.sharding, state)


def microbatch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """[n_micro, micro_batch, ...]: the microbatch rows are split over data x fsdp."""
    return NamedSharding(mesh, P(None, ("data", "fsdp"), *([None] * (ndim - 2))))


def place_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host microbatches (the global batch, the same in every process) -> global arrays sharded over the mesh.

    The callback runs only for this process's own devices, so each process copies just the rows it holds;
    unlike `make_array_from_process_local_data` this is right for any placement of processes on the mesh
    (a process holding rows that are not contiguous, or every row when it spans only `tensor`)."""
    return {k: jax.make_array_from_callback(v.shape, microbatch_sharding(mesh, v.ndim), lambda i, v=v: v[i])
            for k, v in batch.items()}


# On a CPU the whole-batch forward without remat keeps every layer's activations of the whole batch until the
# backward: for SmolLM2 (30 layers) and 32 pairs at max_len 256 that is ~11 GB, 2-3x PyTorch's micro-batched peak.
# Under full remat only each layer's input is kept (1.1-1.3 GB of temporaries at 8, 16 or 32 pairs), so the bound
# is twice as large: on 2 idle cores SmolLM2's step took 32.8 s at 16 pairs against 39.4 s at 8 (remat full; 38.5 s
# at 8 without; `benchmarks.cpu_profile --real`, benchmarks/results/real_profile-*.json).
CPU_TOKENS_PER_MICRO = 4096  # padded-length bound: 8 pairs at max_len 256, 16 at 128; tiny test shapes stay whole
CPU_TOKENS_PER_MICRO_FULL_REMAT = 2 * CPU_TOKENS_PER_MICRO


def default_micro_batch(batch_size: int, max_len: int, rows: int, platform: str, sides: int = 2,
                        remat: str = "none") -> int | None:
    """Examples per micro-batch when `train.micro_batch_size` is 0: None (the whole batch) off a CPU; on a CPU the
    largest divisor of `batch_size` that is a multiple of `rows` (mesh data x fsdp) and holds at most
    CPU_TOKENS_PER_MICRO tokens at `max_len` (`sides` sequences per example; CPU_TOKENS_PER_MICRO_FULL_REMAT with
    `remat` "full"), or the whole batch if none does."""
    bound = CPU_TOKENS_PER_MICRO_FULL_REMAT if remat == "full" else CPU_TOKENS_PER_MICRO
    if platform != "cpu" or batch_size * sides * max_len <= bound:
        return None
    fits = [m for m in range(rows, batch_size, rows) if batch_size % m == 0 and m * sides * max_len <= bound]
    return max(fits) if fits else None


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, shardings: TrainState,
                    nsteps: int, frozen_shardings=None, join: Callable | None = None,
                    rng: tuple[int, Callable] | None = None) -> Callable[..., tuple[TrainState, dict]]:
    """Jitted `(state, microbatches) -> (new_state, metrics)`; metrics are per-example means over the batch,
    plus `grad_norm`, `lr_step` and the raw `count`.

    With `frozen_shardings` (LoRA: the base weights), the step is `(state, microbatches, frozen)`: the loss reads
    `join(state.params, frozen)` and only `state.params` is differentiated and updated; `frozen` is an argument
    (never a constant baked into the program) and is neither donated nor returned.

    With `rng = (seed, context)` (LoRA dropout), each microbatch's loss is traced inside `context(key)`, where
    key = fold_in(fold_in(PRNGKey(seed), step), microbatch index): a resumed run draws what an unbroken one does."""

    mesh = _mesh_of(shardings)

    def step(state: TrainState, micro: dict, frozen=None):
        with activation_sharding(mesh):
            if frozen is None:
                return _step(state, micro, loss_fn)
            return _step(state, micro, lambda p, mb, prog: loss_fn(join(p, frozen), mb, prog))

    def _step(state: TrainState, micro: dict, loss_fn: LossFn):
        progress = state.step.astype(jnp.float32) / nsteps
        step_key = None if rng is None else jax.random.fold_in(jax.random.PRNGKey(rng[0]), state.step)

        def terms(p, mb, i):
            if rng is None:
                return _split(loss_fn(p, mb, progress))
            with rng[1](jax.random.fold_in(step_key, i)):
                return _split(loss_fn(p, mb, progress))

        def accumulate(carry, xs):
            mb, i = xs
            grads_sum, loss_sum, count, metrics_sum = carry
            (terms_loss, (terms_count, terms_metrics)), grads = jax.value_and_grad(
                lambda p: terms(p, mb, i), has_aux=True)(state.params)
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            metrics_sum = jax.tree.map(jnp.add, metrics_sum, terms_metrics)
            return (grads_sum, loss_sum + terms_loss, count + terms_count, metrics_sum), None

        first = jax.tree.map(lambda x: x[0], micro)
        metrics_shape = jax.eval_shape(lambda: loss_fn(state.params, first, progress).metrics)
        zeros = (jax.tree.map(jnp.zeros_like, state.params), jnp.zeros((), jnp.float32),
                 jnp.zeros((), jnp.float32), jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), metrics_shape))
        n_micro = jax.tree.leaves(micro)[0].shape[0]
        (grads_sum, loss_sum, count, metrics_sum), _ = jax.lax.scan(accumulate, zeros,
                                                                    (micro, jnp.arange(n_micro, dtype=jnp.uint32)))
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: (g / denom).astype(g.dtype), grads_sum)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {k: v / denom for k, v in metrics_sum.items()}
        metrics.update(loss=loss_sum / denom, count=count, grad_norm=optax.global_norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if frozen_shardings is None:
        return jax.jit(step, in_shardings=(shardings, None), out_shardings=(shardings, None), donate_argnums=(0,))
    return jax.jit(step, in_shardings=(shardings, None, frozen_shardings), out_shardings=(shardings, None),
                   donate_argnums=(0,))


def _mesh_of(shardings) -> Mesh | None:
    """The mesh the params live on (None off a mesh: single-device arrays need no activation constraints)."""
    leaf = jax.tree.leaves(shardings.params)[0]
    return leaf.mesh if isinstance(leaf, NamedSharding) else None


def _split(terms: LossTerms):
    return terms.loss_sum.astype(jnp.float32), (terms.count.astype(jnp.float32),
                                                 {k: v.astype(jnp.float32) for k, v in terms.metrics.items()})
